package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/azure"
	"github.com/openai/openai-go/v3/option"

	"github.com/plinth-dev/plinth/internal/llm/llmtest"
	"github.com/plinth-dev/plinth/internal/llm/tokens"
	"github.com/plinth-dev/plinth/internal/ratelimit"
	"github.com/plinth-dev/plinth/internal/ratelimit/redistest"
)

// llmEnv is a gateway with LLM backends (fake OpenAI upstreams) and a
// meter whose records the test reads.
type llmEnv struct {
	*env
	mu      sync.Mutex
	records []Record
	clock   *testClock
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newLLMEnv(t *testing.T, clock bool) *llmEnv {
	t.Helper()
	le := &llmEnv{}
	o := Options{}
	if clock {
		le.clock = &testClock{t: time.Now()}
		o.Now = le.clock.now
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	o.Meter = NewMeter(func(_ context.Context, b []Record) error {
		le.mu.Lock()
		le.records = append(le.records, b...)
		le.mu.Unlock()
		return nil
	}, 0, 0, 10*time.Millisecond, nil, nil)
	go o.Meter.Run(ctx)
	le.env = newEnv(t, o)
	return le
}

// waitRecords waits for n metered records that are not mirror copies.
func (le *llmEnv) waitRecords(n int) []Record {
	le.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		le.mu.Lock()
		var out []Record
		for _, r := range le.records {
			if !r.Mirrored {
				out = append(out, r)
			}
		}
		le.mu.Unlock()
		if len(out) >= n {
			return out
		}
		if time.Now().After(deadline) {
			le.t.Fatalf("%d records metered, want %d", len(out), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func fakeUpstream(t *testing.T, name string) *llmtest.Server {
	t.Helper()
	s := llmtest.New(llmtest.Options{Name: name, APIKey: "upstream-" + name, CountTokens: tokens.ForModel("gpt-4o").Count})
	t.Cleanup(s.Close)
	return s
}

func openAIBackend(name string, s *llmtest.Server) *LLMBackend {
	return &LLMBackend{Name: name, Style: StyleOpenAI, BaseURL: s.URL() + "/v1", Credential: "upstream-" + name,
		InputCostPer1K: 0.5, OutputCostPer1K: 1.5, Timeout: 5 * time.Second}
}

func llmSnap(version int64, l *LLM) *Snapshot {
	if l.WorkspaceTeams == nil {
		l.WorkspaceTeams = map[string]string{"default": "risk"}
	}
	return &Snapshot{Version: version, LLM: l}
}

func (le *llmEnv) sdk(extra ...option.RequestOption) openai.Client {
	opts := append([]option.RequestOption{
		option.WithBaseURL(le.srv.URL + "/openai/v1/"),
		option.WithAPIKey("platform-alice"),
		option.WithMaxRetries(0),
		option.WithHTTPClient(le.client),
	}, extra...)
	return openai.NewClient(opts...)
}

// post sends a raw chat call and returns the status, header and body.
func (le *llmEnv) post(path, body, token string) (int, http.Header, string) {
	le.t.Helper()
	req, _ := http.NewRequest("POST", le.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := le.client.Do(req)
	if err != nil {
		le.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func chatBody(model, text string, maxTokens int) string {
	b, _ := json.Marshal(map[string]any{"model": model, "max_tokens": maxTokens,
		"messages": []map[string]string{{"role": "user", "content": text}}})
	return string(b)
}

func TestOpenAISDKChatAndStreamThroughGateway(t *testing.T) {
	le := newLLMEnv(t, false)
	up := fakeUpstream(t, "a")
	le.g.Update(llmSnap(1, &LLM{
		Backends: map[string]*LLMBackend{"a": openAIBackend("a", up)},
		Models:   map[string]*LLMModel{"gpt-4o": {Name: "gpt-4o", Pool: []LLMTarget{{Backend: "a", Model: "gpt-4o-2024-08-06"}}}},
	}))
	client := le.sdk()
	ctx := context.Background()

	var hdr *http.Response
	res, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello there")},
	}, option.WithResponseInto(&hdr))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Choices[0].Message.Content; got != "a says: hello there" {
		t.Fatalf("content %q", got)
	}
	if hdr.Header.Get(HeaderBackend) != "a" || hdr.Header.Get("X-Request-Id") == "" {
		t.Fatalf("headers %v", hdr.Header)
	}
	last, _ := up.Last()
	var sent struct {
		Model string `json:"model"`
	}
	last.DecodeBody(&sent)
	if sent.Model != "gpt-4o-2024-08-06" || last.Header.Get("Authorization") != "Bearer upstream-a" {
		t.Fatalf("upstream got model %q, authorization %q", sent.Model, last.Header.Get("Authorization"))
	}

	// A stream without include_usage: the gateway asks for usage and
	// hides the usage chunk from the caller.
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("one two three four")},
	})
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		ch := stream.Current()
		acc.AddChunk(ch)
		chunks++
		if ch.Usage.TotalTokens != 0 {
			t.Fatalf("usage chunk reached a caller who did not ask for it: %+v", ch.Usage)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if acc.Choices[0].Message.Content != "a says: one two three four" || chunks < 3 {
		t.Fatalf("stream gave %q in %d chunks", acc.Choices[0].Message.Content, chunks)
	}
	last, _ = up.Last()
	if !strings.Contains(string(last.Body), `"include_usage":true`) {
		t.Fatalf("upstream was not asked for usage: %s", last.Body)
	}

	// A stream with include_usage gets the usage chunk.
	stream = client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:         "gpt-4o",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("count me")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var usage openai.CompletionUsage
	for stream.Next() {
		if u := stream.Current().Usage; u.TotalTokens > 0 {
			usage = u
		}
	}
	if stream.Err() != nil || usage.PromptTokens == 0 || usage.CompletionTokens == 0 {
		t.Fatalf("usage %+v, err %v", usage, stream.Err())
	}

	recs := le.waitRecords(3)
	for i, r := range recs {
		if r.Model != "gpt-4o" || r.Backend != "a" || r.Team != "risk" || r.PromptTokens == 0 || r.CompletionTokens == 0 || r.Cost <= 0 || r.Status != 200 || r.Principal != "alice" {
			t.Errorf("record %d: %+v", i, r)
		}
	}
	if recs[0].PromptTokens != res.Usage.PromptTokens || recs[0].CompletionTokens != res.Usage.CompletionTokens {
		t.Errorf("metered %d/%d tokens, upstream reported %d/%d", recs[0].PromptTokens, recs[0].CompletionTokens, res.Usage.PromptTokens, res.Usage.CompletionTokens)
	}
	if recs[2].PromptTokens != usage.PromptTokens || recs[2].CompletionTokens != usage.CompletionTokens {
		t.Errorf("stream metered %d/%d tokens, usage chunk said %d/%d", recs[2].PromptTokens, recs[2].CompletionTokens, usage.PromptTokens, usage.CompletionTokens)
	}

	// Embeddings (the npm SDK asks for base64) and the model list.
	emb, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "gpt-4o", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")}})
	if err != nil || len(emb.Data) != 1 || len(emb.Data[0].Embedding) == 0 {
		t.Fatalf("embeddings: %v %+v", err, emb)
	}
	models, err := client.Models.List(ctx)
	if err != nil || len(models.Data) != 1 || models.Data[0].ID != "gpt-4o" {
		t.Fatalf("models: %v %+v", err, models)
	}
}

func TestOpenAIErrorsInOpenAIShape(t *testing.T) {
	le := newLLMEnv(t, false)
	up := fakeUpstream(t, "a")
	le.g.Update(llmSnap(1, &LLM{
		Backends: map[string]*LLMBackend{"a": openAIBackend("a", up)},
		Models:   map[string]*LLMModel{"m": {Name: "m", Pool: []LLMTarget{{Backend: "a"}}}},
	}))
	cases := []struct {
		name, path, body, token string
		status                  int
		code                    string
	}{
		{"no key", "/openai/v1/chat/completions", chatBody("m", "x", 5), "", 401, "invalid_api_key"},
		{"bad key", "/openai/v1/chat/completions", chatBody("m", "x", 5), "nope", 401, "invalid_api_key"},
		{"not allowed", "/openai/v1/chat/completions", chatBody("m", "x", 5), "platform-outsider", 403, "permission_denied"},
		{"unknown model", "/openai/v1/chat/completions", chatBody("gpt-9", "x", 5), "platform-alice", 404, "model_not_found"},
		{"bad json", "/openai/v1/chat/completions", `{"model":`, "platform-alice", 400, "invalid_json"},
		{"no model", "/openai/v1/chat/completions", `{"messages":[]}`, "platform-alice", 400, "missing_required_parameter"},
		{"bad messages", "/openai/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":7}]}`, "platform-alice", 400, "invalid_request"},
		{"unknown path", "/openai/v1/images/generations", `{}`, "platform-alice", 404, "not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := le.post(tc.path, tc.body, tc.token)
			var e openAIError
			if status != tc.status || json.Unmarshal([]byte(body), &e) != nil || e.Error.Code == nil || *e.Error.Code != tc.code || e.Error.Message == "" {
				t.Fatalf("%d %s", status, body)
			}
			if h.Get("X-Request-Id") == "" {
				t.Fatal("no x-request-id")
			}
		})
	}
	if up.Requests() != 0 {
		t.Fatalf("%d refused calls reached the backend", up.Requests())
	}
	// The SDK turns them into *openai.Error.
	client := le.sdk()
	_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: "gpt-9",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}})
	var oe *openai.Error
	if !errors.As(err, &oe) || oe.StatusCode != 404 || oe.Code != "model_not_found" {
		t.Fatalf("SDK error %v", err)
	}
}

func TestOpenAISpilloverWeightsAndBreaker(t *testing.T) {
	le := newLLMEnv(t, true)
	ptu, paygA, paygB := fakeUpstream(t, "ptu"), fakeUpstream(t, "payg-a"), fakeUpstream(t, "payg-b")
	le.g.Update(llmSnap(1, &LLM{
		Backends: map[string]*LLMBackend{"ptu": openAIBackend("ptu", ptu), "payg-a": openAIBackend("payg-a", paygA), "payg-b": openAIBackend("payg-b", paygB)},
		Models: map[string]*LLMModel{"m": {Name: "m", Pool: []LLMTarget{
			{Backend: "ptu", Priority: 0},
			{Backend: "payg-a", Priority: 1, Weight: 3},
			{Backend: "payg-b", Priority: 1, Weight: 1},
		}}},
	}))
	call := func() (int, http.Header, string) {
		return le.post("/openai/v1/chat/completions", chatBody("m", "hi", 5), "platform-alice")
	}
	// Provisioned first.
	if s, h, b := call(); s != 200 || h.Get(HeaderBackend) != "ptu" || h.Get(HeaderSpillover) != "" {
		t.Fatalf("%d %v %s", s, h, b)
	}
	// The provisioned backend answers 429: the call spills over, and the
	// backend is skipped until its retry-after passes.
	ptu.Push(llmtest.RateLimited{RetryAfter: 20 * time.Second})
	s, h, _ := call()
	if s != 200 || h.Get(HeaderSpillover) != "true" || !strings.HasPrefix(h.Get(HeaderBackend), "payg-") {
		t.Fatalf("spillover: %d %v", s, h)
	}
	before := ptu.Requests()
	counts := map[string]int{}
	for range 400 {
		s, h, b := call()
		if s != 200 {
			t.Fatalf("%d %s", s, b)
		}
		counts[h.Get(HeaderBackend)]++
	}
	if ptu.Requests() != before || counts["ptu"] != 0 {
		t.Fatalf("a cooling backend got calls: %v", counts)
	}
	if r := float64(counts["payg-a"]) / float64(counts["payg-b"]); r < 2.2 || r > 4.0 {
		t.Fatalf("weights 3:1 gave %v", counts)
	}
	le.clock.add(21 * time.Second)
	if _, h, _ := call(); h.Get(HeaderBackend) != "ptu" {
		t.Fatalf("after its retry-after the provisioned backend is back: %v", h)
	}

	// ptu fails: each failure moves on to payg; after 5 the breaker opens
	// and ptu gets nothing until the cooldown, then one probe closes it.
	ptu.SetDefault(llmtest.Fail{Status: 500})
	for i := range 5 {
		if s, h, b := call(); s != 200 || h.Get(HeaderBackend) == "ptu" {
			t.Fatalf("failure %d: %d %v %s", i, s, h, b)
		}
	}
	n := ptu.Requests()
	for range 20 {
		call()
	}
	if ptu.Requests() != n {
		t.Fatalf("open breaker let %d calls through", ptu.Requests()-n)
	}
	if !strings.Contains(le.metrics(), `plinth_llm_backend_breaker_open{backend="ptu"} 1`) {
		t.Fatal("breaker gauge not 1")
	}
	ptu.SetDefault(llmtest.Answer{})
	le.clock.add(breakerCooldown + time.Second)
	if _, h, _ := call(); h.Get(HeaderBackend) != "ptu" {
		t.Fatalf("probe after cooldown: %v", h)
	}
	if !strings.Contains(le.metrics(), `plinth_llm_backend_breaker_open{backend="ptu"} 0`) {
		t.Fatal("breaker gauge not back to 0")
	}
	recs := le.waitRecords(3)
	if !recs[1].Spillover {
		t.Fatalf("spillover not metered: %+v", recs[1])
	}
}

func (e *env) metrics() string {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			var lbl []string
			for _, l := range m.Label {
				lbl = append(lbl, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			v := 0.0
			switch {
			case m.Gauge != nil:
				v = m.Gauge.GetValue()
			case m.Counter != nil:
				v = m.Counter.GetValue()
			}
			fmt.Fprintf(&b, "%s{%s} %g\n", mf.GetName(), strings.Join(lbl, ","), v)
		}
	}
	return b.String()
}

func TestOpenAIAllBackendsLimitedOrFailing(t *testing.T) {
	le := newLLMEnv(t, false)
	up := fakeUpstream(t, "a")
	le.g.Update(llmSnap(1, &LLM{
		Backends: map[string]*LLMBackend{"a": openAIBackend("a", up)},
		Models:   map[string]*LLMModel{"m": {Name: "m", Pool: []LLMTarget{{Backend: "a"}}}},
	}))
	up.Push(llmtest.RateLimited{RetryAfter: 7 * time.Second})
	s, h, b := le.post("/openai/v1/chat/completions", chatBody("m", "x", 5), "platform-alice")
	if s != 429 || h.Get("Retry-After") != "7" {
		t.Fatalf("%d %v %s", s, h, b)
	}
	// A backend failing with 5xx is retried (with backoff) before giving up.
	up2 := fakeUpstream(t, "b")
	le.g.Update(llmSnap(2, &LLM{
		Backends: map[string]*LLMBackend{"b": openAIBackend("b", up2)},
		Models:   map[string]*LLMModel{"m": {Name: "m", Pool: []LLMTarget{{Backend: "b"}}}},
	}))
	up2.Push(llmtest.Fail{Status: 503}, llmtest.Fail{Status: 502})
	if s, _, b := le.post("/openai/v1/chat/completions", chatBody("m", "x", 5), "platform-alice"); s != 200 {
		t.Fatalf("retries: %d %s", s, b)
	}
	if up2.Requests() != 3 {
		t.Fatalf("%d tries, want 3", up2.Requests())
	}
	up2.SetDefault(llmtest.Fail{Status: 500})
	s, _, b = le.post("/openai/v1/chat/completions", chatBody("m", "x", 5), "platform-alice")
	if s != 502 || !strings.Contains(b, "answered 500") {
		t.Fatalf("%d %s", s, b)
	}
}

// TPM limits hold under concurrency: 50 callers race for a team's tokens
// per minute, and what is admitted stays within one request of the limit.
func TestOpenAITokensPerMinuteUnderConcurrency(t *testing.T) {
	le := newLLMEnv(t, false)
	up := fakeUpstream(t, "a")
	const limit = 5000
	le.g.Update(llmSnap(1, &LLM{
		Backends: map[string]*LLMBackend{"a": openAIBackend("a", up)},
		Models:   map[string]*LLMModel{"m": {Name: "m", Pool: []LLMTarget{{Backend: "a"}}}},
		Teams:    map[string]*LLMTeamLimits{"risk": {TokensPerMinute: limit}},
	}))
	body := chatBody("m", strings.Repeat("lorem ipsum ", 20), 100)
	est, _ := tokens.EstimateRequest(tokens.Chat, "m", []byte(body))
	perCall := est.Prompt + est.MaxCompletion
	var ok, limited atomic.Int64
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 4 {
				s, h, b := le.post("/openai/v1/chat/completions", body, "platform-alice")
				switch s {
				case 200:
					ok.Add(1)
				case 429:
					limited.Add(1)
					if h.Get("Retry-After") == "" || !strings.Contains(b, "tokens per minute (TPM) for team risk") || h.Get("X-Ratelimit-Limit-Tokens") != "5000" {
						t.Errorf("429 without its headers or reason: %v %s", h, b)
					}
				default:
					t.Errorf("%d %s", s, b)
				}
			}
		}()
	}
	wg.Wait()
	// Reserved at prompt+max_tokens; settled to what was used, which is
	// less, so later calls may fit more: admitted tokens counted at the
	// estimate are at most the limit plus what settling gave back.
	admitted := ok.Load()
	if admitted*int64(perCall) < limit-int64(perCall) {
		t.Fatalf("only %d calls of %d tokens admitted under %d TPM", admitted, perCall, limit)
	}
	recs := le.waitRecords(int(admitted + limited.Load()))
	var used int64
	for _, r := range recs {
		if r.Status == 200 {
			used += r.PromptTokens + r.CompletionTokens
		}
	}
	t.Logf("%d calls of up to %d tokens admitted, %d limited; %d tokens used of %d", admitted, perCall, limited.Load(), used, limit)
	if used > limit {
		t.Fatalf("%d tokens used under a limit of %d", used, limit)
	}
	if limited.Load() == 0 {
		t.Fatal("nothing was limited")
	}
}

// Budgets: a team under its budget is never refused, and one over it is
// refused with 403 saying which budget and until when.
func TestOpenAIBudgetsBothWays(t *testing.T) {
	le := newLLMEnv(t, false)
	up := fakeUpstream(t, "a")
	b := openAIBackend("a", up)
	b.InputCostPer1K, b.OutputCostPer1K = 10, 10 // 1 cent per token
	le.g.Update(llmSnap(1, &LLM{
		Backends: map[string]*LLMBackend{"a": b},
		Models:   map[string]*LLMModel{"m": {Name: "m", Pool: []LLMTarget{{Backend: "a"}}}},
		Teams:    map[string]*LLMTeamLimits{"risk": {BudgetPerDay: 1.00}},
	}))
	body := chatBody("m", "hi", 10)
	var spent float64
	calls := 0
	for {
		s, h, out := le.post("/openai/v1/chat/completions", body, "platform-alice")
		if s == 403 {
			var e openAIError
			json.Unmarshal([]byte(out), &e)
			if e.Error.Type != "insufficient_quota" || *e.Error.Code != "budget_exceeded" || !strings.Contains(e.Error.Message, "daily budget of team risk") || !strings.Contains(e.Error.Message, "resets at") {
				t.Fatalf("403 body %s", out)
			}
			break
		}
		if s != 200 {
			t.Fatalf("%d %v %s", s, h, out)
		}
		calls++
		recs := le.waitRecords(calls)
		spent = 0
		for _, r := range recs {
			spent += r.Cost
		}
		if calls > 100 {
			t.Fatal("budget never enforced")
		}
	}
	// Refused only when the next call's worst case no longer fits: the
	// spend is within one call's worst case of the budget, never over it.
	worst := float64(30) * 0.01
	t.Logf("refused after %d calls spending %.4f", calls, spent)
	if spent > 1.00+1e-9 || spent < 1.00-worst {
		t.Fatalf("refused after spending %.4f of a 1.00 budget (worst call %.2f)", spent, worst)
	}
}

func TestOpenAIStreamIsNotBuffered(t *testing.T) {
	le := newLLMEnv(t, false)
	up := llmtest.New(llmtest.Options{Name: "slow", FirstChunkDelay: 150 * time.Millisecond, ChunkDelay: 100 * time.Millisecond})
	t.Cleanup(up.Close)
	le.g.Update(llmSnap(1, &LLM{
		Backends: map[string]*LLMBackend{"s": {Name: "s", Style: StyleOpenAI, BaseURL: up.URL() + "/v1"}},
		Models:   map[string]*LLMModel{"m": {Name: "m", Pool: []LLMTarget{{Backend: "s"}}}},
	}))
	firstChunk := func(url, token string) (time.Duration, []time.Duration) {
		body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"a b c d"}]}`
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		began := time.Now()
		resp, err := le.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var at []time.Duration
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 && strings.Contains(string(buf[:n]), `"content":"`) && !strings.Contains(string(buf[:n]), `"content":""`) {
				at = append(at, time.Since(began))
			}
			if err != nil {
				break
			}
		}
		if len(at) == 0 {
			t.Fatal("no content chunks")
		}
		return at[0], at
	}
	direct, _ := firstChunk(up.URL()+"/v1/chat/completions", "x")
	through, times := firstChunk(le.srv.URL+"/openai/v1/chat/completions", "platform-alice")
	// A buffered stream would show its first chunk only with its last, at
	// least 300 ms (three chunk delays) later than direct; the bound leaves
	// room for a loaded machine (bench/llm measures the real overhead).
	if d := through - direct; d > 200*time.Millisecond {
		t.Fatalf("first content chunk %v through the gateway, %v direct", through, direct)
	}
	if len(times) < 3 || times[len(times)-1]-times[0] < 150*time.Millisecond {
		t.Fatalf("chunks arrived together: %v", times)
	}
	// The gateway's own time-to-first-token counts the first word, not
	// the role chunk that opens the stream at once.
	mfs, _ := le.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "plinth_llm_time_to_first_token_seconds" {
			h := mf.Metric[0].Histogram
			if h.GetSampleCount() != 1 || h.GetSampleSum() < 0.14 {
				t.Fatalf("ttft metric: %d samples, sum %.3fs; want 1 of about 0.15s", h.GetSampleCount(), h.GetSampleSum())
			}
			return
		}
	}
	t.Fatal("no ttft metric")
}

