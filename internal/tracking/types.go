// Package tracking is Plinth's experiment tracking: experiments, runs and
// what runs log (metrics, params, tags, dataset inputs), with MLflow's
// rules and limits, stored in the shared database. The MLflow wire format
// lives in internal/mlflowapi; this package knows nothing of HTTP.
package tracking

import "math"

// Lifecycle stages.
const (
	StageActive  = "active"
	StageDeleted = "deleted"
)

// Run statuses, as MLflow names them.
var runStatuses = map[string]bool{"RUNNING": true, "SCHEDULED": true, "FINISHED": true, "FAILED": true, "KILLED": true}

// MLflow's limits (mlflow/utils/validation.py in MLflow 2.12).
const (
	MaxParamsTagsPerBatch  = 100
	MaxMetricsPerBatch     = 1000
	MaxEntitiesPerBatch    = 1000
	MaxParamValueLength    = 6000
	MaxTagValueLength      = 5000
	MaxExperimentNameLen   = 500
	MaxExperimentTagKeyLen = 250
	MaxExperimentTagValLen = 5000
	MaxEntityKeyLength     = 250
	MaxDatasetNameSize     = 500
	MaxDatasetDigestSize   = 36
	MaxDatasetSchemaSize   = 1048575
	MaxDatasetSourceSize   = 65535
	MaxDatasetProfileSize  = 16777215
	MaxInputTagKeySize     = 255
	MaxInputTagValueSize   = 500
	SearchMaxResults       = 50000
	SearchDefaultResults   = 1000
	MaxHistoryResults      = 25000
	MaxBulkRuns            = 100
	MaxBulkResultsPerRun   = 2500
)

// Tag is a key/value pair on an experiment, a run or a dataset input.
type Tag struct {
	Key   string
	Value string
}

// Experiment groups runs.
type Experiment struct {
	pk               int64
	ExperimentID     string
	Name             string
	ArtifactLocation string
	LifecycleStage   string
	CreationTime     int64
	LastUpdateTime   int64
	Tags             []Tag
}

// RunInfo is a run's metadata.
type RunInfo struct {
	RunID          string
	RunName        string
	ExperimentID   string
	UserID         string
	Status         string
	StartTime      *int64
	EndTime        *int64
	ArtifactURI    string
	LifecycleStage string
}

// Metric is one logged point. RunID is set only where a response mixes
// runs (bulk history).
type Metric struct {
	Key       string
	Value     float64
	Timestamp int64
	Step      int64
	RunID     string
}

// Param is a run parameter; once logged its value never changes.
type Param struct {
	Key   string
	Value string
}

// Dataset is a dataset a run used, as MLflow describes it.
type Dataset struct {
	Name       string
	Digest     string
	SourceType string
	Source     string
	Schema     string
	Profile    string
}

// DatasetInput links a dataset to a run, with tags such as its context.
type DatasetInput struct {
	Tags    []Tag
	Dataset Dataset
}

// Run is a run with everything it logged (latest value per metric).
type Run struct {
	Info    RunInfo
	Metrics []Metric
	Params  []Param
	Tags    []Tag
	Inputs  []DatasetInput
}

// storedValue is how a metric value is kept: SQL has no NaN, and MLflow
// clamps infinities to the largest finite doubles.
func storedValue(v float64) (value float64, isNaN bool) {
	switch {
	case math.IsNaN(v):
		return 0, true
	case math.IsInf(v, 1):
		return math.MaxFloat64, false
	case math.IsInf(v, -1):
		return -math.MaxFloat64, false
	}
	return v, false
}

func loadedValue(v float64, isNaN bool) float64 {
	if isNaN {
		return math.NaN()
	}
	return v
}
