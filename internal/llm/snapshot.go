package llm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/plinth-dev/plinth/internal/gateway"
)

// Snapshot builds the routing table of the front door: every backend
// with its credential unsealed, every model with its pool, every team's
// limits, and each workspace's team. It goes only to gateways (the
// snapshot publisher); API answers never carry credentials, and the
// snapshot route strips them for callers without llm.credentials.read.
//
// A backend whose credential cannot be unsealed (the server runs with
// another secret key) is left out, so its models are served by the rest
// of their pools; the table comes back with an error naming it. Any
// other error returns no table.
func (s *Service) Snapshot(ctx context.Context) (*gateway.LLM, error) {
	q := s.db.Read()
	backends, err := s.backends(ctx, q)
	if err != nil {
		return nil, err
	}
	models, err := s.models(ctx, q)
	if err != nil {
		return nil, err
	}
	limits, err := s.teamLimits(ctx, q)
	if err != nil {
		return nil, err
	}
	out := &gateway.LLM{Backends: make(map[string]*gateway.LLMBackend, len(backends)), Models: make(map[string]*gateway.LLMModel, len(models)),
		Teams: make(map[string]*gateway.LLMTeamLimits, len(limits)), WorkspaceTeams: map[string]string{}}
	var credErrs []error
	for _, b := range backends {
		cred, err := s.credential(b)
		if err != nil {
			credErrs = append(credErrs, err)
			continue
		}
		out.Backends[b.Name] = &gateway.LLMBackend{Name: b.Name, Style: b.Style, BaseURL: b.BaseURL, APIVersion: b.APIVersion, Credential: cred,
			RequestsPerMinute: b.RequestsPerMinute, TokensPerMinute: b.TokensPerMinute, InputCostPer1K: b.InputCostPer1K, OutputCostPer1K: b.OutputCostPer1K,
			Region: b.Region, Timeout: time.Duration(b.TimeoutMS) * time.Millisecond}
	}
	for _, m := range models {
		gm := &gateway.LLMModel{Name: m.Name, Pool: make([]gateway.LLMTarget, 0, len(m.Pool)),
			RequestsPerMinutePerKey: m.RequestsPerMinutePerKey, TokensPerMinutePerKey: m.TokensPerMinutePerKey,
			MirrorModel: m.MirrorModel, MirrorPercent: m.MirrorPercent, CacheTTL: time.Duration(m.CacheTTLMS) * time.Millisecond,
			CacheNonZeroTemperature: m.CacheNonZeroTemperature}
		for _, t := range m.Pool {
			gm.Pool = append(gm.Pool, gateway.LLMTarget{Backend: t.Backend, Model: t.Model, Priority: t.Priority, Weight: t.Weight})
		}
		out.Models[m.Name] = gm
	}
	for _, l := range limits {
		out.Teams[l.Team] = &gateway.LLMTeamLimits{RequestsPerMinute: l.RequestsPerMinute, TokensPerMinute: l.TokensPerMinute,
			TokensPerDay: l.TokensPerDay, TokensPerMonth: l.TokensPerMonth, BudgetPerDay: l.BudgetPerDay, BudgetPerMonth: l.BudgetPerMonth}
	}
	if s.workspaceTeams != nil {
		teams, err := s.workspaceTeams(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading workspaces' teams: %w", err)
		}
		for ws, team := range teams {
			if team != "" {
				out.WorkspaceTeams[ws] = team
			}
		}
	}
	return out, errors.Join(credErrs...)
}

// credential unseals a backend's credential; the error names the
// backend and why (another secret key, a damaged value), never the
// credential.
func (s *Service) credential(b Backend) (string, error) {
	if b.sealed == "" {
		return "", nil
	}
	if s.key == nil {
		return "", fmt.Errorf("LLM backend %s: this server has no secret key to unseal its credential", b.Name)
	}
	cred, err := s.key.Open(b.sealed, credentialContext(b.Name))
	if err != nil {
		return "", fmt.Errorf("LLM backend %s: its credential cannot be unsealed: %w", b.Name, err)
	}
	return cred, nil
}

// CheckCredentials unseals every stored credential and reports those
// that cannot be (the server started with another secret key), so a
// wrong key is found at start rather than by failing calls.
func (s *Service) CheckCredentials(ctx context.Context) error {
	backends, err := s.backends(ctx, s.db.Read())
	if err != nil {
		return err
	}
	var errs []error
	for _, b := range backends {
		if _, err := s.credential(b); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// WithoutCredentials returns l with every backend's credential removed,
// for callers that may read routes but not secrets. l is not changed (it
// may be a published snapshot's); nil stays nil.
func WithoutCredentials(l *gateway.LLM) *gateway.LLM {
	if l == nil {
		return nil
	}
	out := *l
	out.Backends = make(map[string]*gateway.LLMBackend, len(l.Backends))
	for name, b := range l.Backends {
		c := *b
		c.Credential = ""
		out.Backends[name] = &c
	}
	return &out
}
