package web

import (
	"errors"
	"io"
	"math"
	"net/http"
	"path"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/plinth-dev/plinth/internal/artifact"
	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/tracking"
	"github.com/plinth-dev/plinth/internal/tracking/search"
)

// Experiments and runs (E3): list and search with MLflow's filter
// language, a runs table with chosen columns, run detail with charts and
// artifacts, and comparison of 2-10 runs.

const runsPageSize = 50

// filterError is a bad filter or order_by, with where it went wrong.
type filterError struct {
	Message string
	Input   string
	// Before and At split Input at the error's position, so the page can
	// mark the character.
	Before, At, After string
	Pos               int
	OrderBy           bool
}

// asFilterError turns a search error into something to show next to the
// search box; other errors pass through.
func asFilterError(err error) (*filterError, error) {
	var se *search.Error
	if !errors.As(err, &se) {
		return nil, err
	}
	r := []rune(se.Input)
	pos := min(max(se.Pos, 0), len(r))
	fe := &filterError{Message: se.Msg, Input: se.Input, Pos: se.Pos, OrderBy: se.IsOrderBy(), Before: string(r[:pos])}
	if pos < len(r) {
		fe.At, fe.After = string(r[pos]), string(r[pos+1:])
	}
	return fe, nil
}

func (u *UI) experiments(w http.ResponseWriter, r *http.Request, q *req) error {
	filter := r.URL.Query().Get("filter")
	list, next, err := u.d.Tracking.SearchExperiments(r.Context(), q.tracking(), tracking.SearchInput{
		Filter: filter, ViewType: tracking.ActiveOnly, MaxResults: 100, PageToken: r.URL.Query().Get("page_token"),
		OrderBy: []string{"last_update_time DESC"}})
	fe, err := asFilterError(err)
	if err != nil {
		return err
	}
	u.render(w, r, q, statusFor(fe), "experiments", map[string]any{"Filter": filter, "FilterError": fe, "Experiments": list, "Next": next})
	return nil
}

func statusFor(fe *filterError) int {
	if fe != nil {
		return http.StatusBadRequest
	}
	return http.StatusOK
}

// column is a param, metric, tag or attribute chosen for the runs table.
type column struct {
	Kind, Key string
}

func (c column) ID() string { return c.Kind + "." + c.Key }

// orderKey is the column as an MLflow order_by term.
func (c column) orderKey() string {
	if strings.ContainsAny(c.Key, " .-") {
		return c.Kind + ".`" + c.Key + "`"
	}
	return c.Kind + "." + c.Key
}

func parseColumns(s string) []column {
	var out []column
	for _, part := range strings.Split(s, ",") {
		kind, key, ok := strings.Cut(strings.TrimSpace(part), ".")
		if !ok || key == "" || (kind != "metrics" && kind != "params" && kind != "tags") {
			continue
		}
		out = append(out, column{kind, key})
		if len(out) == 20 {
			break
		}
	}
	return out
}

// runRow is a run as the runs table shows it.
type runRow struct {
	Run   tracking.Run
	Cells []string
}

func (u *UI) runsPage(w http.ResponseWriter, r *http.Request, q *req) error {
	ctx := r.Context()
	sc := q.tracking()
	exp, err := u.d.Tracking.GetExperiment(ctx, sc, r.PathValue("id"))
	if err != nil {
		return err
	}
	qs := r.URL.Query()
	filter, order := qs.Get("filter"), qs.Get("order_by")
	in := tracking.SearchInput{ExperimentIDs: []string{exp.ExperimentID}, Filter: filter, ViewType: tracking.ActiveOnly,
		MaxResults: runsPageSize, PageToken: qs.Get("page_token")}
	if order != "" {
		in.OrderBy = []string{order}
	}
	runs, next, err := u.d.Tracking.SearchRuns(ctx, sc, in)
	fe, err := asFilterError(err)
	if err != nil {
		return err
	}
	cols := parseColumns(qs.Get("cols"))
	// Without a choice, the first metrics and params this page logged.
	available := availableColumns(runs)
	if qs.Get("cols") == "" {
		var m, p int
		for _, c := range available {
			if c.Kind == "metrics" && m < 4 {
				cols, m = append(cols, c), m+1
			} else if c.Kind == "params" && p < 4 {
				cols, p = append(cols, c), p+1
			}
		}
	}
	rows := make([]runRow, len(runs))
	for i, run := range runs {
		rows[i] = runRow{Run: run, Cells: cells(run, cols)}
	}
	colIDs := make([]string, len(cols))
	for i, c := range cols {
		colIDs[i] = c.ID()
	}
	type header struct {
		Column column
		// Sort is the order_by that a click on the header asks for, Dir
		// the current direction ("" when the table is sorted otherwise).
		Sort, Dir string
	}
	headers := make([]header, len(cols))
	for i, c := range cols {
		h := header{Column: c, Sort: c.orderKey() + " DESC"}
		switch order {
		case c.orderKey() + " DESC":
			h.Dir, h.Sort = "descending", c.orderKey()+" ASC"
		case c.orderKey() + " ASC", c.orderKey():
			h.Dir = "ascending"
		}
		headers[i] = h
	}
	u.render(w, r, q, statusFor(fe), "runs", map[string]any{"Experiment": exp, "Filter": filter, "OrderBy": order, "FilterError": fe,
		"Rows": rows, "Headers": headers, "Cols": strings.Join(colIDs, ","), "Available": available, "Next": next,
		"CanCompare": len(rows) > 1})
	return nil
}

