package mlflowapi

import (
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/plinth-dev/plinth/internal/artifact"
	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/tracking"
)

var (
	get     = []string{"GET"}
	post    = []string{"POST"}
	getPost = []string{"GET", "POST"}
)

// empty is the body of calls that answer nothing: MLflow writes {}.
type empty struct{}

func (a *API) endpoints() []endpoint {
	read, write := auth.TrackingRead, auth.TrackingWrite
	return []endpoint{
		{post, "/experiments/create", write, "experiment.create", a.createExperiment},
		{get, "/experiments/get", read, "", a.getExperiment},
		{get, "/experiments/get-by-name", read, "", a.getExperimentByName},
		{getPost, "/experiments/search", read, "", a.searchExperiments},
		{post, "/experiments/update", write, "experiment.update", a.updateExperiment},
		{post, "/experiments/delete", write, "experiment.delete", a.deleteExperiment},
		{post, "/experiments/restore", write, "experiment.restore", a.restoreExperiment},
		{post, "/experiments/set-experiment-tag", write, "experiment.set-tag", a.setExperimentTag},
		{post, "/experiments/delete-experiment-tag", write, "experiment.delete-tag", a.deleteExperimentTag},
		{post, "/runs/create", write, "run.create", a.createRun},
		{post, "/runs/update", write, "run.update", a.updateRun},
		{post, "/runs/delete", write, "run.delete", a.deleteRun},
		{post, "/runs/restore", write, "run.restore", a.restoreRun},
		{get, "/runs/get", read, "", a.getRun},
		{post, "/runs/log-metric", write, "run.log-metric", a.logMetric},
		{post, "/runs/log-parameter", write, "run.log-parameter", a.logParam},
		{post, "/runs/log-batch", write, "run.log-batch", a.logBatch},
		{post, "/runs/log-model", write, "run.log-model", a.logModel},
		{post, "/runs/log-inputs", write, "run.log-inputs", a.logInputs},
		{post, "/runs/set-tag", write, "run.set-tag", a.setTag},
		{post, "/runs/delete-tag", write, "run.delete-tag", a.deleteTag},
		{getPost, "/runs/search", read, "", a.searchRuns},
		{get, "/metrics/get-history", read, "", a.getMetricHistory},
		{get, "/metrics/get-history-bulk-interval", read, "", a.getMetricHistoryBulkInterval},
		{get, "/metrics/get-history-bulk", read, "", a.getMetricHistoryBulk},
		{get, "/artifacts/list", read, "", a.listArtifacts},
	}
}

func tagsIn(in []wireTag) []tracking.Tag {
	out := make([]tracking.Tag, len(in))
	for i, t := range in {
		out[i] = tracking.Tag{Key: t.Key, Value: t.Value}
	}
	return out
}

func (a *API) createExperiment(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		Name             string    `json:"name"`
		ArtifactLocation string    `json:"artifact_location"`
		Tags             []wireTag `json:"tags"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("name", m.Name != ""); err != nil {
		return nil, err
	}
	id, err := a.Tracking.CreateExperiment(r.Context(), sc, m.Name, m.ArtifactLocation, tagsIn(m.Tags))
	if err != nil {
		return nil, err
	}
	return map[string]string{"experiment_id": id}, nil
}

type experimentIDMsg struct {
	ExperimentID string `json:"experiment_id"`
}

// experimentID reads the required experiment_id of a request.
func experimentID(r *http.Request, body []byte) (string, error) {
	var m experimentIDMsg
	if err := decode(r, body, &m); err != nil {
		return "", err
	}
	return m.ExperimentID, required("experiment_id", m.ExperimentID != "")
}

func (a *API) getExperiment(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	id, err := experimentID(r, body)
	if err != nil {
		return nil, err
	}
	e, err := a.Tracking.GetExperiment(r.Context(), sc, id)
	if err != nil {
		return nil, err
	}
	return map[string]any{"experiment": experimentOut(e)}, nil
}

func (a *API) getExperimentByName(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		ExperimentName string `json:"experiment_name"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("experiment_name", m.ExperimentName != ""); err != nil {
		return nil, err
	}
	e, err := a.Tracking.GetExperimentByName(r.Context(), sc, m.ExperimentName)
	if err != nil {
		return nil, err
	}
	return map[string]any{"experiment": experimentOut(e)}, nil
}

