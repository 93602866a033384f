package gateway

import "time"

// LLM is the routing table of the foundation-model front door (the
// OpenAI-compatible API under /openai): upstream backends, the model
// names callers use and the pools of backends behind them, and the token
// limits and budgets of teams. It travels in the Snapshot like endpoints
// do, so a standalone gateway routes LLM calls on its last snapshot too.
type LLM struct {
	// Backends by name.
	Backends map[string]*LLMBackend `json:"backends"`
	// Models by the name callers send in "model" (or the Azure
	// deployment name in the URL).
	Models map[string]*LLMModel `json:"models"`
	// Teams holds each team's limits and budgets; a team not listed has
	// none.
	Teams map[string]*LLMTeamLimits `json:"teams"`
	// WorkspaceTeams maps each workspace to its team: a caller is charged,
	// and limited, as the team of the workspace it calls through
	// (/openai/... is workspace "default", /w/{ws}/openai/... any other).
	WorkspaceTeams map[string]string `json:"workspace_teams"`
}

// API styles of an LLM backend.
const (
	// StyleOpenAI is OpenAI's API and the many servers that copy it (vLLM,
	// llama.cpp's server, Ollama, LiteLLM): POST {base}/chat/completions
	// with Authorization: Bearer.
	StyleOpenAI = "openai"
	// StyleAzureOpenAI is Azure OpenAI: POST
	// {base}/openai/deployments/{deployment}/chat/completions?api-version=V
	// with an api-key header.
	StyleAzureOpenAI = "azure-openai"
	// StyleEndpoint is a Plinth online endpoint in this gateway's own
	// snapshot, called by OpenAI path ({scoring sub-path}/v1/chat/completions)
	// on its deployments' replicas.
	StyleEndpoint = "endpoint"
)

// LLMBackend is one upstream serving models.
type LLMBackend struct {
	Name string `json:"name"`
	// Style is StyleOpenAI, StyleAzureOpenAI or StyleEndpoint.
	Style string `json:"style"`
	// BaseURL is the upstream's root: "https://api.openai.com/v1",
	// "https://myres.openai.azure.com", "http://10.0.0.7:8000/v1". For
	// StyleEndpoint it is "workspace/endpoint".
	BaseURL string `json:"base_url"`
	// APIVersion is Azure OpenAI's api-version query parameter, used when
	// the caller sends none.
	APIVersion string `json:"api_version,omitempty"`
	// Credential is the upstream's API key. It is a secret: the control
	// plane puts it only in snapshots for gateways, never in API answers
	// or logs.
	Credential string `json:"credential,omitempty"`
	// RequestsPerMinute and TokensPerMinute are the backend's own quota
	// (a provisioned deployment's capacity); 0 = unlimited. A backend out
	// of quota is skipped like one answering 429.
	RequestsPerMinute int64 `json:"requests_per_minute,omitempty"`
	TokensPerMinute   int64 `json:"tokens_per_minute,omitempty"`
	// InputCostPer1K and OutputCostPer1K are what 1,000 prompt and
	// completion tokens cost, in the platform's currency.
	InputCostPer1K  float64 `json:"input_cost_per_1k,omitempty"`
	OutputCostPer1K float64 `json:"output_cost_per_1k,omitempty"`
	Region          string  `json:"region,omitempty"`
	// Timeout bounds one try, from sending to the end of the answer's
	// head (and each silence while it streams); 0 = DefaultLLMTimeout.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// LLMTarget is one backend in a model's pool.
type LLMTarget struct {
	Backend string `json:"backend"`
	// Model is the name the backend knows the model by (the deployment
	// name on Azure OpenAI); "" = the public name.
	Model string `json:"model,omitempty"`
	// Priority groups are tried lowest first: provisioned capacity at 0,
	// pay-as-you-go spillover at 1, and so on.
	Priority int `json:"priority"`
	// Weight shares traffic inside a priority group; 0 counts as 1.
	Weight int `json:"weight"`
}

// LLMModel is a model name callers use and the backends that serve it.
type LLMModel struct {
	Name string      `json:"name"`
	Pool []LLMTarget `json:"pool"`
	// RequestsPerMinutePerKey and TokensPerMinutePerKey limit each caller
	// key on this model; 0 = none.
	RequestsPerMinutePerKey int64 `json:"requests_per_minute_per_key,omitempty"`
	TokensPerMinutePerKey   int64 `json:"tokens_per_minute_per_key,omitempty"`
	// MirrorModel receives MirrorPercent of this model's calls as shadow
	// copies whose answers are discarded; "" = none.
	MirrorModel   string `json:"mirror_model,omitempty"`
	MirrorPercent int    `json:"mirror_percent,omitempty"`
	// CacheTTL turns on the exact-match response cache; 0 = off.
	CacheTTL time.Duration `json:"cache_ttl,omitempty"`
	// CacheNonZeroTemperature caches answers to calls with a temperature
	// above 0 too (by default they are never cached: they are meant to vary).
	CacheNonZeroTemperature bool `json:"cache_nonzero_temperature,omitempty"`
}

// LLMTeamLimits are a team's limits across its keys and models; 0 = none.
type LLMTeamLimits struct {
	RequestsPerMinute int64 `json:"requests_per_minute,omitempty"`
	TokensPerMinute   int64 `json:"tokens_per_minute,omitempty"`
	TokensPerDay      int64 `json:"tokens_per_day,omitempty"`
	TokensPerMonth    int64 `json:"tokens_per_month,omitempty"`
	// BudgetPerDay and BudgetPerMonth are spending caps in the platform's
	// currency (UTC calendar periods).
	BudgetPerDay   float64 `json:"budget_per_day,omitempty"`
	BudgetPerMonth float64 `json:"budget_per_month,omitempty"`
}

// DefaultLLMTimeout bounds an LLM try when the backend sets no timeout:
// long generations are normal, silence this long is not.
const DefaultLLMTimeout = 120 * time.Second
