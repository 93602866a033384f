package llmtest

import (
	"encoding/json"
	"strings"
	"time"
)

// legacyDefaultMaxTokens is /v1/completions' default max_tokens: 16, a
// classic surprise (answers cut with finish_reason "length") that a fake
// should reproduce rather than hide.
const legacyDefaultMaxTokens = 16

// promptInput is one prompt of a legacy completion or one embedding input:
// text, or pre-tokenized ids.
type promptInput struct {
	text   string
	tokens []int
	isToks bool
}

func (p promptInput) count(count func(string) int) int {
	if p.isToks {
		return len(p.tokens)
	}
	return count(p.text)
}

// prompts reads a string, an array of strings, an array of token ids or an
// array of token-id arrays: the four forms of "prompt" and "input".
func prompts(raw json.RawMessage, key string) ([]promptInput, *apiError) {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []promptInput{{text: one}}, nil
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil {
		out := make([]promptInput, len(many))
		for i, s := range many {
			out[i] = promptInput{text: s}
		}
		return out, nil
	}
	var toks []int
	if json.Unmarshal(raw, &toks) == nil {
		return []promptInput{{tokens: toks, isToks: true}}, nil
	}
	var batches [][]int
	if json.Unmarshal(raw, &batches) == nil {
		out := make([]promptInput, len(batches))
		for i, t := range batches {
			out[i] = promptInput{tokens: t, isToks: true}
		}
		return out, nil
	}
	return nil, errInvalidType(key, "one of a string, array of strings, array of integers, or array of arrays of integers", raw)
}

// parseCompletion validates POST /v1/completions (the legacy
// text_completion API, still used by instruct models and vLLM clients).
func (s *Server) parseCompletion(c *call, raw map[string]json.RawMessage, cfg config) (*op, *apiError) {
	m, e := modelField(c, raw)
	if e != nil {
		return nil, e
	}
	rawPrompt, ok := raw["prompt"]
	if !ok || string(rawPrompt) == "null" {
		return nil, errMissing("prompt")
	}
	ps, e := prompts(rawPrompt, "prompt")
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
	limit, hasLimit, e := intField(raw, "max_tokens", 0, -1)
	if e != nil {
		return nil, e
	}
	if !hasLimit {
		limit = legacyDefaultMaxTokens
	}
	var echo bool
	if _, e := field(raw, "echo", "a boolean", &echo); e != nil {
		return nil, e
	}
	stream, includeUsage, _, e := streamOptions(raw)
	if e != nil {
		return nil, e
	}
	if e := s.checkModel(c, m); e != nil {
		return nil, e
	}
	respModel := c.responseModel(m)
	promptTokens := 0
	for _, p := range ps {
		promptTokens += p.count(s.count)
	}

	build := func(text string) *reply {
		type gen struct {
			pieces []string
			finish string
			prefix string // the echoed prompt
		}
		gens := make([]gen, len(ps))
		completion, steps := 0, 0
		for i, p := range ps {
			t := text
			if t == "" {
				t = cfg.reply
			}
			if t == "" {
				t = s.opts.Name + " says: " + p.text
			}
			pcs, cut := truncate(pieces(t), int(limit), s.count)
			g := gen{pieces: pcs, finish: "stop"}
			if cut {
				g.finish = "length"
			}
			if echo {
				g.prefix = p.text
			}
			gens[i] = g
			completion += s.count(strings.Join(pcs, "")) * int(n)
			steps = max(steps, len(pcs))
		}
		u := marshalCompact(legacyUsage{PromptTokens: promptTokens, CompletionTokens: completion, TotalTokens: promptTokens + completion})
		id := randomID("cmpl-")
		created := time.Now().Unix()
		obj := func(choices []textChoice) textCompletion {
			return textCompletion{ID: id, Object: "text_completion", Created: created, Model: respModel, Choices: choices, SystemFingerprint: s.fprint}
		}
		if !stream {
			tc := obj(nil)
			for i, g := range gens {
				for j := range int(n) {
					tc.Choices = append(tc.Choices, textChoice{
						Text: g.prefix + strings.Join(g.pieces, ""), Index: i*int(n) + j, FinishReason: strPtr(g.finish),
					})
				}
			}
			tc.Usage = u
			return &reply{body: s.encode(c, tc), steps: steps}
		}

		var events []event
		add := func(paced bool, ch textChoice) {
			tc := obj([]textChoice{ch})
			if includeUsage {
				tc.Usage = nullJSON
			}
			events = append(events, event{paced: paced, data: marshalCompact(tc)})
		}
		if echo {
			for i, g := range gens {
				for j := range int(n) {
					add(false, textChoice{Text: g.prefix, Index: i*int(n) + j})
				}
			}
		}
		for k := range steps {
			first := true
			for i, g := range gens {
				if k >= len(g.pieces) {
					continue
				}
				for j := range int(n) {
					add(first, textChoice{Text: g.pieces[k], Index: i*int(n) + j})
					first = false
				}
			}
		}
		for i, g := range gens {
			for j := range int(n) {
				add(false, textChoice{Text: "", Index: i*int(n) + j, FinishReason: strPtr(g.finish)})
			}
		}
		if includeUsage {
			tc := obj([]textChoice{})
			tc.Usage = u
			events = append(events, event{data: marshalCompact(tc)})
		}
		return &reply{events: events, steps: steps}
	}
	return &op{stream: stream, build: build}, nil
}
