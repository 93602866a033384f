// Package llm manages the foundation-model front door's backends, model
// pools and team limits, and builds its routing table.
package llm

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/gateway"
	"github.com/plinth-dev/plinth/internal/secret"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/workspace"
)

// Styles lists the API styles a backend may have.
var Styles = []string{gateway.StyleOpenAI, gateway.StyleAzureOpenAI, gateway.StyleEndpoint}

// MaxMirrorPercent bounds the share of a model's calls copied to its
// mirror, as for endpoints.
const MaxMirrorPercent = 50

// Backend is an upstream that serves models, as the API shows it. Its
// credential is never shown: only whether one is set and, for long ones,
// its last four characters.
type Backend struct {
	Name              string  `json:"name"`
	Style             string  `json:"style"`
	BaseURL           string  `json:"base_url"`
	APIVersion        string  `json:"api_version,omitempty"`
	CredentialSet     bool    `json:"credential_set"`
	CredentialHint    string  `json:"credential_hint,omitempty"`
	RequestsPerMinute int64   `json:"requests_per_minute"`
	TokensPerMinute   int64   `json:"tokens_per_minute"`
	InputCostPer1K    float64 `json:"input_cost_per_1k"`
	OutputCostPer1K   float64 `json:"output_cost_per_1k"`
	Region            string  `json:"region,omitempty"`
	// TimeoutMS bounds one try; 0 = the gateway's default (120 s).
	TimeoutMS int64 `json:"timeout_ms"`
	// Models lists the models whose pools include this backend.
	Models    []string  `json:"models"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedBy string    `json:"updated_by"`
	UpdatedAt time.Time `json:"updated_at"`

	sealed string
}

// BackendInput creates or changes a backend; nil fields are unchanged
// (on create: empty or 0).
type BackendInput struct {
	Name       string  `json:"name,omitempty"`
	Style      *string `json:"style,omitempty"`
	BaseURL    *string `json:"base_url,omitempty"`
	APIVersion *string `json:"api_version,omitempty"`
	// Credential is the upstream's API key; "" removes it. It is sealed
	// at rest and never shown again.
	Credential        *string  `json:"credential,omitempty"`
	RequestsPerMinute *int64   `json:"requests_per_minute,omitempty"`
	TokensPerMinute   *int64   `json:"tokens_per_minute,omitempty"`
	InputCostPer1K    *float64 `json:"input_cost_per_1k,omitempty"`
	OutputCostPer1K   *float64 `json:"output_cost_per_1k,omitempty"`
	Region            *string  `json:"region,omitempty"`
	TimeoutMS         *int64   `json:"timeout_ms,omitempty"`
}

// Target is one backend in a model's pool.
type Target struct {
	Backend string `json:"backend"`
	// Model is the backend's name for the model (the deployment name on
	// Azure OpenAI); "" = the model's own name.
	Model string `json:"model,omitempty"`
	// Priority groups are tried lowest first: provisioned capacity at 0,
	// pay-as-you-go spillover at 1, and so on.
	Priority int `json:"priority"`
	// Weight shares traffic inside a priority group; 0 is stored as 1.
	Weight int `json:"weight"`
}

// Model is a model name callers use and the pool of backends serving it.
type Model struct {
	Name                    string   `json:"name"`
	Pool                    []Target `json:"pool"`
	RequestsPerMinutePerKey int64    `json:"requests_per_minute_per_key"`
	TokensPerMinutePerKey   int64    `json:"tokens_per_minute_per_key"`
	MirrorModel             string   `json:"mirror_model,omitempty"`
	MirrorPercent           int      `json:"mirror_percent"`
	// CacheTTLMS turns on the exact-match response cache; 0 = off.
	CacheTTLMS              int64     `json:"cache_ttl_ms"`
	CacheNonZeroTemperature bool      `json:"cache_nonzero_temperature"`
	Description             string    `json:"description,omitempty"`
	CreatedBy               string    `json:"created_by"`
	CreatedAt               time.Time `json:"created_at"`
	UpdatedBy               string    `json:"updated_by"`
	UpdatedAt               time.Time `json:"updated_at"`
}

// ModelInput creates or changes a model; nil fields are unchanged (on
// create: empty or 0). A pool, when given, replaces the whole pool.
type ModelInput struct {
	Name                    string   `json:"name,omitempty"`
	Pool                    []Target `json:"pool,omitempty"`
	RequestsPerMinutePerKey *int64   `json:"requests_per_minute_per_key,omitempty"`
	TokensPerMinutePerKey   *int64   `json:"tokens_per_minute_per_key,omitempty"`
	// MirrorModel "" removes the mirror.
	MirrorModel             *string `json:"mirror_model,omitempty"`
	MirrorPercent           *int    `json:"mirror_percent,omitempty"`
	CacheTTLMS              *int64  `json:"cache_ttl_ms,omitempty"`
	CacheNonZeroTemperature *bool   `json:"cache_nonzero_temperature,omitempty"`
	Description             *string `json:"description,omitempty"`
}

// TeamLimits are a team's limits across its keys and models; 0 = none.
type TeamLimits struct {
	Team string `json:"team"`
	TeamLimitsInput
	UpdatedBy string    `json:"updated_by"`
	UpdatedAt time.Time `json:"updated_at"`
}

// TeamLimitsInput sets all of a team's limits at once (0 = none).
type TeamLimitsInput struct {
	RequestsPerMinute int64 `json:"requests_per_minute"`
	TokensPerMinute   int64 `json:"tokens_per_minute"`
	TokensPerDay      int64 `json:"tokens_per_day"`
	TokensPerMonth    int64 `json:"tokens_per_month"`
	// BudgetPerDay and BudgetPerMonth cap spending in the platform's
	// currency (UTC calendar periods).
	BudgetPerDay   float64 `json:"budget_per_day"`
	BudgetPerMonth float64 `json:"budget_per_month"`
}

// Service manages backends, models and team limits.
type Service struct {
	db    *store.DB
	audit *audit.Log
	key   *secret.Key
	now   func() time.Time
	// changed is told about every change the routing table depends on.
	changed        func()
	workspaceTeams func(context.Context) (map[string]string, error)
}

// NewService returns a Service sealing credentials under key; changed
// (may be nil) is called after every change.
func NewService(db *store.DB, log *audit.Log, key *secret.Key, changed func()) *Service {
	if changed == nil {
		changed = func() {}
	}
	return &Service{db: db, audit: log, key: key, now: time.Now, changed: changed}
}

// OnChange sets what is told about changes to the routing table (the
// snapshot publisher).
func (s *Service) OnChange(f func()) { s.changed = f }

// UseWorkspaceTeams sets where the routing table gets each workspace's
// team (calls are charged and limited as the team of the workspace they
// come through).
func (s *Service) UseWorkspaceTeams(f func(context.Context) (map[string]string, error)) {
	s.workspaceTeams = f
}

var (
	backendNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	modelNameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$`)
	teamRE        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,32}$`)
	apiVersionRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	// endpointRefRE is workspace/endpoint for StyleEndpoint backends.
	endpointRefRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{2,32}/[a-zA-Z][a-zA-Z0-9-]{2,31}$`)
)

