// Package llmtest is a fake OpenAI-compatible upstream for the tests and
// benchmarks of Plinth's LLM gateway. It speaks OpenAI's HTTP API as the
// official SDKs see it (chat completions, legacy completions, embeddings,
// models; JSON and server-sent-event streams; OpenAI's error bodies and
// rate-limit headers) and Azure OpenAI's deployment routes, answers
// deterministically, and lets a test script failures (429s, 5xx, hangs,
// slow or cut streams) and inspect what it received.
//
// The point is wire faithfulness, not intelligence: a gateway that passes
// its tests against this server should pass bytes between real SDKs and
// real upstreams unchanged. Where OpenAI's behaviour is odd (errors indented
// by four spaces, a 502 with an integer code, Azure's first stream chunk
// having no choices), the server copies the oddity on purpose. The one
// addition of its own is an x-llmtest-server header naming the upstream.
//
// Usage counts tokens with CountWords unless Options.CountTokens plugs in
// a real tokenizer; chat prompts add OpenAI's published per-message
// overhead (see tokensPerMessage).
package llmtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultModels is what /v1/models lists when Options.Models is nil. Treat
// it as read-only.
var DefaultModels = []string{"gpt-4o-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small"}

// Options configure a Server. The zero value is usable: no API key check,
// any model accepted, replies that echo the prompt.
type Options struct {
	// Name identifies this upstream in replies ("<Name> says: ...") and in
	// the x-llmtest-server response header, so a test with several
	// upstreams behind one gateway can tell which one answered. Default
	// "llmtest".
	Name string
	// APIKey, when set, must arrive as "Authorization: Bearer <key>" or as
	// "api-key: <key>" (Azure's header); anything else is answered 401.
	APIKey string
	// Models is what /v1/models lists and, when non-nil, the only models
	// (Azure: deployments) requests may name; others get OpenAI's 404
	// model_not_found (Azure: DeploymentNotFound). Nil lists DefaultModels
	// and accepts any model name.
	Models []string
	// Reply, when set, is the text of every answer instead of the default
	// "<Name> says: <last user message>" (legacy completions: the prompt).
	Reply string
	// CountTokens counts the tokens of a text for usage and for
	// max_tokens. Default CountWords. Plug in a real tokenizer to make
	// prompt_tokens match OpenAI's for plain text chats.
	CountTokens func(string) int
	// EmbeddingDimensions is the vector length when a request does not ask
	// for "dimensions". Default 1536 (text-embedding-3-small).
	EmbeddingDimensions int
	// FirstChunkDelay is the time to first token: a stream sends its
	// headers at once and its first chunk after this delay.
	FirstChunkDelay time.Duration
	// ChunkDelay is the time between content chunks of a stream. A
	// non-streaming answer waits as long as the stream would have taken
	// (FirstChunkDelay + ChunkDelay per piece) before its headers.
	ChunkDelay time.Duration
	// KeepRequests is how many of the latest requests Received returns.
	// Default 100.
	KeepRequests int
	// Addr is where New listens. Default "127.0.0.1:0".
	Addr string
}

// Request is one request as the server received it.
type Request struct {
	Method string
	Path   string
	Query  url.Values
	Header http.Header
	Body   []byte
	Time   time.Time
}

// DecodeBody unmarshals the request body into v.
func (r Request) DecodeBody(v any) error {
	return json.Unmarshal(r.Body, v)
}

// Server is a fake OpenAI upstream. All its methods are safe for
// concurrent use.
type Server struct {
	opts   Options
	count  func(string) int
	fprint string

	mu         sync.Mutex
	queue      []Behavior
	def        Behavior
	reply      string
	firstDelay time.Duration
	chunkDelay time.Duration
	release    chan struct{}
	recent     []Request
	total      int
	changed    chan struct{}
	isClosed   bool

	closed    chan struct{}
	closeOnce sync.Once
	inflight  atomic.Int64
	handlers  sync.WaitGroup

	ln  net.Listener
	srv *http.Server
	url string
}

