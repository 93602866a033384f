package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/plinth-dev/plinth/internal/observe"
	"github.com/plinth-dev/plinth/internal/ratelimit"
)

// Headers the gateway reads or writes.
const (
	// HeaderDeployment pins a call to one deployment; the response names
	// the deployment that answered in it and in HeaderAzureDeployment.
	HeaderDeployment = "X-Plinth-Deployment"
	// HeaderAzureDeployment is Azure ML's equivalent of HeaderDeployment.
	HeaderAzureDeployment = "Azureml-Model-Deployment"
	// HeaderModelStatus carries the model's own status on a 424.
	HeaderModelStatus = "X-Plinth-Model-Status"
	// HeaderAzureModelStatus is Azure ML's equivalent of HeaderModelStatus.
	HeaderAzureModelStatus = "Ms-Azureml-Model-Error-Statuscode"
	// HeaderClientRequestID is echoed and logged (Azure's x-ms-client-request-id).
	HeaderClientRequestID = "X-Ms-Client-Request-Id"
	// HeaderMirror is set on mirror copies sent to a model.
	HeaderMirror = "X-Plinth-Mirror"
)

// StatusClientClosed is metered and logged when the caller went away
// before the answer (nginx's 499); nobody receives it.
const StatusClientClosed = 499

var (
	jsonContentType = []string{"application/json"}
	wwwAuthenticate = []string{`Bearer realm="plinth"`}
)

// call is one request on its way through the gateway.
type call struct {
	g         *Gateway
	w         http.ResponseWriter
	r         *http.Request
	start     time.Time
	rid, crid string
	ws, name  string
	sub       string // escaped path after the endpoint name, without its "/"
	ep        *endpoint
	rt        *route
	rep       *replica
	principal string
	keyID     string
	status    int
	reqBytes  int64
	respBytes int64
	retries   int
	pinned    bool
	abort     bool   // cut the caller's connection (a response broke mid-way)
	errMsg    string // why it failed, for the log
	body      []byte
	capture   bool
	captured  []byte
}

var copyPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// ServeHTTP serves one scoring call; see the package documentation for
// the steps.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &call{g: g, w: w, r: r, start: g.now()}
	c.rid = requestID(r)
	h := w.Header()
	h["X-Request-Id"] = []string{c.rid}
	if v := r.Header[HeaderClientRequestID]; len(v) > 0 && validRequestID(v[0]) {
		c.crid = v[0]
		h[HeaderClientRequestID] = v[:1]
	}
	g.serve(c)
	c.finish()
	if c.abort {
		// Without this a truncated chunked response would look complete.
		panic(http.ErrAbortHandler)
	}
}

func (g *Gateway) serve(c *call) {
	r := c.r
	ws, name, sub, ok := splitPath(r.URL.EscapedPath())
	if !ok {
		c.fail(http.StatusNotFound, "not_found", "no such route: call /endpoints/{name}/score or /w/{workspace}/endpoints/{name}/score", 0)
		return
	}
	c.ws, c.name, c.sub = ws, name, sub
	tbl := g.table.Load()
	ep := tbl.endpoint(ws, name)
	c.ep = ep

	// Authenticate before saying whether the endpoint exists.
	token := credential(r.Header)
	if token == "" {
		c.fail(http.StatusUnauthorized, "unauthenticated", "no credential: send Authorization: Bearer <key> or api-key: <key>", 0)
		return
	}
	var key *endpointKey
	if ep != nil && !ep.tokenOnly {
		key = ep.matchKey(token)
	}
	if key != nil {
		c.principal, c.keyID = EndpointKeyPrincipal, key.id
	} else {
		if g.auth == nil {
			c.fail(http.StatusUnauthorized, "unauthenticated", "the credential is not valid", 0)
			return
		}
		p, k, err := g.auth.Authorize(r.Context(), token, ws)
		switch {
		case err == nil:
			c.principal, c.keyID = p, k
		case errors.Is(err, ErrForbidden):
			c.fail(http.StatusForbidden, "permission_denied", "the credential may not invoke endpoints in workspace "+ws, 0)
			return
		case errors.Is(err, ErrUnauthenticated):
			c.fail(http.StatusUnauthorized, "unauthenticated", "the credential is not valid", 0)
			return
		default:
			g.log.Error("checking a platform credential failed", "request_id", c.rid, "error", err)
			c.fail(http.StatusServiceUnavailable, "unavailable", "cannot check the credential now; retry", time.Second)
			return
		}
	}
	if ep == nil {
		c.fail(http.StatusNotFound, "not_found", "endpoint "+name+" not found in workspace "+ws, 0)
		return
	}

	if !g.rateLimit(c, ep, key) {
		return
	}
	if !g.readBody(c) {
		return
	}

	// Choose the deployment.
	var rt *route
	pin := r.Header.Get(HeaderDeployment)
	if pin == "" {
		pin = r.Header.Get(HeaderAzureDeployment)
	}
	if pin != "" {
		c.pinned = true
		rt = ep.deployments[pin]
		if rt == nil {
			c.fail(http.StatusNotFound, "not_found", "deployment "+pin+" not found in endpoint "+name, 0)
			return
		}
	} else {
		rt = ep.pick(g.intn)
		if rt == nil {
			c.fail(http.StatusNotFound, "not_found", "no deployment of endpoint "+name+" has traffic", 0)
			return
		}
	}
	c.rt = rt

	rt = g.admit(c, rt)
	if rt == nil {
		return
	}
	c.rt = rt
	defer rt.st.inflight.Add(-1)

	out := c.forwarding()
	if !c.pinned {
		for _, m := range rt.ep.mirrors {
			if m.rt != rt && g.intn(100) < m.pct {
				g.mirror(c, m.rt, c.body, out)
			}
		}
	}
	if rt.capture > 0 && g.capture != nil && g.float() < rt.capture {
		c.capture = true
	}
	g.proxy(c, rt, c.body, out)
}

