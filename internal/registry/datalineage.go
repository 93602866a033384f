package registry

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"

	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/tracking"
)

// How a dataset an MLflow client logged (runs/log-inputs) is recognised
// as a data asset version, in order:
//   - a string of its source (uri, url, path...) is data:<name>:<version>
//     or Azure ML's azureml:<name>:<version>, or an azureml:// URI ending
//     in /data/<name>/versions/<version>;
//   - a string of its source is a URL of the version in Plinth's API
//     (.../api/v1/workspaces/<ws>/data/<name>/versions/<version>/...,
//     which MLflow's HTTP dataset source accepts as is);
//   - a string of its source is the path of a referenced version (a blob
//     URL, an mlflow-artifacts:/ URI, a local path);
//   - its name is the asset's name and its digest (MLflow keeps at most 36
//     characters) starts the hex of the version's SHA-256 digest.

var dataRefRE = regexp.MustCompile(`^(?:data|azureml):([A-Za-z0-9][A-Za-z0-9._-]*):([A-Za-z0-9][A-Za-z0-9._-]*)$`)
var azuremlDataRE = regexp.MustCompile(`^azureml://.*/data/([A-Za-z0-9][A-Za-z0-9._-]*)/versions/([A-Za-z0-9][A-Za-z0-9._-]*)$`)
var apiDataRE = regexp.MustCompile(`/api/v1/workspaces/([^/]+)/data/([A-Za-z0-9][A-Za-z0-9._-]*)/versions/([A-Za-z0-9][A-Za-z0-9._-]*)(?:[/?#]|$)`)
var hexPrefixRE = regexp.MustCompile(`^[0-9a-f]{8,64}$`)

// sourceStrings are the string values at the top of a dataset source's
// JSON (MLflow writes {"uri": ...}, {"url": ...}, {"path": ...} and the
// like, by source type).
func sourceStrings(source string) []string {
	var m map[string]any
	if json.Unmarshal([]byte(source), &m) != nil {
		if s := strings.TrimSpace(source); s != "" {
			return []string{s}
		}
		return nil
	}
	var out []string
	for _, v := range m {
		if s, ok := v.(string); ok && s != "" {
			out = append(out, s)
		}
	}
	return out
}

// dataVersionOf is the data asset version a logged dataset names, or nil.
func (s *Service) dataVersionOf(ctx context.Context, sc tracking.Scope, d tracking.Dataset) (*DataVersion, error) {
	found := func(vs []DataVersion, err error) (*DataVersion, error) {
		if err != nil || len(vs) == 0 {
			return nil, err
		}
		return &vs[0], nil
	}
	for _, str := range sourceStrings(d.Source) {
		m := dataRefRE.FindStringSubmatch(str)
		if m == nil {
			m = azuremlDataRE.FindStringSubmatch(str)
		}
		if a := apiDataRE.FindStringSubmatch(str); m == nil && a != nil && a[1] == sc.Workspace {
			m = a[1:]
		}
		if m != nil {
			v, err := s.GetDataVersion(ctx, sc, m[1], m[2])
			if fault.Is(err, fault.NotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			return &v, nil
		}
		v, err := found(s.dataVersions(ctx, s.db.Read(), `v.workspace_id = ? AND v.path = ? AND v.storage <> ?`,
			[]any{sc.WorkspaceID, strings.TrimRight(str, "/"), StorageUpload}, "v.seq DESC", 1))
		if v != nil || err != nil {
			return v, err
		}
	}
	if hexPrefixRE.MatchString(d.Digest) {
		return found(s.dataVersions(ctx, s.db.Read(), `v.workspace_id = ? AND v.name = ? AND v.digest LIKE ?`,
			[]any{sc.WorkspaceID, d.Name, "sha256:" + d.Digest + "%"}, "v.seq DESC", 1))
	}
	return nil, nil
}

// runsUsingData lists the runs that logged a dataset naming v.
func (s *Service) runsUsingData(ctx context.Context, sc tracking.Scope, v DataVersion) ([]tracking.RunInfo, error) {
	needles := []string{DataURI(v.Name, v.Version), "azureml:" + v.Name + ":" + v.Version, "/data/" + v.Name + "/versions/" + v.Version}
	if v.Storage != StorageUpload {
		needles = append(needles, v.Path)
	}
	candidates, err := s.tracking.FindDatasets(ctx, sc, v.Name, needles)
	if err != nil {
		return nil, err
	}
	var out []tracking.RunInfo
	seen := map[string]bool{}
	for _, d := range candidates {
		dv, err := s.dataVersionOf(ctx, sc, d)
		if err != nil {
			return nil, err
		}
		if dv == nil || dv.pk != v.pk {
			continue
		}
		runs, err := s.tracking.RunsUsingDataset(ctx, sc, tracking.DatasetRef{Name: d.Name, Digest: d.Digest})
		if err != nil {
			return nil, err
		}
		for _, r := range runs {
			if !seen[r.RunID] {
				seen[r.RunID] = true
				out = append(out, r)
			}
		}
	}
	return out, nil
}
