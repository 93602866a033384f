package tracking

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// DatasetRef names a dataset logged with runs/log-inputs: datasets are
// unique per experiment by name and digest.
type DatasetRef struct {
	Name   string
	Digest string
}

// RunsUsingDataset lists the runs of the workspace that logged a dataset
// with this name and digest as an input, with the context tag they gave.
func (s *Service) RunsUsingDataset(ctx context.Context, sc Scope, d DatasetRef) ([]RunInfo, error) {
	rows, err := s.db.Read().QueryContext(ctx, `SELECT `+runColumns+` FROM runs r JOIN experiments e ON e.pk = r.experiment_pk
		WHERE e.workspace_id = ? AND EXISTS (SELECT 1 FROM run_inputs ri JOIN datasets ds ON ds.dataset_uuid = ri.dataset_uuid
			WHERE ri.run_uuid = r.run_uuid AND ds.name = ? AND ds.digest = ?)
		ORDER BY r.start_time, r.run_uuid`, sc.WorkspaceID, d.Name, d.Digest)
	if err != nil {
		return nil, fmt.Errorf("finding runs of dataset %s: %w", d.Name, err)
	}
	defer rows.Close()
	var out []RunInfo
	for rows.Next() {
		ri, err := scanRunInfo(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, ri)
	}
	return out, rows.Err()
}

// DatasetExists reports whether any run of the workspace logged the dataset.
func (s *Service) DatasetExists(ctx context.Context, sc Scope, d DatasetRef) (Dataset, bool, error) {
	var ds Dataset
	err := s.db.Read().QueryRowContext(ctx, `SELECT ds.name, ds.digest, ds.source_type, ds.source FROM datasets ds JOIN experiments e ON e.pk = ds.experiment_pk
		WHERE e.workspace_id = ? AND ds.name = ? AND ds.digest = ? LIMIT 1`, sc.WorkspaceID, d.Name, d.Digest).Scan(&ds.Name, &ds.Digest, &ds.SourceType, &ds.Source)
	if errors.Is(err, sql.ErrNoRows) {
		return ds, false, nil
	}
	if err != nil {
		return ds, false, err
	}
	return ds, true, nil
}

// FindDatasets lists the distinct datasets logged in the workspace whose
// source contains one of the given strings, or whose name is name (""
// matches no name): the candidates for a lineage link, which the caller
// confirms.
func (s *Service) FindDatasets(ctx context.Context, sc Scope, name string, sourceContains []string) ([]Dataset, error) {
	conds := []string{"ds.name = ?"}
	args := []any{sc.WorkspaceID, name}
	for _, sub := range sourceContains {
		if sub == "" {
			continue
		}
		conds = append(conds, `ds.source LIKE ? ESCAPE '\'`)
		args = append(args, "%"+likeEscaper.Replace(sub)+"%")
	}
	rows, err := s.db.Read().QueryContext(ctx, `SELECT DISTINCT ds.name, ds.digest, ds.source_type, ds.source FROM datasets ds JOIN experiments e ON e.pk = ds.experiment_pk
		WHERE e.workspace_id = ? AND (`+strings.Join(conds, " OR ")+`) ORDER BY ds.name, ds.digest`, args...)
	if err != nil {
		return nil, fmt.Errorf("finding datasets: %w", err)
	}
	defer rows.Close()
	var out []Dataset
	for rows.Next() {
		var d Dataset
		if err := rows.Scan(&d.Name, &d.Digest, &d.SourceType, &d.Source); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