// rateLimit applies the key and team limits; false means refused (429).
func (g *Gateway) rateLimit(c *call, ep *endpoint, key *endpointKey) bool {
	if !g.counterLocal && (ep.rateLimit > 0 || ep.teamLimit > 0) {
		return g.sharedRateLimit(c, ep, key)
	}
	var keyBucket string
	var keySec int64
	if ep.rateLimit > 0 {
		if key != nil {
			keyBucket = key.limitKey
		} else {
			id := c.keyID
			if id == "" {
				id = "principal:" + c.principal
			}
			keyBucket = ep.platformPrefix + id
		}
		ok, wait, sec := g.limiter.allow(keyBucket, ep.rateLimit, c.start)
		if !ok {
			ep.m.limitedKey.Inc()
			c.fail(http.StatusTooManyRequests, "rate_limit_exceeded",
				"rate limit of "+strconv.Itoa(ep.rateLimit)+" requests per minute per key exceeded for endpoint "+ep.name, wait)
			return false
		}
		keySec = sec
	}
	if ep.teamLimit > 0 {
		ok, wait, _ := g.limiter.allow(ep.teamLimitKey, ep.teamLimit, c.start)
		if !ok {
			if keyBucket != "" {
				g.limiter.refund(keyBucket, keySec)
			}
			ep.m.limitedTeam.Inc()
			c.fail(http.StatusTooManyRequests, "rate_limit_exceeded",
				"team rate limit of "+strconv.Itoa(ep.teamLimit)+" requests per minute exceeded for team "+ep.team, wait)
			return false
		}
	}
	return true
}

// sharedRateLimit is rateLimit on counters shared with other gateways
// (Redis): both limits are checked and counted in one atomic step.
func (g *Gateway) sharedRateLimit(c *call, ep *endpoint, key *endpointKey) bool {
	var keyBucket string
	if key != nil {
		keyBucket = key.limitKey
	} else {
		id := c.keyID
		if id == "" {
			id = "principal:" + c.principal
		}
		keyBucket = ep.platformPrefix + id
	}
	limits := []ratelimit.Limit{
		{Key: "ep:" + keyBucket, Max: int64(ep.rateLimit), Amount: 1, Window: time.Minute},
		{Key: "ep:" + ep.teamLimitKey, Max: int64(ep.teamLimit), Amount: 1, Window: time.Minute},
	}
	d, err := g.counter.Reserve(c.r.Context(), c.start, limits)
	if err != nil {
		// As for LLM limits: availability over strictness, counted.
		g.metrics.llmLimitErrs.Inc()
		g.log.Warn("endpoint rate limits could not be checked; call let through", "request_id", c.rid, "error", err)
		return true
	}
	if d.Allowed {
		return true
	}
	if d.Refused == 0 {
		ep.m.limitedKey.Inc()
		c.fail(http.StatusTooManyRequests, "rate_limit_exceeded",
			"rate limit of "+strconv.Itoa(ep.rateLimit)+" requests per minute per key exceeded for endpoint "+ep.name, d.RetryAfter)
	} else {
		ep.m.limitedTeam.Inc()
		c.fail(http.StatusTooManyRequests, "rate_limit_exceeded",
			"team rate limit of "+strconv.Itoa(ep.teamLimit)+" requests per minute exceeded for team "+ep.team, d.RetryAfter)
	}
	return false
}

