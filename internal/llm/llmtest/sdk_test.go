package llmtest_test

// These tests check the fake against the official OpenAI Go SDK: if the SDK
// cannot tell it from OpenAI, neither can the gateway's users.

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/azure"
	"github.com/openai/openai-go/v3/option"

	"github.com/plinth-dev/plinth/internal/llm/llmtest"
)

const testKey = "sk-test-0123456789abcdef"

func start(t *testing.T, opts llmtest.Options) *llmtest.Server {
	t.Helper()
	if opts.APIKey == "" {
		opts.APIKey = testKey
	}
	s := llmtest.New(opts)
	t.Cleanup(s.Close)
	return s
}

// client is an SDK client aimed at s with retries off, so each scripted
// failure surfaces as it is.
func client(s *llmtest.Server, opts ...option.RequestOption) openai.Client {
	base := []option.RequestOption{
		option.WithBaseURL(s.URL() + "/v1/"),
		option.WithAPIKey(testKey),
		option.WithMaxRetries(0),
	}
	return openai.NewClient(append(base, opts...)...)
}

func userChat(text string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(text)},
	}
}

func TestChatCompletion(t *testing.T) {
	s := start(t, llmtest.Options{Name: "up-a"})
	c := client(s)
	params := userChat("hello there world")
	params.Messages = append([]openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be brief")}, params.Messages...)
	res, err := c.Chat.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.ID, "chatcmpl-") || res.Object != "chat.completion" || res.Model != "gpt-4o-mini" || res.Created == 0 {
		t.Errorf("envelope: id %q object %q model %q created %d", res.ID, res.Object, res.Model, res.Created)
	}
	if len(res.Choices) != 1 {
		t.Fatalf("choices: %d", len(res.Choices))
	}
	ch := res.Choices[0]
	if ch.Message.Content != "up-a says: hello there world" || ch.Message.Role != "assistant" || ch.FinishReason != "stop" {
		t.Errorf("choice: %+v", ch.Message)
	}
	if raw := ch.Message.JSON.Refusal.Raw(); raw != "null" {
		t.Errorf("refusal raw %q, want null", raw)
	}
	if raw := ch.Message.JSON.Annotations.Raw(); raw != "[]" {
		t.Errorf("annotations raw %q, want []", raw)
	}
	// Prompt: 3 (priming) + [3 + 1 (system) + 2 (be brief)] + [3 + 1 (user) + 3].
	u := res.Usage
	if u.PromptTokens != 16 || u.CompletionTokens != 5 || u.TotalTokens != 21 {
		t.Errorf("usage: %+v", u)
	}
	if !u.PromptTokensDetails.JSON.CachedTokens.Valid() || !u.CompletionTokensDetails.JSON.ReasoningTokens.Valid() {
		t.Errorf("usage details missing: %s", u.RawJSON())
	}
	if res.ServiceTier != "default" || !strings.HasPrefix(res.SystemFingerprint, "fp_") {
		t.Errorf("service_tier %q, system_fingerprint %q", res.ServiceTier, res.SystemFingerprint)
	}

	r, ok := s.Last()
	if !ok || r.Method != http.MethodPost || r.Path != "/v1/chat/completions" || r.Header.Get("Authorization") != "Bearer "+testKey {
		t.Errorf("recorded %+v", r)
	}
	var body struct {
		Model string `json:"model"`
	}
	if err := r.DecodeBody(&body); err != nil || body.Model != "gpt-4o-mini" {
		t.Errorf("recorded body %s (%v)", r.Body, err)
	}
	if s.Requests() != 1 {
		t.Errorf("Requests() = %d", s.Requests())
	}
}

