// Package tokens estimates how many OpenAI tokens a request will use before
// it is sent upstream, so the LLM gateway can enforce tokens-per-minute
// limits without waiting for the upstream's usage report.
//
// Counting is exact for text: the byte-pair encodings are OpenAI's own
// vocabularies (cl100k_base and o200k_base, embedded in the binary, so nothing
// is downloaded at build or run time), and the pre-tokenizer is a hand-written
// scanner that reproduces tiktoken's splitting regular expressions. Whole
// requests are an estimate: chat framing follows OpenAI's cookbook rule, and
// images and tool definitions are approximated (see EstimateRequest).
package tokens

import (
	"fmt"
	"strings"
	"sync"
)

// Encoding is one of OpenAI's byte-pair encodings. Its vocabulary is loaded
// on first use, not at process start, because parsing it takes tens of
// milliseconds and megabytes that a process which never counts should not
// pay. An Encoding is safe for concurrent use.
type Encoding struct {
	name string
	file string // the vocabulary's path in vocabFiles
	// next returns the end of the pre-token that starts at byte p of s
	// (p < len(s)); it is the encoding's splitting regular expression.
	next func(s string, p int) int

	once   sync.Once
	ranks  map[string]uint32 // token bytes -> rank (merge priority, and token id)
	maxLen int               // the longest token, in bytes
	// pairs holds the rank of every two-byte string (noRank if it is not a
	// token), indexed by the bytes as a big-endian uint16: every merge starts
	// from byte pairs, and an array read is far cheaper than a map lookup.
	pairs []uint32
}

var (
	cl100kBase = &Encoding{name: "cl100k_base", file: "vocab/cl100k_base.gz", next: nextCL100K}
	o200kBase  = &Encoding{name: "o200k_base", file: "vocab/o200k_base.gz", next: nextO200K}
)

// o200kPrefixes are the model families tokenized with o200k_base (gpt-oss's
// o200k_harmony only adds special tokens, which request text never holds).
var o200kPrefixes = []string{"gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "chatgpt-4o", "gpt-oss"}

// oSeries are the reasoning models, also o200k_base. Their names are matched
// as a whole word ("o1", "o1-mini") so that an unrelated model that merely
// starts with the letter o and a digit falls back to cl100k_base.
var oSeries = []string{"o1", "o3", "o4"}

// ForModel returns the encoding an OpenAI model tokenizes with: o200k_base
// for gpt-4o, gpt-4.1, gpt-4.5, gpt-5, chatgpt-4o, gpt-oss and the o1, o3
// and o4 families, and cl100k_base for gpt-4, gpt-3.5, the text-embedding-3
// models and text-embedding-ada-002. Any other name, a self-hosted model's
// for instance, gets cl100k_base too: its real tokenizer is unknown here, and
// a modern 100k-token vocabulary is a fair estimate of most of them.
//
// A fine-tune's "ft:" prefix and a provider prefix ending in "/" (as in
// "openai/gpt-4o") are ignored, and case does not matter.
func ForModel(model string) *Encoding {
	m := strings.ToLower(model)
	if i := strings.LastIndexByte(m, '/'); i >= 0 {
		m = m[i+1:]
	}
	m = strings.TrimPrefix(m, "ft:")
	for _, p := range o200kPrefixes {
		if strings.HasPrefix(m, p) {
			return o200kBase
		}
	}
	for _, p := range oSeries {
		if m == p || strings.HasPrefix(m, p+"-") {
			return o200kBase
		}
	}
	// gpt-4*, gpt-3.5*, text-embedding-3-*, text-embedding-ada-002 and
	// everything unknown.
	return cl100kBase
}

// Name returns the encoding's tiktoken name, such as "o200k_base".
func (e *Encoding) Name() string { return e.name }

// Count returns the number of tokens text encodes to, exactly as tiktoken's
// encode_ordinary would: special-token markers such as "<|endoftext|>" are
// counted as the plain text they are, which is what an API request's text is.
// Bytes that are not valid UTF-8 are counted as the bytes they are (tiktoken
// never sees such text; JSON request bodies cannot carry it).
func (e *Encoding) Count(text string) int {
	e.load()
	n := 0
	for p := 0; p < len(text); {
		q := e.next(text, p)
		n += e.countPiece(text[p:q])
		p = q
	}
	return n
}

// countPiece counts the tokens of one pre-token. Most pieces of ordinary text
// are a single token, so a whole-piece lookup comes before any merging.
func (e *Encoding) countPiece(piece string) int {
	switch {
	case len(piece) == 1:
		return 1
	case len(piece) == 2:
		if e.pairs[pairIndex(piece, 0)] != noRank {
			return 1
		}
		return 2
	case len(piece) <= e.maxLen:
		if _, ok := e.ranks[piece]; ok {
			return 1
		}
	}
	return e.mergeCount(piece)
}

// load parses the embedded vocabulary once. The data are part of the binary
// and checked by the package's tests, so failing here is a build defect, not a
// condition callers could handle: it panics.
func (e *Encoding) load() {
	e.once.Do(func() {
		buildClasses()
		data, err := vocabFiles.ReadFile(e.file)
		if err != nil {
			panic(fmt.Sprintf("tokens: embedded vocabulary %s: %v", e.file, err))
		}
		e.ranks, e.maxLen, err = parseVocabulary(data)
		if err != nil {
			panic(fmt.Sprintf("tokens: embedded vocabulary %s: %v", e.file, err))
		}
		e.pairs = make([]uint32, 1<<16)
		for i := range e.pairs {
			e.pairs[i] = noRank
		}
		for tok, r := range e.ranks {
			if len(tok) == 2 {
				e.pairs[pairIndex(tok, 0)] = r
			}
		}
	})
}
