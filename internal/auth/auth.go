// Package auth holds Plinth's identities and access control: principals
// (users and service principals), API keys, role assignments, and the one
// RBAC decision (Identity.Can) that every API route and list filter uses.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/id"
	"github.com/plinth-dev/plinth/internal/store"
)

// WorkspaceResolver finds a workspace's id by its name inside a
// transaction; the workspace package provides it, so auth never reads
// another package's tables.
type WorkspaceResolver interface {
	WorkspaceID(ctx context.Context, q store.Querier, name string) (string, error)
}

// Service manages principals, keys and role assignments.
type Service struct {
	db         *store.DB
	audit      *audit.Log
	workspaces WorkspaceResolver
	now        func() time.Time

	// lastUsed throttles last_used_at writes to one a minute per key, so
	// authenticated reads do not each cost a write.
	lastUsedMu sync.Mutex
	lastUsed   map[string]time.Time

	// identities caches what a key authenticates as for IdentityTTL, so
	// hot paths (metric logging) do not read the key and its grants on
	// every request. Any change to keys, roles or principals made through
	// this process empties it at once; other replicas see a change within
	// IdentityTTL.
	cacheMu    sync.Mutex
	identities map[string]cachedIdentity
}

// IdentityTTL is how long another replica may keep honouring a key or a
// role after it was revoked or removed.
const IdentityTTL = 2 * time.Second

type cachedIdentity struct {
	id        Identity
	keyExpiry int64 // Unix ms; 0: never
	until     time.Time
}

// InvalidateCache forgets every cached identity; call it after any change
// that can alter what a key may do.
func (s *Service) InvalidateCache() {
	s.cacheMu.Lock()
	s.identities = map[string]cachedIdentity{}
	s.cacheMu.Unlock()
}

// NewService returns a Service. now is the clock; nil means time.Now.
func NewService(db *store.DB, log *audit.Log, ws WorkspaceResolver, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{db: db, audit: log, workspaces: ws, now: now, lastUsed: map[string]time.Time{}, identities: map[string]cachedIdentity{}}
}

// Principal is a user or a service principal.
type Principal struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Kind        string    `json:"kind"`
	DisplayName string    `json:"display_name,omitempty"`
	CreatedBy   string    `json:"created_by"`
	CreatedAt   time.Time `json:"created_at"`
}

// Principal kinds.
const (
	KindUser    = "user"
	KindService = "service"
)

// AdminName is the principal that `plinth up` creates on first start.
const AdminName = "admin"

var principalNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$`)

// ValidPrincipalName checks a principal name, naming the field on error.
func ValidPrincipalName(field, name string) error {
	if !principalNameRE.MatchString(name) {
		return fault.InvalidField(field, "%q is not a valid principal name (1-128 characters: letters, digits, '.', '_', '@', '-'; starting with a letter or digit)", truncate(name))
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:61] + "..."
	}
	return s
}

// CreatePrincipalInput is the body of a create-principal request.
type CreatePrincipalInput struct {
	Name        string `json:"name"`
	Kind        string `json:"kind"`
	DisplayName string `json:"display_name"`
}

// CreatePrincipal adds a user or service principal.
func (s *Service) CreatePrincipal(ctx context.Context, caller *Identity, in CreatePrincipalInput) (Principal, error) {
	if err := ValidPrincipalName("name", in.Name); err != nil {
		return Principal{}, err
	}
	if in.Kind == "" {
		in.Kind = KindUser
	}
	if in.Kind != KindUser && in.Kind != KindService {
		return Principal{}, fault.InvalidField("kind", "%q is not a principal kind (want user or service)", truncate(in.Kind))
	}
	if len(in.DisplayName) > 256 {
		return Principal{}, fault.InvalidField("display_name", "longer than 256 characters")
	}
	p := Principal{ID: id.New(), Name: in.Name, Kind: in.Kind, DisplayName: in.DisplayName, CreatedBy: caller.Principal, CreatedAt: s.now().UTC().Truncate(time.Millisecond)}
	err := s.tx(ctx, func(tx store.Querier) error {
		if err := insertPrincipal(ctx, tx, p); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "principal.create", Resource: "principals/" + p.Name,
			Details: map[string]any{"kind": p.Kind}})
	})
	return p, err
}

func insertPrincipal(ctx context.Context, tx store.Querier, p Principal) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO principals (id, name, kind, display_name, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		p.ID, p.Name, p.Kind, p.DisplayName, p.CreatedBy, p.CreatedAt.UnixMilli())
	if store.IsUniqueViolation(err) {
		return fault.New(fault.AlreadyExists, "principal %q already exists", p.Name)
	}
	if err != nil {
		return fmt.Errorf("creating principal: %w", err)
	}
	return nil
}

const principalColumns = `id, name, kind, display_name, created_by, created_at`

func scanPrincipal(row interface{ Scan(...any) error }) (Principal, error) {
	var p Principal
	var ms int64
	err := row.Scan(&p.ID, &p.Name, &p.Kind, &p.DisplayName, &p.CreatedBy, &ms)
	p.CreatedAt = time.UnixMilli(ms).UTC()
	return p, err
}

// GetPrincipal returns the principal with the given name.
func (s *Service) GetPrincipal(ctx context.Context, name string) (Principal, error) {
	return getPrincipal(ctx, s.db.Read(), name)
}

func getPrincipal(ctx context.Context, q store.Querier, name string) (Principal, error) {
	p, err := scanPrincipal(q.QueryRowContext(ctx, `SELECT `+principalColumns+` FROM principals WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return p, fault.New(fault.NotFound, "principal %q not found", name)
	}
	if err != nil {
		return p, fmt.Errorf("reading principal %s: %w", name, err)
	}
	return p, nil
}