// NewHandler returns a Server that is not listening anywhere, for mounting
// with ServeHTTP under another server.
func NewHandler(opts Options) *Server {
	if opts.Name == "" {
		opts.Name = "llmtest"
	}
	if opts.EmbeddingDimensions <= 0 {
		opts.EmbeddingDimensions = 1536
	}
	if opts.KeepRequests <= 0 {
		opts.KeepRequests = 100
	}
	opts.Models = slices.Clone(opts.Models)
	s := &Server{
		opts:       opts,
		count:      opts.CountTokens,
		reply:      opts.Reply,
		firstDelay: opts.FirstChunkDelay,
		chunkDelay: opts.ChunkDelay,
		release:    make(chan struct{}),
		changed:    make(chan struct{}),
		closed:     make(chan struct{}),
	}
	if s.count == nil {
		s.count = CountWords
	}
	sum := sha256.Sum256([]byte(opts.Name))
	s.fprint = "fp_" + hex.EncodeToString(sum[:5])
	return s
}

// New starts a Server listening on Options.Addr (default 127.0.0.1:0),
// like httptest.NewServer. It panics if it cannot listen, which in a test
// is the right outcome. Close it when done.
func New(opts Options) *Server {
	s := NewHandler(opts)
	addr := s.opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		panic(fmt.Sprintf("llmtest: listen on %s: %v", addr, err))
	}
	s.ln = ln
	s.url = "http://" + ln.Addr().String()
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s
}

// URL is the server's base URL, "http://127.0.0.1:port" (no /v1); empty for
// a NewHandler server.
func (s *Server) URL() string { return s.url }

// Name is Options.Name.
func (s *Server) Name() string { return s.opts.Name }

// Close releases hanging requests, stops the listener, closes connections
// and waits for running handlers to return. It is safe to call twice.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.isClosed = true
		s.mu.Unlock()
		close(s.closed)
		if s.srv != nil {
			_ = s.srv.Close()
		}
		s.handlers.Wait()
	})
}

// SetReply replaces the reply text of later answers ("" restores the
// default echo).
func (s *Server) SetReply(text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reply = text
}

// SetDelays replaces FirstChunkDelay and ChunkDelay for later requests.
func (s *Server) SetDelays(firstChunk, chunk time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.firstDelay, s.chunkDelay = firstChunk, chunk
}

// Requests is how many requests the server has received, of any kind,
// including refused ones.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// InFlight is how many requests are being handled right now.
func (s *Server) InFlight() int { return int(s.inflight.Load()) }

// Received returns copies of the latest requests (at most
// Options.KeepRequests), oldest first.
func (s *Server) Received() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.recent))
	for i, r := range s.recent {
		out[i] = r
		out[i].Header = r.Header.Clone()
		out[i].Query = cloneValues(r.Query)
		out[i].Body = bytes.Clone(r.Body)
	}
	return out
}

// Last returns the latest request received.
func (s *Server) Last() (Request, bool) {
	rs := s.Received()
	if len(rs) == 0 {
		return Request{}, false
	}
	return rs[len(rs)-1], true
}

// WaitRequests waits until at least n requests have been received in
// total, or fails after timeout.
func (s *Server) WaitRequests(n int, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		total, changed := s.total, s.changed
		s.mu.Unlock()
		if total >= n {
			return nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return fmt.Errorf("llmtest: %d requests after %v, want %d", total, timeout, n)
		}
	}
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

// record stores a request and wakes WaitRequests. It reports false once
// the server is closed, so that no handler starts after Close waited.
func (s *Server) record(r *http.Request, body []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isClosed {
		return false
	}
	s.handlers.Add(1)
	s.total++
	if len(s.recent) == s.opts.KeepRequests {
		s.recent = slices.Delete(s.recent, 0, 1)
	}
	s.recent = append(s.recent, Request{
		Method: r.Method,
		Path:   r.URL.Path,
		Query:  cloneValues(r.URL.Query()),
		Header: r.Header.Clone(),
		Body:   body,
		Time:   time.Now(),
	})
	close(s.changed)
	s.changed = make(chan struct{})
	return true
}

// call is what the handlers know about the request being served.
type call struct {
	start      time.Time
	azure      bool // Azure deployment route: Azure headers and errors
	apiVersion string
	deployment string
	operation  string // Azure's operation name, used in its 429 text
	model      string // for rate-limit messages
	requestID  string
}

// config is a consistent snapshot of the runtime-settable fields.
type config struct {
	reply             string
	firstDelay, chunk time.Duration
}

func (s *Server) config() config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return config{reply: s.reply, firstDelay: s.firstDelay, chunk: s.chunkDelay}
}

// maxBody bounds what the server reads of one request.
const maxBody = 64 << 20