// ValidBackendName checks a backend's name.
func ValidBackendName(field, name string) error {
	if !backendNameRE.MatchString(name) {
		return fault.InvalidField(field, "%q must be 1 to 63 letters, digits, '.', '-' and '_', starting with a letter or digit", clip(name))
	}
	return nil
}

// ValidModelName checks a model's name (what callers send as "model").
func ValidModelName(field, name string) error {
	if !modelNameRE.MatchString(name) {
		return fault.InvalidField(field, "%q must be 1 to 128 letters, digits and '.', '-', '_', ':', '/', '@', '+', starting with a letter or digit", clip(name))
	}
	return nil
}

// ValidTeam checks a team name (as workspaces name their team).
func ValidTeam(field, team string) error {
	if !teamRE.MatchString(team) {
		return fault.InvalidField(field, "%q is not a valid team name (1-33 characters: letters, digits, '-', '_')", clip(team))
	}
	return nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

func backendResource(name string) string { return "llm/backends/" + name }
func modelResource(name string) string   { return "llm/models/" + name }
func teamResource(team string) string    { return "llm/teams/" + team + "/limits" }

// credentialContext binds a sealed credential to its backend.
func credentialContext(backend string) string { return "llm_backends/" + backend + "/credential" }

// hint is what may be shown of a credential: its last four characters,
// and only when it is long enough that they give little away.
func hint(cred string) string {
	if utf8.RuneCountInString(cred) < 16 {
		return ""
	}
	r := []rune(cred)
	return "..." + string(r[len(r)-4:])
}

func checkCount(field string, v int64) error {
	if v < 0 {
		return fault.InvalidField(field, "%d is negative; use 0 for no limit", v)
	}
	return nil
}

func checkMoney(field string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return fault.InvalidField(field, "%v is not a cost of 0 or more", v)
	}
	return nil
}

