package endpoint

import (
	"context"
	"sort"
	"time"

	"github.com/plinth-dev/plinth/internal/fault"
)

// UsagePoint is one hour of one row of a usage report: what the web UI
// charts over time.
type UsagePoint struct {
	Hour     time.Time `json:"hour"`
	Kind     string    `json:"kind"`
	Key      string    `json:"key"`
	Requests int64     `json:"requests"`
	Errors   int64     `json:"errors"`
	Tokens   int64     `json:"tokens"`
	// Cost is the LLM calls' cost; endpoint replicas are costed by their
	// up-time, which Usage reports over the whole period only.
	Cost float64 `json:"cost"`
}

// UsageSeries is Usage hour by hour: endpoint and LLM calls since q.Since,
// grouped by q.By, oldest hour first.
func (s *Service) UsageSeries(ctx context.Context, q UsageQuery) ([]UsagePoint, error) {
	keyOf, llmKeyOf := endpointKeys[q.By], llmKeys[q.By]
	if keyOf == nil && llmKeyOf == nil {
		return nil, fault.InvalidField("by", "%q is not a usage grouping", clip(q.By))
	}
	allowed := map[string]bool{}
	for _, w := range q.Workspaces {
		allowed[w] = true
	}
	hidden := func(ws string) bool { return q.Workspaces != nil && !allowed[ws] }
	type k struct {
		hour      int64
		kind, key string
	}
	acc := map[k]*UsagePoint{}
	point := func(hour int64, kind, key string) *UsagePoint {
		p := acc[k{hour, kind, key}]
		if p == nil {
			p = &UsagePoint{Hour: time.UnixMilli(hour).UTC(), Kind: kind, Key: key}
			acc[k{hour, kind, key}] = p
		}
		return p
	}
	since := q.Since.Truncate(time.Hour).UnixMilli()
	if keyOf != nil && q.Model == "" {
		rows, err := s.db.Read().QueryContext(ctx, `SELECT hour, workspace, team, endpoint, deployment, requests, errors FROM endpoint_usage_hourly WHERE hour >= ?`, since)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var hour, req, errs int64
			var ws, team, ep, dep string
			if err := rows.Scan(&hour, &ws, &team, &ep, &dep, &req, &errs); err != nil {
				rows.Close()
				return nil, err
			}
			if hidden(ws) {
				continue
			}
			p := point(hour, UsageEndpoint, keyOf(ws, team, ep, dep))
			p.Requests += req
			p.Errors += errs
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	if llmKeyOf != nil {
		query := `SELECT hour, workspace, team, model, backend, key_id, requests, errors, prompt_tokens, completion_tokens, cost FROM llm_usage_hourly WHERE hour >= ?`
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
			var hour, req, errs, prompt, completion int64
			var ws, team, model, backend, keyID string
			var cost float64
			if err := rows.Scan(&hour, &ws, &team, &model, &backend, &keyID, &req, &errs, &prompt, &completion, &cost); err != nil {
				rows.Close()
				return nil, err
			}
			if hidden(ws) {
				continue
			}
			p := point(hour, UsageLLM, llmKeyOf(ws, team, model, backend, keyID))
			p.Requests += req
			p.Errors += errs
			p.Tokens += prompt + completion
			p.Cost += cost
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	out := make([]UsagePoint, 0, len(acc))
	for _, p := range acc {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Hour.Equal(out[j].Hour) {
			return out[i].Hour.Before(out[j].Hour)
		}
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Key < out[j].Key
	})
	return out, nil
}
