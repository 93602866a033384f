# Targets for what the plain `go test -race -shuffle=on ./...` (README.md)
# does not do by itself.

.PHONY: kubernetes-test-binaries test-kubernetes

# Build (once; cached by version under ~/.cache/plinth-test) etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler and KWOK from the
# Go module proxy. Cold: about 20 CPU-minutes; warm: a second.
kubernetes-test-binaries:
	scripts/kubernetes-test-binaries.sh

# The Kubernetes executor's tests, the deploy/kubernetes manifests' and the
# server's on the Kubernetes executor, against a real API server on
# loopback with KWOK simulating the nodes; they fail rather than skip here.
test-kubernetes: kubernetes-test-binaries
	PLINTH_TEST_KUBERNETES=1 PLINTH_TEST_REQUIRE_ALL=1 \
		go test -race -count=1 -v ./internal/executor/kubernetes/... ./deploy/kubernetes/...
	PLINTH_TEST_KUBERNETES=1 PLINTH_TEST_REQUIRE_ALL=1 \
		go test -race -count=1 -v -run Kubernetes ./internal/server