func TestStreamTextDetectionAndFallbackCount(t *testing.T) {
	cases := map[string]bool{
		`{"choices":[{"delta":{"role":"assistant","content":""}}]}`:        false,
		`{"choices":[{"delta":{"content":"Hi"}}]}`:                         true,
		`{"choices":[{"text":"","index":0}]}`:                              false,
		`{"choices":[{"text":" there","index":0}]}`:                        true,
		`{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}`: false,
	}
	for in, want := range cases {
		if hasText([]byte(in)) != want {
			t.Errorf("hasText(%s) = %v", in, !want)
		}
	}
	chunks := `{"choices":[{"delta":{"content":"Hello"}}]}` + "\n" + `{"choices":[{"delta":{"content":" world"}}]}` + "\n"
	if n, want := countStreamText("gpt-4o", []byte(chunks)), tokens.ForModel("gpt-4o").Count("Hello world"); n != want || n == 0 {
		t.Fatalf("counted %d tokens, want %d", n, want)
	}
}

func TestOpenAIStreamCutByBackendReachesCaller(t *testing.T) {
	le := newLLMEnv(t, false)
	up := fakeUpstream(t, "a")
	le.g.Update(llmSnap(1, &LLM{
		Backends: map[string]*LLMBackend{"a": openAIBackend("a", up)},
		Models:   map[string]*LLMModel{"m": {Name: "m", Pool: []LLMTarget{{Backend: "a"}}}},
	}))
	up.Push(llmtest.CutStream{AfterChunks: 2})
	client := le.sdk()
	stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("one two three four five")}})
	for stream.Next() {
	}
	if stream.Err() == nil {
		t.Fatal("a cut stream ended like a complete one")
	}
	if up.Requests() != 1 {
		t.Fatalf("a stream that had started was retried: %d requests", up.Requests())
	}
}