func availableColumns(runs []tracking.Run) []column {
	seen := map[column]bool{}
	var out []column
	add := func(c column) {
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	for _, run := range runs {
		for _, m := range run.Metrics {
			add(column{"metrics", m.Key})
		}
		for _, p := range run.Params {
			add(column{"params", p.Key})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Key < out[j].Key
	})
	return out
}

func cells(run tracking.Run, cols []column) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		switch c.Kind {
		case "metrics":
			for _, m := range run.Metrics {
				if m.Key == c.Key {
					out[i] = formatNum(m.Value)
				}
			}
		case "params":
			for _, p := range run.Params {
				if p.Key == c.Key {
					out[i] = p.Value
				}
			}
		case "tags":
			for _, t := range run.Tags {
				if t.Key == c.Key {
					out[i] = t.Value
				}
			}
		}
	}
	return out
}

func tagValue(tags []tracking.Tag, key string) string {
	for _, t := range tags {
		if t.Key == key {
			return t.Value
		}
	}
	return ""
}

func (u *UI) runPage(w http.ResponseWriter, r *http.Request, q *req) error {
	run, err := u.d.Tracking.GetRun(r.Context(), q.tracking(), r.PathValue("id"))
	if err != nil {
		return err
	}
	var userTags, systemTags []tracking.Tag
	for _, t := range run.Tags {
		if strings.HasPrefix(t.Key, "mlflow.") || strings.HasPrefix(t.Key, "plinth.") {
			systemTags = append(systemTags, t)
		} else {
			userTags = append(userTags, t)
		}
	}
	job := tagValue(run.Tags, "plinth.job.name")
	u.render(w, r, q, http.StatusOK, "run", map[string]any{"Run": run, "Name": runName(run), "UserTags": userTags, "SystemTags": systemTags,
		"Job": job, "ShowLogs": job != "" && q.Can(auth.JobsRead), "HasArtifacts": artifactRoot(q, run.Info) != ""})
	return nil
}

func runName(run tracking.Run) string {
	if run.Info.RunName != "" {
		return run.Info.RunName
	}
	return run.Info.RunID
}

// series is one line of a chart: x the steps, t the times (Unix seconds,
// for the time axis), y the values (null where not finite: JSON has no
// NaN).
type series struct {
	Label string    `json:"label"`
	X     []float64 `json:"x"`
	T     []float64 `json:"t,omitempty"`
	Y     []any     `json:"y"`
}

type chartDoc struct {
	Series []series `json:"series"`
	XLabel string   `json:"xlabel,omitempty"`
	YLabel string   `json:"ylabel,omitempty"`
	Empty  string   `json:"empty,omitempty"`
}

func finite(v float64) any {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return v
}

// maxChartPoints bounds one run's line; longer histories are sampled
// evenly (first and last points kept), which a chart cannot tell apart.
const maxChartPoints = 2500

