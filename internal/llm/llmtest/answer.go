package llmtest

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"time"
)

// parser validates one inference request body and prepares its answer.
type parser func(c *call, raw map[string]json.RawMessage, cfg config) (*op, *apiError)

// op is a validated inference request, ready to answer.
type op struct {
	stream bool
	// build renders the normal answer; text, when not empty, replaces the
	// reply (Answer.Text).
	build func(text string) *reply
}

// reply is a rendered normal answer.
type reply struct {
	body   []byte  // non-streaming: the whole JSON body
	events []event // streaming: the data events, without the final [DONE]
	steps  int     // content pieces generated, for pacing
}

// event is one server-sent event.
type event struct {
	data []byte
	// paced events wait Options.ChunkDelay before going out: one per
	// generated piece, not per choice, and not the closing chunks.
	paced bool
}

func (s *Server) serveInference(w http.ResponseWriter, r *http.Request, c *call, body []byte, parse parser) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || raw == nil {
		s.writeError(w, c, errBadJSON())
		return
	}
	cfg := s.config()
	o, e := parse(c, raw, cfg)
	if e != nil {
		s.writeError(w, c, e)
		return
	}
	s.act(w, r, c, o, cfg, s.next())
}

// act carries out a behavior.
func (s *Server) act(w http.ResponseWriter, r *http.Request, c *call, o *op, cfg config, b Behavior) {
	ctx := r.Context()
	for {
		switch v := b.(type) {
		case Delay:
			if !s.sleep(ctx, v.D) {
				return
			}
			b = v.Then
			if b == nil {
				b = Answer{}
			}
		case Hang:
			select {
			case <-ctx.Done():
				return
			case <-s.closed:
				return
			case <-s.releaseChan():
				b = Answer{}
			}
		case RateLimited:
			s.rateLimited(w, c, v)
			return
		case Fail:
			status := v.Status
			if status == 0 {
				status = http.StatusInternalServerError
			}
			s.writeError(w, c, errServer(status, v.Message))
			return
		case CutStream:
			s.answer(w, r, c, o.build(""), cfg, o.stream, v.AfterChunks)
			return
		case Answer:
			s.answer(w, r, c, o.build(v.Text), cfg, o.stream, -1)
			return
		default:
			b = Answer{}
		}
	}
}

func (s *Server) rateLimited(w http.ResponseWriter, c *call, v RateLimited) {
	h := w.Header()
	retryText := ""
	if v.RetryAfter > 0 {
		secs := int64(math.Ceil(v.RetryAfter.Seconds()))
		h.Set("retry-after", strconv.FormatInt(secs, 10))
		h.Set("retry-after-ms", strconv.FormatInt(v.RetryAfter.Milliseconds(), 10))
		retryText = v.RetryAfter.String()
	}
	reset := "1s"
	if v.RetryAfter > 0 {
		// OpenAI writes reset times in Go's duration format ("6m0s", "20ms").
		reset = v.RetryAfter.String()
	}
	if c.azure {
		h.Set("x-ratelimit-remaining-requests", "0")
		h.Set("x-ratelimit-remaining-tokens", strconv.Itoa(rateLimitTokens-1000))
		secs := "1 second"
		if v.RetryAfter > 0 {
			n := int64(math.Ceil(v.RetryAfter.Seconds()))
			secs = strconv.FormatInt(n, 10) + " second"
			if n != 1 {
				secs += "s"
			}
		}
		s.writeError(w, c, azureRateLimited(c.operation, c.apiVersion, secs))
		return
	}
	h.Set("x-ratelimit-limit-requests", strconv.Itoa(rateLimitRequests))
	h.Set("x-ratelimit-limit-tokens", strconv.Itoa(rateLimitTokens))
	h.Set("x-ratelimit-remaining-requests", "0")
	h.Set("x-ratelimit-remaining-tokens", strconv.Itoa(rateLimitTokens-1000))
	h.Set("x-ratelimit-reset-requests", reset)
	h.Set("x-ratelimit-reset-tokens", "2ms")
	s.writeError(w, c, errRateLimited(c.model, retryText))
}