// readBody reads the whole request body, so it can be retried and
// mirrored; false means refused (413, or 400 when it cannot be read).
func (g *Gateway) readBody(c *call) bool {
	body, n, problem, err := readRequestBody(c.r, g.maxBody)
	c.reqBytes = n
	switch problem {
	case bodyTooLarge:
		c.fail(http.StatusRequestEntityTooLarge, "request_too_large", "request body over the limit of "+strconv.FormatInt(g.maxBody, 10)+" bytes", 0)
		return false
	case bodyCallerGone:
		c.status, c.errMsg = StatusClientClosed, "caller went away while sending the body"
		return false
	case bodyUnreadable:
		c.fail(http.StatusBadRequest, "invalid_argument", "reading the request body: "+err.Error(), 0)
		return false
	}
	c.body = body
	return true
}

// bodyProblem says why a request body was not read.
type bodyProblem int

const (
	bodyOK bodyProblem = iota
	bodyTooLarge
	bodyCallerGone
	bodyUnreadable
)

// readRequestBody reads a whole request body of at most max bytes, for
// both data planes; each answers its problems in its own error format.
// The body is never pooled: the upstream client may still read it after
// a response.
func readRequestBody(r *http.Request, max int64) ([]byte, int64, bodyProblem, error) {
	if r.ContentLength > max {
		return nil, 0, bodyTooLarge, nil
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, 0, bodyOK, nil
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + 1) // +1: EOF is seen without growing
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, max+1))
	switch {
	case n > max:
		return nil, n, bodyTooLarge, nil
	case err != nil && r.Context().Err() != nil:
		return nil, n, bodyCallerGone, err
	case err != nil:
		return nil, n, bodyUnreadable, err
	}
	return buf.Bytes(), n, bodyOK, nil
}

// admit takes an in-flight slot on the deployment, waiting for a cold
// start first when it has no replicas; nil means refused.
func (g *Gateway) admit(c *call, rt *route) *route {
	if len(rt.replicas) > 0 {
		if rt.st.inflight.Add(1) <= rt.limit {
			return rt
		}
		rt.st.inflight.Add(-1)
		c.tooManyPending(rt)
		return nil
	}
	if !rt.scaleToZero {
		c.fail(http.StatusServiceUnavailable, "unavailable", "deployment "+rt.name+" has no ready replicas", 5*time.Second)
		return nil
	}
	return g.coldStart(c, rt)
}

// coldStart wakes a scaled-to-zero deployment (once per burst) and waits,
// counted as queued, for a snapshot with replicas and then for a slot,
// up to the deployment's max queue wait.
func (g *Gateway) coldStart(c *call, rt *route) *route {
	st := rt.st
	if st.waking.CompareAndSwap(false, true) && g.waker != nil {
		g.waker.Wake(c.ws, c.name, rt.name)
	}
	st.queued.Add(1)
	defer st.queued.Add(-1)
	deadline := time.NewTimer(rt.queueWait)
	defer deadline.Stop()
	var poll *time.Timer
	defer func() {
		if poll != nil {
			poll.Stop()
		}
	}()
	tbl := g.table.Load()
	for {
		cur := tbl.route(c.ws, c.name, rt.name)
		if cur == nil {
			c.fail(http.StatusNotFound, "not_found", "deployment "+rt.name+" was removed", 0)
			return nil
		}
		rt = cur
		var pollC <-chan time.Time
		if len(rt.replicas) > 0 {
			if rt.st.inflight.Add(1) <= rt.limit {
				return rt
			}
			rt.st.inflight.Add(-1)
			if poll == nil {
				poll = time.NewTimer(5 * time.Millisecond)
			} else {
				poll.Reset(5 * time.Millisecond)
			}
			pollC = poll.C
		}
		select {
		case <-tbl.next:
			tbl = g.table.Load()
		case <-pollC:
		case <-deadline.C:
			if len(rt.replicas) > 0 {
				c.tooManyPending(rt)
				return nil
			}
			st.waking.Store(false) // the next call wakes it again
			c.fail(http.StatusServiceUnavailable, "unavailable",
				"deployment "+rt.name+" did not start within its max_queue_wait of "+rt.queueWait.String(), 10*time.Second)
			return nil
		case <-c.r.Context().Done():
			c.status, c.errMsg = StatusClientClosed, "caller went away while the deployment started"
			return nil
		}
	}
}