func TestOpenAIAzureShapes(t *testing.T) {
	le := newLLMEnv(t, false)
	up := fakeUpstream(t, "az")
	le.g.Update(llmSnap(1, &LLM{
		Backends: map[string]*LLMBackend{"az": {Name: "az", Style: StyleAzureOpenAI, BaseURL: up.URL(), APIVersion: "2024-10-21", Credential: "upstream-az"}},
		Models:   map[string]*LLMModel{"gpt-4o": {Name: "gpt-4o", Pool: []LLMTarget{{Backend: "az", Model: "prod-4o"}}}},
	}))
	// An Azure OpenAI SDK client pointed at the gateway, calling an Azure
	// backend: deployment in the path, api-key header on both hops.
	client := openai.NewClient(
		azure.WithEndpoint(le.srv.URL, "2024-06-01"),
		azure.WithAPIKey("platform-alice"),
		azure.WithUnsafeAllowHTTP(), // the test gateway listens on loopback without TLS
		option.WithMaxRetries(0),
		option.WithHTTPClient(le.client),
	)
	res, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: "gpt-4o", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("azure hi")}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Choices[0].Message.Content != "az says: azure hi" {
		t.Fatalf("%+v", res)
	}
	last, _ := up.Last()
	if last.Path != "/openai/deployments/prod-4o/chat/completions" || last.Query.Get("api-version") != "2024-06-01" || last.Header.Get("Api-Key") != "upstream-az" || last.Header.Get("Authorization") != "" {
		t.Fatalf("upstream got %s ?%v key=%q auth=%q", last.Path, last.Query, last.Header.Get("Api-Key"), last.Header.Get("Authorization"))
	}
	// The OpenAI shape to the same Azure backend uses its api_version.
	if s, _, b := le.post("/openai/v1/chat/completions", chatBody("gpt-4o", "x", 5), "platform-alice"); s != 200 {
		t.Fatalf("%d %s", s, b)
	}
	last, _ = up.Last()
	if last.Query.Get("api-version") != "2024-10-21" {
		t.Fatalf("api-version %v", last.Query)
	}
}

