package tokens

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// countCases are exact token counts. They were produced outside this package,
// with OpenAI's tokenizer as published on npm: js-tiktoken 1.0.21,
// getEncoding(name).encode(text, [], []).length (special tokens as plain
// text), in Node 20; every number was also checked against the "tiktoken"
// npm package 1.0 (tiktoken's Rust core compiled to WebAssembly),
// encode_ordinary(text).length, and the two agreed. To add a case, compute it
// the same way; do not derive it from this package.
var countCases = []struct {
	text          string
	cl100k, o200k int
}{
	{"", 0, 0},
	{"Hello, world!", 4, 4},
	{"The quick brown fox jumps over the lazy dog.", 10, 10},
	{"I'm sure they'll say we've done it; she'd agree, wouldn't you? DON'T SHOUT.", 24, 18},
	{"func main() {\n\tfmt.Println(\"hello\")\n}\n", 10, 10},
	{"def add(a, b):\n    return a + b  # sum\r\n", 15, 15},
	{"for (let i = 0; i < 10; i++) { arr[i] = i * 2; } // loop", 28, 28},
	{"parseHTTPResponse getElementById XMLHttpRequest snake_case_name", 9, 12},
	{"1234567890 3.14159 -42 1,000,000", 17, 17},
	{"日本語のテキストを数えます。", 13, 11},
	{"中文分词测试，你好世界！", 13, 8},
	{"한국어 문장입니다.", 8, 6},
	{"Привет, мир! Ελληνικά. مرحبا بالعالم. שלום עולם. नमस्ते दुनिया", 53, 20},
	{"naïve café résumé Ærøskøbing", 14, 11},
	{"e\u0301 n\u0303 combining marks", 7, 6},
	{"😀 🚀🔥 👍🏽 👨\u200d👩\u200d👧\u200d👦 🇺🇸", 36, 22},
	{"   ", 1, 1},
	{"a  b   c    d", 7, 7},
	{"\n\n\n", 1, 1},
	{"line one\r\nline two\r\n\r\n  indented\n\t\ttabs\n", 14, 14},
	{"trailing spaces   ", 4, 4},
	{"<|endoftext|> is plain text here", 11, 11},
	{"https://example.com/path/to/page?query=1&x=y#frag", 16, 16},
	{strings.Repeat("a", 100), 13, 13},
	{"QmFzZTY0IGRhdGEgd2l0aG91dCBhbnkgc3BhY2VzIGlzIG9uZSBsb25nIHByZS10b2tlbiB0aGF0IGdvZXMgdG8gdGhlIGhlYXAgcGF0aA==", 76, 72},
}

func TestCount(t *testing.T) {
	for _, c := range countCases {
		if got := cl100kBase.Count(c.text); got != c.cl100k {
			t.Errorf("cl100k_base.Count(%q) = %d, want %d", c.text, got, c.cl100k)
		}
		if got := o200kBase.Count(c.text); got != c.o200k {
			t.Errorf("o200k_base.Count(%q) = %d, want %d", c.text, got, c.o200k)
		}
	}
}

