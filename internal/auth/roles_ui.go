package auth

import (
	"context"
	"fmt"
)

// RoleAssignmentsOfRange returns the role assignments, at every scope, of
// the principals named after `after` up to and including `last`: one
// query for a page of ListPrincipals, where ListRoleAssignments would
// take one per workspace. Ordered by principal, then scope. The caller
// filters out the scopes its reader may not see.
func (s *Service) RoleAssignmentsOfRange(ctx context.Context, after, last string) ([]RoleAssignment, error) {
	rows, err := s.db.Read().QueryContext(ctx, `SELECT r.id, p.name, r.role, r.workspace, r.created_by, r.created_at
		FROM role_assignments r JOIN principals p ON p.id = r.principal_id WHERE p.name > ? AND p.name <= ? ORDER BY p.name, r.workspace, r.id`, after, last)
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