func (c *call) tooManyPending(rt *route) {
	rt.m.limitedConc.Inc()
	c.fail(http.StatusTooManyRequests, "too_many_pending_requests",
		"too many pending requests for deployment "+rt.name+": "+strconv.FormatInt(rt.limit, 10)+
			" in flight (2 × max_concurrent_requests_per_instance × ready replicas)", time.Second)
}

// outcome of one try.
type outcome int

const (
	answered  outcome = iota // the caller has an answer (or went away)
	retryable                // failed before the model answered: try another replica
)

// proxy sends the call to a replica, and to up to maxRetries others after
// connection-level failures, streaming the answer back.
func (g *Gateway) proxy(c *call, rt *route, body []byte, out *forwarding) {
	path, rawPath := upstreamPath(rt.scoringPath, c.sub)
	var triedArr [maxRetries + 1]*replica
	tried := triedArr[:0]
	var last error
	connectTimeout := false
	for attempt := 0; attempt <= maxRetries; attempt++ {
		rep := rt.pickReplica(tried, c.g.now().UnixNano())
		if rep == nil {
			break
		}
		tried = append(tried, rep)
		if attempt > 0 {
			c.retries++
			rt.m.retries.Inc()
		}
		res, ct, err := g.try(c, rt, rep, out, path, rawPath, body)
		if res == answered {
			return
		}
		last, connectTimeout = err, ct
		c.rep = rep
		g.log.Warn("replica failed before answering; trying another", "request_id", c.rid,
			"endpoint", rt.ep.key, "deployment", rt.name, "replica", rep.id, "attempt", attempt+1, "error", err)
	}
	if connectTimeout {
		c.fail(http.StatusGatewayTimeout, "upstream_timeout", "could not connect to a replica of deployment "+rt.name+" in time", time.Second)
	} else {
		c.fail(http.StatusBadGateway, "bad_gateway", "no replica of deployment "+rt.name+" answered: the connection failed", time.Second)
	}
	if last != nil {
		c.errMsg += ": " + last.Error()
	}
}

