package tokens

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/plinth-dev/plinth/internal/fault"
)

// Kind is which OpenAI endpoint a request body is for; each names its input
// differently.
type Kind int

const (
	// Chat is POST /v1/chat/completions: the input is "messages".
	Chat Kind = iota + 1
	// Completion is POST /v1/completions: the input is "prompt".
	Completion
	// Embedding is POST /v1/embeddings: the input is "input".
	Embedding
)

func (k Kind) String() string {
	switch k {
	case Chat:
		return "chat"
	case Completion:
		return "completion"
	case Embedding:
		return "embedding"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Estimate is what a request will cost before it runs. A tokens-per-minute
// limiter can charge Prompt + MaxCompletion*Choices up front and settle with
// the usage the upstream reports.
type Estimate struct {
	// Prompt is the input's tokens: exact for text, estimated for framing,
	// images and tool definitions (see EstimateRequest).
	Prompt int
	// MaxCompletion is the most tokens each completion may generate:
	// max_completion_tokens, else max_tokens, else 0, meaning the request sets
	// no limit and the caller must assume its own. Embeddings generate
	// nothing, so it is always 0 for them.
	MaxCompletion int
	// Choices is how many completions the request generates: n (default 1);
	// for completions, best_of when that is larger, for each prompt of a
	// batched prompt. It is 1 for embeddings.
	Choices int
}

// The chat format's framing, from OpenAI's cookbook ("How to count tokens
// with tiktoken"), which matches the prompt_tokens the API reports for the
// gpt-3.5-turbo, gpt-4 and gpt-4o families: every message costs 3 tokens
// around its role and content, a name 1 more, and the reply is primed with 3.
const (
	tokensPerMessage = 3
	tokensPerName    = 1
	tokensReplyPrime = 3
)

// Images are not fetched or decoded to size them, so each costs a fixed
// estimate from OpenAI's published vision pricing for gpt-4o: a low-detail
// image is 85 tokens whatever its size, and a high-detail (or "auto") one 85
// plus 170 for each 512-pixel tile, 765 for a 1024x1024 image. Larger images
// and some models (gpt-4o-mini, o-series) cost more; the upstream's usage
// report corrects the charge.
const (
	imageTokensLow  = 85
	imageTokensHigh = 765
)

// maxCount bounds max_tokens, n and best_of, and Choices saturates at it, so
// that Prompt + MaxCompletion*Choices cannot overflow a 64-bit int.
const maxCount = 1<<31 - 1

// EstimateRequest estimates the tokens an OpenAI request body will use, with
// the encoding of model (see ForModel). It reads the body once.
//
// Chat: each message costs the cookbook's 3 tokens plus its role, its content
// and any other string field (a tool message's tool_call_id, say); a name
// costs 1 more; the reply is primed with 3. Content is a string or an array
// of parts: a part's text or refusal is counted, an image_url part is a fixed
// estimate (85 tokens at detail "low", else 765), and parts the API renders
// in ways not published here (audio, files) count nothing. An assistant
// message's tool_calls (and the legacy function_call) cost their function
// names and arguments. tools and the legacy functions cost the tokens of
// their JSON text, compacted: an approximation, since the API renders
// definitions into a format of its own that it does not publish.
//
// Completion: prompt may be a string, an array of strings, an array of token
// ids (each one token), or an array of such arrays; it defaults to nothing.
// Embedding: input takes the same shapes, and is required.
//
// A body that is not valid JSON gives a fault.Invalid error saying where
// ("invalid JSON at byte 14: ..."); a field of the wrong shape gives one whose
// Field and message name it, such as
// "messages[2].content: want a string or an array of content parts".
func EstimateRequest(kind Kind, model string, body []byte) (Estimate, error) {
	if kind != Chat && kind != Completion && kind != Embedding {
		return Estimate{}, fmt.Errorf("tokens: unknown request kind %v", kind)
	}
	enc := ForModel(model)
	r := &reader{data: body}
	var (
		est                      = Estimate{Choices: 1}
		input                    int  // tokens of messages, prompt or input
		prompts                  = 1  // how many prompts a completion batch holds
		haveInput                bool // whether the input field was present
		tools                    int  // tokens of tools and functions
		maxCompletion, maxTokens = -1, -1
		n, bestOf                = -1, -1
	)
	if r.peek() != '{' {
		return Estimate{}, fault.New(fault.Invalid, "want a JSON object")
	}
	err := r.object(func(key []byte) error {
		var err error
		switch k := string(key); {
		case kind == Chat && k == "messages":
			haveInput = true
			input, err = chatMessages(r, enc)
		case kind == Chat && (k == "tools" || k == "functions"):
			var t int
			t, err = jsonText(r, enc, k)
			tools += t
		case kind == Completion && k == "prompt" || kind == Embedding && k == "input":
			haveInput = true
			input, prompts, err = textOrTokens(r, enc, k)
		case kind != Embedding && k == "max_completion_tokens":
			maxCompletion, err = count(r, k, 0)
		case kind != Embedding && k == "max_tokens":
			maxTokens, err = count(r, k, 0)
		case kind != Embedding && k == "n":
			n, err = count(r, k, 1)
		case kind == Completion && k == "best_of":
			bestOf, err = count(r, k, 1)
		default:
			err = r.skip()
		}
		return err
	})
	if err == nil {
		err = r.end()
	}
	if err != nil {
		var se *syntaxError
		if errors.As(err, &se) {
			return Estimate{}, fault.New(fault.Invalid, "%s", se.Error())
		}
		return Estimate{}, err
	}
	switch kind {
	case Chat:
		if !haveInput {
			return Estimate{}, fault.InvalidField("messages", "missing")
		}
		est.Prompt = input + tokensReplyPrime + tools
	case Completion:
		est.Prompt = input
	case Embedding:
		if !haveInput {
			return Estimate{}, fault.InvalidField("input", "missing")
		}
		est.Prompt = input
		return est, nil
	}
	switch {
	case maxCompletion >= 0:
		est.MaxCompletion = maxCompletion
	case maxTokens >= 0:
		est.MaxCompletion = maxTokens
	}
	est.Choices = min(max(n, bestOf, 1)*prompts, maxCount)
	return est, nil
}

// count reads an optional non-negative count: null gives -1.
func count(r *reader, field string, least int) (int, error) {
	if r.null() {
		return -1, nil
	}
	bad := func() error {
		return fault.InvalidField(field, "want an integer from %d to %d", least, maxCount)
	}
	if c := r.peek(); c != '-' && (c < '0' || c > '9') {
		return 0, bad()
	}
	num, err := r.number()
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil || v < int64(least) || v > maxCount {
		return 0, bad()
	}
	return int(v), nil
}

// chatMessages counts a chat request's messages, framing included except
// the reply's priming.
func chatMessages(r *reader, enc *Encoding) (int, error) {
	if r.peek() != '[' {
		return 0, fault.InvalidField("messages", "want an array of messages")
	}
	total := 0
	err := r.array(func(i int) error {
		if r.peek() != '{' {
			return fault.InvalidField(fmt.Sprintf("messages[%d]", i), "want an object")
		}
		total += tokensPerMessage
		return r.object(func(key []byte) error {
			field := func() string { return fmt.Sprintf("messages[%d].%s", i, key) }
			switch string(key) {
			case "content":
				n, err := content(r, enc, i)
				total += n
				return err
			case "name":
				s, err := stringField(r, field)
				total += enc.Count(s) + tokensPerName
				return err
			case "tool_calls":
				n, err := toolCalls(r, enc, field())
				total += n
				return err
			case "function_call":
				n, err := functionFields(r, enc, field())
				total += n
				return err
			}
			// The cookbook counts every field's value: role, and fields
			// like tool_call_id. Anything that is not text is skipped.
			if r.peek() == '"' {
				b, err := r.stringBytes()
				if err != nil {
					return err
				}
				total += enc.Count(string(b))
				return nil
			}
			return r.skip()
		})
	})
	return total, err
}

// stringField reads a string or null (""); field names it in an error and is
// only called then.
func stringField(r *reader, field func() string) (string, error) {
	switch r.peek() {
	case '"':
		return r.str()
	case 'n':
		if r.null() {
			return "", nil
		}
	}
	return "", fault.InvalidField(field(), "want a string")
}

// content counts a message's content: a string, null, or an array of parts.
func content(r *reader, enc *Encoding, msg int) (int, error) {
	switch r.peek() {
	case '"':
		s, err := r.str()
		return enc.Count(s), err
	case 'n':
		if r.null() {
			return 0, nil
		}
	case '[':
		total := 0
		err := r.array(func(i int) error {
			n, err := contentPart(r, enc, msg, i)
			total += n
			return err
		})
		return total, err
	}
	return 0, fault.InvalidField(fmt.Sprintf("messages[%d].content", msg),
		"want a string or an array of content parts")
}

// contentPart counts one content part. Its type is not needed to count it,
// so parts are read in one pass whatever order their fields come in.
func contentPart(r *reader, enc *Encoding, msg, part int) (int, error) {
	path := func() string { return fmt.Sprintf("messages[%d].content[%d]", msg, part) }
	if r.peek() != '{' {
		return 0, fault.InvalidField(path(), "want an object")
	}
	total := 0
	err := r.object(func(key []byte) error {
		switch string(key) {
		case "text", "refusal":
			k := string(key)
			s, err := stringField(r, func() string { return path() + "." + k })
			total += enc.Count(s)
			return err
		case "image_url":
			n, err := image(r, func() string { return path() + ".image_url" })
			total += n
			return err
		}
		return r.skip()
	})
	return total, err
}

// image estimates an image_url value: {"url": ..., "detail": ...}, or a bare
// URL string as some clients send.
func image(r *reader, field func() string) (int, error) {
	switch r.peek() {
	case '"':
		_, err := r.stringBytes()
		return imageTokensHigh, err
	case '{':
		tokens := imageTokensHigh
		err := r.object(func(key []byte) error {
			if string(key) != "detail" {
				return r.skip()
			}
			d, err := stringField(r, func() string { return field() + ".detail" })
			if d == "low" {
				tokens = imageTokensLow
			}
			return err
		})
		return tokens, err
	}
	return 0, fault.InvalidField(field(), "want an object")
}

// toolCalls counts an assistant message's tool_calls: each call's function
// name and arguments (or a custom tool's name and input).
func toolCalls(r *reader, enc *Encoding, field string) (int, error) {
	if r.null() {
		return 0, nil
	}
	if r.peek() != '[' {
		return 0, fault.InvalidField(field, "want an array")
	}
	total := 0
	err := r.array(func(i int) error {
		call := fmt.Sprintf("%s[%d]", field, i)
		if r.peek() != '{' {
			return fault.InvalidField(call, "want an object")
		}
		return r.object(func(key []byte) error {
			switch k := string(key); k {
			case "function", "custom":
				n, err := functionFields(r, enc, call+"."+k)
				total += n
				return err
			}
			return r.skip()
		})
	})
	return total, err
}

// functionFields counts the string fields of a function call object (name
// and arguments, or name and input).
func functionFields(r *reader, enc *Encoding, field string) (int, error) {
	if r.null() {
		return 0, nil
	}
	if r.peek() != '{' {
		return 0, fault.InvalidField(field, "want an object")
	}
	total := 0
	err := r.object(func(key []byte) error {
		if r.peek() != '"' {
			return r.skip()
		}
		b, err := r.stringBytes()
		total += enc.Count(string(b))
		return err
	})
	return total, err
}

// jsonText counts tools or functions as the tokens of their compact JSON.
func jsonText(r *reader, enc *Encoding, field string) (int, error) {
	if r.null() {
		return 0, nil
	}
	if r.peek() != '[' {
		return 0, fault.InvalidField(field, "want an array")
	}
	text, err := r.compact()
	if err != nil {
		return 0, err
	}
	return enc.Count(string(text)), nil
}

// textOrTokens counts a completion prompt or an embedding input: a string, an
// array of strings, an array of token ids, or an array of arrays of token ids.
// It also returns how many prompts that is: an array of strings or of token
// arrays is a batch, each of whose prompts gets its own completions.
func textOrTokens(r *reader, enc *Encoding, field string) (tokens, prompts int, err error) {
	switch r.peek() {
	case '"':
		s, err := r.str()
		return enc.Count(s), 1, err
	case 'n':
		if r.null() {
			return 0, 1, nil
		}
	case '[':
		// The first element decides the shape; the others must match it.
		var shape byte
		elems := 0
		err := r.array(func(i int) error {
			elems++
			elem := func() string { return fmt.Sprintf("%s[%d]", field, i) }
			c := r.peek()
			if i == 0 {
				shape = c
			}
			switch {
			case shape == '"' && c == '"':
				b, err := r.stringBytes()
				tokens += enc.Count(string(b))
				return err
			case shape == '[' && c == '[':
				t, err := tokenIDs(r, elem)
				tokens += t
				return err
			case isNumberStart(shape) && isNumberStart(c):
				tokens++
				_, err := r.number()
				return err
			case shape == '"':
				return fault.InvalidField(elem(), "want a string")
			case shape == '[':
				return fault.InvalidField(elem(), "want an array of token ids")
			case isNumberStart(shape):
				return fault.InvalidField(elem(), "want a token id")
			}
			return fault.InvalidField(elem(), "want a string, a token id or an array of token ids")
		})
		prompts = 1
		if shape == '"' || shape == '[' {
			prompts = max(elems, 1)
		}
		return tokens, prompts, err
	}
	return 0, 0, fault.InvalidField(field,
		"want a string, an array of strings, an array of token ids or an array of arrays of token ids")
}

// tokenIDs counts an array of token ids: each is one token.
func tokenIDs(r *reader, field func() string) (int, error) {
	n := 0
	err := r.array(func(i int) error {
		if !isNumberStart(r.peek()) {
			return fault.InvalidField(fmt.Sprintf("%s[%d]", field(), i), "want a token id")
		}
		n++
		_, err := r.number()
		return err
	})
	return n, err
}

func isNumberStart(c byte) bool { return c == '-' || '0' <= c && c <= '9' }
