package tokens

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/plinth-dev/plinth/internal/fault"
)

func estimate(t *testing.T, kind Kind, model, body string) Estimate {
	t.Helper()
	est, err := EstimateRequest(kind, model, []byte(body))
	if err != nil {
		t.Fatalf("EstimateRequest(%v, %q, %s): %v", kind, model, body, err)
	}
	return est
}

// The expected prompts below are OpenAI's cookbook rule ("How to count tokens
// with tiktoken": 3 tokens a message, every field's text, 1 more for a name,
// 3 to prime the reply) applied outside this package, with js-tiktoken 1.0.21
// counting each field (see countCases), in Node 20.
func TestEstimateChatCookbook(t *testing.T) {
	for _, c := range []struct {
		name          string
		messages      string
		cl100k, o200k int
	}{
		{"simple", `[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello!"}]`, 19, 19},
		{"names", `[{"role":"system","content":"You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},{"role":"system","name":"example_user","content":"New synergies will help drive top-line growth."},{"role":"system","name":"example_assistant","content":"Things working well together will increase revenue."},{"role":"user","content":"This late pivot means we don't have time to boil the ocean for the client deliverable."}]`, 81, 79},
		{"unicode", `[{"role":"user","content":"日本語で答えてください 😀"},{"role":"assistant","content":"はい、わかりました。"},{"role":"user","content":"ありがとう\n\n  Thanks!"}]`, 39, 33},
		{"empty", `[]`, 3, 3},
	} {
		for model, want := range map[string]int{"gpt-4": c.cl100k, "gpt-4o": c.o200k} {
			est := estimate(t, Chat, model, `{"model":"x","messages":`+c.messages+`}`)
			if want := (Estimate{Prompt: want, Choices: 1}); est != want {
				t.Errorf("%s, %s: %+v, want %+v", c.name, model, est, want)
			}
		}
	}
}

// Everything a chat request can carry besides plain text, in both encodings
// (these pieces count the same in both). Counts per js-tiktoken as above.
func TestEstimateChatRich(t *testing.T) {
	body := `{
	  "model": "gpt-4o",
	  "max_completion_tokens": 300, "max_tokens": 999, "n": 2,
	  "messages": [
	    {"role": "system", "content": "You are a helpful assistant."},
	    {"role": "user", "content": [
	      {"type": "text", "text": "Describe this picture."},
	      {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}]},
	    {"content": [
	      {"text": "And this one, briefly.", "type": "text"},
	      {"image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}, "type": "image_url"}],
	     "name": "example_user", "role": "user"},
	    {"role": "assistant", "content": null, "tool_calls": [
	      {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
	    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\":21}"}
	  ],
	  "tools": [
	    {"type": "function", "function": {
	      "name": "get_weather", "description": "Weather for a city",
	      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
	  ]
	}`
	want := 3 + // reply priming
		3 + 1 + 6 + // system: "system", "You are a helpful assistant."
		3 + 1 + 4 + imageTokensLow + // "user", "Describe this picture.", low-detail image
		3 + 6 + 1 + 2 + 1 + imageTokensHigh + // "And this one, briefly.", "user", "example_user" + name, image
		3 + 1 + 2 + 5 + // "assistant", "get_weather", `{"city":"Paris"}`
		3 + 1 + 3 + 5 + // "tool", "call_1", `{"temp":21}`
		41 // the tools array as compact JSON
	for _, model := range []string{"gpt-4", "gpt-4o"} {
		est := estimate(t, Chat, model, body)
		if want := (Estimate{Prompt: want, MaxCompletion: 300, Choices: 2}); est != want {
			t.Errorf("%s: %+v, want %+v", model, est, want)
		}
	}
}

func TestEstimateLimits(t *testing.T) {
	msgs := `"messages":[{"role":"user","content":"Hello!"}]`
	for body, want := range map[string]Estimate{
		`{` + msgs + `}`:                 {Prompt: 9, Choices: 1},
		`{` + msgs + `,"max_tokens":50}`: {Prompt: 9, MaxCompletion: 50, Choices: 1},
		`{"max_completion_tokens":7,` + msgs + `,"max_tokens":50,"n":3}`:                           {Prompt: 9, MaxCompletion: 7, Choices: 3},
		`{` + msgs + `,"max_completion_tokens":null,"max_tokens":5}`:                               {Prompt: 9, MaxCompletion: 5, Choices: 1},
		`{` + msgs + `,"n":null,"max_tokens":0}`:                                                   {Prompt: 9, MaxCompletion: 0, Choices: 1},
		`{` + msgs + `,"stream":true,"temperature":0.2,"stop":["\n"],"logit_bias":{"50256":-100}}`: {Prompt: 9, Choices: 1},
	} {
		if got := estimate(t, Chat, "gpt-4o", body); got != want {
			t.Errorf("%s: %+v, want %+v", body, got, want)
		}
	}
}

