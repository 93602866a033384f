//go:build linux

package k8stest

// podStages stand in for a kubelet on KWOK's nodes. KWOK ships general
// stages (kustomize/stage/pod) in which every Job pod succeeds after a
// random delay; these instead follow the pod's spec, with no delays, so
// that tests can tell outcomes apart:
//
//   - plinth-pod-run: a new pod bound to a KWOK node runs at once.
//   - plinth-pod-start-error: unless PLINTH_SIM_REASON=StartError is in its
//     container's environment: then the container never runs and ends as
//     containerd reports a missing executable (exit 128, reason StartError,
//     message PLINTH_SIM_MESSAGE).
//   - plinth-pod-true: a running container whose command is "true" exits 0.
//   - plinth-pod-exit: a running container with PLINTH_SIM_EXIT=N in its
//     environment exits N, with PLINTH_SIM_REASON as the termination reason
//     (default Completed for 0, Error otherwise).
//   - plinth-pod-deadline: a running pod given activeDeadlineSeconds ends as
//     a process that obeys SIGTERM (exit 143), phase Failed, reason
//     DeadlineExceeded, as the kubelet does.
//   - plinth-pod-terminate: a pod being deleted ends the same way, keeping
//     any DisruptionTarget condition the API server added.
//   - plinth-pod-delete: a pod being deleted whose finalizers are gone (the
//     Job controller removes its tracking finalizer once it counted the pod)
//     is deleted, as the kubelet confirms a deletion.
const podStages = `---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: plinth-pod-run
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.podIP'
      operator: 'DoesNotExist'
    - key: '(.spec.containers.[0].env // []).[] | select( .name == "PLINTH_SIM_REASON" ) | .value'
      operator: 'NotIn'
      values: ['StartError']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: ContainersReady
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: PodScheduled
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        restartCount: 0
        started: true
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
      phase: Running
      startTime: {{ $now | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: plinth-pod-start-error
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'NotIn'
      values: ['Failed']
    - key: '(.spec.containers.[0].env // []).[] | select( .name == "PLINTH_SIM_REASON" ) | .value'
      operator: 'In'
      values: ['StartError']
  next:
    statusTemplate: |
      {{ $message := "" }}
      {{ range (index .spec.containers 0).env }}
      {{ if eq .name "PLINTH_SIM_MESSAGE" }}{{ $message = .value }}{{ end }}
      {{ end }}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: 128
            reason: StartError
            message: {{ $message | Quote }}
            startedAt: "1970-01-01T00:00:00Z"
            finishedAt: {{ Now | Quote }}
      {{ end }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      phase: Failed
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: plinth-pod-true
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
    - key: '.spec.containers.[0].command.[0]'
      operator: 'In'
      values: ['true']
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $started := or .status.startTime $now }}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: 0
            reason: Completed
            startedAt: {{ $started | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
      phase: Succeeded
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: plinth-pod-exit
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
    - key: '.spec.containers.[0].env.[] | select( .name == "PLINTH_SIM_EXIT" ) | .value'
      operator: 'Exists'
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $started := or .status.startTime $now }}
      {{ $code := "0" }}
      {{ $reason := "" }}
      {{ $message := "" }}
      {{ range (index .spec.containers 0).env }}
      {{ if eq .name "PLINTH_SIM_EXIT" }}{{ $code = .value }}{{ end }}
      {{ if eq .name "PLINTH_SIM_REASON" }}{{ $reason = .value }}{{ end }}
      {{ if eq .name "PLINTH_SIM_MESSAGE" }}{{ $message = .value }}{{ end }}
      {{ end }}
      {{ if eq $reason "" }}{{ if eq $code "0" }}{{ $reason = "Completed" }}{{ else }}{{ $reason = "Error" }}{{ end }}{{ end }}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: {{ $code }}
            reason: {{ $reason | Quote }}
            message: {{ $message | Quote }}
            startedAt: {{ $started | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
      {{ if eq $code "0" }}
      phase: Succeeded
      {{ else }}
      phase: Failed
      {{ end }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: plinth-pod-deadline
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
    - key: '.spec.activeDeadlineSeconds'
      operator: 'Exists'
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $started := or .status.startTime $now }}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: 143
            reason: Error
            startedAt: {{ $started | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
      phase: Failed
      reason: DeadlineExceeded
      message: Pod was active on the node longer than the specified deadline
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: plinth-pod-terminate
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
    - key: '.status.phase'
      operator: 'NotIn'
      values: ['Succeeded', 'Failed']
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $started := or .status.startTime $now }}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: 143
            reason: Error
            startedAt: {{ $started | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
      phase: Failed
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: plinth-pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
    - key: '.metadata.finalizers'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Succeeded', 'Failed']
  next:
    delete: true
`
