package client

import (
	"context"
	"encoding/json"
	"math"
	"net/url"
	"strconv"
)

// The CLI reads tracking data through the MLflow REST API, the same one
// every MLflow client uses, under the workspace's tracking URI.

// MLflowBase is the API root for a workspace: the root path serves the
// "default" workspace, /w/{name} any other.
func MLflowBase(workspace string) string {
	if workspace == "" || workspace == "default" {
		return "/api/2.0/mlflow"
	}
	return "/w/" + url.PathEscape(workspace) + "/api/2.0/mlflow"
}

// Tag is an MLflow key/value tag.
type Tag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Experiment is an MLflow experiment.
type Experiment struct {
	ExperimentID     string `json:"experiment_id"`
	Name             string `json:"name"`
	ArtifactLocation string `json:"artifact_location"`
	LifecycleStage   string `json:"lifecycle_stage"`
	LastUpdateTime   int64  `json:"last_update_time"`
	CreationTime     int64  `json:"creation_time"`
	Tags             []Tag  `json:"tags,omitempty"`
}

// Double is an MLflow double, which may arrive as "NaN".
type Double float64

// UnmarshalJSON accepts numbers and protobuf JSON's "NaN"/"Infinity".
func (d *Double) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case `"NaN"`:
		*d = Double(math.NaN())
		return nil
	case `"Infinity"`:
		*d = Double(math.Inf(1))
		return nil
	case `"-Infinity"`:
		*d = Double(math.Inf(-1))
		return nil
	}
	var f float64
	err := json.Unmarshal(b, &f)
	*d = Double(f)
	return err
}

// MarshalJSON writes NaN the way MLflow does.
func (d Double) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(d)) {
		return []byte(`"NaN"`), nil
	}
	return json.Marshal(float64(d))
}

// Metric is one metric point.
type Metric struct {
	Key       string `json:"key"`
	Value     Double `json:"value"`
	Timestamp int64  `json:"timestamp"`
	Step      int64  `json:"step"`
}

// Run is an MLflow run.
type Run struct {
	Info struct {
		RunID          string `json:"run_id"`
		RunName        string `json:"run_name"`
		ExperimentID   string `json:"experiment_id"`
		UserID         string `json:"user_id"`
		Status         string `json:"status"`
		StartTime      int64  `json:"start_time"`
		EndTime        int64  `json:"end_time,omitempty"`
		ArtifactURI    string `json:"artifact_uri"`
		LifecycleStage string `json:"lifecycle_stage"`
	} `json:"info"`
	Data struct {
		Metrics []Metric `json:"metrics,omitempty"`
		Params  []Tag    `json:"params,omitempty"`
		Tags    []Tag    `json:"tags,omitempty"`
	} `json:"data"`
}

// SearchExperiments returns one page of experiments.
func (c *Client) SearchExperiments(ctx context.Context, ws, filter, viewType string, orderBy []string, pageToken string, max int) ([]Experiment, string, error) {
	body := map[string]any{"filter": filter, "max_results": max, "order_by": orderBy, "page_token": pageToken, "view_type": viewType}
	var out struct {
		Experiments []Experiment `json:"experiments"`
		Next        string       `json:"next_page_token"`
	}
	err := c.Do(ctx, "POST", MLflowBase(ws)+"/experiments/search", nil, body, &out)
	return out.Experiments, out.Next, err
}

// GetExperiment returns an experiment by id, or by name when byName.
func (c *Client) GetExperiment(ctx context.Context, ws, idOrName string, byName bool) (Experiment, error) {
	var out struct {
		Experiment Experiment `json:"experiment"`
	}
	if byName {
		return out.Experiment, c.Do(ctx, "GET", MLflowBase(ws)+"/experiments/get-by-name", url.Values{"experiment_name": {idOrName}}, nil, &out)
	}
	return out.Experiment, c.Do(ctx, "GET", MLflowBase(ws)+"/experiments/get", url.Values{"experiment_id": {idOrName}}, nil, &out)
}

// SearchRuns returns one page of runs.
func (c *Client) SearchRuns(ctx context.Context, ws string, experimentIDs []string, filter, viewType string, orderBy []string, pageToken string, max int) ([]Run, string, error) {
	body := map[string]any{"experiment_ids": experimentIDs, "filter": filter, "run_view_type": viewType, "max_results": max, "order_by": orderBy, "page_token": pageToken}
	var out struct {
		Runs []Run  `json:"runs"`
		Next string `json:"next_page_token"`
	}
	err := c.Do(ctx, "POST", MLflowBase(ws)+"/runs/search", nil, body, &out)
	return out.Runs, out.Next, err
}

// GetRun returns a run.
func (c *Client) GetRun(ctx context.Context, ws, runID string) (Run, error) {
	var out struct {
		Run Run `json:"run"`
	}
	return out.Run, c.Do(ctx, "GET", MLflowBase(ws)+"/runs/get", url.Values{"run_id": {runID}}, nil, &out)
}

// MetricHistory returns every point of a metric, following pages.
func (c *Client) MetricHistory(ctx context.Context, ws, runID, key string) ([]Metric, error) {
	var all []Metric
	token := ""
	for {
		q := url.Values{"run_id": {runID}, "metric_key": {key}, "max_results": {strconv.Itoa(25000)}}
		if token != "" {
			q.Set("page_token", token)
		}
		var out struct {
			Metrics []Metric `json:"metrics"`
			Next    string   `json:"next_page_token"`
		}
		if err := c.Do(ctx, "GET", MLflowBase(ws)+"/metrics/get-history", q, nil, &out); err != nil {
			return nil, err
		}
		all = append(all, out.Metrics...)
		if out.Next == "" {
			return all, nil
		}
		token = out.Next
	}
}