// ServeHTTP serves OpenAI's routes under /v1, Azure OpenAI's v1 routes under
// /openai/v1, and Azure's deployment routes under /openai/deployments.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		// A body too large or cut short is not something OpenAI's API
		// answers in a stable way; plain 400 keeps tests honest.
		http.Error(w, "llmtest: reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if !s.record(r, body) {
		http.Error(w, "llmtest: server closed", http.StatusServiceUnavailable)
		return
	}
	defer s.handlers.Done()
	s.inflight.Add(1)
	defer s.inflight.Add(-1)

	c := &call{start: time.Now(), requestID: "req_" + randomHex(16)}
	path := r.URL.Path
	switch {
	case strings.HasPrefix(path, "/openai/v1/"):
		// Azure OpenAI's "v1" API is OpenAI's own, under another prefix
		// and without api-version.
		s.serveOpenAI(w, r, c, body, strings.TrimPrefix(path, "/openai"))
	case path == "/openai" || strings.HasPrefix(path, "/openai/"):
		c.azure = true
		c.requestID = randomUUID()
		s.serveAzure(w, r, c, body)
	default:
		s.serveOpenAI(w, r, c, body, path)
	}
}

func (s *Server) serveOpenAI(w http.ResponseWriter, r *http.Request, c *call, body []byte, path string) {
	if e := s.authenticate(r, c); e != nil {
		s.writeError(w, c, e)
		return
	}
	switch {
	case path == "/v1/chat/completions" && r.Method == http.MethodPost:
		s.serveInference(w, r, c, body, s.parseChat)
	case path == "/v1/completions" && r.Method == http.MethodPost:
		s.serveInference(w, r, c, body, s.parseCompletion)
	case path == "/v1/embeddings" && r.Method == http.MethodPost:
		s.serveInference(w, r, c, body, s.parseEmbeddings)
	case path == "/v1/models" && r.Method == http.MethodGet:
		s.writeJSON(w, c, http.StatusOK, s.modelList())
	case strings.HasPrefix(path, "/v1/models/") && r.Method == http.MethodGet:
		id := strings.TrimPrefix(path, "/v1/models/")
		if !slices.Contains(s.models(), id) {
			// Retrieving an unknown model words its 404 differently from
			// using one, and names the parameter.
			s.writeError(w, c, invalidRequest(http.StatusNotFound, fmt.Sprintf("The model '%s' does not exist", id), "model", "model_not_found"))
			return
		}
		s.writeJSON(w, c, http.StatusOK, s.modelObject(id))
	default:
		s.writeError(w, c, errInvalidURL(r))
	}
}