// try sends one copy of the call to rep. It reports retryable only when
// no byte of a response arrived and the failure was at the connection
// level, not a timeout; connectTimeout says whether it never connected in time.
func (g *Gateway) try(c *call, rt *route, rep *replica, out *forwarding, path, rawPath string, body []byte) (res outcome, connectTimeout bool, err error) {
	rep.st.outstanding.Add(1)
	defer rep.st.outstanding.Add(-1)
	ctx := c.r.Context()
	req := upRequest{method: c.r.Method, addr: rep.addr, path: path, rawPath: rawPath, rawQuery: c.r.URL.RawQuery, fwd: out, body: body}
	resp, err := g.up.send(ctx, &req, time.Now().Add(rt.timeout))
	if err != nil {
		var ue *upError
		isUp := errors.As(err, &ue)
		switch {
		case ctx.Err() != nil:
			c.status, c.errMsg = StatusClientClosed, "caller went away"
			c.rep = rep
			return answered, false, err
		case isUp && ue.stage == stageDial:
			rep.st.downUntil.Store(g.now().Add(ejectFor).UnixNano())
			return retryable, ue.timeout, err
		case isUp && ue.timeout:
			c.rep = rep
			c.fail(http.StatusRequestTimeout, "request_timeout",
				"the model did not answer within request_timeout_ms ("+strconv.FormatInt(rt.timeout.Milliseconds(), 10)+" ms)", 0)
			return answered, false, err
		case isUp && ue.connectionLost():
			rep.st.downUntil.Store(g.now().Add(ejectFor).UnixNano())
			return retryable, false, err
		default:
			c.rep = rep
			c.fail(http.StatusBadGateway, "bad_gateway", "the model's response could not be read", 0)
			c.errMsg += ": " + err.Error()
			return answered, false, err
		}
	}
	// From here on the model has answered: never retried.
	if rep.st.downUntil.Load() != 0 {
		rep.st.downUntil.Store(0)
	}
	c.rep = rep
	defer resp.Close()
	resp.renewEach(rt.timeout)
	status := resp.status
	h := c.w.Header()
	copyResponseHeader(h, resp.header)
	h[HeaderDeployment] = rt.nameHdr
	h[HeaderAzureDeployment] = rt.nameHdr
	if status >= 400 {
		ms := []string{strconv.Itoa(status)}
		h[HeaderModelStatus] = ms
		h[HeaderAzureModelStatus] = ms
		c.errMsg = "model answered " + ms[0]
		status = http.StatusFailedDependency
	}
	c.status = status
	c.w.WriteHeader(status)

	flush := resp.contentLength < 0 || strings.HasPrefix(resp.header.Get("Content-Type"), "text/event-stream")
	var flushFn func() error
	if flush {
		if f, ok := c.w.(http.Flusher); ok {
			flushFn = func() error { f.Flush(); return nil }
		} else {
			flushFn = http.NewResponseController(c.w).Flush
		}
	}
	bp := copyPool.Get().(*[]byte)
	defer copyPool.Put(bp)
	buf := *bp
	for {
		n, rerr := resp.Read(buf)
		if n > 0 {
			if c.capture && len(c.captured) < MaxCaptureBytes {
				c.captured = append(c.captured, buf[:min(n, MaxCaptureBytes-len(c.captured))]...)
			}
			wn, werr := c.w.Write(buf[:n])
			c.respBytes += int64(wn)
			if werr != nil {
				c.errMsg = "caller went away during the response"
				return answered, false, nil
			}
			if flushFn != nil && flushFn() != nil {
				flushFn = nil // cannot flush here: the server buffers
			}
		}
		if rerr == io.EOF {
			return answered, false, nil
		}
		if rerr != nil {
			if ctx.Err() != nil {
				c.errMsg = "caller went away during the response"
				return answered, false, nil
			}
			if isTimeout(rerr) {
				c.errMsg = "the model was silent for longer than request_timeout_ms during its response; connection cut"
			} else {
				c.errMsg = "the model's response broke off: " + rerr.Error()
			}
			c.abort = true
			return answered, false, nil
		}
	}
}

// isConnectionFailure reports a failure at the connection level before any
// response byte: refused, reset, or closed by the replica.
func isConnectionFailure(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "server closed idle connection") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection refused")
}

// mirror sends a copy of the call to mt in the background; it never
// blocks and drops the copy when the mirror is saturated.
func (g *Gateway) mirror(c *call, mt *route, body []byte, out *forwarding) {
	if len(mt.replicas) == 0 {
		mt.m.mirrorDropped.Inc()
		return
	}
	select {
	case g.mirrorSem <- struct{}{}:
	default:
		mt.m.mirrorDropped.Inc()
		return
	}
	if mt.st.inflight.Add(1) > mt.limit {
		mt.st.inflight.Add(-1)
		<-g.mirrorSem
		mt.m.mirrorDropped.Inc()
		return
	}
	rep := mt.pickReplica(nil, g.now().UnixNano())
	fwd := *out
	fwd.mirror = true
	path, rawPath := upstreamPath(mt.scoringPath, c.sub)
	method, rawQuery := c.r.Method, c.r.URL.RawQuery
	rec := Record{
		Time: c.start, Workspace: c.ep.ws, Team: c.ep.team, Endpoint: c.ep.name, Deployment: mt.name,
		Replica: rep.id, Principal: c.principal, KeyID: c.keyID, RequestID: c.rid, Mirrored: true,
		RequestBytes: int64(len(body)),
	}
	go func() {
		defer func() {
			mt.st.inflight.Add(-1)
			<-g.mirrorSem
		}()
		rep.st.outstanding.Add(1)
		defer rep.st.outstanding.Add(-1)
		began := time.Now()
		deadline := began.Add(mt.timeout)
		req := upRequest{method: method, addr: rep.addr, path: path, rawPath: rawPath, rawQuery: rawQuery, fwd: &fwd, body: body}
		resp, err := g.up.send(context.Background(), &req, deadline)
		switch {
		case err != nil:
			mt.m.mirrorError.Inc()
			rec.Status = http.StatusBadGateway
			if isTimeout(err) {
				rec.Status = http.StatusRequestTimeout
			}
		default:
			n, cerr := io.Copy(io.Discard, resp)
			resp.Close()
			rec.ResponseBytes = n
			rec.Status = resp.status
			if resp.status >= 400 {
				rec.Status = http.StatusFailedDependency
			}
			if resp.status >= 400 || cerr != nil {
				mt.m.mirrorError.Inc()
			} else {
				mt.m.mirrorOK.Inc()
			}
		}
		rec.Latency = time.Since(began)
		if g.meter != nil {
			g.meter.Add(rec)
		}
	}()
}

