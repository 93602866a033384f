package llmtest

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"strconv"
	"strings"
)

// maxEmbeddingInputs is OpenAI's limit on inputs per embeddings request.
const maxEmbeddingInputs = 2048

// parseEmbeddings validates POST /v1/embeddings.
func (s *Server) parseEmbeddings(c *call, raw map[string]json.RawMessage, cfg config) (*op, *apiError) {
	m, e := modelField(c, raw)
	if e != nil {
		return nil, e
	}
	rawInput, ok := raw["input"]
	if !ok || string(rawInput) == "null" {
		return nil, errMissing("input")
	}
	inputs, e := prompts(rawInput, "input")
	if e != nil {
		return nil, e
	}
	// OpenAI rejects empty input (an empty string, or no inputs at all)
	// with its generic schema message.
	if len(inputs) == 0 || len(inputs) > maxEmbeddingInputs || (len(inputs) == 1 && !inputs[0].isToks && inputs[0].text == "") {
		return nil, invalidRequest(http.StatusBadRequest, "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", nil, nil)
	}
	var dims float64
	hasDims, e := field(raw, "dimensions", "an integer", &dims)
	if e != nil {
		return nil, e
	}
	dim := s.opts.EmbeddingDimensions
	if hasDims {
		if dims < 1 {
			// The embeddings endpoint still words this check in JSON
			// Schema's terms, unlike chat completions.
			return nil, invalidRequest(http.StatusBadRequest, fmt.Sprintf("%s is less than the minimum of 1 - 'dimensions'", strconv.FormatFloat(dims, 'f', -1, 64)), nil, nil)
		}
		dim = int(dims)
	}
	format := "float"
	if _, e := field(raw, "encoding_format", "a string", &format); e != nil {
		return nil, e
	}
	if format != "float" && format != "base64" {
		return nil, invalidRequest(http.StatusBadRequest, fmt.Sprintf("'%s' is not one of ['float', 'base64'] - 'encoding_format'", format), nil, nil)
	}
	if e := s.checkModel(c, m); e != nil {
		return nil, e
	}
	respModel := c.responseModel(m)

	build := func(string) *reply {
		l := embeddingList{Object: "list", Data: make([]embedding, len(inputs)), Model: respModel}
		tokens := 0
		for i, in := range inputs {
			tokens += in.count(s.count)
			v := Embedding(respModel, in.key(), dim)
			var value any = v
			if format == "base64" {
				value = encodeFloat32s(v)
			}
			l.Data[i] = embedding{Object: "embedding", Index: i, Embedding: value}
		}
		l.Usage = embeddingUsage{PromptTokens: tokens, TotalTokens: tokens}
		return &reply{body: s.encode(c, l)}
	}
	return &op{build: build}, nil
}

// key is the text an embedding is derived from; token inputs use their ids.
func (p promptInput) key() string {
	if !p.isToks {
		return p.text
	}
	var b strings.Builder
	b.WriteString("\x00tokens")
	for _, t := range p.tokens {
		b.WriteByte(' ')
		b.WriteString(strconv.Itoa(t))
	}
	return b.String()
}

// Embedding is the vector the server returns for input under model with
// the given dimensions: pseudo-random from a hash of model and input,
// scaled to unit length as OpenAI's embeddings are. A shorter dimension is
// a prefix of a longer one, renormalized, the way text-embedding-3 models
// shorten vectors.
func Embedding(model, input string, dimensions int) []float32 {
	h := fnv.New64a()
	h.Write([]byte(model))
	h.Write([]byte{0})
	h.Write([]byte(input))
	state := h.Sum64()
	v := make([]float64, dimensions)
	var norm float64
	for i := range v {
		// splitmix64: a tiny, well-mixed generator, so that every vector
		// element depends on the whole input.
		state += 0x9e3779b97f4a7c15
		z := state
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		v[i] = float64(z>>11)/float64(1<<53)*2 - 1
		norm += v[i] * v[i]
	}
	norm = math.Sqrt(norm)
	out := make([]float32, dimensions)
	for i, x := range v {
		out[i] = float32(x / norm)
	}
	return out
}

// encodeFloat32s is OpenAI's encoding_format "base64": the vector's
// float32 values, little-endian, base64-encoded. The official Node client
// asks for it by default and decodes it itself, so a gateway that rewrites
// embeddings bodies must handle both forms.
func encodeFloat32s(v []float32) string {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return base64.StdEncoding.EncodeToString(b)
}