func TestOpenAICacheAndMirror(t *testing.T) {
	le := newLLMEnv(t, false)
	up, shadow := fakeUpstream(t, "a"), fakeUpstream(t, "shadow")
	le.g.Update(llmSnap(1, &LLM{
		Backends: map[string]*LLMBackend{"a": openAIBackend("a", up), "shadow": openAIBackend("shadow", shadow)},
		Models: map[string]*LLMModel{
			"m":     {Name: "m", Pool: []LLMTarget{{Backend: "a"}}, CacheTTL: time.Minute, MirrorModel: "m-new", MirrorPercent: 50},
			"m-new": {Name: "m-new", Pool: []LLMTarget{{Backend: "shadow"}}},
		},
	}))
	zero := `{"model":"m","temperature":0,"messages":[{"role":"user","content":"same"}]}`
	reordered := `{"messages":[{"content":"same","role":"user"}],"temperature":0,"model":"m"}`
	s1, h1, b1 := le.post("/openai/v1/chat/completions", zero, "platform-alice")
	s2, h2, b2 := le.post("/openai/v1/chat/completions", reordered, "platform-alice")
	if s1 != 200 || s2 != 200 || b1 != b2 || h1.Get(HeaderCache) != "" || h2.Get(HeaderCache) != "hit" || up.Requests() != 1 {
		t.Fatalf("cache: %v %v, %d upstream calls", h1, h2, up.Requests())
	}
	// Default temperature is not cached.
	le.post("/openai/v1/chat/completions", chatBody("m", "warm", 5), "platform-alice")
	le.post("/openai/v1/chat/completions", chatBody("m", "warm", 5), "platform-alice")
	if up.Requests() != 3 {
		t.Fatalf("a call without temperature 0 was cached: %d upstream calls", up.Requests())
	}
	// Mirror: about half the calls are copied; a hanging mirror never
	// delays the caller.
	shadow.SetDefault(llmtest.Hang{})
	began := time.Now()
	for range 20 {
		if s, _, b := le.post("/openai/v1/chat/completions", chatBody("m", "x", 5), "platform-alice"); s != 200 {
			t.Fatalf("%d %s", s, b)
		}
	}
	if time.Since(began) > 3*time.Second {
		t.Fatalf("a hanging mirror slowed callers: %v", time.Since(began))
	}
	if n := shadow.InFlight(); n == 0 || n > 20 {
		t.Fatalf("%d mirror copies in flight", n)
	}
	shadow.Release()
}