func (s *Server) serveAzure(w http.ResponseWriter, r *http.Request, c *call, body []byte) {
	if e := s.authenticate(r, c); e != nil {
		s.writeError(w, c, e)
		return
	}
	// Every dated Azure route needs ?api-version=; without it Azure's
	// front door does not find a resource at all.
	c.apiVersion = r.URL.Query().Get("api-version")
	if c.apiVersion == "" {
		s.writeError(w, c, azureNotFound())
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/openai/deployments/")
	if !ok {
		s.writeError(w, c, azureNotFound())
		return
	}
	deployment, op, ok := strings.Cut(rest, "/")
	if !ok || deployment == "" || r.Method != http.MethodPost {
		s.writeError(w, c, azureNotFound())
		return
	}
	c.deployment = deployment
	var parse parser
	switch op {
	case "chat/completions":
		parse, c.operation = s.parseChat, "ChatCompletions_Create"
	case "completions":
		parse, c.operation = s.parseCompletion, "Completions_Create"
	case "embeddings":
		parse, c.operation = s.parseEmbeddings, "Embeddings_Create"
	default:
		s.writeError(w, c, azureNotFound())
		return
	}
	if s.opts.Models != nil && !slices.Contains(s.opts.Models, deployment) {
		s.writeError(w, c, azureDeploymentNotFound())
		return
	}
	s.serveInference(w, r, c, body, parse)
}

func (s *Server) authenticate(r *http.Request, c *call) *apiError {
	if s.opts.APIKey == "" {
		return nil
	}
	key := r.Header.Get("api-key")
	if auth := r.Header.Get("Authorization"); key == "" && auth != "" {
		scheme, token, _ := strings.Cut(auth, " ")
		if strings.EqualFold(scheme, "Bearer") {
			key = strings.TrimSpace(token)
		}
	}
	switch {
	case key == s.opts.APIKey:
		return nil
	case c.azure:
		return azureUnauthorized()
	case key == "":
		return errNoAPIKey()
	default:
		return errWrongAPIKey(key)
	}
}

func (s *Server) models() []string {
	if s.opts.Models != nil {
		return s.opts.Models
	}
	return DefaultModels
}

// checkModel applies Options.Models to a model named in an OpenAI-shaped
// request (Azure routes check the deployment instead).
func (s *Server) checkModel(c *call, m string) *apiError {
	c.model = m
	if c.azure {
		c.model = c.deployment
		return nil
	}
	if s.opts.Models != nil && !slices.Contains(s.opts.Models, m) {
		return errModelNotFound(m)
	}
	return nil
}

// modelCreated is a fixed creation time so model objects are deterministic.
const modelCreated = 1700000000

func (s *Server) modelObject(id string) model {
	return model{ID: id, Object: "model", Created: modelCreated, OwnedBy: "system"}
}

func (s *Server) modelList() modelList {
	l := modelList{Object: "list", Data: []model{}}
	for _, id := range s.models() {
		l.Data = append(l.Data, s.modelObject(id))
	}
	return l
}

// responseModel is the model an answer names: Azure answers with its
// deployment.
func (c *call) responseModel(requested string) string {
	if c.azure {
		return c.deployment
	}
	return requested
}

// Rate-limit budget advertised in x-ratelimit-* headers. The numbers are
// plausible, not meaningful; what matters is that the headers exist, since
// gateways and SDK users read them.
const (
	rateLimitRequests = 10000
	rateLimitTokens   = 30000000
)

// setHeaders sets the headers every answer carries: OpenAI's (request id,
// version, processing time, rate-limit budget) or Azure's.
func (s *Server) setHeaders(w http.ResponseWriter, c *call, contentType string) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("x-llmtest-server", s.opts.Name)
	h.Set("openai-processing-ms", strconv.FormatInt(time.Since(c.start).Milliseconds(), 10))
	if c.azure {
		h.Set("apim-request-id", c.requestID)
		h.Set("x-request-id", c.requestID)
		h.Set("x-ms-region", "Local")
		if c.deployment != "" {
			h.Set("x-ms-deployment-name", c.deployment)
		}
		if h.Get("x-ratelimit-remaining-requests") == "" {
			h.Set("x-ratelimit-remaining-requests", strconv.Itoa(rateLimitRequests-1))
			h.Set("x-ratelimit-remaining-tokens", strconv.Itoa(rateLimitTokens-1000))
		}
		return
	}
	h.Set("x-request-id", c.requestID)
	h.Set("openai-version", "2020-10-01")
	h.Set("openai-organization", "user-llmtest")
	h.Set("openai-project", "proj_llmtest")
	h.Set("access-control-expose-headers", "X-Request-ID")
	if h.Get("x-ratelimit-limit-requests") == "" {
		h.Set("x-ratelimit-limit-requests", strconv.Itoa(rateLimitRequests))
		h.Set("x-ratelimit-limit-tokens", strconv.Itoa(rateLimitTokens))
		h.Set("x-ratelimit-remaining-requests", strconv.Itoa(rateLimitRequests-1))
		h.Set("x-ratelimit-remaining-tokens", strconv.Itoa(rateLimitTokens-1000))
		h.Set("x-ratelimit-reset-requests", "6ms")
		h.Set("x-ratelimit-reset-tokens", "2ms")
	}
}

func (s *Server) writeError(w http.ResponseWriter, c *call, e *apiError) {
	b := e.body()
	s.setHeaders(w, c, "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}

// writeJSON writes a successful answer indented by two spaces, as
// api.openai.com does for every non-streaming answer.
func (s *Server) writeJSON(w http.ResponseWriter, c *call, status int, v any) {
	b := s.encode(c, v)
	s.setHeaders(w, c, "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// encode renders a non-streaming answer: indented for OpenAI, compact for
// Azure, each as its service sends them.
func (s *Server) encode(c *call, v any) []byte {
	if c.azure {
		return marshalCompact(v)
	}
	b, err := marshalIndent(v, "  ")
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}

// sleep waits d, or less if the request ends or the server closes first;
// it reports whether the full wait happened.
func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.closed:
		return false
	}
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomID makes ids shaped like OpenAI's: a prefix and 29 letters/digits
// (chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT). Ids are the one random part of
// an answer; content and usage are deterministic.
func randomID(prefix string) string {
	b := make([]byte, 29)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return prefix + string(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randomUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
