package llmtest

import "time"

// A Behavior decides how the server treats one inference request (chat
// completions, completions, embeddings; never the model list, so a
// gateway's health probes cannot use up a scripted failure). Behaviors are
// consumed after the request passed authentication and validation, so a
// malformed request never eats one.
//
// Push queues one-shot behaviors, taken in order; when the queue is empty
// the default (SetDefault) applies, and that is Answer{} unless changed.
type Behavior interface {
	behavior()
}

// Answer answers normally. A non-empty Text replaces the reply for this one
// request.
type Answer struct {
	Text string
}

// RateLimited answers 429 with OpenAI's rate-limit body and headers:
// retry-after (whole seconds, rounded up) and retry-after-ms, which the
// official SDKs honour before their own backoff, plus x-ratelimit-*
// showing the request budget spent. A zero RetryAfter sends no retry-after
// headers, so clients fall back to their exponential backoff.
type RateLimited struct {
	RetryAfter time.Duration
}

// Fail answers with an upstream failure status (500, 502, 503, 504, ...)
// and the body OpenAI's side sends for it; Message replaces the default
// text. Status 0 means 500.
type Fail struct {
	Status  int
	Message string
}

// Hang accepts the request and never answers until the client gives up
// (its context ends, the connection closes), Release is called (then it
// answers normally), or the server is closed.
type Hang struct{}

// Delay waits D before sending any header, then behaves as Then (Answer{}
// when nil). This is time-to-first-byte; Options.FirstChunkDelay is the
// time-to-first-token of a stream whose headers already arrived.
type Delay struct {
	D    time.Duration
	Then Behavior
}

// CutStream answers normally but kills the connection after AfterChunks
// server-sent events (0: right after the headers), without the final chunk
// or "data: [DONE]", as when an upstream dies mid-generation. A non-streaming
// request gets its headers (with the full Content-Length) and half its
// body. The cut is panic(http.ErrAbortHandler), which net/http turns into a
// reset connection and which recovery middleware is expected to re-panic.
type CutStream struct {
	AfterChunks int
}

func (Answer) behavior()      {}
func (RateLimited) behavior() {}
func (Fail) behavior()        {}
func (Hang) behavior()        {}
func (Delay) behavior()       {}
func (CutStream) behavior()   {}

// Push queues one-shot behaviors for the next inference requests, in order.
func (s *Server) Push(bs ...Behavior) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, bs...)
}

// SetDefault sets the behavior used when the queue is empty; nil restores
// Answer{}.
func (s *Server) SetDefault(b Behavior) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.def = b
}

// Pending reports how many pushed behaviors have not been used yet.
func (s *Server) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// Release lets every request hanging right now (Hang) go on and answer
// normally. Requests that start hanging later are not affected.
func (s *Server) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.release)
	s.release = make(chan struct{})
}

// next takes the behavior for one inference request.
func (s *Server) next() Behavior {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) > 0 {
		b := s.queue[0]
		s.queue = s.queue[1:]
		if b != nil {
			return b
		}
	}
	if s.def != nil {
		return s.def
	}
	return Answer{}
}

func (s *Server) releaseChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.release
}