func metricSeries(label string, ms []tracking.Metric) series {
	if n := len(ms); n > maxChartPoints {
		sampled := make([]tracking.Metric, 0, maxChartPoints)
		for i := range maxChartPoints {
			sampled = append(sampled, ms[i*(n-1)/(maxChartPoints-1)])
		}
		ms = sampled
	}
	s := series{Label: label, X: make([]float64, len(ms)), T: make([]float64, len(ms)), Y: make([]any, len(ms))}
	for i, m := range ms {
		s.X[i], s.T[i], s.Y[i] = float64(m.Step), float64(m.Timestamp)/1000, finite(m.Value)
	}
	return s
}

func (u *UI) runMetricJSON(w http.ResponseWriter, r *http.Request, q *req) error {
	key := r.URL.Query().Get("key")
	if key == "" {
		return fault.InvalidField("key", "name the metric")
	}
	hist, _, err := u.d.Tracking.GetMetricHistory(r.Context(), q.tracking(), r.PathValue("id"), key, "", tracking.MaxHistoryResults)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, chartDoc{Series: []series{metricSeries(key, hist)}, YLabel: key})
	return nil
}

// artifactRoot is the key under which a run's artifacts live in the
// artifact store, or "" when they are elsewhere (a run may point its
// artifact URI at any store).
func artifactRoot(q *req, info tracking.RunInfo) string {
	root, ok := strings.CutPrefix(info.ArtifactURI, "mlflow-artifacts:")
	if !ok {
		return ""
	}
	root = strings.TrimLeft(root, "/")
	// The first segment names the workspace whose files these are.
	if ws, _, _ := strings.Cut(root, "/"); ws != q.WS.Name {
		return ""
	}
	return root
}

// artifactKey is the store key of path inside a run's artifacts.
func (u *UI) artifactKey(r *http.Request, q *req, p string) (string, error) {
	info, err := u.d.Tracking.GetRunInfo(r.Context(), q.tracking(), r.PathValue("id"))
	if err != nil {
		return "", err
	}
	root := artifactRoot(q, info)
	if root == "" {
		return "", fault.New(fault.NotFound, "this run's artifacts are stored outside Plinth (%s)", info.ArtifactURI)
	}
	if p == "" {
		return root, nil
	}
	return artifact.CleanKey(root + "/" + p)
}

var textExts = map[string]bool{".txt": true, ".log": true, ".json": true, ".yaml": true, ".yml": true, ".csv": true, ".tsv": true, ".md": true,
	".py": true, ".toml": true, ".ini": true, ".cfg": true, ".html": true, ".xml": true, ".sh": true, ".r": true, ".sql": true, "": true}

var imageTypes = map[string]string{".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp"}

const previewBytes = 64 << 10

// runArtifacts lists a directory of a run's artifacts, or previews a
// file: the fragment the artifacts browser swaps in.
func (u *UI) runArtifacts(w http.ResponseWriter, r *http.Request, q *req) error {
	p := strings.Trim(r.URL.Query().Get("path"), "/")
	key, err := u.artifactKey(r, q, p)
	if err != nil {
		return err
	}
	entries, err := u.d.Artifacts.List(r.Context(), key)
	if err != nil {
		return err
	}
	data := map[string]any{"RunID": r.PathValue("id"), "Path": p, "Parent": parentOf(p)}
	if len(entries) > 0 || p == "" {
		type entry struct {
			artifact.Entry
			Full string
		}
		list := make([]entry, len(entries))
		for i, e := range entries {
			list[i] = entry{e, strings.TrimPrefix(p+"/"+e.Path, "/")}
		}
		data["Entries"] = list
		return u.fragment(w, q, "artifacts", data)
	}
	ext := strings.ToLower(path.Ext(p))
	data["File"] = true
	switch {
	case imageTypes[ext] != "":
		data["Image"] = true
	case textExts[ext] || path.Base(p) == "MLmodel":
		rc, size, err := u.d.Artifacts.Open(r.Context(), key)
		if err != nil {
			return err
		}
		defer rc.Close()
		b, err := io.ReadAll(io.LimitReader(rc, previewBytes))
		if err != nil {
			return err
		}
		if !utf8.Valid(b) && len(b) < previewBytes {
			data["Binary"] = true
		} else {
			data["Text"], data["Truncated"] = string(b), size > previewBytes
		}
	default:
		data["Binary"] = true
	}
	return u.fragment(w, q, "artifacts", data)
}

