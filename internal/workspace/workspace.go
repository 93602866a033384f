// Package workspace manages workspaces, Plinth's unit of isolation (like an
// Azure ML workspace): every experiment, job, model and endpoint lives in
// one, with its region, allowed-regions policy and chargeback team.
package workspace

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/id"
	"github.com/plinth-dev/plinth/internal/store"
)

// Workspace is a unit of isolation, residency and chargeback.
type Workspace struct {
	ID             string            `json:"id"`
	Name           string            `json:"name"`
	DisplayName    string            `json:"display_name"`
	Description    string            `json:"description"`
	Region         string            `json:"region"`
	AllowedRegions []string          `json:"allowed_regions"`
	Team           string            `json:"team"`
	Tags           map[string]string `json:"tags"`
	CreatedBy      string            `json:"created_by"`
	CreatedAt      time.Time         `json:"created_at"`
	UpdatedAt      time.Time         `json:"updated_at"`
}

// Holder is a domain that keeps resources in workspaces (experiments,
// jobs, endpoints...). Delete asks every holder whether a workspace is
// empty, and with force asks each to remove what it holds.
type Holder interface {
	// ResourcesIn returns a count per resource kind held in the workspace.
	ResourcesIn(ctx context.Context, q store.Querier, workspaceID string) (map[string]int, error)
	// DeleteResourcesIn removes them, inside the deleting transaction.
	DeleteResourcesIn(ctx context.Context, tx store.Querier, workspaceID string) error
}

// Service manages workspaces.
type Service struct {
	db        *store.DB
	audit     *audit.Log
	auth      *auth.Service
	holders   []Holder
	onCreate  []CreateHook
	onDeleted []func(ctx context.Context, w Workspace)
	now       func() time.Time
	// DefaultRegion is used when a create request names none.
	DefaultRegion string

	cacheMu sync.Mutex
	cache   map[string]cachedWorkspace
}

// lookupTTL is how long Lookup may answer from memory: hot paths (every
// MLflow call) resolve a workspace name per request. Changes made by this
// process are seen at once; other replicas' within lookupTTL.
const lookupTTL = time.Second

type cachedWorkspace struct {
	w     Workspace
	until time.Time
}

// Lookup is Get for hot paths: it may answer from a cache up to lookupTTL
// old.
func (s *Service) Lookup(ctx context.Context, name string) (Workspace, error) {
	now := s.now()
	s.cacheMu.Lock()
	c, ok := s.cache[name]
	s.cacheMu.Unlock()
	if ok && now.Before(c.until) {
		return c.w, nil
	}
	w, err := s.Get(ctx, name)
	if err != nil {
		return w, err
	}
	s.cacheMu.Lock()
	if s.cache == nil || len(s.cache) > 10000 {
		s.cache = map[string]cachedWorkspace{}
	}
	s.cache[name] = cachedWorkspace{w: w, until: now.Add(lookupTTL)}
	s.cacheMu.Unlock()
	return w, nil
}

func (s *Service) forget(name string) {
	s.cacheMu.Lock()
	delete(s.cache, name)
	s.cacheMu.Unlock()
}

// NewService returns a Service; now nil means time.Now. The auth service
// is attached with SetAuth, since auth in turn resolves workspace names
// through this service.
func NewService(db *store.DB, log *audit.Log, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{db: db, audit: log, now: now, DefaultRegion: "local"}
}

// SetAuth attaches the service that grants a creator ownership.
func (s *Service) SetAuth(a *auth.Service) { s.auth = a }

// AddHolder registers a domain whose resources live in workspaces.
func (s *Service) AddHolder(h Holder) { s.holders = append(s.holders, h) }

// CreateHook runs inside the transaction that creates a workspace, so a
// domain can give every workspace what it needs from the start (such as
// tracking's Default experiment).
type CreateHook func(ctx context.Context, tx store.Querier, w Workspace) error

// OnCreate registers a hook run for every new workspace.
func (s *Service) OnCreate(h CreateHook) { s.onCreate = append(s.onCreate, h) }

// OnDeleted registers a hook run after a workspace's deletion committed,
// for what lives outside the database (artifact files). It must not fail
// the deletion; it reports its own errors.
func (s *Service) OnDeleted(h func(ctx context.Context, w Workspace)) {
	s.onDeleted = append(s.onDeleted, h)
}

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$`)
	teamRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,32}$`)
)

// Limits on free-text fields, so one workspace cannot bloat every listing.
const (
	maxDisplayName = 256
	maxDescription = 4096
	maxTags        = 50
	maxTagKey      = 128
	maxTagValue    = 512
)

