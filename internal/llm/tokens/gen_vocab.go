//go:build ignore

// gen_vocab converts OpenAI's vocabulary files into the compact form this
// package embeds (see vocab.go), after checking that they are OpenAI's.
//
// Usage, from this directory:
//
//	go run gen_vocab.go DIR
//
// DIR holds cl100k_base.tiktoken and o200k_base.tiktoken as OpenAI publishes
// them (tiktoken_ext/openai_public.py names them and their SHA-256 sums); the
// Go module github.com/pkoukk/tiktoken-go-loader@v0.0.2 carries copies in its
// assets folder (go mod download -json github.com/pkoukk/tiktoken-go-loader@v0.0.2
// prints where).
package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The sums tiktoken checks these files against.
var sums = map[string]string{
	"cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
	"o200k_base":  "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: go run gen_vocab.go DIR")
	}
	for name, want := range sums {
		if err := convert(filepath.Join(os.Args[1], name+".tiktoken"), want, filepath.Join("vocab", name+".gz")); err != nil {
			log.Fatalf("%s: %v", name, err)
		}
	}
}

func convert(src, wantSum, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != wantSum {
		return fmt.Errorf("%s is not OpenAI's file: sha256 %x", src, sum)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	tokens := make([][]byte, len(lines))
	for _, line := range lines {
		b64, rankText, ok := strings.Cut(line, " ")
		tok, err1 := base64.StdEncoding.DecodeString(b64)
		rank, err2 := strconv.Atoi(rankText)
		if !ok || err1 != nil || err2 != nil || rank < 0 || rank >= len(tokens) || tokens[rank] != nil || len(tok) == 0 || len(tok) > 255 {
			return fmt.Errorf("unexpected line %q (ranks must run 0..n-1, tokens 1..255 bytes)", line)
		}
		tokens[rank] = tok
	}
	var raw bytes.Buffer
	for _, tok := range tokens {
		raw.WriteByte(byte(len(tok)))
		raw.Write(tok)
	}
	var out bytes.Buffer
	zw, err := gzip.NewWriterLevel(&out, gzip.BestCompression) // no name, no time: reproducible
	if err != nil {
		return err
	}
	zw.Write(raw.Bytes())
	if err := zw.Close(); err != nil {
		return err
	}
	fmt.Printf("%s: %d tokens, %d bytes\n", dst, len(tokens), out.Len())
	return os.WriteFile(dst, out.Bytes(), 0o644)
}
