package tokens

import (
	"bytes"
	"compress/gzip"
	"embed"
	"encoding/binary"
	"fmt"
	"io"
)

// The vocabularies are OpenAI's cl100k_base.tiktoken and o200k_base.tiktoken
// in a compact form: gzip of every token in rank order, each as one length
// byte and its bytes. That is a fifth of the published files' size in the
// binary (base64 text of all four of tiktoken's vocabularies would add 7 MB,
// two of them never used here). TestVocabularyIsOpenAIs rebuilds the
// published files from these and checks OpenAI's SHA-256 sums; gen_vocab.go
// makes them from the published files.
//
//go:embed vocab/cl100k_base.gz vocab/o200k_base.gz
var vocabFiles embed.FS

// parseVocabulary reads a compact vocabulary. All tokens stay in one string,
// which the map's keys share, instead of being a quarter of a million
// separate allocations.
func parseVocabulary(compressed []byte) (ranks map[string]uint32, maxLen int, err error) {
	zr, err := gzip.NewReader(bytes.NewReader(compressed))
	if err != nil {
		return nil, 0, err
	}
	var buf bytes.Buffer
	if n := len(compressed); n >= 4 { // gzip's trailer holds the size
		buf.Grow(int(binary.LittleEndian.Uint32(compressed[n-4:])))
	}
	if _, err := io.Copy(&buf, zr); err != nil {
		return nil, 0, err
	}
	all := buf.String()
	n := 0
	for p := 0; p < len(all); p += 1 + int(all[p]) {
		if all[p] == 0 || p+1+int(all[p]) > len(all) {
			return nil, 0, fmt.Errorf("token %d: bad length at byte %d", n, p)
		}
		n++
	}
	ranks = make(map[string]uint32, n)
	for p, rank := 0, uint32(0); p < len(all); rank++ {
		tok := all[p+1 : p+1+int(all[p])]
		if _, dup := ranks[tok]; dup {
			return nil, 0, fmt.Errorf("token %q listed twice", tok)
		}
		ranks[tok] = rank
		maxLen = max(maxLen, len(tok))
		p += 1 + len(tok)
	}
	// Merging starts from single bytes, so every byte must be a token.
	for b := 0; b < 256; b++ {
		if _, ok := ranks[string([]byte{byte(b)})]; !ok {
			return nil, 0, fmt.Errorf("byte %#x is not a token", b)
		}
	}
	return ranks, maxLen, nil
}