// checkBackend validates a backend as it will be stored; cred is the new
// credential when one is being set.
func checkBackend(b *Backend, cred *string) error {
	switch b.Style {
	case gateway.StyleOpenAI, gateway.StyleAzureOpenAI:
		u, err := url.Parse(b.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
			return fault.InvalidField("base_url", "%q is not an absolute http or https URL such as https://api.openai.com/v1", clip(b.BaseURL))
		}
		if u.User != nil {
			return fault.InvalidField("base_url", "must not hold a user or password; give the API key as the credential")
		}
		if u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(b.BaseURL, "?") {
			return fault.InvalidField("base_url", "must not have a query or fragment; give the API key as the credential and the Azure api-version as api_version")
		}
	case gateway.StyleEndpoint:
		if !endpointRefRE.MatchString(b.BaseURL) {
			return fault.InvalidField("base_url", "%q: a backend of style endpoint names a Plinth online endpoint as workspace/endpoint, such as default/llama", clip(b.BaseURL))
		}
	default:
		return fault.InvalidField("style", "%q is not one of %s", clip(b.Style), strings.Join(Styles, ", "))
	}
	switch {
	case b.Style == gateway.StyleAzureOpenAI && b.APIVersion == "":
		return fault.InvalidField("api_version", "an azure-openai backend needs the api-version to call, such as 2024-06-01")
	case b.Style != gateway.StyleAzureOpenAI && b.APIVersion != "":
		return fault.InvalidField("api_version", "only azure-openai backends take an api_version")
	case b.APIVersion != "" && !apiVersionRE.MatchString(b.APIVersion):
		return fault.InvalidField("api_version", "%q is not an api-version such as 2024-06-01 or 2024-08-01-preview", clip(b.APIVersion))
	}
	if cred != nil {
		if len(*cred) > 8192 {
			return fault.InvalidField("credential", "is longer than 8192 bytes")
		}
		if !utf8.ValidString(*cred) || strings.ContainsFunc(*cred, unicode.IsControl) {
			return fault.InvalidField("credential", "contains a line break or another control character (was a newline read with it?)")
		}
		if strings.TrimSpace(*cred) != *cred {
			return fault.InvalidField("credential", "starts or ends with white space")
		}
	}
	for _, c := range []struct {
		field string
		v     int64
	}{{"requests_per_minute", b.RequestsPerMinute}, {"tokens_per_minute", b.TokensPerMinute}} {
		if err := checkCount(c.field, c.v); err != nil {
			return err
		}
	}
	if b.TimeoutMS < 0 {
		return fault.InvalidField("timeout_ms", "%d is negative; use 0 for the default", b.TimeoutMS)
	}
	if err := checkMoney("input_cost_per_1k", b.InputCostPer1K); err != nil {
		return err
	}
	if err := checkMoney("output_cost_per_1k", b.OutputCostPer1K); err != nil {
		return err
	}
	if b.Region != "" && !workspace.KnownRegion(b.Region) {
		return fault.InvalidField("region", "%q is not a known region (see `plinth workspace regions`)", clip(b.Region))
	}
	return nil
}

func applyBackend(b *Backend, in BackendInput) {
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = strings.TrimSpace(*src)
		}
	}
	set(&b.Style, in.Style)
	set(&b.BaseURL, in.BaseURL)
	set(&b.APIVersion, in.APIVersion)
	if in.Style != nil && in.APIVersion == nil && b.Style != gateway.StyleAzureOpenAI {
		// Only Azure OpenAI has an api-version: moving away drops it.
		b.APIVersion = ""
	}
	set(&b.Region, in.Region)
	if in.RequestsPerMinute != nil {
		b.RequestsPerMinute = *in.RequestsPerMinute
	}
	if in.TokensPerMinute != nil {
		b.TokensPerMinute = *in.TokensPerMinute
	}
	if in.InputCostPer1K != nil {
		b.InputCostPer1K = *in.InputCostPer1K
	}
	if in.OutputCostPer1K != nil {
		b.OutputCostPer1K = *in.OutputCostPer1K
	}
	if in.TimeoutMS != nil {
		b.TimeoutMS = *in.TimeoutMS
	}
}

// seal seals a new credential for backend name ("" stays "").
func (s *Service) seal(name, cred string) (sealed string, err error) {
	if cred == "" {
		return "", nil
	}
	if s.key == nil {
		return "", fault.New(fault.FailedPrecondition, "this server has no secret key to seal credentials with")
	}
	return s.key.Seal(cred, credentialContext(name))
}

// backendAudit is what the audit log keeps of a backend: never its
// credential, only whether it changed.
func backendAudit(b Backend, credChanged bool) map[string]any {
	d := map[string]any{"style": b.Style, "base_url": b.BaseURL, "credential_set": b.CredentialSet,
		"requests_per_minute": b.RequestsPerMinute, "tokens_per_minute": b.TokensPerMinute,
		"input_cost_per_1k": b.InputCostPer1K, "output_cost_per_1k": b.OutputCostPer1K}
	if b.APIVersion != "" {
		d["api_version"] = b.APIVersion
	}
	if b.Region != "" {
		d["region"] = b.Region
	}
	if credChanged {
		d["credential_changed"] = true
	}
	return d
}

// CreateBackend creates a backend, sealing its credential.
func (s *Service) CreateBackend(ctx context.Context, in BackendInput) (Backend, error) {
	if err := ValidBackendName("name", in.Name); err != nil {
		return Backend{}, err
	}
	if in.Style == nil || *in.Style == "" {
		return Backend{}, fault.InvalidField("style", "required: one of %s", strings.Join(Styles, ", "))
	}
	if in.BaseURL == nil || *in.BaseURL == "" {
		return Backend{}, fault.InvalidField("base_url", "required: the upstream's URL (or workspace/endpoint for style endpoint)")
	}
	b := Backend{Name: in.Name, Models: []string{}}
	applyBackend(&b, in)
	if err := checkBackend(&b, in.Credential); err != nil {
		return Backend{}, err
	}
	if in.Credential != nil && *in.Credential != "" {
		sealed, err := s.seal(b.Name, *in.Credential)
		if err != nil {
			return Backend{}, err
		}
		b.sealed, b.CredentialSet, b.CredentialHint = sealed, true, hint(*in.Credential)
	}
	caller := audit.CallerFrom(ctx)
	now := s.now().UTC().Truncate(time.Millisecond)
	b.CreatedBy, b.CreatedAt, b.UpdatedBy, b.UpdatedAt = caller.Principal, now, caller.Principal, now
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO llm_backends (name, style, base_url, api_version, credential, credential_hint, rpm, tpm,
			input_cost_per_1k, output_cost_per_1k, region, timeout_ms, created_by, created_at, updated_by, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, b.Name, b.Style, b.BaseURL, b.APIVersion, b.sealed, b.CredentialHint,
			b.RequestsPerMinute, b.TokensPerMinute, b.InputCostPer1K, b.OutputCostPer1K, b.Region, b.TimeoutMS,
			b.CreatedBy, now.UnixMilli(), b.UpdatedBy, now.UnixMilli())
		if store.IsUniqueViolation(err) {
			return fault.New(fault.AlreadyExists, "LLM backend %s already exists", b.Name)
		}
		if err != nil {
			return fmt.Errorf("creating LLM backend: %w", err)
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "llm.backend.create", Resource: backendResource(b.Name), Details: backendAudit(b, b.CredentialSet)})
	})
	if err != nil {
		return Backend{}, err
	}
	s.changed()
	return b, nil
}

