#!/usr/bin/env bash
# Builds, once, the control-plane binaries that the Kubernetes executor's
# integration tests run on loopback (internal/executor/kubernetes/k8stest):
#
#   etcd                    go.etcd.io/etcd/server/v3 via etcdmain
#   kube-apiserver,
#   kube-controller-manager,
#   kube-scheduler          k8s.io/kubernetes at KUBERNETES_VERSION
#   kwok + its stages       sigs.k8s.io/kwok at KWOK_VERSION (simulated nodes)
#
# Everything is built from the Go module proxy (no prebuilt downloads: this
# workplace reaches only package registries) into a cache keyed by version:
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/plinth-test/kubernetes-vX.Y.Z/
#   ${XDG_CACHE_HOME:-$HOME/.cache}/plinth-test/etcd-vX.Y.Z/
#   ${XDG_CACHE_HOME:-$HOME/.cache}/plinth-test/kwok-vX.Y.Z/
#
# A directory that already holds a complete build (its .complete marker) is
# left alone, so the script is idempotent and cheap when warm. Cold, the
# Kubernetes build is the long one: about 17 CPU-minutes.
#
# PLINTH_TEST_CACHE overrides the cache root, for the script and the tests
# alike (internal/executor/kubernetes/k8stest reads the same variables).
#
# Usage: scripts/kubernetes-test-binaries.sh [all|etcd|kubernetes|kwok]...
set -euo pipefail

KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-0.8.0}"

CACHE_ROOT="${PLINTH_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/plinth-test}"
KUBE_DIR="$CACHE_ROOT/kubernetes-v$KUBERNETES_VERSION"
ETCD_DIR="$CACHE_ROOT/etcd-v$ETCD_VERSION"
KWOK_DIR="$CACHE_ROOT/kwok-v$KWOK_VERSION"

log() { printf '%s kubernetes-test-binaries: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# The scratch modules must not inherit the caller's module or vendoring mode.
export GOFLAGS=-mod=mod GOWORK=off GO111MODULE=on CGO_ENABLED=0

# scratch makes a throwaway module directory that is removed on exit.
SCRATCH_DIRS=()
cleanup() { for d in "${SCRATCH_DIRS[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT
scratch() {
	local d
	d="$(mktemp -d "${TMPDIR:-/tmp}/plinth-k8s-build.XXXXXX")"
	SCRATCH_DIRS+=("$d")
	echo "$d"
}

# install_dir moves a finished build into place atomically, so a build that
# was interrupted never leaves a half-populated cache directory behind.
install_dir() {
	local src="$1" dst="$2"
	touch "$src/.complete"
	mkdir -p "$(dirname "$dst")"
	rm -rf "$dst.old"
	if [[ -d "$dst" ]]; then mv "$dst" "$dst.old"; fi
	mv "$src" "$dst"
	rm -rf "$dst.old"
}

build_etcd() {
	if [[ -f "$ETCD_DIR/.complete" ]]; then log "etcd v$ETCD_VERSION cached in $ETCD_DIR"; return; fi
	log "building etcd v$ETCD_VERSION"
	local start=$SECONDS d
	d="$(scratch)"
	(
		cd "$d"
		go mod init plinth-test/etcd >/dev/null 2>&1
		cat >main.go <<'EOF'
// Command etcd is upstream etcd's own main, built from the module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
		go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null
		mkdir -p out
		go build -trimpath -o out/etcd .
	)
	install_dir "$d/out" "$ETCD_DIR"
	log "etcd built in $((SECONDS - start))s"
}

build_kubernetes() {
	if [[ -f "$KUBE_DIR/.complete" ]]; then log "kubernetes v$KUBERNETES_VERSION cached in $KUBE_DIR"; return; fi
	log "building kube-apiserver, kube-controller-manager, kube-scheduler v$KUBERNETES_VERSION"
	local start=$SECONDS d
	d="$(scratch)"
	(
		cd "$d"
		go mod init plinth-test/kubernetes >/dev/null 2>&1
		# k8s.io/kubernetes points each staging module at ./staging/src/...
		# with replace directives, which do not apply to a dependent module.
		# Replace each with its published release, whose version is the
		# Kubernetes minor with major 0 (v1.35.4 -> v0.35.4).
		local modfile staging_version="v0.${KUBERNETES_VERSION#1.}"
		modfile="$(go mod download -json "k8s.io/kubernetes@v$KUBERNETES_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
		local -a mods
		mapfile -t mods < <(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "$modfile")
		if ((${#mods[@]} == 0)); then log "no staging replaces found in $modfile"; exit 1; fi
		log "replacing ${#mods[@]} staging modules with $staging_version"
		local m
		for m in "${mods[@]}"; do
			go mod edit -replace "$m=$m@$staging_version"
		done
		go get "k8s.io/kubernetes@v$KUBERNETES_VERSION" \
			"k8s.io/kubernetes/cmd/kube-apiserver@v$KUBERNETES_VERSION" \
			"k8s.io/kubernetes/cmd/kube-controller-manager@v$KUBERNETES_VERSION" \
			"k8s.io/kubernetes/cmd/kube-scheduler@v$KUBERNETES_VERSION" >/dev/null
		# Without these the binaries report v0.0.0-master, and the apiserver's
		# compatibility-version checks and /version disagree with the release.
		local major="${KUBERNETES_VERSION%%.*}" minor
		minor="$(echo "$KUBERNETES_VERSION" | cut -d. -f2)"
		local ldflags="" pkg
		for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
			ldflags+=" -X $pkg.gitVersion=v$KUBERNETES_VERSION"
			ldflags+=" -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
			ldflags+=" -X $pkg.gitTreeState=clean"
			ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
		done
		mkdir -p out
		go build -trimpath -ldflags "-s -w$ldflags" -o out/ \
			k8s.io/kubernetes/cmd/kube-apiserver \
			k8s.io/kubernetes/cmd/kube-controller-manager \
			k8s.io/kubernetes/cmd/kube-scheduler
	)
	install_dir "$d/out" "$KUBE_DIR"
	log "kubernetes built in $((SECONDS - start))s"
}

build_kwok() {
	if [[ -f "$KWOK_DIR/.complete" ]]; then log "kwok v$KWOK_VERSION cached in $KWOK_DIR"; return; fi
	log "building kwok v$KWOK_VERSION"
	local start=$SECONDS d
	d="$(scratch)"
	(
		cd "$d"
		go mod init plinth-test/kwok >/dev/null 2>&1
		go get "sigs.k8s.io/kwok@v$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION" >/dev/null
		mkdir -p out/stages
		go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=v$KWOK_VERSION" -o out/kwok sigs.k8s.io/kwok/cmd/kwok
		# kwok exits with "no stages found" unless it is handed the stage
		# definitions that move nodes and pods through their lifecycle; they
		# ship inside the module under kustomize/stage.
		local src
		src="$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
		cp -r "$src/kustomize/stage/." out/stages/
		chmod -R u+w out/stages
	)
	install_dir "$d/out" "$KWOK_DIR"
	log "kwok built in $((SECONDS - start))s"
}

targets=("$@")
if ((${#targets[@]} == 0)); then targets=(all); fi
for t in "${targets[@]}"; do
	case "$t" in
	all) build_etcd; build_kwok; build_kubernetes ;;
	etcd) build_etcd ;;
	kubernetes) build_kubernetes ;;
	kwok) build_kwok ;;
	*) echo "unknown target $t (want all, etcd, kubernetes or kwok)" >&2; exit 2 ;;
	esac
done
