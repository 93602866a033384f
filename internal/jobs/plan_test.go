package jobs

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

func cpuTarget(key string, max int, idle ...string) *PlanTarget {
	return &PlanTarget{Key: key, Name: key, Workspace: "ws", Family: "cpu", PerNode: Amount{VCPUs: 1, MemoryBytes: 1 << 30}, Max: max, Up: len(idle), Idle: idle}
}

func planJob(id string, prio, ageMinutes, nodes int, target string) PlanJob {
	return PlanJob{ID: id, Workspace: "ws", Priority: prio, Submitted: t0.Add(-time.Duration(ageMinutes) * time.Minute), Target: target, Nodes: nodes}
}

func decide(st *PlanState) map[string]Decision {
	SortQueue(st.Queue)
	out := map[string]Decision{}
	for _, d := range Plan(st) {
		out[d.JobID] = d
	}
	return out
}

func TestPlanPriorityThenFIFOOnIdleAndNewNodes(t *testing.T) {
	st := &PlanState{Now: t0, Targets: map[string]*PlanTarget{"c": cpuTarget("c", 3, "n1")}, Free: Amount{VCPUs: 2, MemoryBytes: 8 << 30},
		QuotaUsed: map[QuotaKey]Quota{}, Quotas: map[QuotaKey]Quota{},
		Queue: []PlanJob{planJob("old-low", 0, 10, 1, "c"), planJob("new-high", 5, 1, 1, "c"), planJob("mid", 0, 5, 1, "c"), planJob("last", 0, 1, 1, "c")}}
	d := decide(st)
	if !d["new-high"].Place || len(d["new-high"].IdleNodes) != 1 || d["new-high"].NewNodes != 0 {
		t.Fatalf("the highest priority takes the idle node: %+v", d["new-high"])
	}
	if !d["old-low"].Place || d["old-low"].NewNodes != 1 || !d["mid"].Place || d["mid"].NewNodes != 1 {
		t.Fatalf("then FIFO on new nodes: %+v %+v", d["old-low"], d["mid"])
	}
	if d["last"].Place || !strings.Contains(d["last"].Reason, "3 of its at most 3 nodes up") {
		t.Fatalf("max_instances bounds the cluster: %+v", d["last"])
	}
	if st.Free.VCPUs != 0 || st.Targets["c"].Up != 3 {
		t.Fatalf("state after the pass: free %v, up %d", st.Free, st.Targets["c"].Up)
	}
}

func TestPlanQuotaBlocksThenAdmits(t *testing.T) {
	qk := QuotaKey{"ws", "cpu"}
	st := &PlanState{Now: t0, Targets: map[string]*PlanTarget{"c": cpuTarget("c", 10)}, Free: Amount{VCPUs: 16, MemoryBytes: 64 << 30},
		QuotaUsed: map[QuotaKey]Quota{qk: {VCPUs: 1}}, Quotas: map[QuotaKey]Quota{qk: {VCPUs: 2}},
		Queue: []PlanJob{planJob("a", 0, 2, 1, "c"), planJob("b", 0, 1, 1, "c")}}
	d := decide(st)
	if !d["a"].Place || d["b"].Place || !strings.Contains(d["b"].Reason, "quota: workspace ws uses 2 of 2 vCPUs") {
		t.Fatalf("quota: %+v %+v", d["a"], d["b"])
	}
	// A node goes down: the quota has room again.
	st.QuotaUsed[qk] = Quota{VCPUs: 1}
	st.Queue = []PlanJob{planJob("b", 0, 1, 1, "c")}
	if d := decide(st); !d["b"].Place {
		t.Fatalf("quota freed: %+v", d["b"])
	}
}

func TestPlanLargeJobDoesNotStarve(t *testing.T) {
	// Two free vCPUs; a 3-node job has waited past StarveAfter; small jobs
	// behind it would otherwise keep taking the capacity as it frees up.
	st := &PlanState{Now: t0, StarveAfter: 5 * time.Minute, Targets: map[string]*PlanTarget{"c": cpuTarget("c", 8)}, Free: Amount{VCPUs: 2, MemoryBytes: 64 << 30},
		QuotaUsed: map[QuotaKey]Quota{}, Quotas: map[QuotaKey]Quota{},
		Queue: []PlanJob{planJob("big", 0, 30, 3, "c"), planJob("small", 0, 1, 1, "c")}}
	d := decide(st)
	if d["big"].Place || d["small"].Place || !strings.Contains(d["small"].Reason, "behind job big") {
		t.Fatalf("a starving job holds what it waits for: %+v %+v", d["big"], d["small"])
	}
	// Before it starves, small jobs may overtake it.
	st.Queue = []PlanJob{planJob("big", 0, 1, 3, "c"), planJob("small", 0, 1, 1, "c")}
	if d := decide(st); d["big"].Place || !d["small"].Place {
		t.Fatalf("overtaking a young job: %+v %+v", d["big"], d["small"])
	}
}

