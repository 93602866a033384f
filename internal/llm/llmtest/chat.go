package llmtest

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

var chatRoles = []string{"system", "assistant", "user", "function", "tool", "developer"}

// chatInput is what the server takes from one chat message.
type chatInput struct {
	role, name, text string
}

// parseChat validates POST /v1/chat/completions the way OpenAI does for the
// mistakes clients and gateways actually make.
func (s *Server) parseChat(c *call, raw map[string]json.RawMessage, cfg config) (*op, *apiError) {
	m, e := modelField(c, raw)
	if e != nil {
		return nil, e
	}
	msgs, e := s.chatMessages(raw)
	if e != nil {
		return nil, e
	}
	n, hasN, e := intField(raw, "n", 1, 128)
	if e != nil {
		return nil, e
	}
	if !hasN {
		n = 1
	}
	limit := int64(0)
	for _, key := range []string{"max_tokens", "max_completion_tokens"} {
		v, ok, e := intField(raw, key, 1, -1)
		if e != nil {
			return nil, e
		}
		if ok {
			// max_completion_tokens replaced max_tokens; when both are sent
			// the newer one wins.
			limit = v
		}
	}
	stream, includeUsage, obfuscate, e := streamOptions(raw)
	if e != nil {
		return nil, e
	}
	var tier string
	if _, e := field(raw, "service_tier", "a string", &tier); e != nil {
		return nil, e
	}
	if e := s.checkModel(c, m); e != nil {
		return nil, e
	}

	prompt := tokensReplyPrime
	lastUser := ""
	for _, msg := range msgs {
		prompt += tokensPerMessage + s.count(msg.role) + s.count(msg.text)
		if msg.name != "" {
			prompt += tokensPerName + s.count(msg.name)
		}
		if msg.role == "user" {
			lastUser = msg.text
		}
	}
	respModel := c.responseModel(m)
	// OpenAI answers "default" for "auto" (and for nothing), and echoes a
	// tier it actually used.
	switch tier {
	case "flex", "priority", "scale":
	default:
		tier = "default"
	}
	if c.azure {
		tier = "" // Azure does not send service_tier
	}

	build := func(text string) *reply {
		if text == "" {
			text = cfg.reply
		}
		if text == "" {
			text = s.opts.Name + " says: " + lastUser
		}
		ps := pieces(text)
		finish := "stop"
		if limit > 0 {
			var cut bool
			if ps, cut = truncate(ps, int(limit), s.count); cut {
				finish = "length"
			}
		}
		content := strings.Join(ps, "")
		completion := s.count(content) * int(n)
		u := usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
		id := randomID("chatcmpl-")
		created := time.Now().Unix()
		if !stream {
			cc := chatCompletion{
				ID: id, Object: "chat.completion", Created: created, Model: respModel,
				Usage: u, ServiceTier: tier, SystemFingerprint: s.fprint,
			}
			for i := range int(n) {
				ch := chatChoice{
					Index:        i,
					Message:      chatMessage{Role: "assistant", Content: content, Annotations: []any{}},
					FinishReason: finish,
				}
				if c.azure {
					ch.ContentFilterResults = contentFilterSafe()
				}
				cc.Choices = append(cc.Choices, ch)
			}
			if c.azure {
				cc.PromptFilterResults = promptFilterResults()
			}
			return &reply{body: s.encode(c, cc), steps: len(ps)}
		}

		var events []event
		chunk := func(choices []chunkChoice, content string) []byte {
			ck := chatChunk{
				ID: id, Object: "chat.completion.chunk", Created: created, Model: respModel,
				ServiceTier: tier, SystemFingerprint: s.fprint, Choices: choices,
			}
			if includeUsage {
				ck.Usage = nullJSON
			}
			if obfuscate && !c.azure {
				ck.Obfuscation = obfuscation(content)
			}
			return marshalCompact(ck)
		}
		filter := func(content string) any {
			if !c.azure {
				return nil
			}
			if content == "" {
				return map[string]any{}
			}
			return contentFilterSafe()
		}
		if c.azure {
			// Azure's stream opens with the prompt's content-filter verdict
			// in a chunk with no choices and empty id, model and object;
			// clients that index choices[0] crash on it, so a gateway must
			// pass it through (and not count it as a token).
			events = append(events, event{data: marshalCompact(azurePromptFilterChunk{
				Choices: []struct{}{}, PromptFilterResults: promptFilterResults(),
			})})
		}
		for i := range int(n) {
			events = append(events, event{data: chunk([]chunkChoice{{
				Index: i, Delta: chunkDeltaRole{Role: "assistant"}, ContentFilterResults: filter(""),
			}}, "")})
		}
		for _, p := range ps {
			for i := range int(n) {
				events = append(events, event{paced: i == 0, data: chunk([]chunkChoice{{
					Index: i, Delta: chunkDelta{Content: strPtr(p)}, ContentFilterResults: filter(p),
				}}, p)})
			}
		}
		for i := range int(n) {
			events = append(events, event{data: chunk([]chunkChoice{{
				Index: i, Delta: struct{}{}, FinishReason: strPtr(finish), ContentFilterResults: filter(""),
			}}, "")})
		}
		if includeUsage {
			ck := chatChunk{
				ID: id, Object: "chat.completion.chunk", Created: created, Model: respModel,
				ServiceTier: tier, SystemFingerprint: s.fprint, Choices: []chunkChoice{},
			}
			ck.Usage = marshalCompact(u)
			events = append(events, event{data: marshalCompact(ck)})
		}
		return &reply{events: events, steps: len(ps)}
	}
	return &op{stream: stream, build: build}, nil
}

func (s *Server) chatMessages(raw map[string]json.RawMessage) ([]chatInput, *apiError) {
	var items []json.RawMessage
	ok, e := field(raw, "messages", "an array of objects", &items)
	if e != nil {
		return nil, e
	}
	if !ok {
		return nil, errMissing("messages")
	}
	if len(items) == 0 {
		return nil, errEmptyArray("messages")
	}
	out := make([]chatInput, 0, len(items))
	for i, item := range items {
		at := fmt.Sprintf("messages[%d]", i)
		var msg map[string]json.RawMessage
		if err := json.Unmarshal(item, &msg); err != nil || msg == nil {
			return nil, errInvalidType(at, "an object", item)
		}
		var in chatInput
		ok, e := fieldAt(msg, "role", at+".role", "a string", &in.role)
		if e != nil {
			return nil, e
		}
		if !ok {
			return nil, errMissing(at + ".role")
		}
		if !slices.Contains(chatRoles, in.role) {
			return nil, errInvalidValue(at+".role", in.role, chatRoles)
		}
		if _, e := fieldAt(msg, "name", at+".name", "a string", &in.name); e != nil {
			return nil, e
		}
		text, e := contentText(msg["content"], at+".content")
		if e != nil {
			return nil, e
		}
		in.text = text
		out = append(out, in)
	}
	return out, nil
}

// contentText extracts the text of a message's content: a string, or an
// array of parts of which the "text" ones count (images and audio are
// accepted and ignored).
func contentText(raw json.RawMessage, at string) (string, *apiError) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errInvalidType(at, "one of a string or array of objects", raw)
	}
	var texts []string
	for _, p := range parts {
		if p.Type == "text" {
			texts = append(texts, p.Text)
		}
	}
	return strings.Join(texts, "\n"), nil
}