// The embedded vocabularies must be OpenAI's: rebuilt as .tiktoken files
// (each token in rank order, as base64, a space, its rank), they must have the
// SHA-256 sums that tiktoken itself checks the published files against
// (tiktoken_ext/openai_public.py).
func TestVocabularyIsOpenAIs(t *testing.T) {
	for _, c := range []struct {
		e      *Encoding
		tokens int
		sum    string
	}{
		{cl100kBase, 100256, "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"},
		{o200kBase, 199998, "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"},
	} {
		c.e.load()
		if len(c.e.ranks) != c.tokens {
			t.Errorf("%s has %d tokens, want %d", c.e.name, len(c.e.ranks), c.tokens)
			continue
		}
		byRank := make([]string, len(c.e.ranks))
		for tok, r := range c.e.ranks {
			byRank[r] = tok
		}
		h := sha256.New()
		for r, tok := range byRank {
			fmt.Fprintf(h, "%s %d\n", base64.StdEncoding.EncodeToString([]byte(tok)), r)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != c.sum {
			t.Errorf("%s: rebuilt file's sha256 is %s, want %s", c.e.name, got, c.sum)
		}
		for tok, r := range c.e.ranks {
			if len(tok) == 2 && c.e.pairs[pairIndex(tok, 0)] != r {
				t.Errorf("%s: pairs[%q] = %d, want %d", c.e.name, tok, c.e.pairs[pairIndex(tok, 0)], r)
			}
		}
	}
}

func TestForModel(t *testing.T) {
	for model, want := range map[string]string{
		"gpt-4o":                      "o200k_base",
		"gpt-4o-mini-2024-07-18":      "o200k_base",
		"chatgpt-4o-latest":           "o200k_base",
		"gpt-4.1-nano":                "o200k_base",
		"gpt-4.5-preview":             "o200k_base",
		"gpt-5":                       "o200k_base",
		"gpt-5-mini":                  "o200k_base",
		"o1":                          "o200k_base",
		"o1-preview":                  "o200k_base",
		"o3-mini":                     "o200k_base",
		"o4-mini-2025-04-16":          "o200k_base",
		"ft:gpt-4o-2024-08-06:org::x": "o200k_base",
		"openai/GPT-4o":               "o200k_base",
		"gpt-4":                       "cl100k_base",
		"gpt-4-turbo":                 "cl100k_base",
		"gpt-4-0613":                  "cl100k_base",
		"gpt-3.5-turbo":               "cl100k_base",
		"ft:gpt-3.5-turbo:org::x":     "cl100k_base",
		"text-embedding-3-small":      "cl100k_base",
		"text-embedding-ada-002":      "cl100k_base",
		"o10-custom":                  "cl100k_base",
		"meta-llama/Llama-3.1-8B":     "cl100k_base",
		"":                            "cl100k_base",
	} {
		if got := ForModel(model).Name(); got != want {
			t.Errorf("ForModel(%q) = %s, want %s", model, got, want)
		}
	}
}

// The heap merge, used for long pieces, must make the same merges as the
// direct one. Pieces from a small alphabet merge a lot, which is where the two
// could part ways.
func TestHeapMergeMatchesLinear(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, e := range []*Encoding{cl100kBase, o200kBase} {
		e.load()
		for _, alphabet := range []string{"ab", "a b", "abc de", "0123456789", "=-_ *", "th e\n"} {
			for range 300 {
				b := make([]byte, 2+rng.IntN(linearMax-1))
				for i := range b {
					b[i] = alphabet[rng.IntN(len(alphabet))]
				}
				if lin, hp := e.linearCount(string(b)), e.heapCount(string(b)); lin != hp {
					t.Fatalf("%s %q: linear %d, heap %d", e.name, b, lin, hp)
				}
			}
		}
	}
}

// Long runs without a break must not take quadratic time (a hostile request
// could otherwise pin a CPU): 256 KiB of one letter is one pre-token.
func TestLongPiece(t *testing.T) {
	s := strings.Repeat("a", 1<<18)
	if got := o200kBase.Count(s); got < 1<<18/32 || got > 1<<18/2 {
		t.Errorf("Count(256 KiB of a) = %d, out of any plausible range", got)
	}
}

// Text that is not valid UTF-8 is counted byte by byte, without panicking.
func TestInvalidUTF8(t *testing.T) {
	for _, e := range []*Encoding{cl100kBase, o200kBase} {
		if got := e.Count("a\xffb\xc3"); got < 2 || got > 4 {
			t.Errorf("%s: Count(invalid UTF-8) = %d", e.name, got)
		}
	}
}

// Fresh encodings, first used from many goroutines at once, load once and
// count alike (run with -race).
func TestConcurrentFirstUse(t *testing.T) {
	e := &Encoding{name: o200kBase.name, file: o200kBase.file, next: o200kBase.next}
	var wg sync.WaitGroup
	counts := make([]int, 8)
	for i := range counts {
		wg.Go(func() { counts[i] = e.Count(countCases[12].text) })
	}
	wg.Wait()
	for i, n := range counts {
		if n != countCases[12].o200k {
			t.Errorf("goroutine %d counted %d, want %d", i, n, countCases[12].o200k)
		}
	}
}

// Whatever the text, the scanners must make progress, stay in bounds and cut
// valid UTF-8 only between runes, and every byte must be counted.
func FuzzCount(f *testing.F) {
	for _, c := range countCases {
		f.Add(c.text)
	}
	f.Add("a\xffb\xc3 \u0085\ufeff'ſ")
	f.Fuzz(func(t *testing.T, s string) {
		for _, e := range []*Encoding{cl100kBase, o200kBase} {
			e.load()
			for p := 0; p < len(s); {
				q := e.next(s, p)
				if q <= p || q > len(s) {
					t.Fatalf("%s %q: piece at %d ends at %d", e.name, s, p, q)
				}
				if utf8.ValidString(s) && !utf8.ValidString(s[p:q]) {
					t.Fatalf("%s %q: piece %q cuts a rune", e.name, s, s[p:q])
				}
				p = q
			}
			if n := e.Count(s); n > len(s) || len(s) > 0 && n == 0 {
				t.Fatalf("%s %q: %d tokens", e.name, s, n)
			}
		}
	})
}

func BenchmarkCount(b *testing.B) {
	text := strings.Repeat(countCases[2].text+" "+countCases[4].text+countCases[9].text+countCases[12].text, 64)
	for _, e := range []*Encoding{cl100kBase, o200kBase} {
		b.Run(e.name, func(b *testing.B) {
			e.load()
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				e.Count(text)
			}
		})
	}
}

func BenchmarkLoad(b *testing.B) {
	data, _ := vocabFiles.ReadFile(o200kBase.file)
	for b.Loop() {
		if _, _, err := parseVocabulary(data); err != nil {
			b.Fatal(err)
		}
	}
}
