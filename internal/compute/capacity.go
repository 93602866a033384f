package compute

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/store"
)

// Free is what the executor has left once the nodes that are up have
// taken their SKUs' share.
type Free struct {
	VCPUs       int
	MemoryBytes int64
	// GPUs are the device ids no node holds.
	GPUs []string
}

// FreeCapacity subtracts the nodes of already loaded clusters from the
// executor's capacity (the scheduler, the endpoint controller and
// instances all place nodes on the same machine).
func (s *Service) FreeCapacity(caps executor.Capabilities, clusters map[int64]*ClusterState) Free {
	f := Free{VCPUs: caps.CPUs, MemoryBytes: caps.MemoryBytes}
	held := map[string]bool{}
	for _, c := range clusters {
		for _, n := range c.Nodes {
			if sku, ok := s.skus.Lookup(n.SKU); ok {
				f.VCPUs -= sku.VCPUs
				f.MemoryBytes -= sku.MemoryBytes
			}
			for _, g := range n.GPUs {
				held[g] = true
			}
		}
	}
	for _, g := range caps.GPUs {
		if id := strconv.Itoa(g.Index); !held[id] {
			f.GPUs = append(f.GPUs, id)
		}
	}
	return f
}

// Fits reports whether a node of sku fits in f.
func (f Free) Fits(sku SKU) bool {
	return sku.VCPUs <= f.VCPUs && sku.MemoryBytes <= f.MemoryBytes && sku.GPUs <= len(f.GPUs)
}

// NodeGPUs returns the GPUs each of the given nodes holds.
func (s *Service) NodeGPUs(ctx context.Context, nodeIDs []string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, id := range nodeIDs {
		var gpus string
		if err := s.db.Read().QueryRowContext(ctx, `SELECT gpus FROM compute_nodes WHERE id = ?`, id).Scan(&gpus); err != nil {
			return nil, err
		}
		if gpus != "" {
			out[id] = strings.Split(gpus, ",")
		}
	}
	return out, nil
}

// StopIfIdle takes a node down unless a job took it meanwhile, and
// reports whether it did.
func (s *Service) StopIfIdle(ctx context.Context, nodeID string) (bool, error) {
	stopped := false
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		var job string
		if err := tx.QueryRowContext(ctx, `SELECT job_id FROM compute_nodes WHERE id = ?`+store.ForUpdate(tx), nodeID).Scan(&job); err != nil || job != "" {
			return err
		}
		stopped = true
		return s.StopNode(ctx, tx, nodeID)
	})
	return stopped, err
}

// UsageSpan is a node's metered up-time within a report's window.
type UsageSpan struct {
	Workspace, Team, Compute string
	Seconds                  float64
	Cost                     float64
}

// Usage returns the up-time since a time of the nodes whose compute name
// starts with prefix (endpoint replicas are "endpoint:<e>/<d>").
func (s *Service) Usage(ctx context.Context, prefix string, since time.Time) ([]UsageSpan, error) {
	now := s.now().UnixMilli()
	rows, err := s.db.Read().QueryContext(ctx, `SELECT workspace, team, compute, started_at, COALESCE(ended_at, ?), price_per_hour FROM node_usage
		WHERE compute >= ? AND compute < ? AND COALESCE(ended_at, ?) > ?`, now, prefix, prefix+"\uffff", now, since.UnixMilli())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []UsageSpan
	for rows.Next() {
		var u UsageSpan
		var start, end int64
		var price float64
		if err := rows.Scan(&u.Workspace, &u.Team, &u.Compute, &start, &end, &price); err != nil {
			return nil, err
		}
		u.Seconds = float64(end-max(start, since.UnixMilli())) / 1000
		if u.Seconds <= 0 {
			continue
		}
		u.Cost = price * u.Seconds / 3600
		out = append(out, u)
	}
	return out, rows.Err()
}