func TestPlanBackoffAndServerless(t *testing.T) {
	sl := &PlanTarget{Key: "sl", Name: "serverless", Workspace: "ws", Family: "gpu", PerNode: Amount{VCPUs: 4, GPUs: 1}, Max: 1 << 30, Ephemeral: true}
	st := &PlanState{Now: t0, Targets: map[string]*PlanTarget{"sl": sl}, Free: Amount{VCPUs: 8, GPUs: 1},
		QuotaUsed: map[QuotaKey]Quota{}, Quotas: map[QuotaKey]Quota{},
		Queue: []PlanJob{planJob("retry", 0, 9, 1, "sl"), planJob("g1", 0, 5, 1, "sl"), planJob("g2", 0, 1, 1, "sl")}}
	st.Queue[0].NotBefore = t0.Add(time.Minute)
	d := decide(st)
	if d["retry"].Place || !strings.Contains(d["retry"].Reason, "retrying after") {
		t.Fatalf("backoff: %+v", d["retry"])
	}
	if !d["g1"].Place || d["g1"].NewNodes != 1 || d["g2"].Place || !strings.Contains(d["g2"].Reason, "capacity: 4 vCPUs") {
		t.Fatalf("serverless capacity: %+v %+v", d["g1"], d["g2"])
	}
}

func TestNeverFits(t *testing.T) {
	c := cpuTarget("c", 2)
	total := Amount{VCPUs: 2, MemoryBytes: 4 << 30}
	for _, tc := range []struct {
		nodes int
		quota *Quota
		want  string
	}{
		{3, nil, "needs 3 nodes but c has at most 2"},
		{2, &Quota{VCPUs: 1}, "more than the workspace's whole quota"},
		{1, nil, ""},
	} {
		if got := NeverFits(c, tc.nodes, total, tc.quota); !strings.Contains(got, tc.want) || (tc.want == "" && got != "") {
			t.Errorf("NeverFits(%d, %v) = %q, want %q", tc.nodes, tc.quota, got, tc.want)
		}
	}
	big := &PlanTarget{Key: "g", Name: "g", PerNode: Amount{VCPUs: 96, GPUs: 8}, Max: 1, Family: "ND"}
	if got := NeverFits(big, 1, total, nil); !strings.Contains(got, "needs 96 vCPUs, 8 GPUs but the executor has 2 vCPUs") {
		t.Errorf("a node larger than the executor: %q", got)
	}
}

// BenchmarkPlan10k is one scheduling pass over 10,000 queued jobs spread
// over 20 clusters in 10 workspaces with quotas, most of which must wait.
func BenchmarkPlan10k(b *testing.B) {
	base := PlanState{Now: t0, StarveAfter: time.Hour, Free: Amount{VCPUs: 64, MemoryBytes: 256 << 30, GPUs: 4}, Quotas: map[QuotaKey]Quota{}}
	targets := func() map[string]*PlanTarget {
		m := map[string]*PlanTarget{}
		for i := range 20 {
			ws := fmt.Sprintf("ws%d", i%10)
			key := fmt.Sprintf("%s/c%d", ws, i)
			m[key] = &PlanTarget{Key: key, Name: key, Workspace: ws, Family: "cpu", PerNode: Amount{VCPUs: 2, MemoryBytes: 8 << 30}, Max: 8,
				Up: 2, Idle: []string{key + "-n1", key + "-n2"}}
		}
		return m
	}
	for i := range 10 {
		base.Quotas[QuotaKey{fmt.Sprintf("ws%d", i), "cpu"}] = Quota{VCPUs: 12}
	}
	queue := make([]PlanJob, 10000)
	for i := range queue {
		queue[i] = PlanJob{ID: fmt.Sprintf("job-%05d", i), Workspace: fmt.Sprintf("ws%d", i%10), Priority: i % 3,
			Submitted: t0.Add(-time.Duration(i) * time.Second), Target: fmt.Sprintf("ws%d/c%d", i%10, i%20), Nodes: 1 + i%2}
	}
	SortQueue(queue)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		st := base
		st.Targets = targets()
		st.QuotaUsed = map[QuotaKey]Quota{}
		st.Queue = queue
		Plan(&st)
	}
}
