package llmtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// This file holds the JSON shapes the server writes. Field order follows
// what api.openai.com sends (Go marshals struct fields in declaration
// order), so a byte-level diff against a recorded OpenAI answer shows only
// values, not reordering.

type usage struct {
	PromptTokens            int               `json:"prompt_tokens"`
	CompletionTokens        int               `json:"completion_tokens"`
	TotalTokens             int               `json:"total_tokens"`
	PromptTokensDetails     promptDetails     `json:"prompt_tokens_details"`
	CompletionTokensDetails completionDetails `json:"completion_tokens_details"`
}

type promptDetails struct {
	CachedTokens int `json:"cached_tokens"`
	AudioTokens  int `json:"audio_tokens"`
}

type completionDetails struct {
	ReasoningTokens          int `json:"reasoning_tokens"`
	AudioTokens              int `json:"audio_tokens"`
	AcceptedPredictionTokens int `json:"accepted_prediction_tokens"`
	RejectedPredictionTokens int `json:"rejected_prediction_tokens"`
}

// legacyUsage is the usage object of /v1/completions, which never grew the
// detail objects.
type legacyUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type embeddingUsage struct {
	PromptTokens int `json:"prompt_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

type chatMessage struct {
	Role        string  `json:"role"`
	Content     string  `json:"content"`
	Refusal     *string `json:"refusal"`
	Annotations []any   `json:"annotations"`
}

type chatChoice struct {
	Index   int         `json:"index"`
	Message chatMessage `json:"message"`
	// Logprobs is always null: the server does not fake log probabilities.
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason string    `json:"finish_reason"`
	// ContentFilterResults is Azure's per-choice annotation; nil elsewhere.
	ContentFilterResults any `json:"content_filter_results,omitempty"`
}

type chatCompletion struct {
	ID                  string       `json:"id"`
	Object              string       `json:"object"`
	Created             int64        `json:"created"`
	Model               string       `json:"model"`
	Choices             []chatChoice `json:"choices"`
	Usage               usage        `json:"usage"`
	ServiceTier         string       `json:"service_tier,omitempty"`
	SystemFingerprint   string       `json:"system_fingerprint"`
	PromptFilterResults any          `json:"prompt_filter_results,omitempty"`
}

type chunkDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
	Refusal *string `json:"refusal,omitempty"`
}

// chunkDeltaRole is the first delta of a choice: OpenAI sends an explicit
// "refusal": null there and nowhere else.
type chunkDeltaRole struct {
	Role    string  `json:"role"`
	Content string  `json:"content"`
	Refusal *string `json:"refusal"`
}

type chunkChoice struct {
	Index                int       `json:"index"`
	Delta                any       `json:"delta"`
	Logprobs             *struct{} `json:"logprobs"`
	FinishReason         *string   `json:"finish_reason"`
	ContentFilterResults any       `json:"content_filter_results,omitempty"`
}

type chatChunk struct {
	ID                string        `json:"id"`
	Object            string        `json:"object"`
	Created           int64         `json:"created"`
	Model             string        `json:"model"`
	ServiceTier       string        `json:"service_tier,omitempty"`
	SystemFingerprint string        `json:"system_fingerprint"`
	Choices           []chunkChoice `json:"choices"`
	// Usage is left out unless stream_options.include_usage was set; then it
	// is null on every chunk but the last, which is what OpenAI documents.
	Usage       json.RawMessage `json:"usage,omitempty"`
	Obfuscation string          `json:"obfuscation,omitempty"`
}

// azurePromptFilterChunk is the first event of an Azure OpenAI stream: no
// choices, empty id/model/object, only the prompt's content-filter verdict.
// Its keys are in the alphabetical order Azure sends.
type azurePromptFilterChunk struct {
	Choices             []struct{} `json:"choices"`
	Created             int64      `json:"created"`
	ID                  string     `json:"id"`
	Model               string     `json:"model"`
	Object              string     `json:"object"`
	PromptFilterResults any        `json:"prompt_filter_results"`
}

type textChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type textCompletion struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	Choices           []textChoice    `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
	SystemFingerprint string          `json:"system_fingerprint"`
}