// ValidName checks a workspace name the way Azure ML does: 3-33
// characters, letters, digits, '-' and '_', starting with a letter or digit.
func ValidName(field, name string) error {
	if !nameRE.MatchString(name) {
		shown := name
		if len(shown) > 40 {
			shown = shown[:37] + "..."
		}
		return fault.InvalidField(field, "%q is not a valid workspace name (3-33 characters: letters, digits, '-', '_'; starting with a letter or digit)", shown)
	}
	return nil
}

// CreateInput is the body of a create-workspace request.
type CreateInput struct {
	Name           string            `json:"name"`
	DisplayName    string            `json:"display_name"`
	Description    string            `json:"description"`
	Region         string            `json:"region"`
	AllowedRegions []string          `json:"allowed_regions"`
	Team           string            `json:"team"`
	Tags           map[string]string `json:"tags"`
}

// Create makes a workspace; its creator becomes its Owner. A nil caller
// is the platform itself (the default workspace at first start).
func (s *Service) Create(ctx context.Context, caller *auth.Identity, in CreateInput) (Workspace, error) {
	if err := ValidName("name", in.Name); err != nil {
		return Workspace{}, err
	}
	if in.Region == "" {
		in.Region = s.DefaultRegion
	}
	if in.AllowedRegions == nil {
		in.AllowedRegions = []string{in.Region}
	}
	if in.Tags == nil {
		in.Tags = map[string]string{}
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	createdBy := "system"
	if caller != nil {
		createdBy = caller.Principal
	}
	w := Workspace{ID: id.New(), Name: in.Name, DisplayName: in.DisplayName, Description: in.Description, Region: in.Region,
		AllowedRegions: in.AllowedRegions, Team: in.Team, Tags: in.Tags, CreatedBy: createdBy, CreatedAt: now, UpdatedAt: now}
	if w.DisplayName == "" {
		w.DisplayName = w.Name
	}
	if err := validate(&w); err != nil {
		return Workspace{}, err
	}
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		regions, tags := encode(w)
		_, err := tx.ExecContext(ctx, `INSERT INTO workspaces (id, name, display_name, description, region, allowed_regions, team, tags, created_by, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			w.ID, w.Name, w.DisplayName, w.Description, w.Region, regions, w.Team, tags, w.CreatedBy, now.UnixMilli(), now.UnixMilli())
		if store.IsUniqueViolation(err) {
			return fault.New(fault.AlreadyExists, "workspace %q already exists", w.Name)
		}
		if err != nil {
			return fmt.Errorf("creating workspace: %w", err)
		}
		if caller != nil {
			if err := s.auth.GrantCreatorOwner(ctx, tx, caller, w.Name); err != nil {
				return err
			}
		}
		for _, h := range s.onCreate {
			if err := h(ctx, tx, w); err != nil {
				return err
			}
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "workspace.create", Resource: "workspaces/" + w.Name, Workspace: w.Name,
			Details: map[string]any{"region": w.Region, "allowed_regions": w.AllowedRegions, "team": w.Team}})
	})
	if err != nil {
		return Workspace{}, err
	}
	s.auth.InvalidateCache() // the creator now owns it
	return w, nil
}

func validate(w *Workspace) error {
	if utf8.RuneCountInString(w.DisplayName) > maxDisplayName {
		return fault.InvalidField("display_name", "longer than %d characters", maxDisplayName)
	}
	if utf8.RuneCountInString(w.Description) > maxDescription {
		return fault.InvalidField("description", "longer than %d characters", maxDescription)
	}
	if !utf8.ValidString(w.DisplayName) || !utf8.ValidString(w.Description) {
		return fault.InvalidField("description", "not valid UTF-8")
	}
	if !KnownRegion(w.Region) {
		return fault.InvalidField("region", "%q is not a known region (see `plinth workspace regions` or docs/workspaces.md)", clip(w.Region))
	}
	if len(w.AllowedRegions) == 0 {
		return fault.InvalidField("allowed_regions", "must name at least the workspace's own region %q", w.Region)
	}
	seen := map[string]bool{}
	for _, r := range w.AllowedRegions {
		if !KnownRegion(r) {
			return fault.InvalidField("allowed_regions", "%q is not a known region", clip(r))
		}
		if seen[r] {
			return fault.InvalidField("allowed_regions", "%q is listed twice", r)
		}
		seen[r] = true
	}
	if !seen[w.Region] {
		return fault.InvalidField("allowed_regions", "must include the workspace's own region %q", w.Region)
	}
	sort.Strings(w.AllowedRegions)
	if w.Team != "" && !teamRE.MatchString(w.Team) {
		return fault.InvalidField("team", "%q is not a valid team name (1-33 characters: letters, digits, '-', '_')", clip(w.Team))
	}
	if len(w.Tags) > maxTags {
		return fault.InvalidField("tags", "more than %d tags", maxTags)
	}
	for k, v := range w.Tags {
		if k == "" || len(k) > maxTagKey || !utf8.ValidString(k) {
			return fault.InvalidField("tags", "tag key %q must be 1-%d characters", clip(k), maxTagKey)
		}
		if len(v) > maxTagValue || !utf8.ValidString(v) {
			return fault.InvalidField("tags", "value of tag %q is longer than %d characters", clip(k), maxTagValue)
		}
	}
	return nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}

func encode(w Workspace) (regions, tags string) {
	r, _ := json.Marshal(w.AllowedRegions)
	t, _ := json.Marshal(w.Tags)
	return string(r), string(t)
}

const columns = `id, name, display_name, description, region, allowed_regions, team, tags, created_by, created_at, updated_at`

func scan(row interface{ Scan(...any) error }) (Workspace, error) {
	var w Workspace
	var regions, tags string
	var created, updated int64
	if err := row.Scan(&w.ID, &w.Name, &w.DisplayName, &w.Description, &w.Region, &regions, &w.Team, &tags, &w.CreatedBy, &created, &updated); err != nil {
		return w, err
	}
	w.CreatedAt, w.UpdatedAt = time.UnixMilli(created).UTC(), time.UnixMilli(updated).UTC()
	if err := json.Unmarshal([]byte(regions), &w.AllowedRegions); err != nil {
		return w, fmt.Errorf("workspace %s: corrupt allowed_regions: %w", w.Name, err)
	}
	if err := json.Unmarshal([]byte(tags), &w.Tags); err != nil {
		return w, fmt.Errorf("workspace %s: corrupt tags: %w", w.Name, err)
	}
	return w, nil
}

// Get returns a workspace by name.
func (s *Service) Get(ctx context.Context, name string) (Workspace, error) {
	return get(ctx, s.db.Read(), name)
}

func get(ctx context.Context, q store.Querier, name string) (Workspace, error) {
	return getLocked(ctx, q, name, "")
}

// getForUpdate reads a workspace inside a transaction that will change it.
func getForUpdate(ctx context.Context, tx store.Querier, name string) (Workspace, error) {
	return getLocked(ctx, tx, name, store.ForUpdate(tx))
}

func getLocked(ctx context.Context, q store.Querier, name, lock string) (Workspace, error) {
	w, err := scan(q.QueryRowContext(ctx, `SELECT `+columns+` FROM workspaces WHERE name = ?`+lock, name))
	if errors.Is(err, sql.ErrNoRows) {
		return w, fault.New(fault.NotFound, "workspace %q not found", name)
	}
	if err != nil {
		return w, fmt.Errorf("reading workspace %s: %w", name, err)
	}
	return w, nil
}

// EnsureExists creates the named workspace as the platform if it does not
// exist yet, and reports whether it did.
func (s *Service) EnsureExists(ctx context.Context, in CreateInput) (bool, error) {
	if _, err := s.Get(ctx, in.Name); err == nil {
		return false, nil
	} else if !fault.Is(err, fault.NotFound) {
		return false, err
	}
	_, err := s.Create(ctx, nil, in)
	if fault.Is(err, fault.AlreadyExists) {
		return false, nil // another replica made it first
	}
	return err == nil, err
}

// WorkspaceID implements auth.WorkspaceResolver.
func (s *Service) WorkspaceID(ctx context.Context, q store.Querier, name string) (string, error) {
	var wid string
	err := q.QueryRowContext(ctx, `SELECT id FROM workspaces WHERE name = ?`, name).Scan(&wid)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fault.New(fault.NotFound, "workspace %q not found", name)
	}
	return wid, err
}

// ListOptions pages through workspaces. Only, when not nil, restricts the
// list to those names (the ones the caller may read).
type ListOptions struct {
	After string
	Limit int
	Only  []string
	Team  string
}

// List returns workspaces ordered by name and the name to continue after.
func (s *Service) List(ctx context.Context, o ListOptions) ([]Workspace, string, error) {
	q := `SELECT ` + columns + ` FROM workspaces WHERE name > ?`
	args := []any{o.After}
	if o.Only != nil {
		if len(o.Only) == 0 {
			return []Workspace{}, "", nil
		}
		q += ` AND name IN (?` + strings.Repeat(", ?", len(o.Only)-1) + `)`
		for _, n := range o.Only {
			args = append(args, n)
		}
	}
	if o.Team != "" {
		q += ` AND team = ?`
		args = append(args, o.Team)
	}
	q += ` ORDER BY name LIMIT ?`
	args = append(args, o.Limit+1)
	rows, err := s.db.Read().QueryContext(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("listing workspaces: %w", err)
	}
	defer rows.Close()
	out := []Workspace{}
	for rows.Next() {
		w, err := scan(rows)
		if err != nil {
			return nil, "", fmt.Errorf("listing workspaces: %w", err)
		}
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("listing workspaces: %w", err)
	}
	next := ""
	if len(out) > o.Limit {
		out = out[:o.Limit]
		next = out[o.Limit-1].Name
	}
	return out, next, nil
}

// UpdateInput changes the fields that are set. Region is not here: a
// workspace's region is where its data lives and never moves.
type UpdateInput struct {
	DisplayName    *string            `json:"display_name"`
	Description    *string            `json:"description"`
	AllowedRegions *[]string          `json:"allowed_regions"`
	Team           *string            `json:"team"`
	Tags           *map[string]string `json:"tags"`
}

// Update changes a workspace's mutable fields.
func (s *Service) Update(ctx context.Context, name string, in UpdateInput) (Workspace, error) {
	defer s.forget(name)
	var w Workspace
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		var err error
		w, err = getForUpdate(ctx, tx, name)
		if err != nil {
			return err
		}
		changed := map[string]any{}
		if in.DisplayName != nil {
			w.DisplayName, changed["display_name"] = *in.DisplayName, *in.DisplayName
		}
		if in.Description != nil {
			w.Description, changed["description"] = *in.Description, true
		}
		if in.AllowedRegions != nil {
			w.AllowedRegions, changed["allowed_regions"] = append([]string{}, *in.AllowedRegions...), *in.AllowedRegions
		}
		if in.Team != nil {
			w.Team, changed["team"] = *in.Team, *in.Team
		}
		if in.Tags != nil {
			w.Tags, changed["tags"] = *in.Tags, *in.Tags
			if w.Tags == nil {
				w.Tags = map[string]string{}
			}
		}
		if len(changed) == 0 {
			return fault.New(fault.Invalid, "nothing to update: set at least one of display_name, description, allowed_regions, team, tags")
		}
		if err := validate(&w); err != nil {
			return err
		}
		w.UpdatedAt = s.now().UTC().Truncate(time.Millisecond)
		regions, tags := encode(w)
		if _, err := tx.ExecContext(ctx, `UPDATE workspaces SET display_name = ?, description = ?, allowed_regions = ?, team = ?, tags = ?, updated_at = ? WHERE id = ?`,
			w.DisplayName, w.Description, regions, w.Team, tags, w.UpdatedAt.UnixMilli(), w.ID); err != nil {
			return fmt.Errorf("updating workspace: %w", err)
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "workspace.update", Resource: "workspaces/" + name, Workspace: name, Details: changed})
	})
	return w, err
}

// Delete removes a workspace. It is refused while the workspace still
// holds resources, unless force, which deletes them with it; role
// assignments and workspace-limited keys always go with it.
func (s *Service) Delete(ctx context.Context, name string, force bool) error {
	// Its role assignments and limited keys go with it.
	defer s.auth.InvalidateCache()
	defer s.forget(name)
	var deleted Workspace
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		w, err := getForUpdate(ctx, tx, name)
		deleted = w
		if err != nil {
			return err
		}
		held := map[string]int{}
		for _, h := range s.holders {
			counts, err := h.ResourcesIn(ctx, tx, w.ID)
			if err != nil {
				return fmt.Errorf("counting resources in workspace %s: %w", name, err)
			}
			for kind, n := range counts {
				if n > 0 {
					held[kind] += n
				}
			}
		}
		if len(held) > 0 && !force {
			kinds := make([]string, 0, len(held))
			for k, n := range held {
				kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
			}
			sort.Strings(kinds)
			e := fault.New(fault.FailedPrecondition, "workspace %q still holds %s; delete them first or pass force", name, strings.Join(kinds, ", "))
			e.Details = map[string]any{"resources": held}
			return e
		}
		for _, h := range s.holders {
			if err := h.DeleteResourcesIn(ctx, tx, w.ID); err != nil {
				return fmt.Errorf("deleting resources in workspace %s: %w", name, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM workspaces WHERE id = ?`, w.ID); err != nil {
			return fmt.Errorf("deleting workspace: %w", err)
		}
		details := map[string]any{"force": force}
		if len(held) > 0 {
			details["deleted_resources"] = held
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "workspace.delete", Resource: "workspaces/" + name, Workspace: name, Details: details})
	})
	if err != nil {
		return err
	}
	for _, h := range s.onDeleted {
		h(context.WithoutCancel(ctx), deleted)
	}
	return nil
}

// ByID returns a workspace by id, for background work that holds ids
// (a scheduler pass, a job's end).
func (s *Service) ByID(ctx context.Context, id string) (Workspace, error) {
	w, err := scan(s.db.Read().QueryRowContext(ctx, `SELECT `+columns+` FROM workspaces WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return w, fault.New(fault.NotFound, "workspace with id %q not found", id)
	}
	return w, err
}
