package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxSamples bounds the latencies kept per measurement (8 bytes each);
// calls beyond it are still counted.
const maxSamples = 20_000_000

// Kinds of call.
const (
	kChat   = "chat"   // non-streaming chat completion; the figure is its latency
	kStream = "stream" // streaming chat completion; the figure is its time to first token
)

// target is one way to reach the model.
type target struct {
	name  string
	url   string // POST .../chat/completions
	token string
	pid   func() int // the proxy's process, whose CPU time is measured; nil for none
}

// chatBody is a realistic chat request of about 1 KiB: a system prompt and
// a user message, as a support assistant sends them.
func chatBody(stream bool) []byte {
	type msg struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	body := struct {
		Model       string  `json:"model"`
		Messages    []msg   `json:"messages"`
		Temperature float64 `json:"temperature"`
		MaxTokens   int     `json:"max_tokens"`
		Stream      bool    `json:"stream,omitempty"`
	}{
		Model: benchModel,
		Messages: []msg{
			{Role: "system", Content: "You are the customer support assistant of an online hardware store. Answer in at most three sentences, " +
				"in plain language, without markdown. Use only the order data given in the conversation; if something is not there, " +
				"say that you do not know and offer to open a ticket. Never promise refunds, discounts or delivery dates that the " +
				"order data does not state. Be polite but brief."},
			{Role: "user", Content: "Hello, I ordered a cordless drill (order 4471-2290, placed on Monday) together with a set of " +
				"twenty wood drill bits and a spare battery. The confirmation email said the parcel would be prepared within two " +
				"business days, but the order page still says \"processing\" and I have not received any tracking number yet. " +
				"I need the drill for a job next weekend. Can you tell me when it will ship, and whether the spare battery is " +
				"coming in the same parcel or separately?"},
		},
		Temperature: 0.2,
		MaxTokens:   256,
		Stream:      stream,
	}
	b, err := json.Marshal(body)
	if err != nil {
		panic(err)
	}
	return b
}

// newClient returns a client with exactly n keep-alive connections per
// host, talking to loopback only (no proxy from the environment, no
// redirects, no compression).
func newClient(n int, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxConnsPerHost:     n,
		MaxIdleConnsPerHost: n,
		MaxIdleConns:        2 * n,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// post sends body to t; anything but 200 is an error.
func (t *target) post(ctx context.Context, c *http.Client, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header["Content-Type"] = []string{"application/json"}
	req.Header["Authorization"] = []string{"Bearer " + t.token}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		resp.Body.Close()
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return resp, nil
}

// chat sends one non-streaming chat completion and checks the answer. The
// latency runs from before the request is built to the end of the body;
// the check (a JSON decode) comes after it.
func (t *target) chat(ctx context.Context, c *http.Client, body []byte) (time.Duration, error) {
	t0 := time.Now()
	resp, err := t.post(ctx, c, body)
	if err != nil {
		return 0, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	lat := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("reading the answer: %w", err)
	}
	var a struct {
		Object  string `json:"object"`
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
		Usage *struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return 0, fmt.Errorf("answer is not JSON: %v", err)
	}
	if a.Object != "chat.completion" || len(a.Choices) != 1 || a.Choices[0].Message.Content != benchReply || a.Usage == nil {
		return 0, fmt.Errorf("wrong answer: %.200s", b)
	}
	return lat, nil
}

// stream sends one streaming chat completion and reads it to its end. It
// returns the time to the first content chunk (the first event whose
// delta has non-empty content), from before the request is built, and
// checks that the deltas make the reply, that the stream ends with
// [DONE], and that no usage chunk came (the caller did not ask for one,
// so a gateway that asks the backend for it must hide it).
func (t *target) stream(ctx context.Context, c *http.Client, body []byte) (time.Duration, error) {
	t0 := time.Now()
	resp, err := t.post(ctx, c, body)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return 0, fmt.Errorf("content type %q, not an event stream", ct)
	}
	br := bufio.NewReaderSize(resp.Body, 16<<10)
	var ttft time.Duration
	var text strings.Builder
	var data []byte
	done := false
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == io.EOF && done && len(line) == 0:
			// The end, after [DONE].
		case errors.Is(err, bufio.ErrBufferFull):
			return 0, errors.New("a stream line over 16 KiB") // no chunk of this reply is near it
		case err != nil:
			return 0, fmt.Errorf("stream broke off (after [DONE]: %v): %v", done, err)
		}
		if err == io.EOF {
			break
		}
		line = bytes.TrimRight(line, "\r\n")
		if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			data = append(data, bytes.TrimPrefix(v, []byte(" "))...)
			continue
		}
		if len(line) > 0 || len(data) == 0 {
			continue // another field, or a blank line without an event
		}
		// The end of an event.
		at := time.Since(t0)
		if done {
			return 0, errors.New("data after [DONE]")
		}
		if string(data) == "[DONE]" {
			done = true
			data = data[:0]
			continue
		}
		var ck struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage json.RawMessage `json:"usage"`
		}
		if err := json.Unmarshal(data, &ck); err != nil {
			return 0, fmt.Errorf("chunk is not JSON: %v: %.200s", err, data)
		}
		if len(ck.Usage) > 0 && string(ck.Usage) != "null" {
			return 0, fmt.Errorf("a usage chunk the caller did not ask for: %.200s", data)
		}
		for _, ch := range ck.Choices {
			if ch.Delta.Content != "" && ttft == 0 {
				ttft = at
			}
			text.WriteString(ch.Delta.Content)
		}
		data = data[:0]
	}
	if text.String() != benchReply {
		return 0, fmt.Errorf("streamed text %q, want the reply", text.String())
	}
	if ttft == 0 {
		return 0, errors.New("no content chunk")
	}
	return ttft, nil
}

