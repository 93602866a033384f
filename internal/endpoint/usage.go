package endpoint

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/gateway"
	"github.com/plinth-dev/plinth/internal/store"
)

// IsLLMCall reports whether a metered record is a call to the
// foundation-model front door rather than to an endpoint.
func IsLLMCall(r gateway.Record) bool { return r.Endpoint == "" && r.Model != "" }

// WriteCalls is the gateway meter's sink: each batch of calls is stored
// and added to the hourly rollups in one transaction. Endpoint calls roll
// up by endpoint and deployment; LLM calls (no endpoint, a model) by
// team, model, backend and key. Mirror copies are stored but not charged.
func (s *Service) WriteCalls(ctx context.Context, batch []gateway.Record) error {
	if len(batch) == 0 {
		return nil
	}
	type key struct {
		hour                                  int64
		workspace, team, endpoint, deployment string
	}
	type sum struct{ requests, errors, latency, reqBytes, respBytes int64 }
	roll := map[key]*sum{}
	type llmKey struct {
		hour                                   int64
		workspace, team, model, backend, keyID string
	}
	type llmSum struct {
		requests, errors, latency, prompt, completion, spillovers, cached int64
		cost                                                              float64
	}
	llmRoll := map[llmKey]*llmSum{}
	return s.db.Tx(ctx, func(tx store.Querier) error {
		const cols = 21
		const row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
		for start := 0; start < len(batch); start += 100 {
			end := min(start+100, len(batch))
			var sb strings.Builder
			sb.WriteString(`INSERT INTO endpoint_calls (at, workspace, team, endpoint, deployment, replica, principal, key_id, status, latency_us, request_bytes, response_bytes, request_id, mirrored,
				model, backend, prompt_tokens, completion_tokens, cost, spillover, cached) VALUES `)
			args := make([]any, 0, cols*(end-start))
			for i, r := range batch[start:end] {
				if i > 0 {
					sb.WriteString(", ")
				}
				sb.WriteString(row)
				cost := r.Cost
				if math.IsNaN(cost) || math.IsInf(cost, 0) {
					cost = 0
				}
				args = append(args, r.Time.UnixMilli(), r.Workspace, r.Team, r.Endpoint, r.Deployment, r.Replica, r.Principal, r.KeyID, r.Status,
					r.Latency.Microseconds(), r.RequestBytes, r.ResponseBytes, r.RequestID, r.Mirrored,
					r.Model, r.Backend, r.PromptTokens, r.CompletionTokens, cost, r.Spillover, r.Cached)
				if r.Mirrored {
					continue
				}
				hour := r.Time.Truncate(time.Hour).UnixMilli()
				if IsLLMCall(r) {
					k := llmKey{hour, r.Workspace, r.Team, r.Model, r.Backend, r.KeyID}
					a := llmRoll[k]
					if a == nil {
						a = &llmSum{}
						llmRoll[k] = a
					}
					a.requests++
					if r.Status >= 400 {
						a.errors++
					}
					a.latency += r.Latency.Microseconds()
					a.prompt += r.PromptTokens
					a.completion += r.CompletionTokens
					a.cost += cost
					if r.Spillover {
						a.spillovers++
					}
					if r.Cached {
						a.cached++
					}
					continue
				}
				k := key{hour, r.Workspace, r.Team, r.Endpoint, r.Deployment}
				a := roll[k]
				if a == nil {
					a = &sum{}
					roll[k] = a
				}
				a.requests++
				if r.Status >= 400 {
					a.errors++
				}
				a.latency += r.Latency.Microseconds()
				a.reqBytes += r.RequestBytes
				a.respBytes += r.ResponseBytes
			}
			if _, err := tx.ExecContext(ctx, sb.String(), args...); err != nil {
				return fmt.Errorf("recording endpoint calls: %w", err)
			}
		}
		for k, a := range roll {
			if _, err := tx.ExecContext(ctx, `INSERT INTO endpoint_usage_hourly (hour, workspace, team, endpoint, deployment, requests, errors, latency_us, request_bytes, response_bytes)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (hour, workspace, team, endpoint, deployment) DO UPDATE SET
				requests = endpoint_usage_hourly.requests + excluded.requests, errors = endpoint_usage_hourly.errors + excluded.errors,
				latency_us = endpoint_usage_hourly.latency_us + excluded.latency_us, request_bytes = endpoint_usage_hourly.request_bytes + excluded.request_bytes,
				response_bytes = endpoint_usage_hourly.response_bytes + excluded.response_bytes`,
				k.hour, k.workspace, k.team, k.endpoint, k.deployment, a.requests, a.errors, a.latency, a.reqBytes, a.respBytes); err != nil {
				return fmt.Errorf("rolling up endpoint calls: %w", err)
			}
		}
		for k, a := range llmRoll {
			if _, err := tx.ExecContext(ctx, `INSERT INTO llm_usage_hourly (hour, workspace, team, model, backend, key_id, requests, errors, latency_us,
				prompt_tokens, completion_tokens, cost, spillovers, cached) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (hour, workspace, team, model, backend, key_id) DO UPDATE SET
				requests = llm_usage_hourly.requests + excluded.requests, errors = llm_usage_hourly.errors + excluded.errors,
				latency_us = llm_usage_hourly.latency_us + excluded.latency_us, prompt_tokens = llm_usage_hourly.prompt_tokens + excluded.prompt_tokens,
				completion_tokens = llm_usage_hourly.completion_tokens + excluded.completion_tokens, cost = llm_usage_hourly.cost + excluded.cost,
				spillovers = llm_usage_hourly.spillovers + excluded.spillovers, cached = llm_usage_hourly.cached + excluded.cached`,
				k.hour, k.workspace, k.team, k.model, k.backend, k.keyID, a.requests, a.errors, a.latency, a.prompt, a.completion, a.cost,
				a.spillovers, a.cached); err != nil {
				return fmt.Errorf("rolling up LLM calls: %w", err)
			}
		}
		return nil
	})
}

