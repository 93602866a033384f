package compute

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/store"
)

// QuotaView is a workspace's quota for a SKU family and what its nodes
// use of it now.
type QuotaView struct {
	Family    string `json:"family"`
	VCPUs     int    `json:"vcpus"`
	GPUs      int    `json:"gpus"`
	UsedVCPUs int    `json:"used_vcpus"`
	UsedGPUs  int    `json:"used_gpus"`
	// Limited is false for a family without a quota (shown because the
	// workspace has nodes of it).
	Limited bool `json:"limited"`
}

// SetQuota sets (or, with vcpus and gpus both negative, removes) a
// workspace's quota for a family.
func (s *Service) SetQuota(ctx context.Context, sc Scope, family string, vcpus, gpus int) error {
	if !familyRE.MatchString(family) {
		return fault.InvalidField("family", "%q is not a SKU family name", clipText(family))
	}
	known := false
	for _, sku := range s.skus.List() {
		known = known || strings.EqualFold(sku.Family, family)
		if strings.EqualFold(sku.Family, family) {
			family = sku.Family
		}
	}
	if !known {
		return fault.InvalidField("family", "no SKU of the catalogue is of family %q (see `plinth sku list`)", clipText(family))
	}
	remove := vcpus < 0 && gpus < 0
	if !remove && (vcpus < 0 || gpus < 0) {
		return fault.InvalidField("vcpus", "quotas cannot be negative")
	}
	return s.db.Tx(ctx, func(tx store.Querier) error {
		var err error
		if remove {
			_, err = tx.ExecContext(ctx, `DELETE FROM compute_quotas WHERE workspace_id = ? AND family = ?`, sc.WorkspaceID, family)
		} else {
			_, err = tx.ExecContext(ctx, `INSERT INTO compute_quotas (workspace_id, family, vcpus, gpus) VALUES (?, ?, ?, ?)
				ON CONFLICT (workspace_id, family) DO UPDATE SET vcpus = excluded.vcpus, gpus = excluded.gpus`, sc.WorkspaceID, family, vcpus, gpus)
		}
		if err != nil {
			return err
		}
		details := map[string]any{"family": family, "vcpus": vcpus, "gpus": gpus}
		if remove {
			details = map[string]any{"family": family, "removed": true}
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "quota.set", Resource: "workspaces/" + sc.Workspace + "/quotas/" + family, Workspace: sc.Workspace, Details: details})
	})
}

// Quotas lists a workspace's quotas with their use, by family.
func (s *Service) Quotas(ctx context.Context, sc Scope) ([]QuotaView, error) {
	limits, err := s.QuotaLimits(ctx, s.db.Read())
	if err != nil {
		return nil, err
	}
	used, err := s.QuotaUse(ctx, s.db.Read())
	if err != nil {
		return nil, err
	}
	byFamily := map[string]*QuotaView{}
	for k, q := range limits {
		if k[0] == sc.WorkspaceID {
			byFamily[k[1]] = &QuotaView{Family: k[1], VCPUs: q[0], GPUs: q[1], Limited: true}
		}
	}
	for k, u := range used {
		if k[0] != sc.WorkspaceID {
			continue
		}
		v := byFamily[k[1]]
		if v == nil {
			v = &QuotaView{Family: k[1]}
			byFamily[k[1]] = v
		}
		v.UsedVCPUs, v.UsedGPUs = u[0], u[1]
	}
	out := make([]QuotaView, 0, len(byFamily))
	for _, v := range byFamily {
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Family < out[j].Family })
	return out, nil
}

