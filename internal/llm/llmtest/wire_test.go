package llmtest_test

// These tests look at the bytes on the wire, where the SDK would hide a
// difference: exact error bodies, headers, and the event-stream framing.

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/llm/llmtest"
)

func post(t *testing.T, url, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testKey)
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] == "" {
			req.Header.Del(header[i])
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, b
}

type wireError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func TestValidationErrors(t *testing.T) {
	s := start(t, llmtest.Options{})
	chat := s.URL() + "/v1/chat/completions"
	emb := s.URL() + "/v1/embeddings"
	cases := []struct {
		name, url, body string
		status          int
		param, code     string // "" means null
		message         string // substring
	}{
		{"bad json", chat, `{"model":`, 400, "", "", "We could not parse the JSON body"},
		{"not an object", chat, `[1,2]`, 400, "", "", "We could not parse the JSON body"},
		{"no model", chat, `{"messages":[{"role":"user","content":"hi"}]}`, 400, "", "", "you must provide a model parameter"},
		{"no messages", chat, `{"model":"m"}`, 400, "messages", "missing_required_parameter", "Missing required parameter: 'messages'."},
		{"empty messages", chat, `{"model":"m","messages":[]}`, 400, "messages", "empty_array", "Invalid 'messages': empty array."},
		{"messages not array", chat, `{"model":"m","messages":"hi"}`, 400, "messages", "invalid_type", "expected an array of objects, but got a string instead"},
		{"no role", chat, `{"model":"m","messages":[{"content":"hi"}]}`, 400, "messages[0].role", "missing_required_parameter", "'messages[0].role'"},
		{"bad role", chat, `{"model":"m","messages":[{"role":"robot","content":"hi"}]}`, 400, "messages[0].role", "invalid_value", "Invalid value: 'robot'."},
		{"n zero", chat, `{"model":"m","n":0,"messages":[{"role":"user","content":"hi"}]}`, 400, "n", "integer_below_min_value", "Expected a value >= 1, but got 0 instead."},
		{"n string", chat, `{"model":"m","n":"2","messages":[{"role":"user","content":"hi"}]}`, 400, "n", "invalid_type", "expected an integer, but got a string instead"},
		{"max_tokens zero", chat, `{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"hi"}]}`, 400, "max_tokens", "integer_below_min_value", "Invalid 'max_tokens': integer below minimum value."},
		{"stream_options without stream", chat, `{"model":"m","stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`, 400, "stream_options", "", "only allowed when 'stream' is enabled"},
		{"embeddings no input", emb, `{"model":"m"}`, 400, "input", "missing_required_parameter", "'input'"},
		{"embeddings empty input", emb, `{"model":"m","input":""}`, 400, "", "", "'$.input' is invalid."},
		{"embeddings dimensions", emb, `{"model":"m","input":"x","dimensions":-1}`, 400, "", "", "-1 is less than the minimum of 1 - 'dimensions'"},
		{"embeddings format", emb, `{"model":"m","input":"x","encoding_format":"hex"}`, 400, "", "", "'hex' is not one of ['float', 'base64'] - 'encoding_format'"},
		{"completions no prompt", s.URL() + "/v1/completions", `{"model":"m"}`, 400, "prompt", "missing_required_parameter", "'prompt'"},
		{"unknown route", s.URL() + "/v1/chat/complete", `{}`, 404, "", "", "Invalid URL (POST /v1/chat/complete)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, body := post(t, tc.url, tc.body)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tc.status, body)
			}
			var we wireError
			if err := json.Unmarshal(body, &we); err != nil {
				t.Fatalf("%v: %s", err, body)
			}
			e := we.Error
			if e.Type != "invalid_request_error" || !strings.Contains(e.Message, tc.message) {
				t.Errorf("type %q message %q", e.Type, e.Message)
			}
			if got := deref(e.Param); got != tc.param {
				t.Errorf("param %q, want %q", got, tc.param)
			}
			if got := deref(e.Code); got != tc.code {
				t.Errorf("code %q, want %q", got, tc.code)
			}
		})
	}
	// A refused request does not use up a scripted behavior.
	s.Push(llmtest.Fail{})
	post(t, chat, `{"model":"m"}`)
	if s.Pending() != 1 {
		t.Errorf("validation error consumed the behavior")
	}
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// OpenAI indents error bodies by four spaces and ends them with a newline;
// successful bodies by two. Gateways must not assume compact JSON.
func TestErrorBodyBytes(t *testing.T) {
	s := start(t, llmtest.Options{})
	res, body := post(t, s.URL()+"/v1/chat/completions", `{}`, "Authorization", "")
	want := `{
    "error": {
        "message": "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username. You can obtain an API key from https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": null,
        "code": null
    }
}
`
	if res.StatusCode != 401 || string(body) != want {
		t.Errorf("%d\n%s", res.StatusCode, body)
	}
	if res.Header.Get("Content-Type") != "application/json" || !strings.HasPrefix(res.Header.Get("x-request-id"), "req_") {
		t.Errorf("headers %v", res.Header)
	}
	// Azure's api-key header is accepted on OpenAI routes too.
	res, _ = post(t, s.URL()+"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, "Authorization", "", "api-key", testKey)
	if res.StatusCode != 200 {
		t.Errorf("api-key header: %d", res.StatusCode)
	}
}

func TestResponseHeaders(t *testing.T) {
	s := start(t, llmtest.Options{Name: "hdr"})
	res, body := post(t, s.URL()+"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	if res.StatusCode != 200 || !strings.HasPrefix(string(body), "{\n  \"id\": \"chatcmpl-") {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	for _, h := range []string{"x-request-id", "openai-version", "openai-processing-ms", "openai-organization", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"} {
		if res.Header.Get(h) == "" {
			t.Errorf("missing %s", h)
		}
	}
	if res.Header.Get("x-llmtest-server") != "hdr" {
		t.Errorf("x-llmtest-server %q", res.Header.Get("x-llmtest-server"))
	}
}

// readEvents reads a text/event-stream body into its data payloads.
func readEvents(t *testing.T, r io.Reader) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	blank := true
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			blank = true
			continue
		}
		if !blank {
			t.Fatalf("two lines in one event: %q", line)
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("line %q is not a data field", line)
		}
		out = append(out, data)
		blank = false
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestStreamFraming(t *testing.T) {
	s := start(t, llmtest.Options{Reply: "a b"})
	res, body := post(t, s.URL()+"/v1/chat/completions", `{"model":"m","stream":true,"n":2,"messages":[{"role":"user","content":"hi"}]}`)
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream; charset=utf-8" {
		t.Errorf("content type %q", ct)
	}
	events := readEvents(t, strings.NewReader(string(body)))
	// 2 role chunks, 2 pieces x 2 choices, 2 finish chunks, [DONE].
	if len(events) != 9 || events[8] != "[DONE]" {
		t.Fatalf("%d events: %q", len(events), events)
	}
	var indexes []int
	for _, ev := range events[:8] {
		var ch struct {
			Object  string          `json:"object"`
			Usage   json.RawMessage `json:"usage"`
			Choices []struct {
				Index int `json:"index"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(ev), &ch); err != nil {
			t.Fatal(err)
		}
		if ch.Object != "chat.completion.chunk" || ch.Usage != nil {
			t.Errorf("chunk %s", ev)
		}
		indexes = append(indexes, ch.Choices[0].Index)
	}
	if got := jsonString(indexes); got != "[0,1,0,1,0,1,0,1]" {
		t.Errorf("choice order %s", got)
	}
	if !strings.Contains(events[0], `"delta":{"role":"assistant","content":"","refusal":null}`) {
		t.Errorf("first chunk %s", events[0])
	}
	if !strings.Contains(events[6], `"delta":{},"logprobs":null,"finish_reason":"stop"`) {
		t.Errorf("finish chunk %s", events[6])
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestAzureRoutes(t *testing.T) {
	s := start(t, llmtest.Options{})
	base := s.URL() + "/openai/deployments/dep/chat/completions"
	msg := `{"messages":[{"role":"user","content":"hi"}]}`

	res, body := post(t, base, msg, "Authorization", "", "api-key", testKey)
	if res.StatusCode != 404 || string(body) != `{"error":{"code":"404","message":"Resource not found"}}` {
		t.Errorf("no api-version: %d %s", res.StatusCode, body)
	}
	res, body = post(t, base+"?api-version=2024-10-21", msg, "Authorization", "", "api-key", "wrong")
	if res.StatusCode != 401 || !strings.Contains(string(body), `"code":"401"`) {
		t.Errorf("wrong key: %d %s", res.StatusCode, body)
	}
	res, body = post(t, s.URL()+"/openai/deployments/dep/images/generations?api-version=2024-10-21", msg, "Authorization", "", "api-key", testKey)
	if res.StatusCode != 404 {
		t.Errorf("unknown operation: %d %s", res.StatusCode, body)
	}
	// Azure takes Entra ID bearer tokens too; the fake treats them as keys.
	res, body = post(t, base+"?api-version=2024-10-21", msg)
	if res.StatusCode != 200 || res.Header.Get("apim-request-id") == "" {
		t.Fatalf("bearer: %d %s", res.StatusCode, body)
	}
	var cc map[string]any
	if err := json.Unmarshal(body, &cc); err != nil {
		t.Fatal(err)
	}
	if cc["model"] != "dep" || cc["prompt_filter_results"] == nil || cc["service_tier"] != nil {
		t.Errorf("azure answer %s", body)
	}

	res, body = post(t, base+"?api-version=2024-10-21", `{"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	events := readEvents(t, strings.NewReader(string(body)))
	if res.StatusCode != 200 || len(events) < 2 || !strings.HasPrefix(events[0], `{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[`) {
		t.Errorf("azure stream %q", events)
	}
}

func TestCutStreamAtHeaders(t *testing.T) {
	s := start(t, llmtest.Options{})
	s.Push(llmtest.CutStream{AfterChunks: 0})
	req, _ := http.NewRequest(http.MethodPost, s.URL()+"/v1/chat/completions", strings.NewReader(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+testKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if res.StatusCode != 200 || err == nil || len(b) != 0 {
		t.Errorf("status %d, %d bytes, err %v", res.StatusCode, len(b), err)
	}
}

func TestLegacyCompletionPrompts(t *testing.T) {
	s := start(t, llmtest.Options{Reply: "x y"})
	res, body := post(t, s.URL()+"/v1/completions", `{"model":"m","prompt":["a b","c d e"],"n":2,"echo":true}`)
	if res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	var tc struct {
		Choices []struct {
			Text  string `json:"text"`
			Index int    `json:"index"`
		} `json:"choices"`
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(body, &tc); err != nil {
		t.Fatal(err)
	}
	if len(tc.Choices) != 4 || tc.Choices[0].Text != "a bx y" || tc.Choices[3].Index != 3 {
		t.Errorf("%s", body)
	}
	// 2 + 3 words; 2 prompts x 2 choices x 2 words.
	if tc.Usage.PromptTokens != 5 || tc.Usage.CompletionTokens != 8 {
		t.Errorf("usage %+v", tc.Usage)
	}

	// Pre-tokenized prompts count one token per id.
	_, body = post(t, s.URL()+"/v1/completions", `{"model":"m","prompt":[[1,2,3],[4]]}`)
	if err := json.Unmarshal(body, &tc); err != nil {
		t.Fatal(err)
	}
	if tc.Usage.PromptTokens != 4 || len(tc.Choices) != 2 {
		t.Errorf("token prompts: %s", body)
	}
}

func TestMountedHandler(t *testing.T) {
	s := llmtest.NewHandler(llmtest.Options{Name: "mounted"})
	defer s.Close()
	mux := http.NewServeMux()
	mux.Handle("/", s)
	hs := httptest.NewServer(mux)
	defer hs.Close()
	if s.URL() != "" {
		t.Errorf("unstarted server has URL %q", s.URL())
	}
	res, body := post(t, hs.URL+"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	if res.StatusCode != 200 || !strings.Contains(string(body), "mounted says: hi") {
		t.Errorf("%d %s", res.StatusCode, body)
	}
}

func TestRequestLog(t *testing.T) {
	s := start(t, llmtest.Options{KeepRequests: 2})
	for _, p := range []string{"/v1/models", "/v1/models/gpt-4o-mini", "/v1/models?x=1"} {
		req, _ := http.NewRequest(http.MethodGet, s.URL()+p, nil)
		req.Header.Set("Authorization", "Bearer "+testKey)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	if err := s.WaitRequests(3, time.Second); err != nil {
		t.Fatal(err)
	}
	rs := s.Received()
	if len(rs) != 2 || rs[0].Path != "/v1/models/gpt-4o-mini" || rs[1].Query.Get("x") != "1" || s.Requests() != 3 {
		t.Errorf("log %+v, total %d", rs, s.Requests())
	}
	if err := s.WaitRequests(4, 20*time.Millisecond); err == nil {
		t.Error("WaitRequests(4) succeeded with 3 requests")
	}
}

func TestContentPartsAndTokenInputs(t *testing.T) {
	s := start(t, llmtest.Options{EmbeddingDimensions: 4})
	res, body := post(t, s.URL()+"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"look at"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}},{"type":"text","text":"this"}]}]}`)
	if res.StatusCode != 200 || !strings.Contains(string(body), `"content": "llmtest says: look at\nthis"`) {
		t.Errorf("content parts: %d %s", res.StatusCode, body)
	}
	res, body = post(t, s.URL()+"/v1/embeddings", `{"model":"m","input":[[1,2,3],[4,5]]}`)
	var l struct {
		Data []struct {
			Embedding []float32 `json:"embedding"`
		} `json:"data"`
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || len(l.Data) != 2 || len(l.Data[0].Embedding) != 4 || l.Usage.PromptTokens != 5 {
		t.Errorf("token inputs: %d %s", res.StatusCode, body)
	}
	if jsonString(l.Data[0].Embedding) == jsonString(l.Data[1].Embedding) {
		t.Error("different inputs, same vector")
	}
}