// Kinds of usage rows.
const (
	UsageEndpoint = "endpoint"
	UsageLLM      = "llm"
)

// UsageRow is a line of a usage report. Endpoint rows (kind endpoint)
// count calls and what the replicas that served them cost
// (replica-seconds times the SKU's price); LLM rows (kind llm) count
// calls, tokens and their cost at the backends' prices.
type UsageRow struct {
	Kind             string  `json:"kind"`
	Key              string  `json:"key"`
	Requests         int64   `json:"requests"`
	Errors           int64   `json:"errors"`
	MeanLatencyMS    float64 `json:"mean_latency_ms"`
	RequestBytes     int64   `json:"request_bytes"`
	ResponseBytes    int64   `json:"response_bytes"`
	ReplicaSeconds   float64 `json:"replica_seconds"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	// Spillovers are calls served outside a model's first priority
	// group; Cached those answered from the response cache.
	Spillovers int64   `json:"spillovers"`
	Cached     int64   `json:"cached"`
	Cost       float64 `json:"cost"`
}

// UsageQuery says what a usage report covers.
type UsageQuery struct {
	// By groups rows: team, workspace, endpoint, deployment (endpoint
	// calls), model, backend, key (LLM calls); team and workspace give
	// both kinds.
	By    string
	Since time.Time
	// Workspaces limits the report to these workspaces; nil = all (LLM
	// calls through no workspace included).
	Workspaces []string
	// Model, when set, reports only LLM calls to this model.
	Model string
}

// UsageGroupings lists what a usage report can be grouped by.
var UsageGroupings = []string{"team", "workspace", "endpoint", "deployment", "model", "backend", "key"}

// endpointKeys and llmKeys name a usage row's group for each grouping;
// a grouping one kind of call lacks (model for endpoint calls) leaves that
// kind out of the report.
var (
	endpointKeys = map[string]func(ws, team, ep, dep string) string{
		"team":       func(ws, team, ep, dep string) string { return team },
		"workspace":  func(ws, team, ep, dep string) string { return ws },
		"endpoint":   func(ws, team, ep, dep string) string { return ws + "/" + ep },
		"deployment": func(ws, team, ep, dep string) string { return ws + "/" + ep + "/" + dep },
	}
	llmKeys = map[string]func(ws, team, model, backend, keyID string) string{
		"team":      func(ws, team, model, backend, keyID string) string { return team },
		"workspace": func(ws, team, model, backend, keyID string) string { return ws },
		"model":     func(ws, team, model, backend, keyID string) string { return model },
		"backend":   func(ws, team, model, backend, keyID string) string { return backend },
		"key":       func(ws, team, model, backend, keyID string) string { return keyID },
	}
)

// Usage reports endpoint calls with replica cost, and LLM calls with
// tokens and their cost, since a time, grouped.
func (s *Service) Usage(ctx context.Context, q UsageQuery) ([]UsageRow, error) {
	keyOf, llmKeyOf := endpointKeys[q.By], llmKeys[q.By]
	if keyOf == nil && llmKeyOf == nil {
		return nil, fault.InvalidField("by", "%q: usage groups by %s", clip(q.By), strings.Join(UsageGroupings, ", "))
	}
	if q.Model != "" {
		// Only LLM calls have a model.
		keyOf = nil
		if llmKeyOf == nil {
			return nil, fault.InvalidField("by", "%q groups endpoint calls; a report of one model groups by team, workspace, model, backend or key", clip(q.By))
		}
	}
	allowed := map[string]bool{}
	for _, w := range q.Workspaces {
		allowed[w] = true
	}
	hidden := func(ws string) bool { return q.Workspaces != nil && !allowed[ws] }
	type accKey struct{ kind, key string }
	acc := map[accKey]*UsageRow{}
	row := func(kind, k string) *UsageRow {
		r := acc[accKey{kind, k}]
		if r == nil {
			r = &UsageRow{Kind: kind, Key: k}
			acc[accKey{kind, k}] = r
		}
		return r
	}
	since := q.Since.Truncate(time.Hour).UnixMilli()
	if keyOf != nil {
		rows, err := s.db.Read().QueryContext(ctx, `SELECT workspace, team, endpoint, deployment, requests, errors, latency_us, request_bytes, response_bytes
			FROM endpoint_usage_hourly WHERE hour >= ?`, since)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var ws, team, ep, dep string
			var req, errs, lat, rb, sb int64
			if err := rows.Scan(&ws, &team, &ep, &dep, &req, &errs, &lat, &rb, &sb); err != nil {
				rows.Close()
				return nil, err
			}
			if hidden(ws) {
				continue
			}
			r := row(UsageEndpoint, keyOf(ws, team, ep, dep))
			r.Requests += req
			r.Errors += errs
			r.MeanLatencyMS += float64(lat) / 1000
			r.RequestBytes += rb
			r.ResponseBytes += sb
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		// Replica up-time: the nodes of compute "endpoint:<endpoint>/<deployment>".
		spans, err := s.compute.Usage(ctx, "endpoint:", q.Since)
		if err != nil {
			return nil, err
		}
		for _, u := range spans {
			if hidden(u.Workspace) {
				continue
			}
			ep, dep, _ := strings.Cut(strings.TrimPrefix(u.Compute, "endpoint:"), "/")
			r := row(UsageEndpoint, keyOf(u.Workspace, u.Team, ep, dep))
			r.ReplicaSeconds += u.Seconds
			r.Cost += u.Cost
		}
	}
	if llmKeyOf != nil {
		query := `SELECT workspace, team, model, backend, key_id, requests, errors, latency_us, prompt_tokens, completion_tokens, cost, spillovers, cached
			FROM llm_usage_hourly WHERE hour >= ?`
		args := []any{since}
		if q.Model != "" {
			query += ` AND model = ?`
			args = append(args, q.Model)
		}
		rows, err := s.db.Read().QueryContext(ctx, query, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var ws, team, model, backend, keyID string
			var req, errs, lat, prompt, completion, spill, cached int64
			var cost float64
			if err := rows.Scan(&ws, &team, &model, &backend, &keyID, &req, &errs, &lat, &prompt, &completion, &cost, &spill, &cached); err != nil {
				rows.Close()
				return nil, err
			}
			if hidden(ws) {
				continue
			}
			r := row(UsageLLM, llmKeyOf(ws, team, model, backend, keyID))
			r.Requests += req
			r.Errors += errs
			r.MeanLatencyMS += float64(lat) / 1000
			r.PromptTokens += prompt
			r.CompletionTokens += completion
			r.Cost += cost
			r.Spillovers += spill
			r.Cached += cached
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	out := make([]UsageRow, 0, len(acc))
	for _, r := range acc {
		if r.Requests > 0 {
			r.MeanLatencyMS /= float64(r.Requests)
		}
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Key < out[j].Key
	})
	return out, nil
}