const backendColumns = `name, style, base_url, api_version, credential, credential_hint, rpm, tpm, input_cost_per_1k, output_cost_per_1k,
	region, timeout_ms, created_by, created_at, updated_by, updated_at`

func scanBackend(row interface{ Scan(...any) error }) (Backend, error) {
	var b Backend
	var created, updated int64
	err := row.Scan(&b.Name, &b.Style, &b.BaseURL, &b.APIVersion, &b.sealed, &b.CredentialHint, &b.RequestsPerMinute, &b.TokensPerMinute,
		&b.InputCostPer1K, &b.OutputCostPer1K, &b.Region, &b.TimeoutMS, &b.CreatedBy, &created, &b.UpdatedBy, &updated)
	b.CredentialSet = b.sealed != ""
	b.CreatedAt, b.UpdatedAt = time.UnixMilli(created).UTC(), time.UnixMilli(updated).UTC()
	b.Models = []string{}
	return b, err
}

func (s *Service) backend(ctx context.Context, q store.Querier, name string, lock bool) (Backend, error) {
	suffix := ""
	if lock {
		suffix = store.ForUpdate(q)
	}
	b, err := scanBackend(q.QueryRowContext(ctx, `SELECT `+backendColumns+` FROM llm_backends WHERE name = ?`+suffix, name))
	if errors.Is(err, sql.ErrNoRows) {
		return b, fault.New(fault.NotFound, "LLM backend %s does not exist", clip(name))
	}
	if err != nil {
		return b, err
	}
	b.Models, err = modelsUsing(ctx, q, name)
	return b, err
}

// modelsUsing lists the models whose pools include backend.
func modelsUsing(ctx context.Context, q store.Querier, backend string) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT model FROM llm_model_targets WHERE backend = ? ORDER BY model`, backend)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// GetBackend returns a backend (without its credential).
func (s *Service) GetBackend(ctx context.Context, name string) (Backend, error) {
	return s.backend(ctx, s.db.Read(), name, false)
}

// ListBackends lists the backends by name (without credentials).
func (s *Service) ListBackends(ctx context.Context) ([]Backend, error) {
	list, err := s.backends(ctx, s.db.Read())
	if err != nil {
		return nil, err
	}
	uses, err := s.targetsByBackend(ctx, s.db.Read())
	if err != nil {
		return nil, err
	}
	for i := range list {
		if m := uses[list[i].Name]; m != nil {
			list[i].Models = m
		}
	}
	return list, nil
}

func (s *Service) backends(ctx context.Context, q store.Querier) ([]Backend, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+backendColumns+` FROM llm_backends ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Backend{}
	for rows.Next() {
		b, err := scanBackend(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

func (s *Service) targetsByBackend(ctx context.Context, q store.Querier) (map[string][]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT backend, model FROM llm_model_targets ORDER BY backend, model`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var b, m string
		if err := rows.Scan(&b, &m); err != nil {
			return nil, err
		}
		out[b] = append(out[b], m)
	}
	return out, rows.Err()
}

// UpdateBackend changes a backend; a credential given replaces the old
// one ("" removes it).
func (s *Service) UpdateBackend(ctx context.Context, name string, in BackendInput) (Backend, error) {
	if in.Name != "" && in.Name != name {
		return Backend{}, fault.InvalidField("name", "a backend's name cannot change")
	}
	var b Backend
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		var err error
		if b, err = s.backend(ctx, tx, name, true); err != nil {
			return err
		}
		applyBackend(&b, in)
		if err := checkBackend(&b, in.Credential); err != nil {
			return err
		}
		if in.Credential != nil {
			sealed, err := s.seal(b.Name, *in.Credential)
			if err != nil {
				return err
			}
			b.sealed, b.CredentialSet, b.CredentialHint = sealed, sealed != "", hint(*in.Credential)
		}
		now := s.now().UTC().Truncate(time.Millisecond)
		b.UpdatedBy, b.UpdatedAt = audit.CallerFrom(ctx).Principal, now
		if _, err := tx.ExecContext(ctx, `UPDATE llm_backends SET style = ?, base_url = ?, api_version = ?, credential = ?, credential_hint = ?, rpm = ?, tpm = ?,
			input_cost_per_1k = ?, output_cost_per_1k = ?, region = ?, timeout_ms = ?, updated_by = ?, updated_at = ? WHERE name = ?`,
			b.Style, b.BaseURL, b.APIVersion, b.sealed, b.CredentialHint, b.RequestsPerMinute, b.TokensPerMinute, b.InputCostPer1K, b.OutputCostPer1K,
			b.Region, b.TimeoutMS, b.UpdatedBy, now.UnixMilli(), name); err != nil {
			return err
		}
		if b.Style == gateway.StyleAzureOpenAI {
			if err := checkAzureTargets(ctx, tx, name); err != nil {
				return err
			}
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "llm.backend.update", Resource: backendResource(name), Details: backendAudit(b, in.Credential != nil)})
	})
	if err != nil {
		return Backend{}, err
	}
	s.changed()
	return b, nil
}

// DeleteBackend deletes a backend that no model's pool includes.
func (s *Service) DeleteBackend(ctx context.Context, name string) error {
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		b, err := s.backend(ctx, tx, name, true)
		if err != nil {
			return err
		}
		if len(b.Models) > 0 {
			return fault.New(fault.FailedPrecondition, "LLM backend %s is in the pool of model(s) %s; remove it from them first", name, strings.Join(b.Models, ", "))
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM llm_backends WHERE name = ?`, name); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "llm.backend.delete", Resource: backendResource(name)})
	})
	if err == nil {
		s.changed()
	}
	return err
}

