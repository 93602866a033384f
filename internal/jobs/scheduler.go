package jobs

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/store"
)

// Run schedules until ctx ends: it first takes back the jobs a previous
// process was running (their processes outlive the control plane), then
// makes a pass whenever a job is submitted or ends, and every second for
// backoffs, idle nodes and cluster minimums. Job processes keep running
// when ctx ends; the next Run adopts them.
func (s *Service) Run(ctx context.Context) {
	s.mu.Lock()
	s.base = ctx
	s.mu.Unlock()
	if err := s.recover(ctx); err != nil && ctx.Err() == nil {
		s.Log.Error("recovering jobs", "error", err)
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if err := s.Pass(ctx); err != nil && ctx.Err() == nil {
			s.Log.Error("scheduling pass", "error", err)
		}
		select {
		case <-ctx.Done():
			s.wg.Wait()
			return
		case <-s.wake:
		case <-t.C:
		}
	}
}

// recover resumes watching every job that was past the queue when the
// last control plane stopped.
func (s *Service) recover(ctx context.Context) error {
	rows, err := s.DB.Read().QueryContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE status IN (?, ?, ?)`, StatusPreparing, StatusRunning, StatusFinalizing)
	if err != nil {
		return err
	}
	var list []Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			rows.Close()
			return err
		}
		list = append(list, j)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, j := range list {
		s.Log.Info("adopting job", "job", j.Name, "status", j.Status, "attempt", j.Attempt)
		s.launch(j)
	}
	return nil
}

// queued is a queued job as a pass reads it.
type queued struct {
	PlanJob
	workspace string
	team      string
	reason    string
}

// Pass makes one scheduling pass: it places what can run, records why
// the rest waits, and scales clusters to their minimum and idle nodes
// down.
func (s *Service) Pass(ctx context.Context) error {
	now := s.Now()
	rows, err := s.DB.Read().QueryContext(ctx, `SELECT id, workspace_id, workspace, team, priority, submitted_at, not_before, compute, sku, instance_count, reason
		FROM jobs WHERE status = ? AND NOT cancel_requested`, StatusQueued)
	if err != nil {
		return err
	}
	var jobs []queued
	for rows.Next() {
		var q queued
		var submitted, notBefore int64
		var target, sku string
		if err := rows.Scan(&q.ID, &q.Workspace, &q.workspace, &q.team, &q.Priority, &submitted, &notBefore, &target, &sku, &q.Nodes, &q.reason); err != nil {
			rows.Close()
			return err
		}
		q.Submitted, q.NotBefore = time.UnixMilli(submitted), time.UnixMilli(notBefore)
		if target == compute.ServerlessName {
			q.Target = serverlessKey(q.Workspace, sku)
		} else {
			q.Target = q.Workspace + "/" + target
		}
		jobs = append(jobs, q)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	clusters, err := s.Compute.Clusters(ctx, s.DB.Read())
	if err != nil {
		return err
	}
	st := &PlanState{Now: now, Targets: map[string]*PlanTarget{}, StarveAfter: s.StarveAfter, QuotaUsed: map[QuotaKey]Quota{}, Quotas: map[QuotaKey]Quota{}}
	capacity := s.Compute.FreeCapacity(s.Executor.Capabilities(), clusters)
	free := Amount{VCPUs: capacity.VCPUs, MemoryBytes: capacity.MemoryBytes, GPUs: len(capacity.GPUs)}
	byKey := map[string]*compute.ClusterState{}
	for _, c := range clusters {
		if c.Kind != compute.KindCluster {
			continue
		}
		key := c.WorkspaceID + "/" + c.Name
		byKey[key] = c
		t := &PlanTarget{Key: key, Name: c.Name, Workspace: c.WorkspaceID, Family: c.SKU.Family, PerNode: amountOf(c.SKU), Max: c.Max, Up: len(c.Nodes)}
		idle := []compute.Node{}
		for _, n := range c.Nodes {
			if n.JobID == "" {
				idle = append(idle, n)
			}
		}
		// The most recently used first: the others reach their idle
		// timeout and go down.
		sort.Slice(idle, func(i, j int) bool { return idle[i].LastUsedAt.After(idle[j].LastUsedAt) })
		for _, n := range idle {
			t.Idle = append(t.Idle, n.ID)
		}
		st.Targets[key] = t
	}
	for _, q := range jobs {
		if _, ok := st.Targets[q.Target]; ok || !strings.Contains(q.Target, "/serverless/") {
			continue
		}
		sku, ok := s.Compute.SKUs().Lookup(q.Target[strings.LastIndex(q.Target, "/")+1:])
		if !ok {
			continue
		}
		st.Targets[q.Target] = &PlanTarget{Key: q.Target, Name: "serverless " + sku.Name, Workspace: q.Workspace, Family: sku.Family,
			PerNode: amountOf(sku), Max: 1 << 30, Ephemeral: true}
	}
	limits, err := s.Compute.QuotaLimits(ctx, s.DB.Read())
	if err != nil {
		return err
	}
	for k, v := range limits {
		st.Quotas[QuotaKey{Workspace: k[0], Family: k[1]}] = Quota{VCPUs: v[0], GPUs: v[1]}
	}
	used, err := s.Compute.QuotaUse(ctx, s.DB.Read())
	if err != nil {
		return err
	}
	for k, v := range used {
		st.QuotaUsed[QuotaKey{Workspace: k[0], Family: k[1]}] = Quota{VCPUs: v[0], GPUs: v[1]}
	}
	st.Free = free
	st.Queue = make([]PlanJob, len(jobs))
	byID := map[string]queued{}
	for i, q := range jobs {
		st.Queue[i] = q.PlanJob
		byID[q.ID] = q
	}
	SortQueue(st.Queue)
	freeGPUs := capacity.GPUs
	decisions := Plan(st)
	// Why each job waits, written in one transaction: a pass over a long
	// queue must not cost a commit per job.
	var changed []Decision
	for _, d := range decisions {
		if !d.Place && d.Reason != byID[d.JobID].reason {
			changed = append(changed, d)
		}
	}
	if len(changed) > 0 {
		if err := s.DB.Tx(ctx, func(tx store.Querier) error {
			for _, d := range changed {
				if _, err := tx.ExecContext(ctx, `UPDATE jobs SET reason = ? WHERE id = ? AND status = ?`, d.Reason, d.JobID, StatusQueued); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	for _, d := range decisions {
		q := byID[d.JobID]
		if !d.Place {
			continue
		}
		target := st.Targets[q.Target]
		sku, _ := s.Compute.SKUs().Lookup(targetSKU(target, byKey[q.Target]))
		var gpuSets [][]string
		for range d.NewNodes {
			take := min(sku.GPUs, len(freeGPUs))
			gpuSets = append(gpuSets, freeGPUs[:take])
			freeGPUs = freeGPUs[take:]
		}
		if err := s.place(ctx, q, d, byKey[q.Target], sku, gpuSets); err != nil {
			s.Log.Error("placing job", "job", q.ID, "error", err)
		}
	}
	return s.scaleClusters(ctx, clusters, now, st.Free)
}

func targetSKU(t *PlanTarget, c *compute.ClusterState) string {
	if c != nil {
		return c.SKU.Name
	}
	return t.Key[strings.LastIndex(t.Key, "/")+1:]
}

// place starts a job's attempt on its nodes.
func (s *Service) place(ctx context.Context, q queued, d Decision, c *compute.ClusterState, sku compute.SKU, gpuSets [][]string) error {
	sc := compute.Scope{WorkspaceID: q.Workspace, Workspace: q.workspace, Team: q.team}
	var placed bool
	err := s.DB.Tx(ctx, func(tx store.Querier) error {
		var status string
		var cancel bool
		if err := tx.QueryRowContext(ctx, `SELECT status, cancel_requested FROM jobs WHERE id = ?`+store.ForUpdate(tx), q.ID).Scan(&status, &cancel); err != nil {
			return err
		}
		if status != StatusQueued || cancel {
			return nil
		}
		if err := s.Compute.AssignNodes(ctx, tx, d.IdleNodes, q.ID); err != nil {
			return err
		}
		nodes := append([]string(nil), d.IdleNodes...)
		var targetPK int64
		targetName := ""
		spot := false
		if c != nil {
			targetPK, targetName, spot = c.PK, c.Name, c.Spot
		} else {
			pk, err := s.Compute.ServerlessTarget(ctx, tx, sc)
			if err != nil {
				return err
			}
			targetPK, targetName = pk, compute.ServerlessName
		}
		for i := range d.NewNodes {
			n, err := s.Compute.StartNode(ctx, tx, sc, targetPK, targetName, sku, spot, gpuSets[i], q.ID)
			if err != nil {
				return err
			}
			nodes = append(nodes, n.ID)
		}
		now := s.Now().UnixMilli()
		if _, err := tx.ExecContext(ctx, `UPDATE jobs SET status = ?, reason = '', nodes = ?, handles = '', attempt = attempt + 1,
			started_at = COALESCE(started_at, ?) WHERE id = ?`, StatusPreparing, strings.Join(nodes, ","), now, q.ID); err != nil {
			return err
		}
		placed = true
		return nil
	})
	if err != nil || !placed {
		return err
	}
	j, err := s.get(ctx, s.DB.Read(), q.Workspace, q.ID, false)
	if err != nil {
		return err
	}
	s.launch(j)
	return nil
}

// scaleClusters brings clusters up to their minimum (capacity allowing)
// and takes down nodes idle for longer than their cluster allows, never
// below the minimum.
func (s *Service) scaleClusters(ctx context.Context, clusters map[int64]*compute.ClusterState, now time.Time, free Amount) error {
	for _, c := range clusters {
		if c.Kind != compute.KindCluster {
			continue
		}
		up := len(c.Nodes)
		var idle []compute.Node
		for _, n := range c.Nodes {
			if n.JobID == "" {
				idle = append(idle, n)
			}
		}
		sort.Slice(idle, func(i, j int) bool { return idle[i].LastUsedAt.Before(idle[j].LastUsedAt) })
		for _, n := range idle {
			if up <= c.Min || compute.NodeIdleFor(n, now) < time.Duration(c.IdleSeconds)*time.Second {
				break
			}
			// Only while still idle: a pass may have just given it a job.
			stopped, err := s.Compute.StopIfIdle(ctx, n.ID)
			if err != nil {
				return err
			}
			if !stopped {
				continue
			}
			s.Log.Info("scaled down an idle node", "compute", c.Name, "node", n.ID, "idle", compute.NodeIdleFor(n, now).Round(time.Second))
			up--
		}
		for up < c.Min && amountOf(c.SKU).fits(free) && c.SKU.GPUs == 0 {
			w, err := s.Workspaces.ByID(ctx, c.WorkspaceID)
			if err != nil {
				return err
			}
			sc := compute.Scope{WorkspaceID: w.ID, Workspace: w.Name, Team: w.Team}
			if err := s.DB.Tx(ctx, func(tx store.Querier) error {
				_, err := s.Compute.StartNode(ctx, tx, sc, c.PK, c.Name, c.SKU, c.Spot, nil, "")
				return err
			}); err != nil {
				return fmt.Errorf("bringing %s to its minimum: %w", c.Name, err)
			}
			free = free.minus(amountOf(c.SKU))
			up++
		}
	}
	return nil
}
