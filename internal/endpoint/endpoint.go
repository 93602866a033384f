// Package endpoint is the control plane of online endpoints: endpoints
// and their keys and traffic, deployments of model servers, the replicas
// that run them (through the executor), the controller that keeps
// replicas as desired and rolls changes without dropping requests, the
// autoscaler, and the route snapshot the gateway serves from.
package endpoint

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/store"
)

// Auth modes, as Azure ML names them.
const (
	AuthKey   = "key"
	AuthToken = "token"
)

// Endpoint is a stable name behind the gateway.
type Endpoint struct {
	pk            int64
	Name          string            `json:"name"`
	Workspace     string            `json:"workspace"`
	AuthMode      string            `json:"auth_mode"`
	Traffic       map[string]int    `json:"traffic"`
	MirrorTraffic map[string]int    `json:"mirror_traffic"`
	RateLimit     int               `json:"rate_limit_per_minute"`
	TeamRateLimit int               `json:"team_rate_limit_per_minute"`
	Description   string            `json:"description"`
	Tags          map[string]string `json:"tags"`
	ScoringURI    string            `json:"scoring_uri"`
	CreatedBy     string            `json:"created_by"`
	CreatedAt     time.Time         `json:"created_at"`
	UpdatedAt     time.Time         `json:"updated_at"`
	Deployments   []Deployment      `json:"deployments,omitempty"`
	workspaceID   string
	team          string
	primaryHash   string
	secondaryHash string
}

// EndpointInput creates or changes an endpoint (nil fields unchanged).
type EndpointInput struct {
	Name          string            `json:"name,omitempty"`
	AuthMode      string            `json:"auth_mode,omitempty"`
	Traffic       map[string]int    `json:"traffic,omitempty"`
	MirrorTraffic map[string]int    `json:"mirror_traffic,omitempty"`
	RateLimit     *int              `json:"rate_limit_per_minute,omitempty"`
	TeamRateLimit *int              `json:"team_rate_limit_per_minute,omitempty"`
	Description   *string           `json:"description,omitempty"`
	Tags          map[string]string `json:"tags,omitempty"`
}

// Keys are an endpoint's two keys, shown when made and never again.
type Keys struct {
	PrimaryKey   string `json:"primary_key,omitempty"`
	SecondaryKey string `json:"secondary_key,omitempty"`
}

var nameRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9-]{2,31}$`)

// ValidName checks an endpoint or deployment name (Azure: 3-32
// characters, letters, digits and '-', starting with a letter).
func ValidName(field, name string) error {
	if !nameRE.MatchString(name) {
		return fault.InvalidField(field, "%q must be 3 to 32 letters, digits and '-', starting with a letter", clip(name))
	}
	return nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

func newKey() (string, string) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	k := "pek_" + base64.RawURLEncoding.EncodeToString(b[:])
	return k, hashKey(k)
}

func hashKey(k string) string {
	h := sha256.Sum256([]byte(k))
	return hex.EncodeToString(h[:])
}

func resource(ws, name string) string { return "workspaces/" + ws + "/endpoints/" + name }

// ScoringURI is where callers score, relative to the server.
func ScoringURI(ws, name string) string {
	if ws == "default" {
		return "/endpoints/" + name + "/score"
	}
	return "/w/" + ws + "/endpoints/" + name + "/score"
}

// Service manages endpoints and deployments.
type Service struct {
	db      *store.DB
	audit   *audit.Log
	compute *compute.Service
	now     func() time.Time
	// changed is told about every change the snapshot depends on.
	changed func()
	// Log is where background work reports; nil means slog.Default().
	Log *slog.Logger
}

func (s *Service) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// OnChange sets what is told about routing changes.
func (s *Service) OnChange(f func()) { s.changed = f }

// NewService returns a Service; changed (may be nil) is called after
// every change that alters routing.
func NewService(db *store.DB, log *audit.Log, cs *compute.Service, changed func()) *Service {
	if changed == nil {
		changed = func() {}
	}
	return &Service{db: db, audit: log, compute: cs, now: time.Now, changed: changed}
}

// checkTraffic validates a traffic split against the deployments that
// exist: percentages sum to 100 (or are all 0), mirrors are at most 50%
// and never a deployment that takes live traffic.
func checkTraffic(traffic, mirror map[string]int, deployments map[string]bool) error {
	sum := 0
	for d, p := range traffic {
		if !deployments[d] {
			return fault.InvalidField("traffic", "deployment %q does not exist", clip(d))
		}
		if p < 0 || p > 100 {
			return fault.InvalidField("traffic", "%s: %d%% is not from 0 to 100", d, p)
		}
		sum += p
	}
	if sum != 100 && sum != 0 {
		return fault.InvalidField("traffic", "the percentages add up to %d; they must add up to 100 (or all be 0)", sum)
	}
	for d, p := range mirror {
		if !deployments[d] {
			return fault.InvalidField("mirror_traffic", "deployment %q does not exist", clip(d))
		}
		if p < 0 || p > 50 {
			return fault.InvalidField("mirror_traffic", "%s: %d%% is not from 0 to 50", d, p)
		}
		if traffic[d] > 0 && p > 0 {
			return fault.InvalidField("mirror_traffic", "%s takes live traffic (%d%%); a mirror must be another deployment", d, traffic[d])
		}
	}
	return nil
}

// CreateEndpoint creates an endpoint and returns it with its keys (auth
// mode key), shown this once.
func (s *Service) CreateEndpoint(ctx context.Context, sc compute.Scope, in EndpointInput) (Endpoint, Keys, error) {
	if err := ValidName("name", in.Name); err != nil {
		return Endpoint{}, Keys{}, err
	}
	if in.AuthMode == "" {
		in.AuthMode = AuthKey
	}
	if in.AuthMode != AuthKey && in.AuthMode != AuthToken {
		return Endpoint{}, Keys{}, fault.InvalidField("auth_mode", "%q is not key or token", clip(in.AuthMode))
	}
	if len(in.Traffic) > 0 || len(in.MirrorTraffic) > 0 {
		return Endpoint{}, Keys{}, fault.InvalidField("traffic", "an endpoint has no deployments yet; set traffic after creating them")
	}
	e := Endpoint{Name: in.Name, Workspace: sc.Workspace, AuthMode: in.AuthMode, Traffic: map[string]int{}, MirrorTraffic: map[string]int{}, Tags: in.Tags}
	if in.RateLimit != nil {
		e.RateLimit = *in.RateLimit
	}
	if in.TeamRateLimit != nil {
		e.TeamRateLimit = *in.TeamRateLimit
	}
	if e.RateLimit < 0 || e.TeamRateLimit < 0 {
		return Endpoint{}, Keys{}, fault.InvalidField("rate_limit_per_minute", "cannot be negative")
	}
	if in.Description != nil {
		e.Description = *in.Description
	}
	if e.Tags == nil {
		e.Tags = map[string]string{}
	}
	var keys Keys
	if e.AuthMode == AuthKey {
		keys.PrimaryKey, e.primaryHash = newKey()
		keys.SecondaryKey, e.secondaryHash = newKey()
	}
	caller := audit.CallerFrom(ctx)
	now := s.now().UTC().Truncate(time.Millisecond)
	e.CreatedBy, e.CreatedAt, e.UpdatedAt = caller.Principal, now, now
	tags, _ := json.Marshal(e.Tags)
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		if err := tx.QueryRowContext(ctx, `INSERT INTO endpoints (workspace_id, name, auth_mode, rate_limit, team_rate_limit, primary_hash, secondary_hash, description, tags, created_by, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING pk`, sc.WorkspaceID, e.Name, e.AuthMode, e.RateLimit, e.TeamRateLimit, e.primaryHash, e.secondaryHash,
			e.Description, string(tags), e.CreatedBy, now.UnixMilli(), now.UnixMilli()).Scan(&e.pk); err != nil {
			if store.IsUniqueViolation(err) {
				return fault.New(fault.AlreadyExists, "endpoint %s already exists in workspace %s", e.Name, sc.Workspace)
			}
			return fmt.Errorf("creating endpoint: %w", err)
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "endpoint.create", Resource: resource(sc.Workspace, e.Name), Workspace: sc.Workspace,
			Details: map[string]any{"auth_mode": e.AuthMode}})
	})
	if err != nil {
		return Endpoint{}, Keys{}, err
	}
	e.ScoringURI = ScoringURI(sc.Workspace, e.Name)
	s.changed()
	return e, keys, nil
}

const endpointColumns = `e.pk, e.name, e.auth_mode, e.traffic, e.mirror_traffic, e.rate_limit, e.team_rate_limit, e.primary_hash, e.secondary_hash,
	e.description, e.tags, e.created_by, e.created_at, e.updated_at, w.id, w.name, w.team`

func scanEndpoint(row interface{ Scan(...any) error }) (Endpoint, error) {
	var e Endpoint
	var traffic, mirror, tags string
	var created, updated int64
	if err := row.Scan(&e.pk, &e.Name, &e.AuthMode, &traffic, &mirror, &e.RateLimit, &e.TeamRateLimit, &e.primaryHash, &e.secondaryHash,
		&e.Description, &tags, &e.CreatedBy, &created, &updated, &e.workspaceID, &e.Workspace, &e.team); err != nil {
		return e, err
	}
	e.Traffic, e.MirrorTraffic, e.Tags = map[string]int{}, map[string]int{}, map[string]string{}
	_ = json.Unmarshal([]byte(traffic), &e.Traffic)
	_ = json.Unmarshal([]byte(mirror), &e.MirrorTraffic)
	_ = json.Unmarshal([]byte(tags), &e.Tags)
	e.CreatedAt, e.UpdatedAt = time.UnixMilli(created).UTC(), time.UnixMilli(updated).UTC()
	e.ScoringURI = ScoringURI(e.Workspace, e.Name)
	return e, nil
}

func (s *Service) endpoint(ctx context.Context, q store.Querier, sc compute.Scope, name string, lock bool) (Endpoint, error) {
	suffix := ""
	if lock {
		suffix = store.ForUpdate(q)
	}
	e, err := scanEndpoint(q.QueryRowContext(ctx, `SELECT `+endpointColumns+` FROM endpoints e JOIN workspaces w ON w.id = e.workspace_id
		WHERE e.workspace_id = ? AND e.name = ?`+suffix, sc.WorkspaceID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return e, fault.New(fault.NotFound, "endpoint %s does not exist in workspace %s", clip(name), sc.Workspace)
	}
	return e, err
}

// GetEndpoint returns an endpoint with its deployments.
func (s *Service) GetEndpoint(ctx context.Context, sc compute.Scope, name string) (Endpoint, error) {
	e, err := s.endpoint(ctx, s.db.Read(), sc, name, false)
	if err != nil {
		return e, err
	}
	e.Deployments, err = s.deployments(ctx, s.db.Read(), `d.endpoint_pk = ?`, e.pk)
	return e, err
}

// ListEndpoints lists a workspace's endpoints.
func (s *Service) ListEndpoints(ctx context.Context, sc compute.Scope) ([]Endpoint, error) {
	rows, err := s.db.Read().QueryContext(ctx, `SELECT `+endpointColumns+` FROM endpoints e JOIN workspaces w ON w.id = e.workspace_id
		WHERE e.workspace_id = ? ORDER BY e.name`, sc.WorkspaceID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Endpoint{}
	for rows.Next() {
		e, err := scanEndpoint(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// UpdateEndpoint changes traffic, mirroring, limits, description or tags.
func (s *Service) UpdateEndpoint(ctx context.Context, sc compute.Scope, name string, in EndpointInput) (Endpoint, error) {
	if in.Name != "" && in.Name != name || in.AuthMode != "" {
		return Endpoint{}, fault.InvalidField("name", "an endpoint's name and auth mode cannot change")
	}
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		e, err := s.endpoint(ctx, tx, sc, name, true)
		if err != nil {
			return err
		}
		deps, err := s.deployments(ctx, tx, `d.endpoint_pk = ?`, e.pk)
		if err != nil {
			return err
		}
		exists := map[string]bool{}
		for _, d := range deps {
			exists[d.Name] = true
		}
		if in.Traffic != nil {
			e.Traffic = in.Traffic
		}
		if in.MirrorTraffic != nil {
			e.MirrorTraffic = in.MirrorTraffic
		}
		if err := checkTraffic(e.Traffic, e.MirrorTraffic, exists); err != nil {
			return err
		}
		if in.RateLimit != nil {
			e.RateLimit = *in.RateLimit
		}
		if in.TeamRateLimit != nil {
			e.TeamRateLimit = *in.TeamRateLimit
		}
		if in.Description != nil {
			e.Description = *in.Description
		}
		for k, v := range in.Tags {
			e.Tags[k] = v
		}
		traffic, _ := json.Marshal(e.Traffic)
		mirror, _ := json.Marshal(e.MirrorTraffic)
		tags, _ := json.Marshal(e.Tags)
		if _, err := tx.ExecContext(ctx, `UPDATE endpoints SET traffic = ?, mirror_traffic = ?, rate_limit = ?, team_rate_limit = ?, description = ?, tags = ?, updated_at = ? WHERE pk = ?`,
			string(traffic), string(mirror), e.RateLimit, e.TeamRateLimit, e.Description, string(tags), s.now().UnixMilli(), e.pk); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "endpoint.update", Resource: resource(sc.Workspace, name), Workspace: sc.Workspace,
			Details: map[string]any{"traffic": e.Traffic, "mirror_traffic": e.MirrorTraffic}})
	})
	if err != nil {
		return Endpoint{}, err
	}
	s.changed()
	return s.GetEndpoint(ctx, sc, name)
}

// RegenerateKey makes a new primary or secondary key, which replaces the
// old one at once.
func (s *Service) RegenerateKey(ctx context.Context, sc compute.Scope, name, which string) (Keys, error) {
	col := map[string]string{"primary": "primary_hash", "secondary": "secondary_hash"}[which]
	if col == "" {
		return Keys{}, fault.InvalidField("key_type", "%q is not primary or secondary", clip(which))
	}
	key, hash := newKey()
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		e, err := s.endpoint(ctx, tx, sc, name, true)
		if err != nil {
			return err
		}
		if e.AuthMode != AuthKey {
			return fault.New(fault.FailedPrecondition, "endpoint %s uses token authentication; it has no keys", name)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE endpoints SET `+col+` = ?, updated_at = ? WHERE pk = ?`, hash, s.now().UnixMilli(), e.pk); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "endpoint.keys.regenerate", Resource: resource(sc.Workspace, name), Workspace: sc.Workspace,
			Details: map[string]any{"key": which}})
	})
	if err != nil {
		return Keys{}, err
	}
	s.changed()
	if which == "primary" {
		return Keys{PrimaryKey: key}, nil
	}
	return Keys{SecondaryKey: key}, nil
}

