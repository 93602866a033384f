package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/plinth-dev/plinth/internal/llm/llmtest"
)

// TestOpenAIThroughPlinth configures a backend and a model through the API
// and calls them through the in-process gateway with the official OpenAI
// SDK, as a team would: the answer, the team's limits, and the usage
// report by model and team, with tokens and cost.
func TestOpenAIThroughPlinth(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		startEndpoints(t, e)
		up := llmtest.New(llmtest.Options{Name: "vllm", APIKey: "upstream-secret-0123456789"})
		t.Cleanup(up.Close)
		e.must(201, "POST", "/api/v1/workspaces", e.admin, map[string]any{"name": "fraud-ws", "team": "risk"})
		e.must(201, "POST", "/api/v1/llm/backends", e.admin, map[string]any{"name": "vllm", "style": "openai",
			"base_url": up.URL() + "/v1", "credential": "upstream-secret-0123456789", "input_cost_per_1k": 1.0, "output_cost_per_1k": 2.0})
		e.must(201, "POST", "/api/v1/llm/models", e.admin, map[string]any{"name": "llama-3.1-8b",
			"pool": []map[string]any{{"backend": "vllm", "model": "meta-llama/Llama-3.1-8B-Instruct"}}})
		e.must(200, "PUT", "/api/v1/llm/teams/risk/limits", e.admin, map[string]any{"requests_per_minute": 3})
		caller := e.principal("scorer", "EndpointInvoker", "fraud-ws")

		client := openai.NewClient(option.WithBaseURL(e.url+"/w/fraud-ws/openai/v1/"), option.WithAPIKey(caller), option.WithMaxRetries(0))
		ctx := context.Background()
		var res *openai.ChatCompletion
		var err error
		deadline := time.Now().Add(5 * time.Second)
		for {
			// The routing table reaches the gateway within a second.
			res, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "llama-3.1-8b",
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("is this fraud")}})
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		if res.Choices[0].Message.Content != "vllm says: is this fraud" {
			t.Fatalf("%+v", res)
		}
		last, _ := up.Last()
		var sent struct {
			Model string `json:"model"`
		}
		json.Unmarshal(last.Body, &sent)
		if sent.Model != "meta-llama/Llama-3.1-8B-Instruct" || last.Header.Get("Authorization") != "Bearer upstream-secret-0123456789" {
			t.Fatalf("upstream got model %q and authorization %q", sent.Model, last.Header.Get("Authorization"))
		}
		// The team's 3 requests per minute: two more pass, the fourth is refused.
		for i := 0; i < 3; i++ {
			_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "llama-3.1-8b",
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("again")}})
			var oe *openai.Error
			switch {
			case i < 2 && err != nil:
				t.Fatalf("call %d: %v", i+2, err)
			case i == 2 && (!asOpenAIError(err, &oe) || oe.StatusCode != http.StatusTooManyRequests):
				t.Fatalf("call 4 over 3 RPM: %v", err)
			}
		}

		// Usage by model and by team, with tokens and cost, once metered.
		var rows []map[string]any
		deadline = time.Now().Add(10 * time.Second)
		for {
			r := e.call("GET", "/api/v1/usage?by=model&since=1h", e.admin, nil)
			var body struct {
				Rows []map[string]any `json:"rows"`
			}
			json.Unmarshal(r.raw, &body)
			rows = body.Rows
			if len(rows) > 0 {
				if req, _ := rows[0]["requests"].(float64); req >= 4 {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("usage by model: %s", r.raw)
			}
			time.Sleep(200 * time.Millisecond)
		}
		row := rows[0]
		if row["key"] != "llama-3.1-8b" || row["prompt_tokens"].(float64) <= 0 || row["completion_tokens"].(float64) <= 0 || row["cost"].(float64) <= 0 || row["errors"].(float64) != 1 {
			t.Fatalf("usage row %v", row)
		}
		r := e.call("GET", "/api/v1/usage?by=team&since=1h", e.admin, nil)
		if r.status != 200 || !strings.Contains(string(r.raw), `"key":"risk"`) {
			t.Fatalf("usage by team: %d %s", r.status, r.raw)
		}
	})
}

func asOpenAIError(err error, target **openai.Error) bool {
	e, ok := err.(*openai.Error)
	if ok {
		*target = e
	}
	return ok
}