// finish counts, meters and logs the call, and hands out its capture.
func (c *call) finish() {
	g := c.g
	lat := g.now().Sub(c.start)
	if c.status == 0 {
		c.status = http.StatusOK
	}
	m := g.unknown
	if c.rt != nil {
		m = c.rt.m
	} else if c.ep != nil {
		m = c.ep.m
	}
	m.count(c.status)
	m.latency.Observe(lat.Seconds())
	var rec Record
	if c.ep != nil {
		rec = Record{
			Time: c.start, Workspace: c.ep.ws, Team: c.ep.team, Endpoint: c.ep.name,
			Principal: c.principal, KeyID: c.keyID, Status: c.status, Latency: lat,
			RequestBytes: c.reqBytes, ResponseBytes: c.respBytes, RequestID: c.rid,
		}
		if c.rt != nil {
			rec.Deployment = c.rt.name
		}
		if c.rep != nil {
			rec.Replica = c.rep.id
		}
		if g.meter != nil {
			g.meter.Add(rec)
		}
	}
	if c.capture {
		select {
		case g.captureSem <- struct{}{}:
			g.metrics.captures.WithLabelValues("sent").Inc()
			req, resp := c.body, c.captured
			go func() {
				defer func() { <-g.captureSem }()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				g.capture(ctx, rec, req, resp)
			}()
		default:
			g.metrics.captures.WithLabelValues("dropped").Inc()
		}
	}
	c.log(lat)
}

func (c *call) log(lat time.Duration) {
	level := slog.LevelInfo
	if c.status >= 500 {
		level = slog.LevelError
	}
	ctx := c.r.Context()
	l := c.g.log
	if !l.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 18)
	attrs = append(attrs,
		slog.String("request_id", c.rid),
		slog.String("method", c.r.Method),
		slog.String("path", c.r.URL.Path),
		slog.String("workspace", c.ws),
		slog.String("endpoint", c.name),
		slog.Int("status", c.status),
		slog.Duration("latency", lat),
		slog.Int64("request_bytes", c.reqBytes),
		slog.Int64("response_bytes", c.respBytes),
		slog.String("remote", c.r.RemoteAddr),
	)
	if c.crid != "" {
		attrs = append(attrs, slog.String("client_request_id", c.crid))
	}
	if c.rt != nil {
		attrs = append(attrs, slog.String("deployment", c.rt.name))
	}
	if c.rep != nil {
		attrs = append(attrs, slog.String("replica", c.rep.id))
	}
	if c.principal != "" {
		attrs = append(attrs, slog.String("principal", c.principal), slog.String("key_id", c.keyID))
	}
	if c.retries > 0 {
		attrs = append(attrs, slog.Int("retries", c.retries))
	}
	if c.errMsg != "" {
		attrs = append(attrs, slog.String("error", c.errMsg))
	}
	l.LogAttrs(ctx, level, "gateway call", attrs...)
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// fail answers the call with the error shape of the Plinth API.
func (c *call) fail(status int, code, msg string, retryAfter time.Duration) {
	c.status = status
	c.errMsg = msg
	h := c.w.Header()
	h["Content-Type"] = jsonContentType
	if retryAfter > 0 {
		h["Retry-After"] = []string{strconv.FormatInt(int64(roundUpSecond(retryAfter)/time.Second), 10)}
	}
	if status == http.StatusUnauthorized {
		h["Www-Authenticate"] = wwwAuthenticate
	}
	if c.rt != nil {
		h[HeaderDeployment] = c.rt.nameHdr
		h[HeaderAzureDeployment] = c.rt.nameHdr
	}
	b, _ := json.Marshal(errorBody{Error: errorDetail{Code: code, Message: msg}})
	b = append(b, '\n')
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	c.w.WriteHeader(status)
	n, _ := c.w.Write(b)
	c.respBytes = int64(n)
}