// DeleteEndpoint deletes an endpoint with its deployments; the
// controller stops their replicas.
func (s *Service) DeleteEndpoint(ctx context.Context, sc compute.Scope, name string) error {
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		e, err := s.endpoint(ctx, tx, sc, name, true)
		if err != nil {
			return err
		}
		if err := s.retireReplicas(ctx, tx, `deployment_pk IN (SELECT pk FROM deployments WHERE endpoint_pk = ?)`, e.pk); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM endpoints WHERE pk = ?`, e.pk); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "endpoint.delete", Resource: resource(sc.Workspace, name), Workspace: sc.Workspace})
	})
	if err == nil {
		s.changed()
	}
	return err
}

// ResourcesIn implements workspace.Holder.
func (s *Service) ResourcesIn(ctx context.Context, q store.Querier, workspaceID string) (map[string]int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM endpoints WHERE workspace_id = ?`, workspaceID).Scan(&n)
	return map[string]int{"online endpoints": n}, err
}

// DeleteResourcesIn implements workspace.Holder: replicas are handed to
// the controller to stop, then the endpoints go.
func (s *Service) DeleteResourcesIn(ctx context.Context, tx store.Querier, workspaceID string) error {
	if err := s.retireReplicas(ctx, tx, `deployment_pk IN (SELECT d.pk FROM deployments d JOIN endpoints e ON e.pk = d.endpoint_pk WHERE e.workspace_id = ?)`, workspaceID); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM endpoints WHERE workspace_id = ?`, workspaceID)
	return err
}