// answer sends a normal answer; cut >= 0 kills the connection after that
// many events (CutStream).
func (s *Server) answer(w http.ResponseWriter, r *http.Request, c *call, rep *reply, cfg config, stream bool, cut int) {
	ctx := r.Context()
	rc := http.NewResponseController(w)
	if !stream {
		// A non-streaming answer arrives when generation would have ended.
		if !s.sleep(ctx, cfg.firstDelay+time.Duration(rep.steps)*cfg.chunk) {
			return
		}
		s.setHeaders(w, c, "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(rep.body)))
		w.WriteHeader(http.StatusOK)
		if cut >= 0 {
			_, _ = w.Write(rep.body[:len(rep.body)/2])
			_ = rc.Flush()
			panic(http.ErrAbortHandler)
		}
		_, _ = w.Write(rep.body)
		return
	}

	s.setHeaders(w, c, "text/event-stream; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	if cut == 0 {
		panic(http.ErrAbortHandler)
	}
	sent := 0
	send := func(data []byte) bool {
		// "data: <json>\n\n": one line per event, blank line between, as
		// OpenAI sends them (no "event:" or "id:" fields).
		buf := make([]byte, 0, len(data)+8)
		buf = append(buf, "data: "...)
		buf = append(buf, data...)
		buf = append(buf, "\n\n"...)
		if _, err := w.Write(buf); err != nil {
			return false
		}
		if err := rc.Flush(); err != nil {
			return false
		}
		sent++
		if sent == cut {
			panic(http.ErrAbortHandler)
		}
		return true
	}
	if !s.sleep(ctx, cfg.firstDelay) {
		return
	}
	for i, ev := range rep.events {
		if i > 0 && ev.paced && !s.sleep(ctx, cfg.chunk) {
			return
		}
		if !send(ev.data) {
			return
		}
	}
	send([]byte("[DONE]"))
}

// Helpers to read request fields with OpenAI's type errors.

// field decodes raw[key] into dst. It reports false when the key is absent
// or null; a value of the wrong type is an invalid_type error.
func field[T any](raw map[string]json.RawMessage, key, want string, dst *T) (bool, *apiError) {
	return fieldAt(raw, key, key, want, dst)
}

// fieldAt is field for a nested key, named param in errors
// ("messages[2].role").
func fieldAt[T any](raw map[string]json.RawMessage, key, param, want string, dst *T) (bool, *apiError) {
	v, ok := raw[key]
	if !ok || string(v) == "null" {
		return false, nil
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return false, errInvalidType(param, want, v)
	}
	return true, nil
}

// intField reads an optional integer parameter that must be within
// [lo, hi] (hi < 0: no upper bound).
func intField(raw map[string]json.RawMessage, key string, lo, hi int64) (int64, bool, *apiError) {
	var f float64
	ok, e := field(raw, key, "an integer", &f)
	if e != nil || !ok {
		return 0, ok, e
	}
	if f != math.Trunc(f) {
		return 0, false, errInvalidType(key, "an integer", raw[key])
	}
	n := int64(f)
	if n < lo {
		return 0, false, errBelowMin(key, lo, n)
	}
	if hi >= 0 && n > hi {
		return 0, false, errAboveMax(key, hi, n)
	}
	return n, true, nil
}

// modelField reads the required "model" (optional on Azure deployment
// routes, where the deployment picks the model).
func modelField(c *call, raw map[string]json.RawMessage) (string, *apiError) {
	var m string
	ok, e := field(raw, "model", "a string", &m)
	if e != nil {
		return "", e
	}
	if (!ok || m == "") && !c.azure {
		return "", errNoModel()
	}
	return m, nil
}

// streamOptions reads "stream" and "stream_options"; OpenAI refuses
// stream_options on a request that does not stream, which matters to a
// gateway that adds include_usage for metering.
func streamOptions(raw map[string]json.RawMessage) (stream, includeUsage, obfuscate bool, e *apiError) {
	if _, e = field(raw, "stream", "a boolean", &stream); e != nil {
		return
	}
	var so struct {
		IncludeUsage       *bool `json:"include_usage"`
		IncludeObfuscation *bool `json:"include_obfuscation"`
	}
	has, e := field(raw, "stream_options", "an object", &so)
	if e != nil {
		return
	}
	if has && !stream {
		e = invalidRequest(http.StatusBadRequest, "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options", nil)
		return
	}
	includeUsage = so.IncludeUsage != nil && *so.IncludeUsage
	obfuscate = so.IncludeObfuscation == nil || *so.IncludeObfuscation
	return
}

// obfuscation pads a streamed delta the way OpenAI's stream obfuscation
// does (an "obfuscation" field of filler characters, on by default since
// 2025), deterministically: payload lengths round up to a multiple of 16.
func obfuscation(content string) string {
	n := 16 - len(content)%16
	b := make([]byte, n)
	for i := range b {
		b[i] = alnum[(len(content)*7+i*13)%len(alnum)]
	}
	return string(b)
}

var nullJSON = json.RawMessage("null")

func strPtr(s string) *string { return &s }