func TestEstimateCompletion(t *testing.T) {
	// "Say this is a test" is 5 tokens, "first prompt" and "second prompt" 2
	// each, in both encodings (js-tiktoken).
	for body, want := range map[string]Estimate{
		`{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","max_tokens":7}`: {Prompt: 5, MaxCompletion: 7, Choices: 1},
		`{"prompt":["first prompt","second prompt"],"n":2,"max_tokens":10}`:               {Prompt: 4, MaxCompletion: 10, Choices: 4},
		`{"prompt":[1,2,3,4],"best_of":3,"n":2}`:                                          {Prompt: 4, Choices: 3},
		`{"prompt":[[1,2],[3,4,5]],"max_tokens":1}`:                                       {Prompt: 5, MaxCompletion: 1, Choices: 2},
		`{"prompt":[]}`:   {Prompt: 0, Choices: 1},
		`{"prompt":null}`: {Prompt: 0, Choices: 1},
		`{}`:              {Prompt: 0, Choices: 1},
	} {
		if got := estimate(t, Completion, "gpt-3.5-turbo-instruct", body); got != want {
			t.Errorf("%s: %+v, want %+v", body, got, want)
		}
	}
}

func TestEstimateEmbedding(t *testing.T) {
	// "The food was delicious and the waiter..." is 8 tokens (js-tiktoken).
	for body, want := range map[string]Estimate{
		`{"model":"text-embedding-3-small","input":"The food was delicious and the waiter..."}`: {Prompt: 8, Choices: 1},
		`{"input":["The food was delicious and the waiter...","Hello!"],"max_tokens":5,"n":4}`:  {Prompt: 10, Choices: 1},
		`{"input":[[1,2,3],[4]],"encoding_format":"float"}`:                                     {Prompt: 4, Choices: 1},
		`{"input":[9,8,7]}`: {Prompt: 3, Choices: 1},
	} {
		if got := estimate(t, Embedding, "text-embedding-3-small", body); got != want {
			t.Errorf("%s: %+v, want %+v", body, got, want)
		}
	}
}

func TestEstimateErrors(t *testing.T) {
	for _, c := range []struct {
		kind  Kind
		body  string
		field string // the fault's Field; "" for syntax errors
		msg   string // a part of the message
	}{
		{Chat, ``, "", "want a JSON object"},
		{Chat, `[1]`, "", "want a JSON object"},
		{Chat, `{"messages":[]`, "", "invalid JSON at byte 14"},
		{Chat, `{"messages":[]} x`, "", "unexpected data after the top-level value"},
		{Chat, `{"messages":[],}`, "", "want a string key"},
		{Chat, `{"messages":["hi"]}`, "messages[0]", "messages[0]: want an object"},
		{Chat, `{"model":"gpt-4o"}`, "messages", "messages: missing"},
		{Chat, `{"messages":{"role":"user"}}`, "messages", "messages: want an array of messages"},
		{Chat, `{"messages":[1]}`, "messages[0]", "messages[0]: want an object"},
		{Chat, `{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"},{"role":"user","content":7}]}`,
			"messages[2].content", "messages[2].content: want a string or an array of content parts"},
		{Chat, `{"messages":[{"content":["text"]}]}`, "messages[0].content[0]", "messages[0].content[0]: want an object"},
		{Chat, `{"messages":[{"content":[{"type":"text","text":5}]}]}`, "messages[0].content[0].text", "want a string"},
		{Chat, `{"messages":[{"content":[{"type":"image_url","image_url":true}]}]}`, "messages[0].content[0].image_url", "want an object"},
		{Chat, `{"messages":[{"content":[{"type":"image_url","image_url":{"detail":1}}]}]}`, "messages[0].content[0].image_url.detail", "want a string"},
		{Chat, `{"messages":[{"role":"user","name":["x"],"content":"a"}]}`, "messages[0].name", "messages[0].name: want a string"},
		{Chat, `{"messages":[{"role":"assistant","tool_calls":{}}]}`, "messages[0].tool_calls", "want an array"},
		{Chat, `{"messages":[{"role":"assistant","tool_calls":[3]}]}`, "messages[0].tool_calls[0]", "want an object"},
		{Chat, `{"messages":[{"role":"assistant","tool_calls":[{"function":"f"}]}]}`, "messages[0].tool_calls[0].function", "want an object"},
		{Chat, `{"messages":[],"tools":{}}`, "tools", "tools: want an array"},
		{Chat, `{"messages":[],"max_tokens":-1}`, "max_tokens", "max_tokens: want an integer from 0 to 2147483647"},
		{Chat, `{"messages":[],"max_completion_tokens":1.5}`, "max_completion_tokens", "want an integer"},
		{Chat, `{"messages":[],"max_tokens":"10"}`, "max_tokens", "want an integer"},
		{Chat, `{"messages":[],"max_tokens":99999999999}`, "max_tokens", "want an integer"},
		{Chat, `{"messages":[],"n":0}`, "n", "n: want an integer from 1 to"},
		{Chat, `{"messages":[{"content":"\x"}]}`, "", "bad escape"},
		{Chat, `{"messages":[{"content":"a` + "\n" + `"}]}`, "", "control character"},
		{Chat, `{"messages":[{"content":"abc}]}`, "", "unterminated string"},
		{Chat, `{"messages":[],"x":tru}`, "", "invalid literal"},
		{Chat, `{"messages":[],"x":01}`, "", "want ',' or '}'"},
		{Chat, `{"messages":[],"x":-}`, "", "bad number"},
		{Chat, strings.Repeat("[", 20000), "", "want a JSON object"},
		{Chat, `{"x":` + strings.Repeat("[", 20000) + `}`, "", "nested too deeply"},
		{Completion, `{"prompt":7}`, "prompt", "prompt: want a string, an array of strings, an array of token ids or an array of arrays of token ids"},
		{Completion, `{"prompt":["a",1]}`, "prompt[1]", "prompt[1]: want a string"},
		{Completion, `{"prompt":[1,"a"]}`, "prompt[1]", "prompt[1]: want a token id"},
		{Completion, `{"prompt":[[1],2]}`, "prompt[1]", "prompt[1]: want an array of token ids"},
		{Completion, `{"prompt":[[1,"a"]]}`, "prompt[0][1]", "prompt[0][1]: want a token id"},
		{Completion, `{"prompt":[true]}`, "prompt[0]", "want a string, a token id or an array of token ids"},
		{Completion, `{"prompt":"a","best_of":0}`, "best_of", "best_of: want an integer from 1 to"},
		{Embedding, `{"model":"text-embedding-3-small"}`, "input", "input: missing"},
		{Embedding, `{"input":{"text":"a"}}`, "input", "input: want a string"},
	} {
		_, err := EstimateRequest(c.kind, "gpt-4o", []byte(c.body))
		if err == nil {
			t.Errorf("%v %.60s: no error", c.kind, c.body)
			continue
		}
		fe, ok := fault.As(err)
		if !ok || fe.Kind != fault.Invalid {
			t.Errorf("%v %.60s: %v is not a fault.Invalid", c.kind, c.body, err)
			continue
		}
		if fe.Field != c.field || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%v %.60s: field %q, error %q; want field %q, error containing %q", c.kind, c.body, fe.Field, err, c.field, c.msg)
		}
	}
	if _, err := EstimateRequest(Kind(9), "gpt-4o", []byte(`{}`)); err == nil {
		t.Error("an unknown kind gave no error")
	}
}

