package endpoint

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/gateway"
	"github.com/plinth-dev/plinth/internal/store"
)

// WriteCalls is the gateway meter's sink: each batch of calls is stored
// and added to the hourly rollups in one transaction.
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
	return s.db.Tx(ctx, func(tx store.Querier) error {
		const cols = 14
		for start := 0; start < len(batch); start += 100 {
			end := min(start+100, len(batch))
			var sb strings.Builder
			sb.WriteString(`INSERT INTO endpoint_calls (at, workspace, team, endpoint, deployment, replica, principal, key_id, status, latency_us, request_bytes, response_bytes, request_id, mirrored) VALUES `)
			args := make([]any, 0, cols*(end-start))
			for i, r := range batch[start:end] {
				if i > 0 {
					sb.WriteString(", ")
				}
				sb.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
				args = append(args, r.Time.UnixMilli(), r.Workspace, r.Team, r.Endpoint, r.Deployment, r.Replica, r.Principal, r.KeyID, r.Status,
					r.Latency.Microseconds(), r.RequestBytes, r.ResponseBytes, r.RequestID, r.Mirrored)
				if r.Mirrored {
					continue
				}
				k := key{r.Time.Truncate(time.Hour).UnixMilli(), r.Workspace, r.Team, r.Endpoint, r.Deployment}
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
		return nil
	})
}

// UsageRow is a line of a usage report: calls, and what the replicas
// that served them cost (replica-seconds times the SKU's price).
type UsageRow struct {
	Key            string  `json:"key"`
	Requests       int64   `json:"requests"`
	Errors         int64   `json:"errors"`
	MeanLatencyMS  float64 `json:"mean_latency_ms"`
	RequestBytes   int64   `json:"request_bytes"`
	ResponseBytes  int64   `json:"response_bytes"`
	ReplicaSeconds float64 `json:"replica_seconds"`
	Cost           float64 `json:"cost"`
}

// Usage reports calls and replica cost since a time, grouped by team,
// workspace, endpoint or deployment, over the workspaces named (nil:
// all).
func (s *Service) Usage(ctx context.Context, by string, since time.Time, workspaces []string) ([]UsageRow, error) {
	keyOf := map[string]func(ws, team, ep, dep string) string{
		"team":       func(ws, team, ep, dep string) string { return team },
		"workspace":  func(ws, team, ep, dep string) string { return ws },
		"endpoint":   func(ws, team, ep, dep string) string { return ws + "/" + ep },
		"deployment": func(ws, team, ep, dep string) string { return ws + "/" + ep + "/" + dep },
	}[by]
	if keyOf == nil {
		return nil, fault.InvalidField("by", "%q: usage groups by team, workspace, endpoint or deployment", clip(by))
	}
	allowed := map[string]bool{}
	for _, w := range workspaces {
		allowed[w] = true
	}
	acc := map[string]*UsageRow{}
	row := func(k string) *UsageRow {
		r := acc[k]
		if r == nil {
			r = &UsageRow{Key: k}
			acc[k] = r
		}
		return r
	}
	rows, err := s.db.Read().QueryContext(ctx, `SELECT workspace, team, endpoint, deployment, requests, errors, latency_us, request_bytes, response_bytes
		FROM endpoint_usage_hourly WHERE hour >= ?`, since.Truncate(time.Hour).UnixMilli())
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
		if workspaces != nil && !allowed[ws] {
			continue
		}
		r := row(keyOf(ws, team, ep, dep))
		r.Requests += req
		r.Errors += errs
		r.MeanLatencyMS += float64(lat) / 1000
		r.RequestBytes += rb
		r.ResponseBytes += sb
	}
	rows.Close()
	for _, r := range acc {
		if r.Requests > 0 {
			r.MeanLatencyMS /= float64(r.Requests)
		}
	}
	// Replica up-time: the nodes of compute "endpoint:<endpoint>/<deployment>".
	spans, err := s.compute.Usage(ctx, "endpoint:", since)
	if err != nil {
		return nil, err
	}
	for _, u := range spans {
		if workspaces != nil && !allowed[u.Workspace] {
			continue
		}
		ep, dep, _ := strings.Cut(strings.TrimPrefix(u.Compute, "endpoint:"), "/")
		r := row(keyOf(u.Workspace, u.Team, ep, dep))
		r.ReplicaSeconds += u.Seconds
		r.Cost += u.Cost
	}
	out := make([]UsageRow, 0, len(acc))
	for _, r := range acc {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}
