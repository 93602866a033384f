package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/llm/tokens"
)

// The OpenAI-compatible front door. Callers use any OpenAI SDK with
// base_url http(s)://gateway/openai/v1 (or /w/{ws}/openai/v1), or an Azure
// OpenAI SDK with the gateway as its endpoint; see the package
// documentation's "Foundation models" section.

// Headers of LLM answers.
const (
	// HeaderBackend names the backend that answered.
	HeaderBackend = "X-Plinth-Backend"
	// HeaderSpillover is "true" when a backend outside the model's first
	// priority group answered.
	HeaderSpillover = "X-Plinth-Spillover"
	// HeaderCache is "hit" when the answer came from the response cache.
	HeaderCache = "X-Plinth-Cache"
)

// maxLLMAttempts bounds the tries of one call across backends.
const maxLLMAttempts = 4

// maxLLMResponse bounds a non-streamed answer, which is read whole to
// meter its usage.
const maxLLMResponse = 64 << 20

// llmCall is one call to the OpenAI-compatible API.
type llmCall struct {
	g         *Gateway
	w         http.ResponseWriter
	r         *http.Request
	start     time.Time
	rid       string
	ws        string
	team      string
	principal string
	keyID     string
	kind      tokens.Kind
	op        string // "chat/completions", "completions", "embeddings"
	azure     bool   // called in Azure OpenAI's shape
	apiVer    string // the caller's api-version (Azure shape)
	model     *llmModel
	modelName string
	body      []byte
	stream    bool
	wantUsage bool // the caller asked for stream_options.include_usage
	est       tokens.Estimate
	reserved  *reservation

	status     int
	errMsg     string
	backend    *llmBackend
	spillover  bool
	cached     bool
	prompt     int64
	completion int64
	usageKnown bool
	cost       float64
	reqBytes   int64
	respBytes  int64
	retries    int
	ttft       time.Duration
	abort      bool
}

// openAIError is OpenAI's error body.
type openAIError struct {
	Error openAIErrorDetail `json:"error"`
}

type openAIErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// fail answers in OpenAI's error format.
func (c *llmCall) fail(status int, typ, code, msg string, retryAfter time.Duration) {
	c.status, c.errMsg = status, msg
	h := c.w.Header()
	h["Content-Type"] = jsonContentType
	if retryAfter > 0 {
		h["Retry-After"] = []string{strconv.FormatInt(int64(roundUpSecond(retryAfter)/time.Second), 10)}
		h["Retry-After-Ms"] = []string{strconv.FormatInt(retryAfter.Milliseconds(), 10)}
	}
	if status == http.StatusUnauthorized {
		h["Www-Authenticate"] = wwwAuthenticate
	}
	d := openAIErrorDetail{Message: msg, Type: typ}
	if code != "" {
		d.Code = &code
	}
	b, _ := json.Marshal(openAIError{Error: d})
	b = append(b, '\n')
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	c.w.WriteHeader(status)
	n, _ := c.w.Write(b)
	c.respBytes = int64(n)
}

// serveOpenAI serves the OpenAI-compatible routes.
func (g *Gateway) serveOpenAI(w http.ResponseWriter, r *http.Request) {
	c := &llmCall{g: g, w: w, r: r, start: g.now()}
	c.rid = requestID(r)
	h := w.Header()
	h["X-Request-Id"] = []string{c.rid}
	if v := r.Header[HeaderClientRequestID]; len(v) > 0 && validRequestID(v[0]) {
		h[HeaderClientRequestID] = v[:1]
	}
	g.llmServe(c)
	c.finish()
	if c.abort {
		// Without this a stream cut by its backend would end like a
		// complete one.
		panic(http.ErrAbortHandler)
	}
}

