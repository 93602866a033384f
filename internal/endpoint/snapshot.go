package endpoint

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/plinth-dev/plinth/internal/gateway"
)

// BuildSnapshot reads every endpoint, its deployments and their ready
// replicas into a route snapshot for the gateway.
func (s *Service) BuildSnapshot(ctx context.Context) (*gateway.Snapshot, error) {
	rows, err := s.db.Read().QueryContext(ctx, `SELECT `+endpointColumns+` FROM endpoints e JOIN workspaces w ON w.id = e.workspace_id`)
	if err != nil {
		return nil, err
	}
	var eps []Endpoint
	for rows.Next() {
		e, err := scanEndpoint(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		eps = append(eps, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	snap := &gateway.Snapshot{Endpoints: map[string]*gateway.Endpoint{}}
	for _, e := range eps {
		ge := &gateway.Endpoint{Workspace: e.Workspace, Name: e.Name, Team: e.team, AuthMode: e.AuthMode, Traffic: e.Traffic, Mirror: e.MirrorTraffic,
			Deployments: map[string]*gateway.Deployment{}, RateLimitPerMinute: e.RateLimit, TeamRateLimitPerMinute: e.TeamRateLimit}
		for _, h := range []string{e.primaryHash, e.secondaryHash} {
			if h != "" {
				ge.KeyHashes = append(ge.KeyHashes, h)
			}
		}
		ds, err := s.deployments(ctx, s.db.Read(), `d.endpoint_pk = ?`, e.pk)
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			gd := &gateway.Deployment{Name: d.Name, ScoringPath: d.Spec.Routes.Scoring, Replicas: []gateway.Replica{},
				RequestTimeout:           time.Duration(d.Spec.Request.RequestTimeoutMS) * time.Millisecond,
				MaxConcurrentPerInstance: d.Spec.Request.MaxConcurrentRequestsPerInstance,
				MaxQueueWait:             time.Duration(d.Spec.Request.MaxQueueWaitMS) * time.Millisecond,
				ScaleToZero:              d.Spec.Scale.Type == "target_utilization" && d.Spec.Scale.ScaleToZero,
				CaptureSampleRate:        d.Spec.DataCollector.SamplingRate}
			for _, r := range d.Replicas {
				if r.State == ReplicaReady && r.Addr != "" {
					gd.Replicas = append(gd.Replicas, gateway.Replica{ID: r.ID, Addr: r.Addr})
				}
			}
			ge.Deployments[d.Name] = gd
		}
		snap.Endpoints[e.Workspace+"/"+e.Name] = ge
	}
	return snap, nil
}

// Publisher keeps the current route snapshot, numbers each new one and
// lets standalone gateways wait for the next.
type Publisher struct {
	svc     *Service
	publish func(*gateway.Snapshot)
	// llm builds the LLM routing table each snapshot carries; nil = none.
	llm func(context.Context) (*gateway.LLM, error)

	mu      sync.Mutex
	cur     *gateway.Snapshot
	body    []byte // cur without its version, to see whether anything changed
	next    chan struct{}
	rebuild chan struct{}
}

// NewPublisher returns a publisher that hands each new snapshot to
// publish (the in-process gateway's Update).
func NewPublisher(svc *Service, publish func(*gateway.Snapshot)) *Publisher {
	return &Publisher{svc: svc, publish: publish, next: make(chan struct{}), rebuild: make(chan struct{}, 1),
		cur: &gateway.Snapshot{Endpoints: map[string]*gateway.Endpoint{}}}
}

// SetLLM makes every snapshot carry the LLM routing table that build
// returns (the llm service's Snapshot). Call it before Run; call Changed
// when the table changes. When build fails, a table it returns with the
// error is used all the same (one left without what failed); without one
// the snapshot keeps the current table.
func (p *Publisher) SetLLM(build func(context.Context) (*gateway.LLM, error)) {
	p.mu.Lock()
	p.llm = build
	p.mu.Unlock()
}

// Changed asks for a rebuild soon.
func (p *Publisher) Changed() {
	select {
	case p.rebuild <- struct{}{}:
	default:
	}
}

// Rebuild builds a snapshot and publishes it when it differs from the
// current one. An error building the LLM table is returned after the
// snapshot is published (endpoint changes still go out; see SetLLM).
func (p *Publisher) Rebuild(ctx context.Context) error {
	snap, err := p.svc.BuildSnapshot(ctx)
	if err != nil {
		return err
	}
	p.mu.Lock()
	build := p.llm
	p.mu.Unlock()
	var llmErr error
	if build != nil {
		if snap.LLM, llmErr = build(ctx); llmErr != nil {
			llmErr = fmt.Errorf("building the LLM routing table: %w", llmErr)
			if snap.LLM == nil {
				snap.LLM = p.Current().LLM
			}
		}
	}
	body, _ := json.Marshal(struct {
		Endpoints map[string]*gateway.Endpoint `json:"endpoints"`
		LLM       *gateway.LLM                 `json:"llm"`
	}{snap.Endpoints, snap.LLM})
	p.mu.Lock()
	if string(body) == string(p.body) {
		p.mu.Unlock()
		return llmErr
	}
	snap.Version = p.cur.Version + 1
	p.cur, p.body = snap, body
	close(p.next)
	p.next = make(chan struct{})
	p.mu.Unlock()
	if p.publish != nil {
		p.publish(snap)
	}
	return llmErr
}

// Current returns the current snapshot.
func (p *Publisher) Current() *gateway.Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}

// Wait returns the first snapshot newer than after, or the current one
// when none comes before ctx ends (a long poll).
func (p *Publisher) Wait(ctx context.Context, after int64) *gateway.Snapshot {
	for {
		p.mu.Lock()
		cur, next := p.cur, p.next
		p.mu.Unlock()
		if cur.Version > after {
			return cur
		}
		select {
		case <-next:
		case <-ctx.Done():
			return cur
		}
	}
}

// Run rebuilds on every change and every two seconds until ctx ends.
func (p *Publisher) Run(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		if err := p.Rebuild(ctx); err != nil && ctx.Err() == nil {
			p.svc.log().Warn("building the route snapshot", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-p.rebuild:
		case <-t.C:
		}
	}
}