// Two gateways sharing their counters in Redis enforce one team limit
// together, exactly as one gateway does.
func TestOpenAILimitsSharedInRedis(t *testing.T) {
	url, prefix := redistest.URL(t), redistest.Prefix(t)
	newShared := func() *llmEnv {
		rc, err := ratelimit.OpenRedis(url, prefix)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rc.Close() })
		le := &llmEnv{}
		le.env = newEnv(t, Options{Counter: rc})
		return le
	}
	a, b := newShared(), newShared()
	up := fakeUpstream(t, "a")
	const rpm = 40
	snap := llmSnap(1, &LLM{
		Backends: map[string]*LLMBackend{"a": openAIBackend("a", up)},
		Models:   map[string]*LLMModel{"m": {Name: "m", Pool: []LLMTarget{{Backend: "a"}}}},
		Teams:    map[string]*LLMTeamLimits{"risk": {RequestsPerMinute: rpm}},
	})
	a.g.Update(snap)
	b.g.Update(snap)
	var ok, limited atomic.Int64
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			le := a
			if i%2 == 1 {
				le = b
			}
			for range 5 {
				s, h, body := le.post("/openai/v1/chat/completions", chatBody("m", "x", 5), "platform-alice")
				switch s {
				case 200:
					ok.Add(1)
				case 429:
					limited.Add(1)
					if h.Get("X-Ratelimit-Remaining-Requests") != "0" {
						t.Errorf("429 with remaining %q", h.Get("X-Ratelimit-Remaining-Requests"))
					}
				default:
					t.Errorf("%d %s", s, body)
				}
			}
		}()
	}
	wg.Wait()
	if ok.Load() != rpm || limited.Load() != 100-rpm {
		t.Fatalf("%d admitted, %d limited across two gateways under %d RPM", ok.Load(), limited.Load(), rpm)
	}
}