// azureDeploymentRE is what an Azure OpenAI deployment name may be: it
// goes into the URL path.
var azureDeploymentRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// checkAzureTargets checks that every model served by an azure-openai
// backend has a name usable as its deployment name.
func checkAzureTargets(ctx context.Context, q store.Querier, backend string) error {
	rows, err := q.QueryContext(ctx, `SELECT model, upstream_model FROM llm_model_targets WHERE backend = ?`, backend)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var model, upstream string
		if err := rows.Scan(&model, &upstream); err != nil {
			return err
		}
		if upstream == "" {
			upstream = model
		}
		if !azureDeploymentRE.MatchString(upstream) {
			return fault.InvalidField("style", "model %s reaches this backend as %q, which is not an Azure OpenAI deployment name (letters, digits, '.', '-', '_'); give its pool entry a model name first", model, clip(upstream))
		}
	}
	return rows.Err()
}

// checkModel validates a model as it will be stored, against the
// backends and models that exist.
func (s *Service) checkModel(ctx context.Context, q store.Querier, m *Model) error {
	if len(m.Pool) == 0 {
		return fault.InvalidField("pool", "a model needs at least one backend")
	}
	if len(m.Pool) > 64 {
		return fault.InvalidField("pool", "at most 64 backends, not %d", len(m.Pool))
	}
	styles := map[string]string{}
	rows, err := q.QueryContext(ctx, `SELECT name, style FROM llm_backends`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var n, st string
		if err := rows.Scan(&n, &st); err != nil {
			rows.Close()
			return err
		}
		styles[n] = st
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i := range m.Pool {
		t := &m.Pool[i]
		field := fmt.Sprintf("pool[%d]", i)
		style, ok := styles[t.Backend]
		switch {
		case t.Backend == "":
			return fault.InvalidField(field+".backend", "required: the backend's name")
		case !ok:
			return fault.InvalidField(field+".backend", "LLM backend %q does not exist", clip(t.Backend))
		case seen[t.Backend]:
			return fault.InvalidField(field+".backend", "backend %s is in the pool twice", t.Backend)
		case t.Priority < 0 || t.Priority > 1000:
			return fault.InvalidField(field+".priority", "%d is not from 0 (tried first) to 1000", t.Priority)
		case t.Weight < 0 || t.Weight > 1000:
			return fault.InvalidField(field+".weight", "%d is not from 0 to 1000", t.Weight)
		}
		seen[t.Backend] = true
		if t.Weight == 0 {
			t.Weight = 1
		}
		t.Model = strings.TrimSpace(t.Model)
		if len(t.Model) > 256 || strings.ContainsFunc(t.Model, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
			return fault.InvalidField(field+".model", "%q is not a model name (no spaces, at most 256 bytes)", clip(t.Model))
		}
		upstream := t.Model
		if upstream == "" {
			upstream = m.Name
		}
		if style == gateway.StyleAzureOpenAI && !azureDeploymentRE.MatchString(upstream) {
			return fault.InvalidField(field+".model", "%q is not an Azure OpenAI deployment name (letters, digits, '.', '-', '_'); name the deployment that serves this model", clip(upstream))
		}
	}
	if err := checkCount("requests_per_minute_per_key", m.RequestsPerMinutePerKey); err != nil {
		return err
	}
	if err := checkCount("tokens_per_minute_per_key", m.TokensPerMinutePerKey); err != nil {
		return err
	}
	if m.CacheTTLMS < 0 {
		return fault.InvalidField("cache_ttl_ms", "%d is negative; use 0 for no cache", m.CacheTTLMS)
	}
	if len(m.Description) > 1024 {
		return fault.InvalidField("description", "is longer than 1024 bytes")
	}
	if m.MirrorPercent < 0 || m.MirrorPercent > MaxMirrorPercent {
		return fault.InvalidField("mirror_percent", "%d%% is not from 0 to %d", m.MirrorPercent, MaxMirrorPercent)
	}
	if m.MirrorModel == "" {
		if m.MirrorPercent > 0 {
			return fault.InvalidField("mirror_percent", "%d%% of calls to mirror, but mirror_model names no model", m.MirrorPercent)
		}
		return nil
	}
	if m.MirrorModel == m.Name {
		return fault.InvalidField("mirror_model", "a model cannot mirror to itself")
	}
	var n int
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM llm_models WHERE name = ?`, m.MirrorModel).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return fault.InvalidField("mirror_model", "model %q does not exist", clip(m.MirrorModel))
	}
	return nil
}

func applyModel(m *Model, in ModelInput) {
	if in.Pool != nil {
		m.Pool = append([]Target(nil), in.Pool...)
		for i := range m.Pool {
			m.Pool[i].Backend = strings.TrimSpace(m.Pool[i].Backend)
		}
	}
	if in.RequestsPerMinutePerKey != nil {
		m.RequestsPerMinutePerKey = *in.RequestsPerMinutePerKey
	}
	if in.TokensPerMinutePerKey != nil {
		m.TokensPerMinutePerKey = *in.TokensPerMinutePerKey
	}
	if in.MirrorModel != nil {
		m.MirrorModel = strings.TrimSpace(*in.MirrorModel)
		if m.MirrorModel == "" && in.MirrorPercent == nil {
			m.MirrorPercent = 0
		}
	}
	if in.MirrorPercent != nil {
		m.MirrorPercent = *in.MirrorPercent
	}
	if in.CacheTTLMS != nil {
		m.CacheTTLMS = *in.CacheTTLMS
	}
	if in.CacheNonZeroTemperature != nil {
		m.CacheNonZeroTemperature = *in.CacheNonZeroTemperature
	}
	if in.Description != nil {
		m.Description = *in.Description
	}
}

func modelAudit(m Model) map[string]any {
	pool := make([]map[string]any, 0, len(m.Pool))
	for _, t := range m.Pool {
		e := map[string]any{"backend": t.Backend, "priority": t.Priority, "weight": t.Weight}
		if t.Model != "" {
			e["model"] = t.Model
		}
		pool = append(pool, e)
	}
	d := map[string]any{"pool": pool}
	if m.MirrorModel != "" {
		d["mirror_model"], d["mirror_percent"] = m.MirrorModel, m.MirrorPercent
	}
	if m.RequestsPerMinutePerKey > 0 || m.TokensPerMinutePerKey > 0 {
		d["requests_per_minute_per_key"], d["tokens_per_minute_per_key"] = m.RequestsPerMinutePerKey, m.TokensPerMinutePerKey
	}
	if m.CacheTTLMS > 0 {
		d["cache_ttl_ms"] = m.CacheTTLMS
	}
	return d
}

func (s *Service) writeTargets(ctx context.Context, tx store.Querier, m Model) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM llm_model_targets WHERE model = ?`, m.Name); err != nil {
		return err
	}
	for _, t := range m.Pool {
		if _, err := tx.ExecContext(ctx, `INSERT INTO llm_model_targets (model, backend, upstream_model, priority, weight) VALUES (?, ?, ?, ?, ?)`,
			m.Name, t.Backend, t.Model, t.Priority, t.Weight); err != nil {
			return fmt.Errorf("recording model %s's pool: %w", m.Name, err)
		}
	}
	return nil
}