// QuotaLimits returns every quota: (workspace id, family) -> (vCPUs, GPUs).
func (s *Service) QuotaLimits(ctx context.Context, q store.Querier) (map[[2]string][2]int, error) {
	rows, err := q.QueryContext(ctx, `SELECT workspace_id, family, vcpus, gpus FROM compute_quotas`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[[2]string][2]int{}
	for rows.Next() {
		var ws, family string
		var v, g int
		if err := rows.Scan(&ws, &family, &v, &g); err != nil {
			return nil, err
		}
		out[[2]string{ws, family}] = [2]int{v, g}
	}
	return out, rows.Err()
}

// QuotaUse returns what the nodes up use: (workspace id, family) ->
// (vCPUs, GPUs).
func (s *Service) QuotaUse(ctx context.Context, q store.Querier) (map[[2]string][2]int, error) {
	rows, err := q.QueryContext(ctx, `SELECT workspace_id, sku FROM compute_nodes`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[[2]string][2]int{}
	for rows.Next() {
		var ws, name string
		if err := rows.Scan(&ws, &name); err != nil {
			return nil, err
		}
		sku, ok := s.skus.Lookup(name)
		if !ok {
			continue
		}
		k := [2]string{ws, sku.Family}
		u := out[k]
		out[k] = [2]int{u[0] + sku.VCPUs, u[1] + sku.GPUs}
	}
	return out, rows.Err()
}

// ClusterState is a cluster's nodes as the scheduler sees them.
type ClusterState struct {
	PK          int64
	WorkspaceID string
	Name        string
	Kind        string
	SKU         SKU
	Spot        bool
	Min, Max    int
	IdleSeconds int64
	Nodes       []Node
}

// Clusters returns every target with its nodes, for a scheduling pass.
func (s *Service) Clusters(ctx context.Context, q store.Querier) (map[int64]*ClusterState, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+targetColumns+`, workspace_id FROM compute_targets`)
	if err != nil {
		return nil, err
	}
	out := map[int64]*ClusterState{}
	for rows.Next() {
		var ws string
		var t Target
		var raw, tags string
		var created, updated int64
		if err := rows.Scan(&t.pk, &t.Name, &t.Kind, &t.Size, &raw, &t.State, &t.Description, &tags, &t.CreatedBy, &created, &updated, &ws); err != nil {
			rows.Close()
			return nil, err
		}
		var st settings
		_ = decodeJSON(raw, &st)
		sku, _ := s.skus.Lookup(t.Size)
		out[t.pk] = &ClusterState{PK: t.pk, WorkspaceID: ws, Name: t.Name, Kind: t.Kind, SKU: sku, Spot: st.Tier == TierSpot,
			Min: st.Min, Max: st.Max, IdleSeconds: st.IdleSeconds}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	nodes, err := s.nodes(ctx, q, `1 = 1`)
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		if c := out[n.computePK]; c != nil {
			c.Nodes = append(c.Nodes, n)
		}
	}
	return out, nil
}

// NodeIdleFor is how long a node has been idle at now (0 when busy).
func NodeIdleFor(n Node, now time.Time) time.Duration {
	if n.JobID != "" {
		return 0
	}
	return now.Sub(n.LastUsedAt)
}

// CostRow is one line of a cost report.
type CostRow struct {
	Key string `json:"key"`
	// NodeSeconds is metered up-time; JobSeconds the part jobs used.
	NodeSeconds float64 `json:"node_seconds"`
	Cost        float64 `json:"cost"`
	Jobs        int     `json:"jobs,omitempty"`
}

// NodeCost sums node up-time and its cost since a time, grouped by
// "team", "workspace", "compute" or "sku", over the workspaces given by
// id (nil means all).
func (s *Service) NodeCost(ctx context.Context, by string, since time.Time, workspaceIDs []string) ([]CostRow, error) {
	col := map[string]string{"team": "team", "workspace": "workspace", "compute": "workspace || '/' || compute", "sku": "sku"}[by]
	if col == "" {
		return nil, fault.InvalidField("by", "%q: node cost groups by team, workspace, compute or sku", clipText(by))
	}
	now := s.now().UnixMilli()
	from := since.UnixMilli()
	rows, err := s.db.Read().QueryContext(ctx, `SELECT `+col+`, workspace_id, started_at, COALESCE(ended_at, ?), price_per_hour FROM node_usage
		WHERE COALESCE(ended_at, ?) > ?`, now, now, from)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	allowed := map[string]bool{}
	for _, id := range workspaceIDs {
		allowed[id] = true
	}
	acc := map[string]*CostRow{}
	for rows.Next() {
		var key, ws string
		var start, end int64
		var price float64
		if err := rows.Scan(&key, &ws, &start, &end, &price); err != nil {
			return nil, err
		}
		if workspaceIDs != nil && !allowed[ws] {
			continue
		}
		start = max(start, from)
		secs := float64(end-start) / 1000
		if secs <= 0 {
			continue
		}
		r := acc[key]
		if r == nil {
			r = &CostRow{Key: key}
			acc[key] = r
		}
		r.NodeSeconds += secs
		r.Cost += price * secs / 3600
	}
	out := make([]CostRow, 0, len(acc))
	for _, r := range acc {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Cost > out[j].Cost || (out[i].Cost == out[j].Cost && out[i].Key < out[j].Key)
	})
	return out, rows.Err()
}

func decodeJSON(raw string, v any) error {
	if err := json.Unmarshal([]byte(raw), v); err != nil {
		return fmt.Errorf("decoding settings: %w", err)
	}
	return nil
}
