// Package gateway is the data plane of online endpoints: it authenticates,
// limits, routes, proxies, mirrors and meters scoring calls from an
// immutable route snapshot.
//
// The control plane (internal/endpoint) builds a [Snapshot] on every change
// and hands it to [Gateway.Update] (in-process) or serves it to
// [Gateway.Follow] (a standalone gateway long-polling the control plane).
// The gateway never reads the database: it keeps serving the last snapshot
// it has when the control plane is down.
//
// # Routes
//
//	POST /endpoints/{name}/score              workspace "default"
//	ANY  /endpoints/{name}/{path...}
//	POST /w/{ws}/endpoints/{name}/score
//	ANY  /w/{ws}/endpoints/{name}/{path...}
//
// As on Azure ML managed online endpoints, "score" (and "score/<sub>") is
// forwarded to the deployment's ScoringPath (and ScoringPath + "/<sub>");
// any other path is forwarded to the model server unchanged ("/v1/chat/completions"
// stays "/v1/chat/completions"), with the query string.
//
// # One call, in order
//
//  1. x-request-id is reused (when printable and at most 128 bytes) or
//     assigned, and returned on every response, errors included;
//     x-ms-client-request-id is echoed and logged.
//  2. The credential (Authorization: Bearer <token>, or api-key: <token>) is
//     checked before the endpoint's existence is revealed: a caller without a
//     valid credential gets 401 whether or not the endpoint exists. With
//     auth_mode "key", SHA-256(token) is compared in constant time with the
//     endpoint's key hashes; otherwise (and always with auth_mode "token") the
//     token goes to the [Authenticator] as a platform credential, which needs
//     endpoints.invoke in the workspace (401 invalid, 403 not allowed: the 403
//     is per workspace, so it says nothing about the endpoint). Only then is an
//     unknown endpoint a 404.
//  3. Rate limits: per caller key per endpoint (RateLimitPerMinute) and per
//     team (TeamRateLimitPerMinute, shared by all endpoints of the endpoint's
//     team). Both are sliding windows of one-second buckets over the last 60
//     to 61 seconds, so no 60-second window ever admits more than the limit;
//     a refusal is 429 with an integer Retry-After and names the limit. A call
//     refused by the team limit is not counted against the key. Counters live
//     in each gateway process: with several gateway replicas each enforces
//     the limits on the calls it sees.
//  4. The body is read fully, up to Options.MaxBodyBytes (413 beyond), so it
//     can be retried and mirrored.
//  5. Deployment: x-plinth-deployment or azureml-model-deployment pins one
//     (even with 0% traffic, as on Azure; 404 if unknown); otherwise weighted
//     random by Traffic among the deployments that can serve now (ready
//     replicas, or scale-to-zero), falling back to all weighted ones; no
//     traffic anywhere is 404.
//  6. A deployment with no ready replicas: scale-to-zero ones are woken
//     (Waker.Wake once per burst) and the call waits, counted as queued, up to
//     MaxQueueWait (0: [DefaultMaxQueueWait]) for a snapshot with replicas
//     (503 with Retry-After on timeout); others answer 503 at once.
//  7. Concurrency: more than 2 × max_concurrent_requests_per_instance ×
//     ready replicas in flight is 429 with Retry-After (Azure's rule;
//     MaxConcurrentPerInstance 0 means 1). A call that waited for a cold start
//     keeps waiting for a slot until its MaxQueueWait ends instead.
//  8. Replica: least outstanding requests, ties broken round-robin;
//     replicas that just failed to connect are skipped for two seconds.
//  9. Proxy, streamed: bytes are flushed to the caller as they arrive when the
//     model streams (unknown length or text/event-stream). The caller's
//     Authorization, api-key and Cookie headers are never forwarded;
//     X-Forwarded-For, -Host, -Proto and x-request-id are set. The response
//     names the deployment in x-plinth-deployment and azureml-model-deployment.
//     Replicas are called over HTTP/1.1 by the gateway's own client
//     (upstream.go), which sends and reads on the call's goroutine over a
//     pool of keep-alive connections per replica; net/http's Transport cost
//     a third of the gateway's CPU in goroutine hand-offs (docs/benchmarks.md).
//     A pooled connection the replica closed while idle is noticed before
//     reuse (idle over a second) or when the call fails on it before any
//     answer, and the call goes out again on a new connection to the same
//     replica without counting as a replica failure.
//
// # Timeouts, errors and retries
//
//   - 408 request_timeout: the model did not start its response within the
//     deployment's request_timeout_ms (RequestTimeout; 0 means Azure's default,
//     [DefaultRequestTimeout] = 5000 ms). While a response streams, the same
//     duration bounds each silence between bytes; when it passes the
//     connection to the caller is cut (the status has already been sent).
//   - 504 upstream_timeout: no TCP connection to a replica could be made within
//     Options.ConnectTimeout (default 2 s) or request_timeout_ms on any try.
//   - 502 bad_gateway: every try failed at the connection level (refused,
//     reset, closed before a response) or the model sent a malformed response.
//   - 424 model_error: the model answered with a status of 400 or more; the
//     model's body is passed through and its status is in
//     x-plinth-model-status and ms-azureml-model-error-statuscode.
//   - 503 unavailable: no ready replicas (Retry-After), or the Authenticator
//     failed for another reason than the credential.
//   - 499 (metered and logged only): the caller went away.
//
// A call is retried, on a different replica, at most twice, only when it
// failed at the connection level before any byte of a response arrived:
// the dial failed (the model never saw it), or the connection was refused,
// reset or closed before a response began (the replica died: the request
// was either never read or read by a process whose answer is lost, and
// scoring calls are treated as idempotent, like Envoy's retry_on
// "connect-failure,reset"). It is never retried after a timeout (the model
// may still be working on it), after any response byte (status, headers or
// body) arrived, or when the caller has gone. This is what keeps callers
// free of failures when a replica crashes (I4).
//
// # Mirroring, metering, metrics
//
// A call routed by weight (not one pinned by header) is copied with
// probability Mirror[d]% to deployment d, asynchronously and bounded
// (Options.MirrorConcurrency); a mirror that is saturated, down, slow or
// failing never delays or changes the caller's answer: its copies are
// dropped or fail, counted in plinth_gateway_mirror_requests_total. Every
// call to a known endpoint (errors included, with the status the caller
// got) and every mirror copy (Mirrored) is handed to the [Meter], which never
// blocks. Calls to unknown endpoints are logged and counted but not metered:
// they belong to no team.
package gateway