type searchMsg struct {
	ExperimentIDs []string `json:"experiment_ids"`
	Filter        string   `json:"filter"`
	MaxResults    optInt64 `json:"max_results"`
	OrderBy       []string `json:"order_by"`
	PageToken     string   `json:"page_token"`
	ViewType      string   `json:"view_type"`
	RunViewType   string   `json:"run_view_type"`
}

func (a *API) searchExperiments(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m searchMsg
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	vt, err := tracking.ParseViewType("view_type", m.ViewType)
	if err != nil {
		return nil, err
	}
	list, next, err := a.Tracking.SearchExperiments(r.Context(), sc, tracking.SearchInput{Filter: m.Filter, ViewType: vt,
		MaxResults: m.MaxResults.Value, OrderBy: m.OrderBy, PageToken: m.PageToken})
	if err != nil {
		return nil, err
	}
	out := struct {
		Experiments   []wireExperiment `json:"experiments,omitempty"`
		NextPageToken string           `json:"next_page_token,omitempty"`
	}{NextPageToken: next}
	for _, e := range list {
		out.Experiments = append(out.Experiments, experimentOut(e))
	}
	return out, nil
}

func (a *API) updateExperiment(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		ExperimentID string `json:"experiment_id"`
		NewName      string `json:"new_name"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("experiment_id", m.ExperimentID != ""); err != nil {
		return nil, err
	}
	return empty{}, a.Tracking.UpdateExperiment(r.Context(), sc, m.ExperimentID, m.NewName)
}

func (a *API) deleteExperiment(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	id, err := experimentID(r, body)
	if err != nil {
		return nil, err
	}
	return empty{}, a.Tracking.DeleteExperiment(r.Context(), sc, id)
}

func (a *API) restoreExperiment(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	id, err := experimentID(r, body)
	if err != nil {
		return nil, err
	}
	return empty{}, a.Tracking.RestoreExperiment(r.Context(), sc, id)
}

type experimentTagMsg struct {
	ExperimentID string  `json:"experiment_id"`
	Key          *string `json:"key"`
	Value        *string `json:"value"`
}

func (a *API) setExperimentTag(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m experimentTagMsg
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	for _, req := range []struct {
		name string
		ok   bool
	}{{"experiment_id", m.ExperimentID != ""}, {"key", m.Key != nil}, {"value", m.Value != nil}} {
		if err := required(req.name, req.ok); err != nil {
			return nil, err
		}
	}
	return empty{}, a.Tracking.SetExperimentTag(r.Context(), sc, m.ExperimentID, *m.Key, *m.Value)
}

func (a *API) deleteExperimentTag(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m experimentTagMsg
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("experiment_id", m.ExperimentID != ""); err != nil {
		return nil, err
	}
	if err := required("key", m.Key != nil); err != nil {
		return nil, err
	}
	return empty{}, a.Tracking.DeleteExperimentTag(r.Context(), sc, m.ExperimentID, *m.Key)
}

func (a *API) createRun(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		ExperimentID string    `json:"experiment_id"`
		UserID       string    `json:"user_id"`
		RunName      string    `json:"run_name"`
		StartTime    optInt64  `json:"start_time"`
		Tags         []wireTag `json:"tags"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	run, err := a.Tracking.CreateRun(r.Context(), sc, tracking.CreateRunInput{ExperimentID: m.ExperimentID, UserID: m.UserID,
		RunName: m.RunName, StartTime: m.StartTime.ptr(), Tags: tagsIn(m.Tags)})
	if err != nil {
		return nil, err
	}
	return map[string]any{"run": runOut(run)}, nil
}

// runIDMsg accepts run_id or its deprecated twin run_uuid.
type runIDMsg struct {
	RunID   string `json:"run_id"`
	RunUUID string `json:"run_uuid"`
}

func (m runIDMsg) id() string {
	if m.RunID != "" {
		return m.RunID
	}
	return m.RunUUID
}