// ListPrincipals returns principals ordered by name, after the name in
// pageToken, at most limit of them, and the token for the next page.
func (s *Service) ListPrincipals(ctx context.Context, after string, limit int) ([]Principal, string, error) {
	rows, err := s.db.Read().QueryContext(ctx, `SELECT `+principalColumns+` FROM principals WHERE name > ? ORDER BY name LIMIT ?`, after, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("listing principals: %w", err)
	}
	defer rows.Close()
	var out []Principal
	for rows.Next() {
		p, err := scanPrincipal(rows)
		if err != nil {
			return nil, "", fmt.Errorf("listing principals: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("listing principals: %w", err)
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = out[limit-1].Name
	}
	return out, next, nil
}

// DeletePrincipal removes a principal with its keys and role assignments.
// The caller cannot delete itself, so an admin cannot lock everyone out
// by accident.
func (s *Service) DeletePrincipal(ctx context.Context, caller *Identity, name string) error {
	if name == caller.Principal {
		return fault.New(fault.FailedPrecondition, "a principal cannot delete itself")
	}
	return s.tx(ctx, func(tx store.Querier) error {
		p, err := getPrincipal(ctx, tx, name)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM principals WHERE id = ?`, p.ID); err != nil {
			return fmt.Errorf("deleting principal: %w", err)
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "principal.delete", Resource: "principals/" + name})
	})
}

// APIKey describes a key; the secret itself is shown once, at creation.
type APIKey struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Prefix     string     `json:"prefix"`
	Principal  string     `json:"principal"`
	Workspace  string     `json:"workspace,omitempty"`
	RunID      string     `json:"run_id,omitempty"` // set on run tokens (CreateRunToken)
	CreatedBy  string     `json:"created_by"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
}

// KeyPrefix starts every key Plinth generates, so secret scanners and
// people can recognise one.
const KeyPrefix = "plk_"

// NewKeySecret returns a fresh random key: the prefix and 256 random bits.
func NewKeySecret() string {
	var b [32]byte
	rand.Read(b[:])
	return KeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// hashKey is SHA-256: keys carry 256 random bits, so a slow password hash
// would add cost without adding safety.
func hashKey(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// displayPrefix is the part of a key shown in listings to tell keys apart.
// For a generated key the 8 characters after "plk_" give away 48 of its 256
// bits; for a key chosen by an operator only 4 characters are shown.
func displayPrefix(secret string) string {
	if strings.HasPrefix(secret, KeyPrefix) && len(secret) > 12 {
		return secret[:12]
	}
	return secret[:min(4, len(secret))]
}

var keyNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CreateKeyInput is the body of a create-key request.
type CreateKeyInput struct {
	Name string `json:"name"`
	// Principal owns the key; empty means the caller.
	Principal string `json:"principal"`
	// Workspace limits the key to one workspace; empty means all.
	Workspace string `json:"workspace"`
	// ExpiresAt is when the key stops working; nil means never.
	ExpiresAt *time.Time `json:"expires_at"`
	// RunID limits the key to one MLflow run. Only CreateRunToken sets
	// it; it is not part of the API's request body.
	RunID string `json:"-"`
}

// CreateKey makes a key and returns its record and its secret, which is
// never stored and cannot be shown again.
func (s *Service) CreateKey(ctx context.Context, caller *Identity, in CreateKeyInput) (APIKey, string, error) {
	if !keyNameRE.MatchString(in.Name) {
		return APIKey{}, "", fault.InvalidField("name", "%q is not a valid key name (1-64 characters: letters, digits, '.', '_', '-')", truncate(in.Name))
	}
	if caller.RunID != "" {
		// A run's token must not mint a key that outlives or outreaches it.
		return APIKey{}, "", fault.New(fault.PermissionDenied, "a key limited to run %s cannot create keys", caller.RunID)
	}
	if in.Principal == "" {
		in.Principal = caller.Principal
	}
	if in.Principal != caller.Principal && !caller.Can(KeysManage, "") {
		return APIKey{}, "", fault.New(fault.PermissionDenied, "creating a key for another principal needs %s", KeysManage)
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	if in.ExpiresAt != nil && !in.ExpiresAt.After(now) {
		return APIKey{}, "", fault.InvalidField("expires_at", "%s is not in the future", in.ExpiresAt.Format(time.RFC3339))
	}
	if caller.KeyWorkspace != "" && in.Workspace != caller.KeyWorkspace {
		// A workspace-limited key must not mint a key wider than itself.
		return APIKey{}, "", fault.InvalidField("workspace", "a key limited to workspace %q can only create keys limited to it", caller.KeyWorkspace)
	}
	secret := NewKeySecret()
	var key APIKey
	err := s.tx(ctx, func(tx store.Querier) error {
		var err error
		key, err = s.insertKey(ctx, tx, in, secret, caller.Principal, now)
		if err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "key.create", Resource: "keys/" + key.ID, Workspace: in.Workspace,
			Details: map[string]any{"name": key.Name, "principal": key.Principal, "prefix": key.Prefix}})
	})
	return key, secret, err
}

func (s *Service) insertKey(ctx context.Context, tx store.Querier, in CreateKeyInput, secret, createdBy string, now time.Time) (APIKey, error) {
	owner, err := getPrincipal(ctx, tx, in.Principal)
	if fault.Is(err, fault.NotFound) {
		return APIKey{}, fault.InvalidField("principal", "principal %q does not exist", in.Principal)
	}
	if err != nil {
		return APIKey{}, err
	}
	var wsID any
	if in.Workspace != "" {
		wid, err := s.workspaces.WorkspaceID(ctx, tx, in.Workspace)
		if fault.Is(err, fault.NotFound) {
			return APIKey{}, fault.InvalidField("workspace", "workspace %q does not exist", in.Workspace)
		}
		if err != nil {
			return APIKey{}, err
		}
		wsID = wid
	}
	key := APIKey{ID: id.New(), Name: in.Name, Prefix: displayPrefix(secret), Principal: owner.Name, Workspace: in.Workspace,
		RunID: in.RunID, CreatedBy: createdBy, CreatedAt: now, ExpiresAt: in.ExpiresAt}
	var expires any
	if in.ExpiresAt != nil {
		t := in.ExpiresAt.UTC().Truncate(time.Millisecond)
		key.ExpiresAt = &t
		expires = t.UnixMilli()
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO api_keys (id, principal_id, name, prefix, hash, workspace, workspace_id, run_id, created_by, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		key.ID, owner.ID, key.Name, key.Prefix, hashKey(secret), in.Workspace, wsID, in.RunID, createdBy, now.UnixMilli(), expires)
	if store.IsUniqueViolation(err) {
		return APIKey{}, fault.New(fault.AlreadyExists, "principal %q already has a live key named %q", owner.Name, in.Name)
	}
	if err != nil {
		return APIKey{}, fmt.Errorf("creating key: %w", err)
	}
	return key, nil
}

const keyColumns = `k.id, k.name, k.prefix, p.name, k.workspace, k.run_id, k.created_by, k.created_at, k.expires_at, k.last_used_at, k.revoked_at`

func scanKey(row interface{ Scan(...any) error }) (APIKey, error) {
	var k APIKey
	var created int64
	var expires, used, revoked sql.NullInt64
	if err := row.Scan(&k.ID, &k.Name, &k.Prefix, &k.Principal, &k.Workspace, &k.RunID, &k.CreatedBy, &created, &expires, &used, &revoked); err != nil {
		return k, err
	}
	k.CreatedAt = time.UnixMilli(created).UTC()
	k.ExpiresAt, k.LastUsedAt, k.RevokedAt = msPtr(expires), msPtr(used), msPtr(revoked)
	return k, nil
}

func msPtr(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := time.UnixMilli(v.Int64).UTC()
	return &t
}

// ListKeys returns the keys of one principal (empty: the caller's own),
// newest first. Listing another principal's keys needs keys.manage.
func (s *Service) ListKeys(ctx context.Context, caller *Identity, principal string, includeRevoked bool) ([]APIKey, error) {
	if principal == "" {
		principal = caller.Principal
	}
	if principal != caller.Principal && !caller.Can(KeysManage, "") {
		return nil, fault.New(fault.PermissionDenied, "listing another principal's keys needs %s", KeysManage)
	}
	q := `SELECT ` + keyColumns + ` FROM api_keys k JOIN principals p ON p.id = k.principal_id WHERE p.name = ?`
	if !includeRevoked {
		q += ` AND k.revoked_at IS NULL`
	}
	if caller.KeyWorkspace != "" {
		// A workspace-limited key sees only keys limited the same way.
		q += ` AND k.workspace = ?`
	}
	q += ` ORDER BY k.id DESC`
	args := []any{principal}
	if caller.KeyWorkspace != "" {
		args = append(args, caller.KeyWorkspace)
	}
	rows, err := s.db.Read().QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", err)
	}
	defer rows.Close()
	var out []APIKey
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("listing keys: %w", err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// RevokeKey stops a key from working. A principal may revoke its own keys;
// revoking others' needs keys.manage. Someone who may not see the key gets
// not-found, so key ids cannot be probed.
func (s *Service) RevokeKey(ctx context.Context, caller *Identity, keyID string) (APIKey, error) {
	var key APIKey
	err := s.tx(ctx, func(tx store.Querier) error {
		var err error
		key, err = scanKey(tx.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys k JOIN principals p ON p.id = k.principal_id WHERE k.id = ?`+store.ForUpdate(tx), keyID))
		visible := err == nil && (key.Principal == caller.Principal || caller.Can(KeysManage, "")) &&
			(caller.KeyWorkspace == "" || key.Workspace == caller.KeyWorkspace)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && !visible) {
			return fault.New(fault.NotFound, "key %q not found", keyID)
		}
		if err != nil {
			return fmt.Errorf("reading key: %w", err)
		}
		if key.RevokedAt != nil {
			return fault.New(fault.FailedPrecondition, "key %q is already revoked", keyID)
		}
		now := s.now().UTC().Truncate(time.Millisecond)
		key.RevokedAt = &now
		if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET revoked_at = ? WHERE id = ?`, now.UnixMilli(), keyID); err != nil {
			return fmt.Errorf("revoking key: %w", err)
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "key.revoke", Resource: "keys/" + keyID, Workspace: key.Workspace,
			Details: map[string]any{"name": key.Name, "principal": key.Principal}})
	})
	return key, err
}

// Authenticate resolves a presented key to an identity with its grants.
// Unknown, revoked and expired keys are all unauthenticated; the message
// says which, since the holder of a key may know it was theirs.
func (s *Service) Authenticate(ctx context.Context, secret string) (*Identity, error) {
	if secret == "" {
		return nil, fault.New(fault.Unauthenticated, "no API key presented")
	}
	hash := hashKey(secret)
	now := s.now()
	s.cacheMu.Lock()
	c, ok := s.identities[hash]
	s.cacheMu.Unlock()
	if ok && now.Before(c.until) && (c.keyExpiry == 0 || now.UnixMilli() < c.keyExpiry) {
		id := c.id
		id.Grants = append([]Grant(nil), c.id.Grants...)
		s.touch(ctx, id.KeyID, now)
		return &id, nil
	}
	q := s.db.Read()
	var ident Identity
	var expires, revoked sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT k.id, k.workspace, k.run_id, k.expires_at, k.revoked_at, p.id, p.name, p.kind
		FROM api_keys k JOIN principals p ON p.id = k.principal_id WHERE k.hash = ?`, hash).
		Scan(&ident.KeyID, &ident.KeyWorkspace, &ident.RunID, &expires, &revoked, &ident.PrincipalID, &ident.Principal, &ident.Kind)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fault.New(fault.Unauthenticated, "API key is not valid")
	}
	if err != nil {
		return nil, fault.Wrap(fault.Unavailable, err, "checking API key")
	}
	if revoked.Valid {
		return nil, fault.New(fault.Unauthenticated, "API key has been revoked")
	}
	if expires.Valid && now.UnixMilli() >= expires.Int64 {
		return nil, fault.New(fault.Unauthenticated, "API key expired at %s", time.UnixMilli(expires.Int64).UTC().Format(time.RFC3339))
	}
	grants, err := loadGrants(ctx, q, ident.PrincipalID)
	if err != nil {
		return nil, fault.Wrap(fault.Unavailable, err, "loading role assignments")
	}
	ident.Grants = grants
	entry := cachedIdentity{id: ident, until: now.Add(IdentityTTL)}
	entry.id.Grants = append([]Grant(nil), grants...)
	if expires.Valid {
		entry.keyExpiry = expires.Int64
	}
	s.cacheMu.Lock()
	if len(s.identities) > 10000 {
		s.identities = map[string]cachedIdentity{} // bound memory; it refills
	}
	s.identities[hash] = entry
	s.cacheMu.Unlock()
	s.touch(ctx, ident.KeyID, now)
	return &ident, nil
}

func (s *Service) touch(ctx context.Context, keyID string, now time.Time) {
	s.lastUsedMu.Lock()
	if last, ok := s.lastUsed[keyID]; ok && now.Sub(last) < time.Minute {
		s.lastUsedMu.Unlock()
		return
	}
	s.lastUsed[keyID] = now
	s.lastUsedMu.Unlock()
	// Best effort: a failed last-used stamp must not fail the request.
	_ = s.tx(ctx, func(tx store.Querier) error {
		_, err := tx.ExecContext(ctx, `UPDATE api_keys SET last_used_at = ? WHERE id = ?`, now.UnixMilli(), keyID)
		return err
	})
}

func loadGrants(ctx context.Context, q store.Querier, principalID string) ([]Grant, error) {
	rows, err := q.QueryContext(ctx, `SELECT role, workspace FROM role_assignments WHERE principal_id = ?`, principalID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Grant
	for rows.Next() {
		var g Grant
		if err := rows.Scan(&g.Role, &g.Workspace); err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// Bootstrap creates the admin principal with a platform Owner role and a
// first key, unless some principal already holds platform Owner. preset,
// when non-empty, is used as that key instead of a random one. It returns
// the key secret and whether anything was created.
func (s *Service) Bootstrap(ctx context.Context, preset string) (string, bool, error) {
	if preset != "" && len(strings.TrimSpace(preset)) < 16 {
		return "", false, fault.InvalidField("PLINTH_BOOTSTRAP_KEY", "must be at least 16 characters")
	}
	secret := preset
	if secret == "" {
		secret = NewKeySecret()
	}
	created := false
	err := s.tx(ctx, func(tx store.Querier) error {
		// Several replicas may start at once on one PostgreSQL: one of
		// them bootstraps, the others then see its admin.
		if err := store.Lock(ctx, tx, store.LockPlatformOwners); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM role_assignments WHERE role = ? AND workspace = ''`, string(Owner)).Scan(&n); err != nil {
			return fmt.Errorf("looking for an admin: %w", err)
		}
		if n > 0 {
			return nil
		}
		now := s.now().UTC().Truncate(time.Millisecond)
		admin, err := getPrincipal(ctx, tx, AdminName)
		if fault.Is(err, fault.NotFound) {
			admin = Principal{ID: id.New(), Name: AdminName, Kind: KindUser, DisplayName: "Administrator", CreatedBy: "system", CreatedAt: now}
			err = insertPrincipal(ctx, tx, admin)
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO role_assignments (id, principal_id, role, workspace, workspace_id, created_by, created_at) VALUES (?, ?, ?, '', NULL, 'system', ?)`,
			id.New(), admin.ID, string(Owner), now.UnixMilli()); err != nil {
			return fmt.Errorf("granting admin Owner: %w", err)
		}
		key, err := s.insertKey(ctx, tx, CreateKeyInput{Name: "bootstrap-" + now.Format("20060102T150405"), Principal: AdminName}, secret, "system", now)
		if err != nil {
			return err
		}
		created = true
		return s.audit.Append(ctx, tx, audit.Record{Principal: "system", Action: "platform.bootstrap", Resource: "principals/" + AdminName,
			Details: map[string]any{"key_id": key.ID, "key_prefix": key.Prefix, "preset": preset != ""}})
	})
	if err != nil || !created {
		return "", false, err
	}
	return secret, true, nil
}

// tx runs a change to keys, roles or principals and then forgets cached
// identities, so the change holds from the next request on.
func (s *Service) tx(ctx context.Context, fn func(tx store.Querier) error) error {
	defer s.InvalidateCache()
	return s.db.Tx(ctx, fn)
}