// splitOpenAIPath parses /openai/v1/{op}, /openai/deployments/{d}/{op} and
// /openai/v1/models[/{id}], with an optional /w/{ws} in front.
func splitOpenAIPath(p string) (ws, deployment, op string, ok bool) {
	ws = "default"
	if strings.HasPrefix(p, "/w/") {
		rest := p[len("/w/"):]
		i := strings.IndexByte(rest, '/')
		if i <= 0 {
			return "", "", "", false
		}
		ws, p = rest[:i], rest[i:]
		if u, err := url.PathUnescape(ws); err == nil {
			ws = u
		}
	}
	if rest, ok := strings.CutPrefix(p, "/openai/v1/"); ok {
		return ws, "", rest, rest != ""
	}
	if rest, ok := strings.CutPrefix(p, "/openai/deployments/"); ok {
		d, op, found := strings.Cut(rest, "/")
		if !found || d == "" || op == "" {
			return "", "", "", false
		}
		if u, err := url.PathUnescape(d); err == nil {
			d = u
		}
		return ws, d, op, true
	}
	return "", "", "", false
}

func (g *Gateway) llmServe(c *llmCall) {
	r := c.r
	ws, deployment, op, ok := splitOpenAIPath(r.URL.EscapedPath())
	if !ok {
		c.fail(http.StatusNotFound, "invalid_request_error", "not_found", "Unknown request URL: "+r.Method+" "+r.URL.Path+". Use /openai/v1/chat/completions, /openai/v1/completions, /openai/v1/embeddings or /openai/v1/models.", 0)
		return
	}
	c.ws, c.op = ws, op
	c.azure = deployment != ""
	c.apiVer = r.URL.Query().Get("api-version")

	token := credential(r.Header)
	if token == "" {
		c.fail(http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "You didn't provide an API key. Send it as Authorization: Bearer <key> or api-key: <key>.", 0)
		return
	}
	if g.auth == nil {
		c.fail(http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "Incorrect API key provided.", 0)
		return
	}
	p, k, err := g.auth.Authorize(r.Context(), token, ws)
	switch {
	case err == nil:
		c.principal, c.keyID = p, k
	case errors.Is(err, ErrForbidden):
		c.fail(http.StatusForbidden, "permission_denied", "permission_denied", "The API key may not invoke models in workspace "+ws+".", 0)
		return
	case errors.Is(err, ErrUnauthenticated):
		c.fail(http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "Incorrect API key provided.", 0)
		return
	default:
		g.log.Error("checking a platform credential failed", "request_id", c.rid, "error", err)
		c.fail(http.StatusServiceUnavailable, "service_unavailable", "unavailable", "Cannot check the API key now; retry.", time.Second)
		return
	}
	lt := g.table.Load().llm
	c.team = lt.wsTeams[ws]

	if !c.azure && (op == "models" || strings.HasPrefix(op, "models/")) {
		if r.Method != http.MethodGet {
			c.fail(http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", "Use GET for /models.", 0)
			return
		}
		g.llmModels(c, lt, strings.TrimPrefix(strings.TrimPrefix(op, "models"), "/"))
		return
	}
	switch op {
	case "chat/completions":
		c.kind = tokens.Chat
	case "completions":
		c.kind = tokens.Completion
	case "embeddings":
		c.kind = tokens.Embedding
	default:
		c.fail(http.StatusNotFound, "invalid_request_error", "not_found", "Unknown request URL: "+r.Method+" "+r.URL.Path+".", 0)
		return
	}
	if r.Method != http.MethodPost {
		c.fail(http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", "Use POST for /"+op+".", 0)
		return
	}
	if !c.readBody() {
		return
	}
	var head struct {
		Model         string          `json:"model"`
		Stream        bool            `json:"stream"`
		StreamOptions json.RawMessage `json:"stream_options"`
		Temperature   *float64        `json:"temperature"`
	}
	if err := json.Unmarshal(c.body, &head); err != nil {
		c.fail(http.StatusBadRequest, "invalid_request_error", "invalid_json", "We could not parse the JSON body of your request: "+err.Error(), 0)
		return
	}
	c.stream = head.Stream && c.kind != tokens.Embedding
	if len(head.StreamOptions) > 0 {
		var so struct {
			IncludeUsage bool `json:"include_usage"`
		}
		if json.Unmarshal(head.StreamOptions, &so) == nil {
			c.wantUsage = so.IncludeUsage
		}
	}
	name := head.Model
	if c.azure {
		name = deployment
	}
	if name == "" {
		c.fail(http.StatusBadRequest, "invalid_request_error", "missing_required_parameter", "you must provide a model parameter", 0)
		return
	}
	c.modelName = name
	m := lt.models[name]
	if m == nil {
		if c.azure {
			c.fail(http.StatusNotFound, "invalid_request_error", "DeploymentNotFound", "The API deployment for this resource does not exist.", 0)
		} else {
			c.fail(http.StatusNotFound, "invalid_request_error", "model_not_found", "The model `"+name+"` does not exist or you do not have access to it.", 0)
		}
		return
	}
	c.model = m
	est, err := tokens.EstimateRequest(c.kind, name, c.body)
	if err != nil {
		c.fail(http.StatusBadRequest, "invalid_request_error", "invalid_request", "Invalid request body: "+err.Error(), 0)
		return
	}
	c.est = est

	if !g.llmReserve(c, lt) {
		return
	}
	cacheable := m.cfg.CacheTTL > 0 && !c.stream && (m.cfg.CacheNonZeroTemperature || (head.Temperature != nil && *head.Temperature == 0))
	var ckey string
	if cacheable && g.llmCache != nil {
		ckey = cacheKey(name, op, c.body)
		if e, ok := g.llmCache.get(ckey, g.now()); ok {
			g.metrics.llmCacheHits.WithLabelValues(name, "hit").Inc()
			c.serveCached(e)
			return
		}
		g.metrics.llmCacheHits.WithLabelValues(name, "miss").Inc()
	}
	if mm := m.mirror; mm != nil && g.intn(100) < m.cfg.MirrorPercent {
		g.llmMirror(c, mm)
	}
	g.llmRoute(c, ckey)
}

func (c *llmCall) readBody() bool {
	g := c.g
	body, n, problem, err := readRequestBody(c.r, g.maxBody)
	c.reqBytes = n
	switch {
	case problem == bodyTooLarge:
		c.fail(http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large", "Request body over the limit of "+strconv.FormatInt(g.maxBody, 10)+" bytes.", 0)
		return false
	case problem == bodyCallerGone:
		c.status, c.errMsg = StatusClientClosed, "caller went away while sending the body"
		return false
	case problem == bodyUnreadable:
		c.fail(http.StatusBadRequest, "invalid_request_error", "invalid_body", "Reading the request body: "+err.Error(), 0)
		return false
	case n == 0:
		c.fail(http.StatusBadRequest, "invalid_request_error", "invalid_json", "The request body is empty; send a JSON object.", 0)
		return false
	}
	c.body = body
	return true
}

// llmModels answers GET /models and /models/{id} in OpenAI's shape.
func (g *Gateway) llmModels(c *llmCall, lt *llmTable, id string) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	var v any
	if id != "" {
		if lt.models[id] == nil {
			c.fail(http.StatusNotFound, "invalid_request_error", "model_not_found", "The model `"+id+"` does not exist or you do not have access to it.", 0)
			return
		}
		v = model{ID: id, Object: "model", OwnedBy: "plinth"}
	} else {
		list := struct {
			Object string  `json:"object"`
			Data   []model `json:"data"`
		}{Object: "list", Data: []model{}}
		for _, n := range lt.names {
			list.Data = append(list.Data, model{ID: n, Object: "model", OwnedBy: "plinth"})
		}
		v = list
	}
	b, _ := json.Marshal(v)
	c.w.Header()["Content-Type"] = jsonContentType
	c.status = http.StatusOK
	n, _ := c.w.Write(b)
	c.respBytes = int64(n)
}

// tryResult is how one try at a backend ended.
type tryResult int

const (
	tryAnswered    tryResult = iota // the caller has its answer (or left)
	tryRateLimited                  // 429: the backend is cooled, go on
	tryFailed                       // 5xx, timeout or connection failure: counts against the breaker
)

// llmRoute tries the model's backends: the lowest priority group first,
// by weight inside a group, moving on after a 429 (spillover) or a
// failure, with backoff between failures, until one answers or the
// attempts or the deadline run out.
func (g *Gateway) llmRoute(c *llmCall, ckey string) {
	m := c.model
	ctx := c.r.Context()
	deadline := c.start.Add(2 * DefaultLLMTimeout)
	tried := map[*llmBackend]bool{}
	var lastStatus int
	var lastMsg string
	var coolest time.Duration
	failures, skips := 0, 0
	for attempt := 0; attempt < maxLLMAttempts; attempt++ {
		now := g.now()
		var t llmTarget
		found := false
		for gi, grp := range m.groups {
			if t, found = pickTarget(grp, tried, now, g.intn); found {
				c.spillover = gi > 0
				break
			}
		}
		if !found && failures > 0 {
			// Every backend was tried; those that failed (not those that
			// are rate limited or broken) get another try after backoff.
			clear(tried)
			for gi, grp := range m.groups {
				if t, found = pickTarget(grp, tried, now, g.intn); found {
					c.spillover = gi > 0
					break
				}
			}
		}
		if !found {
			break
		}
		if !t.b.st.admit(now) || !g.backendQuota(c, t.b) {
			// Lost the breaker's probe to another call, or the backend's
			// own quota is spent: like a 429 from it, go on to the next.
			t.b.st.released()
			tried[t.b] = true
			lastStatus, lastMsg = http.StatusTooManyRequests, "backend "+t.b.cfg.Name+" is out of quota"
			if coolest == 0 {
				coolest = time.Second
			}
			if skips++; skips > 2*maxLLMAttempts {
				break
			}
			attempt--
			continue
		}
		tried[t.b] = true
		if failures > 0 {
			backoff := time.Duration(float64(50*time.Millisecond) * math.Pow(2, float64(failures-1)) * (0.5 + g.float()))
			if g.now().Add(backoff).After(deadline) {
				t.b.st.released()
				break
			}
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				t.b.st.released()
				c.status, c.errMsg = StatusClientClosed, "caller went away"
				return
			}
		}
		if attempt > 0 {
			c.retries++
			g.metrics.llmRetries.WithLabelValues(m.cfg.Name, t.b.cfg.Name).Inc()
		}
		res, retryAfter, status, msg := g.llmTry(c, t, ckey)
		switch res {
		case tryAnswered:
			return
		case tryRateLimited:
			t.b.st.released()
			if coolest == 0 || retryAfter < coolest {
				coolest = retryAfter
			}
		case tryFailed:
			failures++
			if t.b.st.failed(g.now()) {
				g.log.Warn("LLM backend failing; circuit breaker open", "backend", t.b.cfg.Name, "cooldown", breakerCooldown)
			}
		}
		lastStatus, lastMsg = status, msg
		c.backend = t.b
		if ctx.Err() != nil {
			c.status, c.errMsg = StatusClientClosed, "caller went away"
			return
		}
	}
	c.spillover = false
	switch {
	case lastStatus == http.StatusTooManyRequests && failures == 0:
		if coolest <= 0 {
			coolest = time.Second
		}
		c.fail(http.StatusTooManyRequests, "requests", "rate_limit_exceeded",
			"Every backend of model "+m.cfg.Name+" is at its rate limit. Please try again in "+coolest.String()+".", coolest)
	case lastStatus == 0:
		c.fail(http.StatusServiceUnavailable, "service_unavailable", "no_backend_available",
			"No backend of model "+m.cfg.Name+" can take calls now (all are rate limited or failing); retry later.", 5*time.Second)
	default:
		c.fail(http.StatusBadGateway, "api_error", "upstream_error",
			"No backend of model "+m.cfg.Name+" answered: "+lastMsg, time.Second)
	}
}

// llmTry sends the call to one backend. It writes to the caller only when
// the backend answered with something the caller should see.
func (g *Gateway) llmTry(c *llmCall, t llmTarget, ckey string) (res tryResult, retryAfter time.Duration, status int, msg string) {
	b := t.b
	req, err := g.llmRequest(c, t, false)
	if err != nil {
		return tryFailed, 0, http.StatusBadGateway, err.Error()
	}
	began := g.now()
	ctx := c.r.Context()
	resp, err := g.up.send(ctx, req, time.Now().Add(b.timeout))
	if err != nil {
		if ctx.Err() != nil {
			c.status, c.errMsg = StatusClientClosed, "caller went away"
			return tryAnswered, 0, 0, ""
		}
		var ue *upError
		if errors.As(err, &ue) && ue.timeout {
			return tryFailed, 0, http.StatusGatewayTimeout, "backend " + b.cfg.Name + " timed out: " + err.Error()
		}
		return tryFailed, 0, http.StatusBadGateway, "backend " + b.cfg.Name + ": " + err.Error()
	}
	defer resp.Close()
	resp.renewEach(b.timeout)
	switch {
	case resp.status == http.StatusTooManyRequests:
		ra := retryAfterOf(resp.header)
		b.st.coolUntil.Store(g.now().Add(ra).UnixNano())
		io.Copy(io.Discard, io.LimitReader(resp, 1<<20))
		g.metrics.llmUpstream.WithLabelValues(c.modelName, b.cfg.Name, "429").Inc()
		return tryRateLimited, ra, http.StatusTooManyRequests, "backend " + b.cfg.Name + " is rate limited"
	case resp.status >= 500 || resp.status == http.StatusUnauthorized || resp.status == http.StatusForbidden || resp.status == http.StatusRequestTimeout:
		body, _ := io.ReadAll(io.LimitReader(resp, 4<<10))
		g.metrics.llmUpstream.WithLabelValues(c.modelName, b.cfg.Name, strconv.Itoa(resp.status)).Inc()
		why := "answered " + strconv.Itoa(resp.status)
		if resp.status == http.StatusUnauthorized || resp.status == http.StatusForbidden {
			why += " (the backend refused the gateway's credential)"
		}
		return tryFailed, 0, resp.status, "backend " + b.cfg.Name + " " + why + ": " + upstreamMessage(body)
	}
	// The backend answered; from here the caller sees it.
	if b.st.succeeded() {
		g.log.Info("LLM backend answering again; circuit breaker closed", "backend", b.cfg.Name)
	}
	g.metrics.llmUpstream.WithLabelValues(c.modelName, b.cfg.Name, strconv.Itoa(resp.status)).Inc()
	c.backend = b
	h := c.w.Header()
	for _, k := range []string{"Content-Type", "Cache-Control", "Openai-Processing-Ms", "Openai-Version", "Openai-Model"} {
		if v := resp.header[k]; len(v) > 0 {
			h[k] = v
		}
	}
	h[HeaderBackend] = []string{b.cfg.Name}
	if c.spillover {
		h[HeaderSpillover] = []string{"true"}
	}
	c.status = resp.status
	sse := strings.HasPrefix(resp.header.Get("Content-Type"), "text/event-stream")
	if c.stream && sse && resp.status < 300 {
		c.w.WriteHeader(resp.status)
		c.relayStream(resp, began)
		return tryAnswered, 0, resp.status, ""
	}
	body, err := io.ReadAll(io.LimitReader(resp, maxLLMResponse+1))
	if err != nil || len(body) > maxLLMResponse {
		if err == nil {
			err = errors.New("answer over 64 MiB")
		}
		c.backend = b
		c.fail(http.StatusBadGateway, "api_error", "upstream_error", "The backend's answer could not be read: "+err.Error(), 0)
		return tryAnswered, 0, http.StatusBadGateway, ""
	}
	if resp.status < 300 {
		c.settleFromBody(body)
		if ckey != "" && g.llmCache != nil {
			g.llmCache.put(ckey, &cacheEntry{contentType: resp.header.Get("Content-Type"), body: body}, g.now().Add(c.model.cfg.CacheTTL))
		}
	}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	c.w.WriteHeader(resp.status)
	n, _ := c.w.Write(body)
	c.respBytes = int64(n)
	return tryAnswered, 0, resp.status, ""
}

// llmRequest builds the request to backend t. mirror copies go without
// the caller's stream options changes.
func (g *Gateway) llmRequest(c *llmCall, t llmTarget, mirror bool) (*upRequest, error) {
	b := t.b
	body := c.body
	// The backend's model name, and usage reports on streams (which the
	// gateway needs to meter; they are removed from the caller's stream
	// when the caller did not ask for them).
	needModel := !c.azure && b.cfg.Style != StyleAzureOpenAI && t.model != c.modelName
	needUsage := c.stream && !c.wantUsage
	if needModel || needUsage || (c.azure && b.cfg.Style != StyleAzureOpenAI) {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, err
		}
		if needModel || (c.azure && b.cfg.Style != StyleAzureOpenAI) {
			mb, _ := json.Marshal(t.model)
			m["model"] = mb
		}
		if needUsage {
			var so map[string]json.RawMessage
			if raw := m["stream_options"]; len(raw) > 0 && string(raw) != "null" {
				json.Unmarshal(raw, &so)
			}
			if so == nil {
				so = map[string]json.RawMessage{}
			}
			so["include_usage"] = json.RawMessage("true")
			m["stream_options"], _ = json.Marshal(so)
		}
		nb, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		body = nb
	}
	// The backend's answer is parsed for usage, so it must come
	// uncompressed; the caller's OpenAI account headers mean nothing to it.
	fwd := newForwarding(c.r, c.rid)
	fwd.mirror = mirror
	fwd.dropped = append(fwd.dropped, "Accept-Encoding", "Openai-Organization", "Openai-Project", "Openai-Beta")
	req := &upRequest{method: http.MethodPost, body: body, fwd: fwd}
	switch b.cfg.Style {
	case StyleEndpoint:
		tbl := g.table.Load()
		ep := tbl.endpoint(b.ws, b.ep)
		if ep == nil {
			return nil, errors.New("backend " + b.cfg.Name + ": endpoint " + b.cfg.BaseURL + " does not exist")
		}
		rt := ep.pick(g.intn)
		if rt == nil || len(rt.replicas) == 0 {
			return nil, errors.New("backend " + b.cfg.Name + ": endpoint " + b.cfg.BaseURL + " has no ready replicas")
		}
		rep := rt.pickReplica(nil, g.now().UnixNano())
		req.addr, req.path = rep.addr, "/v1/"+c.op
		if b.cfg.Credential != "" {
			req.extra = [][2]string{{"Authorization", "Bearer " + b.cfg.Credential}}
		}
	case StyleAzureOpenAI:
		ver := c.apiVer
		if ver == "" {
			ver = b.cfg.APIVersion
		}
		req.addr, req.host, req.tls = b.addr, b.host, b.tls
		req.path = b.basePath + "/openai/deployments/" + t.model + "/" + c.op
		req.rawQuery = "api-version=" + url.QueryEscape(ver)
		if b.cfg.Credential != "" {
			req.extra = [][2]string{{"Api-Key", b.cfg.Credential}}
		}
	default:
		req.addr, req.host, req.tls = b.addr, b.host, b.tls
		req.path = b.basePath + "/" + c.op
		if b.cfg.Credential != "" {
			req.extra = [][2]string{{"Authorization", "Bearer " + b.cfg.Credential}}
		}
	}
	return req, nil
}