// forwarding is what is sent to the model besides the body: the caller's
// header, less its credentials and hop-by-hop fields (see
// dropRequestHeader and dropped), plus forwarding fields. It is written
// straight to the connection rather than copied into a new header map.
type forwarding struct {
	header  http.Header // the caller's; read-only
	dropped []string    // further fields named in the caller's Connection header
	xff     string
	proto   string
	host    string
	rid     string
	mirror  bool
}

func (c *call) forwarding() *forwarding { return newForwarding(c.r, c.rid) }

// newForwarding is what every call to an upstream carries of the caller's
// request r with request id rid.
func newForwarding(r *http.Request, rid string) *forwarding {
	in := r.Header
	f := &forwarding{header: in, host: r.Host, rid: rid, proto: "http"}
	if r.TLS != nil {
		f.proto = "https"
	}
	for _, v := range in["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				f.dropped = append(f.dropped, http.CanonicalHeaderKey(name))
			}
		}
	}
	ip := r.RemoteAddr
	if host, _, err := net.SplitHostPort(ip); err == nil {
		ip = host
	}
	if prior := in["X-Forwarded-For"]; len(prior) > 0 {
		f.xff = strings.Join(prior, ", ") + ", " + ip
	} else {
		f.xff = ip
	}
	return f
}

// forwards reports whether the caller's header field k goes to the model.
func (f *forwarding) forwards(k string) bool {
	return !dropRequestHeader(k) && (len(f.dropped) == 0 || !slices.Contains(f.dropped, k))
}

func dropRequestHeader(k string) bool {
	switch k {
	case "Authorization", "Api-Key", "Cookie",
		"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Expect", "Content-Length",
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Request-Id":
		return true
	}
	return false
}

func copyResponseHeader(dst, src http.Header) {
	for k, v := range src {
		switch k {
		case "Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "X-Request-Id":
			continue
		}
		dst[k] = v
	}
}

// splitPath parses the escaped path /endpoints/{name}[/{sub}] or
// /w/{ws}/endpoints/{name}[/{sub}].
func splitPath(p string) (ws, name, sub string, ok bool) {
	ws = "default"
	if strings.HasPrefix(p, "/w/") {
		rest := p[len("/w/"):]
		i := strings.IndexByte(rest, '/')
		if i <= 0 {
			return "", "", "", false
		}
		ws, p = rest[:i], rest[i:]
	}
	rest, found := strings.CutPrefix(p, "/endpoints/")
	if !found {
		return "", "", "", false
	}
	name, sub, _ = strings.Cut(rest, "/")
	if name == "" {
		return "", "", "", false
	}
	var err error
	if strings.IndexByte(ws, '%') >= 0 {
		if ws, err = url.PathUnescape(ws); err != nil {
			return "", "", "", false
		}
	}
	if strings.IndexByte(name, '%') >= 0 {
		if name, err = url.PathUnescape(name); err != nil {
			return "", "", "", false
		}
	}
	return ws, name, sub, true
}

// upstreamPath maps the escaped sub-path of a call to the model's path
// (decoded, and escaped when that differs): "score" is the scoring path,
// "score/x" is appended to it, anything else is passed unchanged.
func upstreamPath(scoring, sub string) (path, rawPath string) {
	var esc string
	switch {
	case sub == "score":
		return scoring, ""
	case strings.HasPrefix(sub, "score/"):
		esc = scoring + sub[len("score"):]
	default:
		esc = "/" + sub
	}
	if strings.IndexByte(esc, '%') < 0 {
		return esc, ""
	}
	dec, err := url.PathUnescape(esc)
	if err != nil {
		return esc, ""
	}
	return dec, esc
}

// requestID returns the call's id: the one observe assigned, the
// caller's x-request-id when printable and short, or a new one.
func requestID(r *http.Request) string {
	if id := observe.RequestID(r.Context()); id != "" {
		return id
	}
	if v := r.Header["X-Request-Id"]; len(v) > 0 && validRequestID(v[0]) {
		return v[0]
	}
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// validRequestID accepts an id only if it is short and printable, so it
// can be logged and echoed without escaping.
func validRequestID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if ch := s[i]; ch < 0x21 || ch > 0x7e {
			return false
		}
	}
	return true
}

func itoa(i int) string { return strconv.Itoa(i) }