// A Plinth online deployment serving the OpenAI API is a backend like any
// other: calls go to its replicas' /v1 routes.
func TestOpenAIBackendIsAnOnlineEndpoint(t *testing.T) {
	le := newLLMEnv(t, false)
	r1, r2 := llmtest.New(llmtest.Options{Name: "r1"}), llmtest.New(llmtest.Options{Name: "r2"})
	t.Cleanup(r1.Close)
	t.Cleanup(r2.Close)
	ep := keyEndpoint(&Deployment{Name: "blue", MaxConcurrentPerInstance: 8, Replicas: []Replica{
		{ID: "r1", Addr: strings.TrimPrefix(r1.URL(), "http://")}, {ID: "r2", Addr: strings.TrimPrefix(r2.URL(), "http://")}}})
	ep.Name = "llama"
	s := llmSnap(1, &LLM{
		Backends: map[string]*LLMBackend{"own": {Name: "own", Style: StyleEndpoint, BaseURL: "default/llama"}},
		Models:   map[string]*LLMModel{"llama": {Name: "llama", Pool: []LLMTarget{{Backend: "own"}}}},
	})
	s.Endpoints = map[string]*Endpoint{"default/llama": ep}
	le.g.Update(s)
	for range 10 {
		if st, h, b := le.post("/openai/v1/chat/completions", chatBody("llama", "hi", 5), "platform-alice"); st != 200 || h.Get(HeaderBackend) != "own" {
			t.Fatalf("%d %v %s", st, h, b)
		}
	}
	if r1.Requests() == 0 || r2.Requests() == 0 || r1.Requests()+r2.Requests() != 10 {
		t.Fatalf("replicas got %d and %d calls", r1.Requests(), r2.Requests())
	}
	last, _ := r1.Last()
	if last.Path != "/v1/chat/completions" {
		t.Fatalf("path %s", last.Path)
	}
}