// CreateModel creates a model with its pool.
func (s *Service) CreateModel(ctx context.Context, in ModelInput) (Model, error) {
	if err := ValidModelName("name", in.Name); err != nil {
		return Model{}, err
	}
	m := Model{Name: in.Name}
	applyModel(&m, in)
	caller := audit.CallerFrom(ctx)
	now := s.now().UTC().Truncate(time.Millisecond)
	m.CreatedBy, m.CreatedAt, m.UpdatedBy, m.UpdatedAt = caller.Principal, now, caller.Principal, now
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM llm_models WHERE name = ?`, m.Name).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fault.New(fault.AlreadyExists, "LLM model %s already exists", m.Name)
		}
		if err := s.checkModel(ctx, tx, &m); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO llm_models (name, rpm_per_key, tpm_per_key, mirror_model, mirror_percent, cache_ttl_ms, cache_nonzero_temperature,
			description, created_by, created_at, updated_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			m.Name, m.RequestsPerMinutePerKey, m.TokensPerMinutePerKey, m.MirrorModel, m.MirrorPercent, m.CacheTTLMS, m.CacheNonZeroTemperature,
			m.Description, m.CreatedBy, now.UnixMilli(), m.UpdatedBy, now.UnixMilli())
		if store.IsUniqueViolation(err) {
			return fault.New(fault.AlreadyExists, "LLM model %s already exists", m.Name)
		}
		if err != nil {
			return fmt.Errorf("creating LLM model: %w", err)
		}
		if err := s.writeTargets(ctx, tx, m); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "llm.model.create", Resource: modelResource(m.Name), Details: modelAudit(m)})
	})
	if err != nil {
		return Model{}, err
	}
	s.changed()
	return m, nil
}

const modelColumns = `name, rpm_per_key, tpm_per_key, mirror_model, mirror_percent, cache_ttl_ms, cache_nonzero_temperature, description,
	created_by, created_at, updated_by, updated_at`

func scanModel(row interface{ Scan(...any) error }) (Model, error) {
	var m Model
	var created, updated int64
	err := row.Scan(&m.Name, &m.RequestsPerMinutePerKey, &m.TokensPerMinutePerKey, &m.MirrorModel, &m.MirrorPercent, &m.CacheTTLMS,
		&m.CacheNonZeroTemperature, &m.Description, &m.CreatedBy, &created, &m.UpdatedBy, &updated)
	m.CreatedAt, m.UpdatedAt = time.UnixMilli(created).UTC(), time.UnixMilli(updated).UTC()
	m.Pool = []Target{}
	return m, err
}

// pools reads the pools of every model (model "") or of one, ordered by
// priority, then weight (heaviest first), then backend.
func pools(ctx context.Context, q store.Querier, model string) (map[string][]Target, error) {
	query := `SELECT model, backend, upstream_model, priority, weight FROM llm_model_targets`
	var args []any
	if model != "" {
		query += ` WHERE model = ?`
		args = append(args, model)
	}
	rows, err := q.QueryContext(ctx, query+` ORDER BY model, priority, weight DESC, backend`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]Target{}
	for rows.Next() {
		var m string
		var t Target
		if err := rows.Scan(&m, &t.Backend, &t.Model, &t.Priority, &t.Weight); err != nil {
			return nil, err
		}
		out[m] = append(out[m], t)
	}
	return out, rows.Err()
}

func (s *Service) model(ctx context.Context, q store.Querier, name string, lock bool) (Model, error) {
	suffix := ""
	if lock {
		suffix = store.ForUpdate(q)
	}
	m, err := scanModel(q.QueryRowContext(ctx, `SELECT `+modelColumns+` FROM llm_models WHERE name = ?`+suffix, name))
	if errors.Is(err, sql.ErrNoRows) {
		return m, fault.New(fault.NotFound, "LLM model %s does not exist", clip(name))
	}
	if err != nil {
		return m, err
	}
	p, err := pools(ctx, q, name)
	if p[name] != nil {
		m.Pool = p[name]
	}
	return m, err
}

// GetModel returns a model with its pool.
func (s *Service) GetModel(ctx context.Context, name string) (Model, error) {
	return s.model(ctx, s.db.Read(), name, false)
}

// ListModels lists the models with their pools, by name.
func (s *Service) ListModels(ctx context.Context) ([]Model, error) {
	return s.models(ctx, s.db.Read())
}

func (s *Service) models(ctx context.Context, q store.Querier) ([]Model, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+modelColumns+` FROM llm_models ORDER BY name`)
	if err != nil {
		return nil, err
	}
	out := []Model{}
	for rows.Next() {
		m, err := scanModel(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	p, err := pools(ctx, q, "")
	if err != nil {
		return nil, err
	}
	for i := range out {
		if t := p[out[i].Name]; t != nil {
			out[i].Pool = t
		}
	}
	return out, nil
}

// UpdateModel changes a model; a pool given replaces its pool.
func (s *Service) UpdateModel(ctx context.Context, name string, in ModelInput) (Model, error) {
	if in.Name != "" && in.Name != name {
		return Model{}, fault.InvalidField("name", "a model's name cannot change")
	}
	if in.Pool != nil && len(in.Pool) == 0 {
		return Model{}, fault.InvalidField("pool", "a model needs at least one backend")
	}
	var m Model
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		var err error
		if m, err = s.model(ctx, tx, name, true); err != nil {
			return err
		}
		applyModel(&m, in)
		if err := s.checkModel(ctx, tx, &m); err != nil {
			return err
		}
		now := s.now().UTC().Truncate(time.Millisecond)
		m.UpdatedBy, m.UpdatedAt = audit.CallerFrom(ctx).Principal, now
		if _, err := tx.ExecContext(ctx, `UPDATE llm_models SET rpm_per_key = ?, tpm_per_key = ?, mirror_model = ?, mirror_percent = ?, cache_ttl_ms = ?,
			cache_nonzero_temperature = ?, description = ?, updated_by = ?, updated_at = ? WHERE name = ?`,
			m.RequestsPerMinutePerKey, m.TokensPerMinutePerKey, m.MirrorModel, m.MirrorPercent, m.CacheTTLMS, m.CacheNonZeroTemperature,
			m.Description, m.UpdatedBy, now.UnixMilli(), name); err != nil {
			return err
		}
		if in.Pool != nil {
			if err := s.writeTargets(ctx, tx, m); err != nil {
				return err
			}
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "llm.model.update", Resource: modelResource(name), Details: modelAudit(m)})
	})
	if err != nil {
		return Model{}, err
	}
	s.changed()
	return m, nil
}

// DeleteModel deletes a model that no other model mirrors to.
func (s *Service) DeleteModel(ctx context.Context, name string) error {
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		if _, err := s.model(ctx, tx, name, true); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT name FROM llm_models WHERE mirror_model = ? ORDER BY name`, name)
		if err != nil {
			return err
		}
		var mirrors []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return err
			}
			mirrors = append(mirrors, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(mirrors) > 0 {
			return fault.New(fault.FailedPrecondition, "LLM model %s is the mirror of model(s) %s; remove their mirror first", name, strings.Join(mirrors, ", "))
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM llm_model_targets WHERE model = ?`, name); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM llm_models WHERE name = ?`, name); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "llm.model.delete", Resource: modelResource(name)})
	})
	if err == nil {
		s.changed()
	}
	return err
}

