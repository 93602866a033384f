package jobs

import (
	"fmt"
	"sort"
	"time"
)

// The placement decision, kept free of I/O so that one pass over a large
// queue is cheap and can be tested and benchmarked on its own.
//
// A pass walks the queue in priority order (higher first), then
// submission order. A job takes idle nodes of its compute target and
// starts new ones for the rest, if the target's max_instances, the
// workspace's quota for the SKU family and the free capacity of the
// executor all allow; otherwise it waits, with the reason recorded. Later
// jobs may overtake a waiting one (small jobs should not idle behind a big
// one), but not forever: once a job has waited longer than StarveAfter,
// what it waits for is reserved for it, and later jobs may no longer take
// that target's nodes, that quota or new capacity.

// Amount is a quantity of compute: what a node of a SKU takes.
type Amount struct {
	VCPUs       int
	MemoryBytes int64
	GPUs        int
}

func (a Amount) times(n int) Amount {
	return Amount{VCPUs: a.VCPUs * n, MemoryBytes: a.MemoryBytes * int64(n), GPUs: a.GPUs * n}
}

func (a Amount) plus(b Amount) Amount {
	return Amount{VCPUs: a.VCPUs + b.VCPUs, MemoryBytes: a.MemoryBytes + b.MemoryBytes, GPUs: a.GPUs + b.GPUs}
}

func (a Amount) minus(b Amount) Amount {
	return Amount{VCPUs: a.VCPUs - b.VCPUs, MemoryBytes: a.MemoryBytes - b.MemoryBytes, GPUs: a.GPUs - b.GPUs}
}

// fits reports whether a fits within limit.
func (a Amount) fits(limit Amount) bool {
	return a.VCPUs <= limit.VCPUs && a.MemoryBytes <= limit.MemoryBytes && a.GPUs <= limit.GPUs
}

func (a Amount) String() string {
	s := fmt.Sprintf("%d vCPUs", a.VCPUs)
	if a.GPUs > 0 {
		s += fmt.Sprintf(", %d GPUs", a.GPUs)
	}
	if a.MemoryBytes > 0 {
		s += fmt.Sprintf(", %.1f GiB", float64(a.MemoryBytes)/(1<<30))
	}
	return s
}

// QuotaKey names a quota: a workspace and a SKU family.
type QuotaKey struct {
	Workspace string
	Family    string
}

// Quota limits vCPUs and GPUs; memory is not limited by quotas.
type Quota struct {
	VCPUs int
	GPUs  int
}

// PlanJob is a queued job as the planner sees it.
type PlanJob struct {
	ID        string
	Workspace string
	Priority  int
	Submitted time.Time
	// NotBefore holds a retried job back until its backoff has passed.
	NotBefore time.Time
	// Target is the compute target's key (see PlanTarget.Key).
	Target string
	Nodes  int
}

// PlanTarget is a compute target with its nodes.
type PlanTarget struct {
	Key       string
	Name      string
	Workspace string
	Family    string
	// PerNode is what one node takes.
	PerNode Amount
	// Max bounds the nodes up at once; Up counts those up now (idle and
	// busy). Idle lists the idle ones, oldest first.
	Max  int
	Up   int
	Idle []string
	// Ephemeral targets (serverless) make nodes for one job and never
	// have idle ones.
	Ephemeral bool
}

// PlanState is everything a pass decides over.
type PlanState struct {
	Now   time.Time
	Queue []PlanJob
	// Targets by key.
	Targets map[string]*PlanTarget
	// Free is the executor's capacity not taken by nodes that are up.
	Free Amount
	// QuotaUsed counts the nodes up per workspace and family; Quotas are
	// the limits (a missing key is no limit).
	QuotaUsed   map[QuotaKey]Quota
	Quotas      map[QuotaKey]Quota
	StarveAfter time.Duration
}

// Decision is what a pass decided for one job: to place it on the listed
// idle nodes plus NewNodes new ones, or to keep it waiting for Reason.
type Decision struct {
	JobID     string
	Place     bool
	IdleNodes []string
	NewNodes  int
	Reason    string
}

// SortQueue orders jobs the way a pass takes them.
func SortQueue(q []PlanJob) {
	sort.SliceStable(q, func(i, j int) bool {
		if q[i].Priority != q[j].Priority {
			return q[i].Priority > q[j].Priority
		}
		if !q[i].Submitted.Equal(q[j].Submitted) {
			return q[i].Submitted.Before(q[j].Submitted)
		}
		return q[i].ID < q[j].ID
	})
}