// retryAfterOf reads retry-after-ms (Azure OpenAI, OpenAI) or
// Retry-After (seconds or an HTTP date); default one second.
func retryAfterOf(h http.Header) time.Duration {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	if v := h.Get("Retry-After"); v != "" {
		if s, err := strconv.Atoi(v); err == nil && s > 0 {
			return time.Duration(s) * time.Second
		}
		if t, err := http.ParseTime(v); err == nil {
			if d := time.Until(t); d > 0 {
				return d
			}
		}
	}
	return time.Second
}

// upstreamMessage is the message of an OpenAI error body, or the start of
// the body.
func upstreamMessage(body []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	if len(body) > 200 {
		body = body[:200]
	}
	return strings.TrimSpace(string(body))
}

// usageBody is the part of an answer that reports usage.
type usageBody struct {
	Usage *struct {
		PromptTokens     int64 `json:"prompt_tokens"`
		CompletionTokens int64 `json:"completion_tokens"`
	} `json:"usage"`
	Choices []struct {
		Message *struct {
			Content string `json:"content"`
		} `json:"message"`
		Text  string `json:"text"`
		Delta *struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
}

// settleFromBody takes the usage from a whole answer, or estimates it from
// the answer's text when the backend reported none.
func (c *llmCall) settleFromBody(body []byte) {
	var usage struct {
		Usage *struct {
			PromptTokens     int64 `json:"prompt_tokens"`
			CompletionTokens int64 `json:"completion_tokens"`
		} `json:"usage"`
	}
	if json.Unmarshal(body, &usage) != nil {
		return
	}
	if u := usage.Usage; u != nil {
		c.prompt, c.completion, c.usageKnown = u.PromptTokens, u.CompletionTokens, true
		return
	}
	var u usageBody
	if json.Unmarshal(body, &u) != nil {
		return
	}
	enc := tokens.ForModel(c.modelName)
	n := 0
	for _, ch := range u.Choices {
		if ch.Message != nil {
			n += enc.Count(ch.Message.Content)
		}
		n += enc.Count(ch.Text)
	}
	c.prompt, c.completion = int64(c.est.Prompt), int64(n)
}

// serveCached answers from the response cache.
func (c *llmCall) serveCached(e *cacheEntry) {
	h := c.w.Header()
	h["Content-Type"] = []string{e.contentType}
	h["Content-Length"] = []string{strconv.Itoa(len(e.body))}
	h[HeaderCache] = []string{"hit"}
	c.status, c.cached = http.StatusOK, true
	c.usageKnown = true // nothing was used
	c.w.WriteHeader(http.StatusOK)
	n, _ := c.w.Write(e.body)
	c.respBytes = int64(n)
}

// llmMirror sends a shadow copy of the call to model mm's first usable
// backend, in the background; its answer is discarded and metered as a
// mirror copy.
func (g *Gateway) llmMirror(c *llmCall, mm *llmModel) {
	now := g.now()
	var t llmTarget
	found := false
	for _, grp := range mm.groups {
		if t, found = pickTarget(grp, nil, now, g.intn); found {
			break
		}
	}
	if !found {
		g.metrics.llmMirror.WithLabelValues(mm.cfg.Name, "dropped").Inc()
		return
	}
	select {
	case g.mirrorSem <- struct{}{}:
	default:
		g.metrics.llmMirror.WithLabelValues(mm.cfg.Name, "dropped").Inc()
		return
	}
	mc := *c
	mc.modelName, mc.model = mm.cfg.Name, mm
	mc.azure = false
	req, err := g.llmRequest(&mc, t, true)
	if err != nil {
		<-g.mirrorSem
		g.metrics.llmMirror.WithLabelValues(mm.cfg.Name, "error").Inc()
		return
	}
	rec := Record{Time: c.start, Workspace: c.ws, Team: c.team, Model: mm.cfg.Name, Backend: t.b.cfg.Name,
		Principal: c.principal, KeyID: c.keyID, RequestID: c.rid, Mirrored: true, RequestBytes: int64(len(req.body))}
	model := mm.cfg.Name
	go func() {
		defer func() { <-g.mirrorSem }()
		began := time.Now()
		resp, err := g.up.send(context.Background(), req, began.Add(t.b.timeout))
		result := "ok"
		if err != nil {
			result, rec.Status = "error", http.StatusBadGateway
		} else {
			body, rerr := io.ReadAll(io.LimitReader(resp, maxLLMResponse))
			resp.Close()
			rec.Status, rec.ResponseBytes = resp.status, int64(len(body))
			if resp.status >= 400 || rerr != nil {
				result = "error"
			} else if !mc.stream {
				var u usageBody
				if json.Unmarshal(body, &u) == nil && u.Usage != nil {
					rec.PromptTokens, rec.CompletionTokens = u.Usage.PromptTokens, u.Usage.CompletionTokens
					rec.Cost = costOf(t.b.cfg, rec.PromptTokens, rec.CompletionTokens)
				}
			}
		}
		rec.Latency = time.Since(began)
		g.metrics.llmMirror.WithLabelValues(model, result).Inc()
		if g.meter != nil {
			g.meter.Add(rec)
		}
	}()
}

func costOf(b *LLMBackend, prompt, completion int64) float64 {
	return float64(prompt)/1000*b.InputCostPer1K + float64(completion)/1000*b.OutputCostPer1K
}

// finish settles the reservation, meters, counts and logs the call.
func (c *llmCall) finish() {
	g := c.g
	lat := g.now().Sub(c.start)
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if c.backend != nil && c.status < 400 && !c.cached {
		c.cost = costOf(c.backend.cfg, c.prompt, c.completion)
	}
	if c.reserved != nil {
		g.llmSettle(c)
	}
	backend := ""
	if c.backend != nil {
		backend = c.backend.cfg.Name
	}
	g.metrics.llmRequests.WithLabelValues(c.modelName, backend, statusClass(c.status)).Inc()
	g.metrics.llmLatency.WithLabelValues(c.modelName).Observe(lat.Seconds())
	if c.prompt > 0 {
		g.metrics.llmTokens.WithLabelValues(c.modelName, backend, "prompt").Add(float64(c.prompt))
	}
	if c.completion > 0 {
		g.metrics.llmTokens.WithLabelValues(c.modelName, backend, "completion").Add(float64(c.completion))
	}
	if c.spillover && c.status < 400 {
		g.metrics.llmSpillovers.WithLabelValues(c.modelName, backend).Inc()
	}
	if c.cost > 0 {
		g.metrics.llmCost.WithLabelValues(c.modelName, backend).Add(c.cost)
	}
	if c.model != nil && g.meter != nil {
		g.meter.Add(Record{
			Time: c.start, Workspace: c.ws, Team: c.team, Principal: c.principal, KeyID: c.keyID,
			Status: c.status, Latency: lat, RequestBytes: c.reqBytes, ResponseBytes: c.respBytes, RequestID: c.rid,
			Model: c.modelName, Backend: backend, PromptTokens: c.prompt, CompletionTokens: c.completion,
			Cost: c.cost, Spillover: c.spillover && c.status < 400, Cached: c.cached,
		})
	}
	c.log(lat, backend)
}

func statusClass(s int) string {
	switch {
	case s == StatusClientClosed:
		return "499"
	case s >= 500:
		return "5xx"
	case s >= 400:
		return "4xx"
	case s >= 300:
		return "3xx"
	}
	return "2xx"
}

func (c *llmCall) log(lat time.Duration, backend string) {
	level := slog.LevelInfo
	if c.status >= 500 {
		level = slog.LevelError
	}
	ctx := c.r.Context()
	l := c.g.log
	if !l.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("request_id", c.rid), slog.String("method", c.r.Method), slog.String("path", c.r.URL.Path),
		slog.String("workspace", c.ws), slog.String("team", c.team), slog.String("model", c.modelName),
		slog.String("backend", backend), slog.Int("status", c.status), slog.Duration("latency", lat),
		slog.Int64("prompt_tokens", c.prompt), slog.Int64("completion_tokens", c.completion),
		slog.Float64("cost", c.cost), slog.Bool("stream", c.stream), slog.String("remote", c.r.RemoteAddr),
		slog.String("principal", c.principal), slog.String("key_id", c.keyID),
	}
	if c.spillover {
		attrs = append(attrs, slog.Bool("spillover", true))
	}
	if c.cached {
		attrs = append(attrs, slog.Bool("cached", true))
	}
	if c.retries > 0 {
		attrs = append(attrs, slog.Int("retries", c.retries))
	}
	if c.ttft > 0 {
		attrs = append(attrs, slog.Duration("time_to_first_token", c.ttft))
	}
	if c.errMsg != "" {
		attrs = append(attrs, slog.String("error", c.errMsg))
	}
	l.LogAttrs(ctx, level, "llm call", attrs...)
}