// call sends one call of kind k.
func (t *target) call(ctx context.Context, c *http.Client, k string, chat, stream []byte) (time.Duration, error) {
	if k == kStream {
		return t.stream(ctx, c, stream)
	}
	return t.chat(ctx, c, chat)
}

// probe sends one call of each kind and fails unless both are right.
func (t *target) probe(ctx context.Context, timeout time.Duration, chat, stream []byte) error {
	c := newClient(1, timeout)
	defer c.CloseIdleConnections()
	for _, k := range []string{kChat, kStream} {
		if _, err := t.call(ctx, c, k, chat, stream); err != nil {
			return fmt.Errorf("%s call to %s: %w", k, t.url, err)
		}
	}
	return nil
}

// sample is one measurement of one kind of call on one target at one
// concurrency level.
type sample struct {
	ok, errors int
	elapsed    time.Duration // from the end of the warm-up to the last answer
	p50, p99   time.Duration // latency (chat) or time to first token (stream)
	cpuPer     time.Duration // proxy CPU per call; -1 when not measured
	firstErr   string
}

func (s sample) rps() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.ok) / s.elapsed.Seconds()
}

func (s sample) String() string {
	cpu := "—"
	if s.cpuPer >= 0 {
		cpu = fmt.Sprintf("%d µs", s.cpuPer.Microseconds())
	}
	out := fmt.Sprintf("%8.1f calls/s  %d ok  p50 %.3f ms  p99 %.3f ms  errors %d  gateway CPU/call %s",
		s.rps(), s.ok, ms(s.p50), ms(s.p99), s.errors, cpu)
	if s.firstErr != "" {
		out += "  first error: " + s.firstErr
	}
	return out
}

// worker is what one connection's goroutine collects.
type worker struct {
	lat      []time.Duration
	ok, errs int
	firstErr string
	last     time.Time
}

// measure runs n connections against t, each sending calls of kind k back
// to back: for warm (not measured), then for dur. Calls started in the
// measured window are counted.
func measure(ctx context.Context, t *target, k string, n int, warm, dur, timeout time.Duration, chat, stream []byte) sample {
	c := newClient(n, timeout)
	defer c.CloseIdleConnections()
	start := time.Now()
	warmEnd := start.Add(warm)
	end := warmEnd.Add(dur)
	ctx, cancel := context.WithDeadline(ctx, end.Add(timeout))
	defer cancel()

	perWorker := maxSamples / n
	ws := make([]worker, n)
	var wg sync.WaitGroup
	for i := range ws {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			w.lat = make([]time.Duration, 0, min(perWorker, 1<<14))
			for {
				t0 := time.Now()
				if !t0.Before(end) || ctx.Err() != nil {
					return
				}
				lat, err := t.call(ctx, c, k, chat, stream)
				if t0.Before(warmEnd) {
					continue
				}
				w.last = time.Now()
				if err != nil {
					w.errs++
					if w.firstErr == "" {
						w.firstErr = err.Error()
					}
					if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
						return
					}
					// Do not spin on a broken target.
					time.Sleep(time.Millisecond)
					continue
				}
				w.ok++
				if len(w.lat) < perWorker {
					w.lat = append(w.lat, lat)
				}
			}
		}(&ws[i])
	}

	// The proxy's CPU over the measured window.
	var cpu0 time.Duration
	cpuOK := false
	if t.pid != nil {
		sleepUntil(ctx, warmEnd)
		cpu0, cpuOK = cpuTime(t.pid())
	}
	wg.Wait()
	s := sample{cpuPer: -1}
	var cpu time.Duration
	if cpuOK {
		cpu1, ok := cpuTime(t.pid())
		cpu, cpuOK = cpu1-cpu0, ok
	}
	var all []time.Duration
	last := warmEnd
	for i := range ws {
		w := &ws[i]
		s.ok += w.ok
		s.errors += w.errs
		if s.firstErr == "" {
			s.firstErr = w.firstErr
		}
		if w.last.After(last) {
			last = w.last
		}
		all = append(all, w.lat...)
	}
	s.elapsed = last.Sub(warmEnd)
	slices.Sort(all)
	s.p50, s.p99 = percentile(all, 50), percentile(all, 99)
	if cpuOK && s.ok+s.errors > 0 {
		s.cpuPer = cpu / time.Duration(s.ok+s.errors)
	}
	return s
}

func sleepUntil(ctx context.Context, t time.Time) {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}