// The reader must accept exactly what encoding/json accepts, and decode
// strings to the same text.
func FuzzReader(f *testing.F) {
	for _, s := range []string{
		`{"messages":[{"role":"user","content":"hi"}]}`,
		`{"a":"\u00e9\ud83d\ude00\ud800x\\\"\/\b\f\n\r\t","b":[1,-0.5e+3,true,false,null,{}],"c":{"d":[]}}`,
		`"\ud83d"`, `"\udc00\ud83d\ude00"`, "\"\xff\xc3(\"", `[1,]`, `{"a" 1}`, `01`, `1e`, `-`, ` [ ] `, `"`, `nul`, "0\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &reader{data: data}
		err := r.skip()
		if err == nil {
			err = r.end()
		}
		if valid := json.Valid(data); valid != (err == nil) {
			t.Fatalf("%q: json.Valid %v, reader error %v", data, valid, err)
		}
		var want string
		if json.Unmarshal(data, &want) == nil {
			got, err := (&reader{data: data}).str()
			if err != nil || got != want {
				t.Fatalf("%q: decoded %q (%v), encoding/json %q", data, got, err, want)
			}
		}
	})
}

// chatBody builds a chat request of about size bytes of ordinary
// conversation: English prose, some code and a little non-Latin text.
func chatBody(size int) []byte {
	turns := []string{
		"Can you explain how the garbage collector in Go decides when to run? I keep seeing latency spikes in production.",
		"Go's collector is concurrent and triggered by heap growth: GOGC=100 means a cycle starts when the heap has grown 100% since the last one.\n\n```go\ndebug.SetGCPercent(200)\n```\nYou can also set a soft memory limit with GOMEMLIMIT.",
		"Thanks! ありがとう。 What about the pauses — are they proportional to the heap size?",
		"No: stop-the-world pauses are usually well under a millisecond, independent of heap size; most of the work happens concurrently with your goroutines.",
	}
	var msgs []map[string]string
	msgs = append(msgs, map[string]string{"role": "system", "content": "You are a concise, expert Go assistant."})
	for i := 0; ; i++ {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		msgs = append(msgs, map[string]string{"role": role, "content": turns[i%len(turns)]})
		body, _ := json.Marshal(map[string]any{"model": "gpt-4o", "messages": msgs, "max_tokens": 512})
		if len(body) >= size {
			return body
		}
	}
}

func BenchmarkEstimateChat(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		body := chatBody(size)
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			if _, err := EstimateRequest(Chat, "gpt-4o", body); err != nil { // and load the vocabulary
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := EstimateRequest(Chat, "gpt-4o", body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