func parentOf(p string) string {
	if p == "" {
		return ""
	}
	d := path.Dir(p)
	if d == "." {
		return ""
	}
	return d
}

// runArtifactFile sends an artifact's bytes: images as images (for the
// preview), everything else as a download, never as a page of this site.
func (u *UI) runArtifactFile(w http.ResponseWriter, r *http.Request, q *req) error {
	p := strings.Trim(r.URL.Query().Get("path"), "/")
	if p == "" {
		return fault.InvalidField("path", "name a file")
	}
	key, err := u.artifactKey(r, q, p)
	if err != nil {
		return err
	}
	rc, _, err := u.d.Artifacts.Open(r.Context(), key)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := w.Header()
	// Whatever the file holds, it runs nothing here.
	h.Set("Content-Security-Policy", "default-src 'none'; img-src 'self'; sandbox")
	if ct := imageTypes[strings.ToLower(path.Ext(p))]; ct != "" {
		h.Set("Content-Type", ct)
	} else {
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Disposition", "attachment; filename=\""+strings.ReplaceAll(path.Base(p), "\"", "")+"\"")
	}
	if rs, ok := rc.(io.ReadSeeker); ok {
		http.ServeContent(w, r, "", time.Time{}, rs)
		return nil
	}
	_, err = io.Copy(w, rc)
	return err
}

// Compare runs: 2 to 10 of them, side by side.
const maxCompare = 10

func (u *UI) compareIDs(r *http.Request) ([]string, error) {
	var ids []string
	for _, id := range r.URL.Query()["run"] {
		if id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if len(ids) < 2 || len(ids) > maxCompare {
		return nil, fault.InvalidField("run", "pick from 2 to %d runs to compare, not %d", maxCompare, len(ids))
	}
	return ids, nil
}

func (u *UI) comparePage(w http.ResponseWriter, r *http.Request, q *req) error {
	ids, err := u.compareIDs(r)
	if err != nil {
		return err
	}
	runs := make([]tracking.Run, 0, len(ids))
	for _, id := range ids {
		run, err := u.d.Tracking.GetRun(r.Context(), q.tracking(), id)
		if err != nil {
			return err
		}
		runs = append(runs, run)
	}
	type diffRow struct {
		Key     string
		Values  []string
		Differs bool
	}
	diff := func(kind string) []diffRow {
		keys := map[string]bool{}
		for _, run := range runs {
			for _, c := range availableColumns([]tracking.Run{run}) {
				if c.Kind == kind {
					keys[c.Key] = true
				}
			}
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		var out []diffRow
		for _, k := range sorted {
			row := diffRow{Key: k}
			for _, run := range runs {
				row.Values = append(row.Values, cells(run, []column{{kind, k}})[0])
			}
			for _, v := range row.Values[1:] {
				if v != row.Values[0] {
					row.Differs = true
				}
			}
			out = append(out, row)
		}
		return out
	}
	metrics := diff("metrics")
	keys := make([]string, len(metrics))
	for i, m := range metrics {
		keys[i] = m.Key
	}
	runQuery := "run=" + strings.Join(ids, "&run=")
	u.render(w, r, q, http.StatusOK, "compare", map[string]any{"Runs": runs, "Params": diff("params"), "Metrics": metrics, "MetricKeys": keys, "RunQuery": runQuery})
	return nil
}

func (u *UI) compareMetricJSON(w http.ResponseWriter, r *http.Request, q *req) error {
	ids, err := u.compareIDs(r)
	if err != nil {
		return err
	}
	key := r.URL.Query().Get("key")
	points, err := u.d.Tracking.GetMetricHistoryBulkInterval(r.Context(), q.tracking(), tracking.BulkIntervalInput{RunIDs: ids, Key: key, MaxResults: 1000})
	if err != nil {
		return err
	}
	byRun := map[string][]tracking.Metric{}
	for _, p := range points {
		byRun[p.RunID] = append(byRun[p.RunID], p)
	}
	doc := chartDoc{YLabel: key}
	for _, id := range ids {
		label := id
		if info, err := u.d.Tracking.GetRunInfo(r.Context(), q.tracking(), id); err == nil && info.RunName != "" {
			label = info.RunName
		}
		s := metricSeries(label, byRun[id])
		doc.Series = append(doc.Series, s)
	}
	writeJSON(w, http.StatusOK, doc)
	return nil
}
