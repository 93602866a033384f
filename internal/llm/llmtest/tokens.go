package llmtest

import (
	"strings"
	"unicode"
)

// CountWords is the default token counter: one token per run of
// non-whitespace characters. It is deliberately not a real tokenizer, so
// tests can predict usage by eye; plug a real one in with
// Options.CountTokens when a test compares against OpenAI's numbers.
func CountWords(s string) int {
	return len(strings.Fields(s))
}

// Per-message overheads of OpenAI's chat format, as published in the OpenAI
// cookbook ("How to count tokens with tiktoken") for the GPT-3.5/4 family:
// every message costs 3 tokens of framing plus its role and content, a name
// costs one more, and every reply is primed with 3 tokens. With a real
// tokenizer plugged in, this reproduces the prompt_tokens OpenAI reports for
// plain text messages.
const (
	tokensPerMessage = 3
	tokensPerName    = 1
	tokensReplyPrime = 3
)

// pieces splits a reply into the deltas a stream sends: each piece is a word
// with the whitespace before it, so concatenating the pieces gives back the
// text exactly (as with real token deltas like "Hello", " world").
func pieces(text string) []string {
	var out []string
	start := 0 // where the piece being scanned begins
	inWord := false
	for i, r := range text {
		if unicode.IsSpace(r) {
			if inWord {
				out = append(out, text[start:i])
				start, inWord = i, false
			}
			continue
		}
		inWord = true
	}
	if rest := text[start:]; rest != "" {
		if len(out) > 0 && strings.TrimSpace(rest) == "" {
			out[len(out)-1] += rest // trailing whitespace stays with the last word
		} else {
			out = append(out, rest)
		}
	}
	return out
}

// truncate keeps whole pieces while the text stays within limit tokens, as
// counted by count. It reports whether anything was cut, which is when the
// answer's finish_reason becomes "length".
func truncate(ps []string, limit int, count func(string) int) ([]string, bool) {
	var b strings.Builder
	for i, p := range ps {
		b.WriteString(p)
		if count(b.String()) > limit {
			return ps[:i], true
		}
	}
	return ps, false
}