func (a *API) updateRun(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		runIDMsg
		Status  string   `json:"status"`
		EndTime optInt64 `json:"end_time"`
		RunName string   `json:"run_name"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	ri, err := a.Tracking.UpdateRun(r.Context(), sc, m.id(), tracking.UpdateRunInput{Status: m.Status, EndTime: m.EndTime.ptr(), RunName: m.RunName})
	if err != nil {
		return nil, err
	}
	return map[string]any{"run_info": runInfoOut(ri)}, nil
}

// runID reads the required run_id (or run_uuid) of a request.
func runID(r *http.Request, body []byte) (string, error) {
	var m runIDMsg
	if err := decode(r, body, &m); err != nil {
		return "", err
	}
	return m.id(), required("run_id", m.id() != "")
}

func (a *API) deleteRun(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	id, err := runID(r, body)
	if err != nil {
		return nil, err
	}
	return empty{}, a.Tracking.DeleteRun(r.Context(), sc, id)
}

func (a *API) restoreRun(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	id, err := runID(r, body)
	if err != nil {
		return nil, err
	}
	return empty{}, a.Tracking.RestoreRun(r.Context(), sc, id)
}

func (a *API) getRun(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	id, err := runID(r, body)
	if err != nil {
		return nil, err
	}
	run, err := a.Tracking.GetRun(r.Context(), sc, id)
	if err != nil {
		return nil, err
	}
	return map[string]any{"run": runOut(run)}, nil
}

type metricMsg struct {
	Key       *string   `json:"key"`
	Value     optDouble `json:"value"`
	Timestamp optInt64  `json:"timestamp"`
	Step      optInt64  `json:"step"`
}

func (m metricMsg) metric() (tracking.Metric, error) {
	if err := required("key", m.Key != nil); err != nil {
		return tracking.Metric{}, err
	}
	if err := required("value", m.Value.Set); err != nil {
		return tracking.Metric{}, err
	}
	if err := required("timestamp", m.Timestamp.Set); err != nil {
		return tracking.Metric{}, err
	}
	return tracking.Metric{Key: *m.Key, Value: m.Value.Value, Timestamp: m.Timestamp.Value, Step: m.Step.Value}, nil
}

func (a *API) logMetric(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		runIDMsg
		metricMsg
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("run_id", m.id() != ""); err != nil {
		return nil, err
	}
	metric, err := m.metric()
	if err != nil {
		return nil, err
	}
	return empty{}, a.Tracking.LogBatch(r.Context(), sc, m.id(), tracking.Batch{Metrics: []tracking.Metric{metric}}, "run.log-metric")
}

type keyValueMsg struct {
	Key   *string `json:"key"`
	Value *string `json:"value"`
}

func (m keyValueMsg) check() error {
	if err := required("key", m.Key != nil); err != nil {
		return err
	}
	return required("value", m.Value != nil)
}

func (a *API) logParam(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	return a.logKeyValue(r, body, sc, "run.log-parameter", func(k, v string) tracking.Batch {
		return tracking.Batch{Params: []tracking.Param{{Key: k, Value: v}}}
	})
}

func (a *API) setTag(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	return a.logKeyValue(r, body, sc, "run.set-tag", func(k, v string) tracking.Batch {
		return tracking.Batch{Tags: []tracking.Tag{{Key: k, Value: v}}}
	})
}

// logKeyValue serves the single key/value calls (log-parameter, set-tag)
// as one-item batches.
func (a *API) logKeyValue(r *http.Request, body []byte, sc tracking.Scope, action string, batch func(k, v string) tracking.Batch) (any, error) {
	var m struct {
		runIDMsg
		keyValueMsg
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("run_id", m.id() != ""); err != nil {
		return nil, err
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return empty{}, a.Tracking.LogBatch(r.Context(), sc, m.id(), batch(*m.Key, *m.Value), action)
}

func (a *API) deleteTag(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		runIDMsg
		Key *string `json:"key"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("run_id", m.id() != ""); err != nil {
		return nil, err
	}
	if err := required("key", m.Key != nil); err != nil {
		return nil, err
	}
	return empty{}, a.Tracking.DeleteTag(r.Context(), sc, m.id(), *m.Key)
}