// Plan runs one pass over st.Queue (which must be in SortQueue order) and
// returns a decision per job. It updates st's targets, free capacity and
// quota use as it places jobs, so the caller can apply the decisions in
// order.
func Plan(st *PlanState) []Decision {
	out := make([]Decision, 0, len(st.Queue))
	// What starving jobs have reserved.
	reservedTarget := map[string]string{}
	reservedQuota := map[QuotaKey]string{}
	reservedCapacity := ""
	for _, j := range st.Queue {
		d := Decision{JobID: j.ID}
		t := st.Targets[j.Target]
		starving := st.StarveAfter > 0 && st.Now.Sub(j.Submitted) > st.StarveAfter
		switch {
		case t == nil:
			d.Reason = "its compute target no longer exists"
			out = append(out, d)
			continue
		case j.NotBefore.After(st.Now):
			d.Reason = "retrying after " + j.NotBefore.UTC().Format(time.RFC3339)
			out = append(out, d)
			continue
		}
		if by, ok := reservedTarget[t.Key]; ok {
			d.Reason = fmt.Sprintf("waiting behind job %s, which has waited longest for %s", by, t.Name)
			out = append(out, d)
			continue
		}
		idle := 0
		if !t.Ephemeral {
			idle = min(len(t.Idle), j.Nodes)
		}
		fresh := j.Nodes - idle
		need := t.PerNode.times(fresh)
		qk := QuotaKey{Workspace: t.Workspace, Family: t.Family}
		reason := ""
		switch {
		case fresh > 0 && t.Up+fresh > t.Max:
			reason = fmt.Sprintf("%s has %d of its at most %d nodes up, all busy; %d more needed", t.Name, t.Up, t.Max, fresh)
		case fresh > 0 && reservedQuota[qk] != "":
			reason = fmt.Sprintf("waiting behind job %s for the %s quota of the workspace", reservedQuota[qk], t.Family)
		case fresh > 0 && !withinQuota(st, qk, need):
			q := st.Quotas[qk]
			u := st.QuotaUsed[qk]
			reason = fmt.Sprintf("quota: workspace %s uses %d of %d vCPUs and %d of %d GPUs of family %s; this job needs %d vCPUs and %d GPUs more",
				t.Workspace, u.VCPUs, q.VCPUs, u.GPUs, q.GPUs, t.Family, need.VCPUs, need.GPUs)
		case fresh > 0 && reservedCapacity != "":
			reason = "waiting behind job " + reservedCapacity + " for capacity"
		case fresh > 0 && !need.fits(st.Free):
			reason = fmt.Sprintf("capacity: %s free, %s needed", st.Free, need)
		}
		if reason != "" {
			d.Reason = reason
			if starving {
				// Hold back, for this job, what it waits for.
				reservedTarget[t.Key] = j.ID
				if fresh > 0 {
					reservedQuota[qk] = j.ID
					if reservedCapacity == "" && !need.fits(st.Free) {
						reservedCapacity = j.ID
					}
				}
			}
			out = append(out, d)
			continue
		}
		d.Place = true
		d.NewNodes = fresh
		if idle > 0 {
			d.IdleNodes = append([]string(nil), t.Idle[:idle]...)
			t.Idle = t.Idle[idle:]
		}
		t.Up += fresh
		st.Free = st.Free.minus(need)
		if fresh > 0 {
			u := st.QuotaUsed[qk]
			st.QuotaUsed[qk] = Quota{VCPUs: u.VCPUs + need.VCPUs, GPUs: u.GPUs + need.GPUs}
		}
		out = append(out, d)
	}
	return out
}

func withinQuota(st *PlanState, qk QuotaKey, need Amount) bool {
	q, limited := st.Quotas[qk]
	if !limited {
		return true
	}
	u := st.QuotaUsed[qk]
	return u.VCPUs+need.VCPUs <= q.VCPUs && u.GPUs+need.GPUs <= q.GPUs
}

// NeverFits says why a job could never be placed, whatever else runs, or
// "" when it can be: more nodes than the target may have, a node larger
// than the executor, or more than the whole quota.
func NeverFits(t *PlanTarget, nodes int, total Amount, quota *Quota) string {
	need := t.PerNode.times(nodes)
	switch {
	case nodes < 1:
		return "a job needs at least one node"
	case !t.Ephemeral && nodes > t.Max:
		return fmt.Sprintf("the job needs %d nodes but %s has at most %d", nodes, t.Name, t.Max)
	case !need.fits(total):
		return fmt.Sprintf("the job needs %s but the executor has %s in all", need, total)
	case quota != nil && (need.VCPUs > quota.VCPUs || need.GPUs > quota.GPUs):
		return fmt.Sprintf("the job needs %d vCPUs and %d GPUs of family %s, more than the workspace's whole quota (%d vCPUs, %d GPUs)",
			need.VCPUs, need.GPUs, t.Family, quota.VCPUs, quota.GPUs)
	}
	return ""
}
