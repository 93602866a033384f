package auth

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/id"
	"github.com/plinth-dev/plinth/internal/store"
)

// RoleAssignment grants a role to a principal at platform scope
// (Workspace empty) or in one workspace.
type RoleAssignment struct {
	ID        string    `json:"id"`
	Principal string    `json:"principal"`
	Role      Role      `json:"role"`
	Workspace string    `json:"workspace,omitempty"`
	Scope     string    `json:"scope"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
}

// ScopeName renders a scope the way the API and audit log show it.
func ScopeName(workspace string) string {
	if workspace == "" {
		return "platform"
	}
	return "workspaces/" + workspace
}

// AssignRoleInput is the body of a role-assignment request; the scope
// comes from the route.
type AssignRoleInput struct {
	Principal string `json:"principal"`
	Role      string `json:"role"`
}

// AssignRole grants a role in a workspace ("" for platform scope). The
// route has already checked roles.write at that scope.
func (s *Service) AssignRole(ctx context.Context, caller *Identity, workspace string, in AssignRoleInput) (RoleAssignment, error) {
	role, err := ParseRole(in.Role)
	if err != nil {
		return RoleAssignment{}, fault.InvalidField("role", "%v", err)
	}
	if err := ValidPrincipalName("principal", in.Principal); err != nil {
		return RoleAssignment{}, err
	}
	var ra RoleAssignment
	err = s.tx(ctx, func(tx store.Querier) error {
		p, err := getPrincipal(ctx, tx, in.Principal)
		if fault.Is(err, fault.NotFound) {
			return fault.InvalidField("principal", "principal %q does not exist", in.Principal)
		}
		if err != nil {
			return err
		}
		ra, err = s.grant(ctx, tx, caller.Principal, p, role, workspace)
		if err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "role.assign", Resource: roleResource(workspace, ra.ID), Workspace: workspace,
			Details: map[string]any{"principal": p.Name, "role": string(role)}})
	})
	return ra, err
}

func roleResource(workspace, assignmentID string) string {
	if workspace == "" {
		return "role-assignments/" + assignmentID
	}
	return "workspaces/" + workspace + "/role-assignments/" + assignmentID
}

func (s *Service) grant(ctx context.Context, tx store.Querier, by string, p Principal, role Role, workspace string) (RoleAssignment, error) {
	var wsID any
	if workspace != "" {
		wid, err := s.workspaces.WorkspaceID(ctx, tx, workspace)
		if err != nil {
			return RoleAssignment{}, err
		}
		wsID = wid
	}
	ra := RoleAssignment{ID: id.New(), Principal: p.Name, Role: role, Workspace: workspace, Scope: ScopeName(workspace),
		CreatedBy: by, CreatedAt: s.now().UTC().Truncate(time.Millisecond)}
	_, err := tx.ExecContext(ctx, `INSERT INTO role_assignments (id, principal_id, role, workspace, workspace_id, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		ra.ID, p.ID, string(role), workspace, wsID, by, ra.CreatedAt.UnixMilli())
	if store.IsUniqueViolation(err) {
		return ra, fault.New(fault.AlreadyExists, "%s already has role %s at %s", p.Name, role, ra.Scope)
	}
	if err != nil {
		return ra, fmt.Errorf("assigning role: %w", err)
	}
	return ra, nil
}

// GrantCreatorOwner makes the creator of a new workspace its Owner, inside
// the transaction that creates it. A platform Owner gets the grant too, so
// the workspace's own role list always says who it belongs to.
func (s *Service) GrantCreatorOwner(ctx context.Context, tx store.Querier, creator *Identity, workspace string) error {
	p, err := getPrincipal(ctx, tx, creator.Principal)
	if err != nil {
		return err
	}
	_, err = s.grant(ctx, tx, creator.Principal, p, Owner, workspace)
	return err
}

// ListRoleAssignments returns the assignments at one scope ("" for
// platform), optionally for one principal, ordered by creation.
func (s *Service) ListRoleAssignments(ctx context.Context, workspace, principal string) ([]RoleAssignment, error) {
	q := `SELECT r.id, p.name, r.role, r.workspace, r.created_by, r.created_at FROM role_assignments r JOIN principals p ON p.id = r.principal_id WHERE r.workspace = ?`
	args := []any{workspace}
	if principal != "" {
		q += ` AND p.name = ?`
		args = append(args, principal)
	}
	rows, err := s.db.Read().QueryContext(ctx, q+` ORDER BY r.id`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing role assignments: %w", err)
	}
	defer rows.Close()
	out := []RoleAssignment{}
	for rows.Next() {
		ra, err := scanAssignment(rows)
		if err != nil {
			return nil, fmt.Errorf("listing role assignments: %w", err)
		}
		out = append(out, ra)
	}
	return out, rows.Err()
}

func scanAssignment(row interface{ Scan(...any) error }) (RoleAssignment, error) {
	var ra RoleAssignment
	var ms int64
	err := row.Scan(&ra.ID, &ra.Principal, &ra.Role, &ra.Workspace, &ra.CreatedBy, &ms)
	ra.CreatedAt = time.UnixMilli(ms).UTC()
	ra.Scope = ScopeName(ra.Workspace)
	return ra, err
}

// RemoveRoleAssignment deletes an assignment at the given scope. It
// refuses to remove the last platform Owner, which would leave nobody able
// to grant access.
func (s *Service) RemoveRoleAssignment(ctx context.Context, workspace, assignmentID string) error {
	return s.tx(ctx, func(tx store.Querier) error {
		ra, err := scanAssignment(tx.QueryRowContext(ctx, `SELECT r.id, p.name, r.role, r.workspace, r.created_by, r.created_at FROM role_assignments r JOIN principals p ON p.id = r.principal_id WHERE r.id = ? AND r.workspace = ?`, assignmentID, workspace))
		if errors.Is(err, sql.ErrNoRows) {
			return fault.New(fault.NotFound, "role assignment %q not found at %s", assignmentID, ScopeName(workspace))
		}
		if err != nil {
			return fmt.Errorf("reading role assignment: %w", err)
		}
		if workspace == "" && ra.Role == Owner {
			// Lock so two removals of different Owners cannot both see
			// the other one still there.
			if err := store.Lock(ctx, tx, store.LockPlatformOwners); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM role_assignments WHERE role = ? AND workspace = ''`, string(Owner)).Scan(&n); err != nil {
				return err
			}
			if n <= 1 {
				return fault.New(fault.FailedPrecondition, "cannot remove the last platform Owner")
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM role_assignments WHERE id = ?`, assignmentID); err != nil {
			return fmt.Errorf("removing role assignment: %w", err)
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "role.remove", Resource: roleResource(workspace, assignmentID), Workspace: workspace,
			Details: map[string]any{"principal": ra.Principal, "role": string(ra.Role)}})
	})
}
