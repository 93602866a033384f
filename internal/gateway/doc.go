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
//     in the gateway process, or, with Options.Counter set to a shared
//     (Redis) counter, across every gateway that shares it: then both limits
//     are checked and counted in one atomic step and hold for all of them.
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
//
// # Foundation models: the OpenAI-compatible API
//
//	POST /openai/v1/chat/completions | /completions | /embeddings
//	GET  /openai/v1/models, /openai/v1/models/{id}
//	POST /openai/deployments/{model}/chat/completions?api-version=...   (Azure OpenAI's shape; also completions, embeddings)
//	     and all of these under /w/{ws}/ for a workspace other than "default"
//
// Any OpenAI SDK with base URL .../openai/v1 (or an Azure OpenAI SDK with
// the gateway as its endpoint) works unchanged. A call is authenticated
// like an endpoint call with a platform credential (endpoints.invoke in the
// workspace) and charged to the workspace's team (LLM.WorkspaceTeams). The
// model name (body "model", or the Azure deployment) selects an [LLMModel]:
//
//  1. Tokens are estimated before the call (internal/llm/tokens, OpenAI's
//     own vocabularies built in): prompt + max_tokens × n.
//  2. Limits are charged all at once (internal/ratelimit; in memory, or in
//     Redis shared by several gateways): requests and tokens per minute per
//     key on the model, and per team; tokens per day and month per team;
//     budgets per day and month per team (the pool's dearest prices). Over
//     a per-minute limit: 429 with Retry-After and OpenAI's message; over a
//     quota or budget: 403 insufficient_quota saying which and when it
//     resets. x-ratelimit-{limit,remaining,reset}-{requests,tokens} show
//     the tightest per-minute limits. Unreachable counters let the call
//     through (counted in plinth_llm_limit_errors_total).
//  3. Cache: a model with CacheTTL answers repeated requests (same JSON,
//     any key order) from memory; never streams, and only temperature 0
//     unless CacheNonZeroTemperature.
//  4. Mirror: MirrorPercent of calls are copied to MirrorModel in the
//     background; the copies' answers are discarded and metered as mirrored.
//  5. Routing: the lowest priority group with a backend that is not
//     cooling down (it answered 429: skipped for its retry-after-ms or
//     Retry-After), not behind an open circuit breaker (5 consecutive
//     failures open it for 30 s, then one call probes it) and within its own
//     RPM/TPM; by weight inside the group. A 429 or an exhausted backend
//     quota moves on at once (spillover, x-plinth-spillover: true); a 5xx,
//     401/403 (the gateway's credential was refused), 408, timeout or
//     connection failure moves on after a jittered backoff, retrying failed
//     backends when none is left, up to 4 tries. Nothing is retried once the
//     caller has a status line: streams are never retried.
//  6. The backend's model name replaces the caller's; its credential
//     (Authorization: Bearer, or api-key for Azure) replaces the caller's.
//     Streams are relayed event by event and flushed as they arrive; the
//     gateway asks a streaming backend for usage (stream_options.include_usage)
//     and hides that chunk from a caller who did not ask for it.
//  7. Usage is settled with what the backend reported (or counted from the
//     answer's text), the cost computed at that backend's prices, and one
//     Record metered with model, backend, tokens, cost and spillover.
//
// Errors are OpenAI's error objects ({"error":{"message","type","param","code"}}).
package gateway