type embedding struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string
}

type embeddingList struct {
	Object string         `json:"object"`
	Data   []embedding    `json:"data"`
	Model  string         `json:"model"`
	Usage  embeddingUsage `json:"usage"`
}

type model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

type modelList struct {
	Object string  `json:"object"`
	Data   []model `json:"data"`
}

// contentFilterSafe is what Azure's default content filter reports for text
// it lets through.
func contentFilterSafe() map[string]any {
	safe := map[string]any{"filtered": false, "severity": "safe"}
	return map[string]any{"hate": safe, "self_harm": safe, "sexual": safe, "violence": safe}
}

func promptFilterResults() []any {
	return []any{map[string]any{"prompt_index": 0, "content_filter_results": contentFilterSafe()}}
}

// apiError is an error answer. OpenAI's errors are
// {"error":{"message","type","param","code"}}; Azure's own front door
// answers {"error":{"code","message"}} instead, and Cloudflare's 502 in
// front of OpenAI has a numeric code. raw, when set, is sent verbatim.
type apiError struct {
	status  int
	Message string `json:"message"`
	Type    string `json:"type"`
	Param   any    `json:"param"`
	Code    any    `json:"code"`
	raw     []byte
}

// body renders the error the way api.openai.com does: indented by four
// spaces and ending in a newline (successful answers use two).
func (e *apiError) body() []byte {
	if e.raw != nil {
		return e.raw
	}
	b, err := marshalIndent(map[string]any{"error": e}, "    ")
	if err != nil {
		panic(err) // only strings and nils: cannot fail
	}
	return append(b, '\n')
}

func invalidRequest(status int, message string, param any, code any) *apiError {
	return &apiError{status: status, Message: message, Type: "invalid_request_error", Param: param, Code: code}
}

func errBadJSON() *apiError {
	return invalidRequest(http.StatusBadRequest, "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)", nil, nil)
}

func errNoModel() *apiError {
	return invalidRequest(http.StatusBadRequest, "you must provide a model parameter", nil, nil)
}

func errMissing(param string) *apiError {
	return invalidRequest(http.StatusBadRequest, fmt.Sprintf("Missing required parameter: '%s'.", param), param, "missing_required_parameter")
}

func errEmptyArray(param string) *apiError {
	return invalidRequest(http.StatusBadRequest, fmt.Sprintf("Invalid '%s': empty array. Expected an array with minimum length 1, but got an empty array instead.", param), param, "empty_array")
}

func errBelowMin(param string, min, got int64) *apiError {
	return invalidRequest(http.StatusBadRequest, fmt.Sprintf("Invalid '%s': integer below minimum value. Expected a value >= %d, but got %d instead.", param, min, got), param, "integer_below_min_value")
}

func errAboveMax(param string, max, got int64) *apiError {
	return invalidRequest(http.StatusBadRequest, fmt.Sprintf("Invalid '%s': integer above maximum value. Expected a value <= %d, but got %d instead.", param, max, got), param, "integer_above_max_value")
}

func errInvalidType(param, want string, raw json.RawMessage) *apiError {
	return invalidRequest(http.StatusBadRequest, fmt.Sprintf("Invalid type for '%s': expected %s, but got %s instead.", param, want, jsonKind(raw)), param, "invalid_type")
}

func errInvalidValue(param, got string, supported []string) *apiError {
	quoted := make([]string, len(supported))
	for i, s := range supported {
		quoted[i] = "'" + s + "'"
	}
	list := strings.Join(quoted[:len(quoted)-1], ", ") + ", and " + quoted[len(quoted)-1]
	return invalidRequest(http.StatusBadRequest, fmt.Sprintf("Invalid value: '%s'. Supported values are: %s.", got, list), param, "invalid_value")
}