func (a *API) logBatch(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	if len(body) > maxBatchRequest {
		return nil, fault.New(fault.Invalid, "Batched logging API requests must be at most %d bytes, got a request of size %d.", maxBatchRequest, len(body))
	}
	var m struct {
		RunID   string        `json:"run_id"`
		Metrics []metricMsg   `json:"metrics"`
		Params  []keyValueMsg `json:"params"`
		Tags    []keyValueMsg `json:"tags"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("run_id", m.RunID != ""); err != nil {
		return nil, err
	}
	var b tracking.Batch
	for _, mm := range m.Metrics {
		metric, err := mm.metric()
		if err != nil {
			return nil, err
		}
		b.Metrics = append(b.Metrics, metric)
	}
	for _, p := range m.Params {
		if err := p.check(); err != nil {
			return nil, err
		}
		b.Params = append(b.Params, tracking.Param{Key: *p.Key, Value: *p.Value})
	}
	for _, t := range m.Tags {
		if err := t.check(); err != nil {
			return nil, err
		}
		b.Tags = append(b.Tags, tracking.Tag{Key: *t.Key, Value: *t.Value})
	}
	return empty{}, a.Tracking.LogBatch(r.Context(), sc, m.RunID, b, "run.log-batch")
}

func (a *API) logModel(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		RunID     string `json:"run_id"`
		ModelJSON string `json:"model_json"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("run_id", m.RunID != ""); err != nil {
		return nil, err
	}
	if err := required("model_json", m.ModelJSON != ""); err != nil {
		return nil, err
	}
	return empty{}, a.Tracking.LogModel(r.Context(), sc, m.RunID, m.ModelJSON)
}

func (a *API) logInputs(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		RunID    string             `json:"run_id"`
		Datasets []wireDatasetInput `json:"datasets"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("run_id", m.RunID != ""); err != nil {
		return nil, err
	}
	inputs := make([]tracking.DatasetInput, len(m.Datasets))
	for i, d := range m.Datasets {
		inputs[i] = tracking.DatasetInput{Tags: tagsIn(d.Tags), Dataset: tracking.Dataset{Name: d.Dataset.Name, Digest: d.Dataset.Digest,
			SourceType: d.Dataset.SourceType, Source: d.Dataset.Source, Schema: d.Dataset.Schema, Profile: d.Dataset.Profile}}
	}
	return empty{}, a.Tracking.LogInputs(r.Context(), sc, m.RunID, inputs)
}

func (a *API) searchRuns(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m searchMsg
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	vt, err := tracking.ParseViewType("run_view_type", m.RunViewType)
	if err != nil {
		return nil, err
	}
	runs, next, err := a.Tracking.SearchRuns(r.Context(), sc, tracking.SearchInput{ExperimentIDs: m.ExperimentIDs, Filter: m.Filter,
		ViewType: vt, MaxResults: m.MaxResults.Value, OrderBy: m.OrderBy, PageToken: m.PageToken})
	if err != nil {
		return nil, err
	}
	out := struct {
		Runs          []wireRun `json:"runs,omitempty"`
		NextPageToken string    `json:"next_page_token,omitempty"`
	}{NextPageToken: next}
	for _, run := range runs {
		out.Runs = append(out.Runs, runOut(run))
	}
	return out, nil
}

func (a *API) getMetricHistory(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		runIDMsg
		MetricKey  string   `json:"metric_key"`
		PageToken  string   `json:"page_token"`
		MaxResults optInt64 `json:"max_results"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("run_id", m.id() != ""); err != nil {
		return nil, err
	}
	if err := required("metric_key", m.MetricKey != ""); err != nil {
		return nil, err
	}
	ms, next, err := a.Tracking.GetMetricHistory(r.Context(), sc, m.id(), m.MetricKey, m.PageToken, m.MaxResults.Value)
	if err != nil {
		return nil, err
	}
	return rawJSON(appendMetricsJSON(make([]byte, 0, 64+len(ms)*72), ms, next)), nil
}

func (a *API) getMetricHistoryBulkInterval(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		RunIDs     []string `json:"run_ids"`
		MetricKey  string   `json:"metric_key"`
		StartStep  optInt64 `json:"start_step"`
		EndStep    optInt64 `json:"end_step"`
		MaxResults optInt64 `json:"max_results"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	ms, err := a.Tracking.GetMetricHistoryBulkInterval(r.Context(), sc, tracking.BulkIntervalInput{RunIDs: m.RunIDs, Key: m.MetricKey,
		StartStep: m.StartStep.ptr(), EndStep: m.EndStep.ptr(), MaxResults: m.MaxResults.Value})
	if err != nil {
		return nil, err
	}
	return rawJSON(appendMetricsJSON(make([]byte, 0, 64+len(ms)*110), ms, "")), nil
}

// getMetricHistoryBulk is the older chart call of MLflow's UI: the whole
// history of one metric for up to 100 runs (run_id repeated), each run's
// points by timestamp, then step, then value, at most max_results in all.
func (a *API) getMetricHistoryBulk(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	q := r.URL.Query()
	runIDs := q["run_id"]
	if len(runIDs) == 0 {
		return nil, fault.New(fault.Invalid, "GetMetricHistoryBulk request must specify at least one run_id.")
	}
	if len(runIDs) > tracking.MaxBulkRuns {
		return nil, fault.New(fault.Invalid, "GetMetricHistoryBulk request cannot specify more than %d run_ids. Received %d run_ids.", tracking.MaxBulkRuns, len(runIDs))
	}
	key := q.Get("metric_key")
	if key == "" {
		return nil, fault.New(fault.Invalid, "GetMetricHistoryBulk request must specify a metric_key.")
	}
	max := tracking.MaxHistoryResults
	if s := q.Get("max_results"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return nil, fault.New(fault.Invalid, "Invalid value %s for parameter 'max_results' supplied.", s)
		}
		max = min(n, tracking.MaxHistoryResults)
	}
	sorted := append([]string(nil), runIDs...)
	sort.Strings(sorted)
	var out []tracking.Metric
	for _, id := range sorted {
		points, _, err := a.Tracking.GetMetricHistory(r.Context(), sc, id, key, "", int64(max))
		if err != nil {
			return nil, err
		}
		sort.SliceStable(points, func(i, j int) bool {
			if points[i].Timestamp != points[j].Timestamp {
				return points[i].Timestamp < points[j].Timestamp
			}
			if points[i].Step != points[j].Step {
				return points[i].Step < points[j].Step
			}
			return points[i].Value < points[j].Value
		})
		for i := range points {
			points[i].RunID = id
		}
		out = append(out, points...)
		if len(out) >= max {
			out = out[:max]
			break
		}
	}
	// MLflow returns this one as a plain dict, so an empty answer still
	// has its list.
	if len(out) == 0 {
		return rawJSON("{\"metrics\":[]}\n"), nil
	}
	return rawJSON(appendMetricsJSON(make([]byte, 0, 64+len(out)*110), out, "")), nil
}

type fileInfo struct {
	Path     string `json:"path"`
	IsDir    bool   `json:"is_dir"`
	FileSize *int64 `json:"file_size,omitempty"`
}

// listArtifacts lists a run's artifacts below path, for runs whose
// artifacts Plinth stores (mlflow-artifacts:/ URIs).
func (a *API) listArtifacts(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		runIDMsg
		Path      string `json:"path"`
		PageToken string `json:"page_token"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("run_id", m.id() != ""); err != nil {
		return nil, err
	}
	run, err := a.Tracking.GetRun(r.Context(), sc, m.id())
	if err != nil {
		return nil, err
	}
	out := struct {
		RootURI string     `json:"root_uri"`
		Files   []fileInfo `json:"files,omitempty"`
	}{RootURI: run.Info.ArtifactURI}
	root, ok := strings.CutPrefix(run.Info.ArtifactURI, "mlflow-artifacts:/")
	if !ok || a.Artifacts == nil {
		return out, nil
	}
	if first, _, _ := strings.Cut(strings.TrimLeft(root, "/"), "/"); first != sc.Workspace {
		// Never list another workspace's files through this one.
		return out, nil
	}
	rel := strings.Trim(m.Path, "/")
	prefix := strings.TrimLeft(root, "/")
	if rel != "" {
		clean, err := artifact.CleanKey(rel)
		if err != nil {
			return nil, err
		}
		prefix += "/" + clean
	}
	entries, err := a.Artifacts.List(r.Context(), prefix)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		p := e.Path
		if rel != "" {
			p = rel + "/" + lastSegment(e.Path)
		} else {
			p = lastSegment(e.Path)
		}
		fi := fileInfo{Path: p, IsDir: e.IsDir}
		if !e.IsDir {
			size := e.Size
			fi.FileSize = &size
		}
		out.Files = append(out.Files, fi)
	}
	return out, nil
}

func lastSegment(p string) string {
	p = strings.TrimRight(p, "/")
	if i := strings.LastIndex(p, "/"); i >= 0 {
		return p[i+1:]
	}
	return p
}