func checkLimits(in TeamLimitsInput) error {
	for _, c := range []struct {
		field string
		v     int64
	}{{"requests_per_minute", in.RequestsPerMinute}, {"tokens_per_minute", in.TokensPerMinute}, {"tokens_per_day", in.TokensPerDay}, {"tokens_per_month", in.TokensPerMonth}} {
		if err := checkCount(c.field, c.v); err != nil {
			return err
		}
	}
	if err := checkMoney("budget_per_day", in.BudgetPerDay); err != nil {
		return err
	}
	return checkMoney("budget_per_month", in.BudgetPerMonth)
}

// PutTeamLimits sets all of a team's limits and budgets.
func (s *Service) PutTeamLimits(ctx context.Context, team string, in TeamLimitsInput) (TeamLimits, error) {
	if err := ValidTeam("team", team); err != nil {
		return TeamLimits{}, err
	}
	if err := checkLimits(in); err != nil {
		return TeamLimits{}, err
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	l := TeamLimits{Team: team, TeamLimitsInput: in, UpdatedBy: audit.CallerFrom(ctx).Principal, UpdatedAt: now}
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO llm_team_limits (team, rpm, tpm, tokens_per_day, tokens_per_month, budget_per_day, budget_per_month, updated_by, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (team) DO UPDATE SET rpm = excluded.rpm, tpm = excluded.tpm, tokens_per_day = excluded.tokens_per_day,
			tokens_per_month = excluded.tokens_per_month, budget_per_day = excluded.budget_per_day, budget_per_month = excluded.budget_per_month,
			updated_by = excluded.updated_by, updated_at = excluded.updated_at`,
			team, in.RequestsPerMinute, in.TokensPerMinute, in.TokensPerDay, in.TokensPerMonth, in.BudgetPerDay, in.BudgetPerMonth, l.UpdatedBy, now.UnixMilli()); err != nil {
			return fmt.Errorf("setting team limits: %w", err)
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "llm.limits.put", Resource: teamResource(team), Details: map[string]any{
			"requests_per_minute": in.RequestsPerMinute, "tokens_per_minute": in.TokensPerMinute, "tokens_per_day": in.TokensPerDay,
			"tokens_per_month": in.TokensPerMonth, "budget_per_day": in.BudgetPerDay, "budget_per_month": in.BudgetPerMonth}})
	})
	if err != nil {
		return TeamLimits{}, err
	}
	s.changed()
	return l, nil
}

const limitColumns = `team, rpm, tpm, tokens_per_day, tokens_per_month, budget_per_day, budget_per_month, updated_by, updated_at`

func scanLimits(row interface{ Scan(...any) error }) (TeamLimits, error) {
	var l TeamLimits
	var updated int64
	err := row.Scan(&l.Team, &l.RequestsPerMinute, &l.TokensPerMinute, &l.TokensPerDay, &l.TokensPerMonth, &l.BudgetPerDay, &l.BudgetPerMonth, &l.UpdatedBy, &updated)
	l.UpdatedAt = time.UnixMilli(updated).UTC()
	return l, err
}

// GetTeamLimits returns a team's limits.
func (s *Service) GetTeamLimits(ctx context.Context, team string) (TeamLimits, error) {
	l, err := scanLimits(s.db.Read().QueryRowContext(ctx, `SELECT `+limitColumns+` FROM llm_team_limits WHERE team = ?`, team))
	if errors.Is(err, sql.ErrNoRows) {
		return l, fault.New(fault.NotFound, "team %s has no LLM limits", clip(team))
	}
	return l, err
}

// ListTeamLimits lists every team's limits, by team.
func (s *Service) ListTeamLimits(ctx context.Context) ([]TeamLimits, error) {
	return s.teamLimits(ctx, s.db.Read())
}

func (s *Service) teamLimits(ctx context.Context, q store.Querier) ([]TeamLimits, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+limitColumns+` FROM llm_team_limits ORDER BY team`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []TeamLimits{}
	for rows.Next() {
		l, err := scanLimits(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// DeleteTeamLimits removes a team's limits: it has none after.
func (s *Service) DeleteTeamLimits(ctx context.Context, team string) error {
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM llm_team_limits WHERE team = ?`, team)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fault.New(fault.NotFound, "team %s has no LLM limits", clip(team))
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "llm.limits.delete", Resource: teamResource(team)})
	})
	if err == nil {
		s.changed()
	}
	return err
}