func errModelNotFound(m string) *apiError {
	return invalidRequest(http.StatusNotFound, fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", m), nil, "model_not_found")
}

func errInvalidURL(r *http.Request) *apiError {
	return invalidRequest(http.StatusNotFound, fmt.Sprintf("Invalid URL (%s %s)", r.Method, r.URL.Path), nil, nil)
}

func errNoAPIKey() *apiError {
	return invalidRequest(http.StatusUnauthorized, "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username. You can obtain an API key from https://platform.openai.com/account/api-keys.", nil, nil)
}

func errWrongAPIKey(key string) *apiError {
	return invalidRequest(http.StatusUnauthorized, fmt.Sprintf("Incorrect API key provided: %s. You can find your API key at https://platform.openai.com/account/api-keys.", redactKey(key)), nil, "invalid_api_key")
}

// redactKey shows a key the way OpenAI echoes it back: the first and last
// four characters only, so tests can still tell which key was sent.
func redactKey(key string) string {
	if len(key) <= 8 {
		return key
	}
	return key[:4] + strings.Repeat("*", min(len(key)-8, 28)) + key[len(key)-4:]
}

func errRateLimited(model string, retry string) *apiError {
	msg := fmt.Sprintf("Rate limit reached for %s in organization org-llmtest on requests per min (RPM): Limit %d, Used %d, Requested 1.", model, rateLimitRequests, rateLimitRequests)
	if retry != "" {
		msg += " Please try again in " + retry + "."
	}
	msg += " Visit https://platform.openai.com/account/rate-limits to learn more."
	// OpenAI's type for rate limits names the exhausted limit ("requests" or
	// "tokens"); it is not "rate_limit_error".
	return &apiError{status: http.StatusTooManyRequests, Message: msg, Type: "requests", Code: "rate_limit_exceeded"}
}

// errServer is what each upstream failure status looks like in the wild.
func errServer(status int, message string) *apiError {
	switch status {
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		// Cloudflare, in front of api.openai.com, answers these itself: keys
		// in alphabetical order and an integer code, which SDKs expecting a
		// string code must tolerate.
		typ, text := "cf_bad_gateway", "Bad gateway."
		if status == http.StatusGatewayTimeout {
			typ, text = "cf_gateway_timeout", "Gateway timeout."
		}
		if message != "" {
			text = message
		}
		msg, _ := json.Marshal(text)
		return &apiError{status: status, raw: []byte(`{"error":{"code":` + strconv.Itoa(status) + `,"message":` + string(msg) + `,"param":null,"type":"` + typ + `"}}`)}
	case http.StatusServiceUnavailable:
		if message == "" {
			message = "The server is overloaded or not ready yet."
		}
	default:
		if message == "" {
			message = "The server had an error while processing your request. Sorry about that!"
		}
	}
	return &apiError{status: status, Message: message, Type: "server_error"}
}

// azureError is the shape of errors made by Azure's gateway rather than the
// model service behind it (auth, routing, throttling).
func azureError(status int, code, message string) *apiError {
	b, err := json.Marshal(map[string]any{"error": struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{code, message}})
	if err != nil {
		panic(err)
	}
	return &apiError{status: status, raw: b}
}

func azureNotFound() *apiError {
	return azureError(http.StatusNotFound, "404", "Resource not found")
}

func azureDeploymentNotFound() *apiError {
	return azureError(http.StatusNotFound, "DeploymentNotFound", "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.")
}

func azureUnauthorized() *apiError {
	return azureError(http.StatusUnauthorized, "401", "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.")
}

func azureRateLimited(operation, apiVersion, retry string) *apiError {
	if retry == "" {
		retry = "1 second"
	}
	return azureError(http.StatusTooManyRequests, "429", fmt.Sprintf("Requests to the %s Operation under Azure OpenAI API version %s have exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry after %s. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.", operation, apiVersion, retry))
}

// jsonKind names a JSON value's type the way OpenAI's validation messages do.
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	if bytes.ContainsAny(raw, ".eE") {
		return "a decimal"
	}
	return "an integer"
}

// marshalIndent is json.MarshalIndent without HTML escaping: OpenAI sends
// '<', '>' and '&' as themselves.
func marshalIndent(v any, indent string) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", indent)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// marshalCompact is json.Marshal without HTML escaping, for stream events.
func marshalCompact(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err) // the server's own types: cannot fail
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