func TestChatNAndMaxTokens(t *testing.T) {
	s := start(t, llmtest.Options{Reply: "one two three four five"})
	c := client(s)
	params := userChat("hi")
	params.N = openai.Int(2)
	params.MaxCompletionTokens = openai.Int(3)
	res, err := c.Chat.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Choices) != 2 {
		t.Fatalf("choices: %d", len(res.Choices))
	}
	for i, ch := range res.Choices {
		if ch.Index != int64(i) || ch.Message.Content != "one two three" || ch.FinishReason != "length" {
			t.Errorf("choice %d: %+v %q", i, ch.Message.Content, ch.FinishReason)
		}
	}
	if res.Usage.CompletionTokens != 6 {
		t.Errorf("completion tokens %d, want 2 choices x 3", res.Usage.CompletionTokens)
	}

	// A per-request reply and the older max_tokens.
	s.Push(llmtest.Answer{Text: "scripted answer"})
	params = userChat("hi")
	params.MaxTokens = openai.Int(10)
	res, err = c.Chat.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Choices[0].Message.Content; got != "scripted answer" || res.Choices[0].FinishReason != "stop" {
		t.Errorf("got %q %q", got, res.Choices[0].FinishReason)
	}
}

func TestChatStreamIncludeUsage(t *testing.T) {
	s := start(t, llmtest.Options{Name: "up-b"})
	c := client(s)
	params := userChat("count these words")
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.Chat.Completions.NewStreaming(context.Background(), params)
	var acc openai.ChatCompletionAccumulator
	var chunks []openai.ChatCompletionChunk
	for stream.Next() {
		ch := stream.Current()
		if !acc.AddChunk(ch) {
			t.Fatalf("accumulator refused chunk %s", ch.RawJSON())
		}
		chunks = append(chunks, ch)
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	// role chunk + 5 words + finish chunk + usage chunk
	if len(chunks) != 8 {
		t.Fatalf("%d chunks", len(chunks))
	}
	if d := chunks[0].Choices[0].Delta; d.Role != "assistant" || d.Content != "" {
		t.Errorf("first delta %+v", d)
	}
	last := chunks[len(chunks)-1]
	if len(last.Choices) != 0 || last.Usage.TotalTokens == 0 {
		t.Errorf("usage chunk: %s", last.RawJSON())
	}
	for _, ch := range chunks[:len(chunks)-1] {
		if raw := ch.JSON.Usage.Raw(); raw != "null" {
			t.Errorf("chunk usage raw %q, want null before the last chunk", raw)
		}
	}
	if got := acc.Choices[0].Message.Content; got != "up-b says: count these words" {
		t.Errorf("accumulated %q", got)
	}
	if acc.Choices[0].FinishReason != "stop" {
		t.Errorf("finish %q", acc.Choices[0].FinishReason)
	}
	// 3 + (3 + 1 + 3) prompt, 5 completion.
	if acc.Usage.PromptTokens != 10 || acc.Usage.CompletionTokens != 5 || acc.Usage.TotalTokens != 15 {
		t.Errorf("usage %+v", acc.Usage)
	}
}

func TestChatStreamPacing(t *testing.T) {
	s := start(t, llmtest.Options{Reply: "a b c d", FirstChunkDelay: 60 * time.Millisecond, ChunkDelay: 20 * time.Millisecond})
	c := client(s)
	begin := time.Now()
	stream := c.Chat.Completions.NewStreaming(context.Background(), userChat("x"))
	var first time.Duration
	for stream.Next() {
		if first == 0 {
			first = time.Since(begin)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	total := time.Since(begin)
	if first < 60*time.Millisecond {
		t.Errorf("first chunk after %v, want >= 60ms", first)
	}
	if total < 60*time.Millisecond+4*20*time.Millisecond {
		t.Errorf("stream took %v, want >= 140ms", total)
	}

	// Non-streaming answers take as long as the stream would have.
	begin = time.Now()
	if _, err := c.Chat.Completions.New(context.Background(), userChat("x")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d < 140*time.Millisecond {
		t.Errorf("non-streaming answer after %v, want >= 140ms", d)
	}
}

func TestCompletions(t *testing.T) {
	s := start(t, llmtest.Options{Name: "up-c"})
	c := client(s)
	res, err := c.Completions.New(context.Background(), openai.CompletionNewParams{
		Model:  "gpt-3.5-turbo-instruct",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("say this is a test")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Object != "text_completion" || !strings.HasPrefix(res.ID, "cmpl-") || len(res.Choices) != 1 {
		t.Fatalf("%s", res.RawJSON())
	}
	if got := res.Choices[0].Text; got != "up-c says: say this is a test" || res.Choices[0].FinishReason != "stop" {
		t.Errorf("text %q finish %q", got, res.Choices[0].FinishReason)
	}
	if res.Usage.PromptTokens != 5 || res.Usage.CompletionTokens != 7 || res.Usage.TotalTokens != 12 {
		t.Errorf("usage %+v", res.Usage)
	}

	// max_tokens defaults to 16 on this endpoint, as on OpenAI's.
	s.SetReply(strings.Repeat("word ", 20))
	stream := c.Completions.NewStreaming(context.Background(), openai.CompletionNewParams{
		Model:         "gpt-3.5-turbo-instruct",
		Prompt:        openai.CompletionNewParamsPromptUnion{OfString: openai.String("go")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var text strings.Builder
	finish := ""
	var completionTokens int64
	for stream.Next() {
		ch := stream.Current()
		if ch.Object != "text_completion" {
			t.Errorf("chunk object %q", ch.Object)
		}
		for _, choice := range ch.Choices {
			text.WriteString(choice.Text)
			if choice.FinishReason != "" {
				finish = string(choice.FinishReason)
			}
		}
		completionTokens += ch.Usage.CompletionTokens
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(text.String(), "word"); got != 16 || finish != "length" || completionTokens != 16 {
		t.Errorf("%d words, finish %q, %d completion tokens", got, finish, completionTokens)
	}
}

func TestEmbeddings(t *testing.T) {
	s := start(t, llmtest.Options{EmbeddingDimensions: 8})
	c := client(s)
	for _, format := range []openai.EmbeddingNewParamsEncodingFormat{openai.EmbeddingNewParamsEncodingFormatFloat, openai.EmbeddingNewParamsEncodingFormatBase64} {
		t.Run(string(format), func(t *testing.T) {
			res, err := c.Embeddings.New(context.Background(), openai.EmbeddingNewParams{
				Model:          "text-embedding-3-small",
				Input:          openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"first input", "second"}},
				EncodingFormat: format,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Object != "list" || len(res.Data) != 2 || res.Model != "text-embedding-3-small" {
				t.Fatalf("%s", res.RawJSON())
			}
			if res.Usage.PromptTokens != 3 || res.Usage.TotalTokens != 3 {
				t.Errorf("usage %+v", res.Usage)
			}
			for i, in := range []string{"first input", "second"} {
				want := llmtest.Embedding("text-embedding-3-small", in, 8)
				got := res.Data[i].Embedding
				if res.Data[i].Index != int64(i) || len(got) != len(want) {
					t.Fatalf("embedding %d: index %d, %d dims", i, res.Data[i].Index, len(got))
				}
				var norm float64
				for j := range got {
					if float32(got[j]) != want[j] {
						t.Fatalf("embedding %d[%d] = %v, want %v", i, j, got[j], want[j])
					}
					norm += got[j] * got[j]
				}
				if math.Abs(norm-1) > 1e-5 {
					t.Errorf("norm^2 = %v", norm)
				}
			}
			if format == openai.EmbeddingNewParamsEncodingFormatBase64 && !strings.HasPrefix(res.Data[0].JSON.Embedding.Raw(), `"`) {
				t.Errorf("base64 answer not a string: %s", res.Data[0].JSON.Embedding.Raw())
			}
		})
	}

	res, err := c.Embeddings.New(context.Background(), openai.EmbeddingNewParams{
		Model:      "text-embedding-3-small",
		Input:      openai.EmbeddingNewParamsInputUnion{OfString: openai.String("first input")},
		Dimensions: openai.Int(3),
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(res.Data[0].Embedding); n != 3 {
		t.Errorf("dimensions 3 gave %d", n)
	}
}

func TestModels(t *testing.T) {
	s := start(t, llmtest.Options{Models: []string{"gpt-a", "gpt-b"}})
	c := client(s)
	page, err := c.Models.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 2 || page.Data[0].ID != "gpt-a" || page.Data[0].Object != "model" || page.Data[0].OwnedBy == "" {
		t.Errorf("%s", page.RawJSON())
	}
	m, err := c.Models.Get(context.Background(), "gpt-b")
	if err != nil || m.ID != "gpt-b" {
		t.Errorf("get: %+v %v", m, err)
	}
	_, err = c.Models.Get(context.Background(), "gpt-z")
	if apiErr := asAPIError(t, err, http.StatusNotFound); apiErr.Code != "model_not_found" {
		t.Errorf("code %q", apiErr.Code)
	}
	// Options.Models also limits what requests may use.
	_, err = c.Chat.Completions.New(context.Background(), userChat("hi"))
	if apiErr := asAPIError(t, err, http.StatusNotFound); apiErr.Code != "model_not_found" || apiErr.Type != "invalid_request_error" {
		t.Errorf("unknown model: %+v", apiErr)
	}
}

func asAPIError(t *testing.T, err error, status int) *openai.Error {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("error %v (%T), want *openai.Error", err, err)
	}
	if apiErr.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", apiErr.StatusCode, status, apiErr.RawJSON())
	}
	return apiErr
}

func TestErrorsThroughSDK(t *testing.T) {
	s := start(t, llmtest.Options{})
	ctx := context.Background()

	wrong := openai.NewClient(option.WithBaseURL(s.URL()+"/v1/"), option.WithAPIKey("sk-wrong-key-000000"), option.WithMaxRetries(0))
	_, err := wrong.Chat.Completions.New(ctx, userChat("hi"))
	if e := asAPIError(t, err, http.StatusUnauthorized); e.Code != "invalid_api_key" || e.Type != "invalid_request_error" || e.JSON.Param.Raw() != "null" {
		t.Errorf("401: %s", e.RawJSON())
	}

	c := client(s)
	s.Push(llmtest.RateLimited{RetryAfter: 2 * time.Second})
	_, err = c.Chat.Completions.New(ctx, userChat("hi"))
	e := asAPIError(t, err, http.StatusTooManyRequests)
	if e.Code != "rate_limit_exceeded" || e.Type != "requests" {
		t.Errorf("429: %s", e.RawJSON())
	}
	h := e.Response.Header
	if h.Get("retry-after") != "2" || h.Get("retry-after-ms") != "2000" || h.Get("x-ratelimit-remaining-requests") != "0" || h.Get("x-ratelimit-reset-requests") != "2s" {
		t.Errorf("429 headers: %v", h)
	}

	for _, status := range []int{500, 502, 503, 504} {
		s.Push(llmtest.Fail{Status: status})
		_, err = c.Chat.Completions.New(ctx, userChat("hi"))
		e := asAPIError(t, err, status)
		// Cloudflare's 502/504 carry an integer code; the SDK still makes
		// an *openai.Error of them, with the code as a string.
		wantType, wantCode := "server_error", ""
		switch status {
		case 502:
			wantType, wantCode = "cf_bad_gateway", "502"
		case 504:
			wantType, wantCode = "cf_gateway_timeout", "504"
		}
		if e.Type != wantType || e.Code != wantCode {
			t.Errorf("%d: type %q code %q: %s", status, e.Type, e.Code, e.RawJSON())
		}
	}
}

// The SDK's own retry loop reads retry-after-ms and tries again: a 429
// followed by an answer is a success with two requests upstream.
func TestSDKRetriesAfterRateLimit(t *testing.T) {
	s := start(t, llmtest.Options{})
	s.Push(llmtest.RateLimited{RetryAfter: 30 * time.Millisecond}, llmtest.Fail{Status: 503})
	c := client(s, option.WithMaxRetries(2))
	res, err := c.Chat.Completions.New(context.Background(), userChat("hi"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Choices[0].Message.Content == "" || s.Requests() != 3 {
		t.Errorf("content %q after %d requests", res.Choices[0].Message.Content, s.Requests())
	}
	rs := s.Received()
	if got := rs[2].Header.Get("X-Stainless-Retry-Count"); got != "2" {
		t.Errorf("third attempt retry count %q", got)
	}
}

func TestAzureSDK(t *testing.T) {
	s := start(t, llmtest.Options{Name: "az", Models: []string{"my-gpt", "my-embedder"}})
	c := openai.NewClient(
		azure.WithEndpoint(s.URL(), "2024-10-21"),
		azure.WithAPIKey(testKey),
		azure.WithUnsafeAllowHTTP(),
		option.WithMaxRetries(0),
	)
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{
		Model:    "my-gpt", // the SDK moves this into the deployment path
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello azure")},
	}
	res, err := c.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Choices[0].Message.Content; got != "az says: hello azure" {
		t.Errorf("content %q", got)
	}
	if _, ok := res.JSON.ExtraFields["prompt_filter_results"]; !ok {
		t.Errorf("no prompt_filter_results: %s", res.RawJSON())
	}
	r, _ := s.Last()
	if r.Path != "/openai/deployments/my-gpt/chat/completions" || r.Query.Get("api-version") != "2024-10-21" || r.Header.Get("Api-Key") != testKey {
		t.Errorf("request %s ?%v headers %v", r.Path, r.Query, r.Header)
	}

	// Azure's stream opens with a chunk without choices; the accumulator
	// must take it.
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	n := 0
	for stream.Next() {
		ch := stream.Current()
		if n == 0 && (len(ch.Choices) != 0 || ch.ID != "") {
			t.Errorf("first Azure chunk: %s", ch.RawJSON())
		}
		if !acc.AddChunk(ch) {
			t.Fatalf("accumulator refused %s", ch.RawJSON())
		}
		n++
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if got := acc.Choices[0].Message.Content; got != "az says: hello azure" || acc.Usage.CompletionTokens != 4 {
		t.Errorf("accumulated %q, usage %+v", got, acc.Usage)
	}

	emb, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: "my-embedder",
		Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("vector me")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(emb.Data) != 1 || len(emb.Data[0].Embedding) != 1536 {
		t.Errorf("embeddings: %d", len(emb.Data))
	}

	params.Model = "no-such-deployment"
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{}
	_, err = c.Chat.Completions.New(ctx, params)
	if e := asAPIError(t, err, http.StatusNotFound); e.Code != "DeploymentNotFound" {
		t.Errorf("unknown deployment: %s", e.RawJSON())
	}

	s.Push(llmtest.RateLimited{RetryAfter: time.Second})
	params.Model = "my-gpt"
	_, err = c.Chat.Completions.New(ctx, params)
	if e := asAPIError(t, err, http.StatusTooManyRequests); e.Code != "429" || e.Response.Header.Get("retry-after") != "1" {
		t.Errorf("azure 429: %s %v", e.RawJSON(), e.Response.Header)
	}

	wrong := openai.NewClient(azure.WithEndpoint(s.URL(), "2024-10-21"), azure.WithAPIKey("nope"), azure.WithUnsafeAllowHTTP(), option.WithMaxRetries(0))
	_, err = wrong.Chat.Completions.New(ctx, params)
	if e := asAPIError(t, err, http.StatusUnauthorized); e.Code != "401" {
		t.Errorf("azure 401: %s", e.RawJSON())
	}
}

// Azure OpenAI's v1 API is OpenAI's, under /openai/v1 and without
// api-version; plain OpenAI clients use it.
func TestAzureV1(t *testing.T) {
	s := start(t, llmtest.Options{})
	c := openai.NewClient(option.WithBaseURL(s.URL()+"/openai/v1/"), option.WithAPIKey(testKey), option.WithMaxRetries(0))
	res, err := c.Chat.Completions.New(context.Background(), userChat("v1"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Choices[0].Message.Content != "llmtest says: v1" {
		t.Errorf("%q", res.Choices[0].Message.Content)
	}
}

func TestHangAndRelease(t *testing.T) {
	s := start(t, llmtest.Options{})
	s.Push(llmtest.Hang{})
	c := client(s)
	done := make(chan error, 1)
	go func() {
		_, err := c.Chat.Completions.New(context.Background(), userChat("wait"))
		done <- err
	}()
	if err := s.WaitRequests(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("hanging request answered: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	if s.InFlight() != 1 {
		t.Errorf("InFlight() = %d", s.InFlight())
	}
	s.Release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestHangUntilClientGivesUp(t *testing.T) {
	s := start(t, llmtest.Options{})
	s.SetDefault(llmtest.Hang{})
	c := client(s)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Chat.Completions.New(ctx, userChat("wait"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.InFlight() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s.InFlight() != 0 {
		t.Errorf("handler still running after the client left")
	}
}

func TestCloseEndsHangingRequests(t *testing.T) {
	s := llmtest.New(llmtest.Options{})
	s.SetDefault(llmtest.Hang{})
	c := client(s)
	done := make(chan error, 1)
	go func() {
		_, err := c.Chat.Completions.New(context.Background(), userChat("wait"))
		done <- err
	}()
	if err := s.WaitRequests(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a hanging request")
	}
	if err := <-done; err == nil {
		t.Error("hanging request succeeded after Close")
	}
}

func TestDelayBeforeHeaders(t *testing.T) {
	s := start(t, llmtest.Options{})
	s.Push(llmtest.Delay{D: 80 * time.Millisecond, Then: llmtest.Fail{Status: 503}})
	c := client(s)
	begin := time.Now()
	_, err := c.Chat.Completions.New(context.Background(), userChat("hi"))
	asAPIError(t, err, http.StatusServiceUnavailable)
	if d := time.Since(begin); d < 80*time.Millisecond {
		t.Errorf("answered after %v", d)
	}
}

func TestCutStream(t *testing.T) {
	s := start(t, llmtest.Options{Reply: "one two three four"})
	c := client(s)
	s.Push(llmtest.CutStream{AfterChunks: 3})
	stream := c.Chat.Completions.NewStreaming(context.Background(), userChat("x"))
	var acc openai.ChatCompletionAccumulator
	n := 0
	for stream.Next() {
		acc.AddChunk(stream.Current())
		n++
	}
	if stream.Err() == nil {
		t.Fatal("cut stream ended without error")
	}
	if n != 3 || acc.Choices[0].Message.Content != "one two" {
		t.Errorf("%d chunks, content %q before the cut", n, acc.Choices[0].Message.Content)
	}

	// A non-streaming request gets half a body.
	s.Push(llmtest.CutStream{})
	if _, err := c.Chat.Completions.New(context.Background(), userChat("x")); err == nil {
		t.Error("cut answer parsed")
	}
	// The server carries on afterwards.
	if _, err := c.Chat.Completions.New(context.Background(), userChat("x")); err != nil {
		t.Fatal(err)
	}
}

func TestCountTokensPluggable(t *testing.T) {
	chars := func(s string) int { return len(s) }
	s := start(t, llmtest.Options{CountTokens: chars, Reply: "abc def"})
	c := client(s)
	params := userChat("hello")
	params.MaxTokens = openai.Int(5)
	res, err := c.Chat.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	// "abc def" is 7 "tokens"; whole pieces within 5 leave "abc".
	if got := res.Choices[0].Message.Content; got != "abc" || res.Choices[0].FinishReason != "length" {
		t.Errorf("content %q", got)
	}
	// 3 + 3 + len("user") + len("hello")
	if res.Usage.PromptTokens != 15 || res.Usage.CompletionTokens != 3 {
		t.Errorf("usage %+v", res.Usage)
	}
}
