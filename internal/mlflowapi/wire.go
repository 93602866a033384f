package mlflowapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/plinth-dev/plinth/internal/tracking"
)

// The JSON messages of MLflow's REST API, written the way MLflow's server
// writes them: proto field names, fields left unset omitted, int64 fields
// as JSON numbers, and doubles as protobuf JSON does (NaN as "NaN").

type wireTag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type wireExperiment struct {
	ExperimentID     string    `json:"experiment_id"`
	Name             string    `json:"name"`
	ArtifactLocation string    `json:"artifact_location"`
	LifecycleStage   string    `json:"lifecycle_stage"`
	LastUpdateTime   int64     `json:"last_update_time"`
	CreationTime     int64     `json:"creation_time"`
	Tags             []wireTag `json:"tags,omitempty"`
}

type wireRunInfo struct {
	RunID          string `json:"run_id"`
	RunUUID        string `json:"run_uuid"`
	RunName        string `json:"run_name,omitempty"`
	ExperimentID   string `json:"experiment_id"`
	UserID         string `json:"user_id,omitempty"`
	Status         string `json:"status"`
	StartTime      *int64 `json:"start_time,omitempty"`
	EndTime        *int64 `json:"end_time,omitempty"`
	ArtifactURI    string `json:"artifact_uri,omitempty"`
	LifecycleStage string `json:"lifecycle_stage"`
}

type wireMetric struct {
	Key       string     `json:"key"`
	Value     wireDouble `json:"value"`
	Timestamp int64      `json:"timestamp"`
	Step      int64      `json:"step"`
	RunID     string     `json:"run_id,omitempty"`
}

type wireParam struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type wireRunData struct {
	Metrics []wireMetric `json:"metrics,omitempty"`
	Params  []wireParam  `json:"params,omitempty"`
	Tags    []wireTag    `json:"tags,omitempty"`
}

type wireDataset struct {
	Name       string `json:"name"`
	Digest     string `json:"digest"`
	SourceType string `json:"source_type"`
	Source     string `json:"source"`
	Schema     string `json:"schema,omitempty"`
	Profile    string `json:"profile,omitempty"`
}

type wireDatasetInput struct {
	Tags    []wireTag   `json:"tags,omitempty"`
	Dataset wireDataset `json:"dataset"`
}

type wireRunInputs struct {
	DatasetInputs []wireDatasetInput `json:"dataset_inputs,omitempty"`
}

type wireRun struct {
	Info   wireRunInfo   `json:"info"`
	Data   wireRunData   `json:"data"`
	Inputs wireRunInputs `json:"inputs"`
}

// wireDouble writes a double as protobuf JSON does: NaN and the
// infinities as strings, everything else as a number.
type wireDouble float64

func (d wireDouble) MarshalJSON() ([]byte, error) {
	v := float64(d)
	switch {
	case math.IsNaN(v):
		return []byte(`"NaN"`), nil
	case math.IsInf(v, 1):
		return []byte(`"Infinity"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-Infinity"`), nil
	}
	return json.Marshal(v)
}

func tagsOut(tags []tracking.Tag) []wireTag {
	if len(tags) == 0 {
		return nil
	}
	out := make([]wireTag, len(tags))
	for i, t := range tags {
		out[i] = wireTag{t.Key, t.Value}
	}
	return out
}

func experimentOut(e tracking.Experiment) wireExperiment {
	return wireExperiment{ExperimentID: e.ExperimentID, Name: e.Name, ArtifactLocation: e.ArtifactLocation, LifecycleStage: e.LifecycleStage,
		LastUpdateTime: e.LastUpdateTime, CreationTime: e.CreationTime, Tags: tagsOut(e.Tags)}
}

func runInfoOut(ri tracking.RunInfo) wireRunInfo {
	return wireRunInfo{RunID: ri.RunID, RunUUID: ri.RunID, RunName: ri.RunName, ExperimentID: ri.ExperimentID, UserID: ri.UserID,
		Status: ri.Status, StartTime: ri.StartTime, EndTime: ri.EndTime, ArtifactURI: ri.ArtifactURI, LifecycleStage: ri.LifecycleStage}
}

func metricsOut(ms []tracking.Metric) []wireMetric {
	if len(ms) == 0 {
		return nil
	}
	out := make([]wireMetric, len(ms))
	for i, m := range ms {
		out[i] = wireMetric{Key: m.Key, Value: wireDouble(m.Value), Timestamp: m.Timestamp, Step: m.Step, RunID: m.RunID}
	}
	return out
}

func runOut(r tracking.Run) wireRun {
	out := wireRun{Info: runInfoOut(r.Info), Data: wireRunData{Metrics: metricsOut(r.Metrics), Tags: tagsOut(r.Tags)}}
	for _, p := range r.Params {
		out.Data.Params = append(out.Data.Params, wireParam{p.Key, p.Value})
	}
	for _, in := range r.Inputs {
		d := in.Dataset
		out.Inputs.DatasetInputs = append(out.Inputs.DatasetInputs, wireDatasetInput{Tags: tagsOut(in.Tags),
			Dataset: wireDataset{Name: d.Name, Digest: d.Digest, SourceType: d.SourceType, Source: d.Source, Schema: d.Schema, Profile: d.Profile}})
	}
	return out
}

// Request values arrive as protobuf JSON writes them, or as hand-written
// JSON: an int64 may be a number or a string, a double a number, a string
// or (from Python's json.dumps) a bare NaN or Infinity token.

// optInt64 is an int64 request field that records whether it was sent.
type optInt64 struct {
	Set   bool
	Value int64
}

func (o *optInt64) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	s := string(bytes.Trim(b, `"`))
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f != math.Trunc(f) {
			return fmt.Errorf("%s is not an integer", b)
		}
		v = int64(f)
	}
	o.Set, o.Value = true, v
	return nil
}

func (o optInt64) ptr() *int64 {
	if !o.Set {
		return nil
	}
	v := o.Value
	return &v
}

// optDouble is a double request field that records whether it was sent.
type optDouble struct {
	Set   bool
	Value float64
}

func (o *optDouble) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	s := string(bytes.Trim(b, `"`))
	switch s {
	case "NaN", "nan":
		o.Set, o.Value = true, math.NaN()
		return nil
	case "Infinity", "inf", "+Infinity":
		o.Set, o.Value = true, math.Inf(1)
		return nil
	case "-Infinity", "-inf":
		o.Set, o.Value = true, math.Inf(-1)
		return nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("%s is not a number", b)
	}
	o.Set, o.Value = true, v
	return nil
}

// quoteBareNonFinite turns the bare NaN, Infinity and -Infinity tokens
// that Python's json.dumps writes (outside strings) into the quoted forms
// protobuf JSON uses, so the standard decoder accepts them.
func quoteBareNonFinite(b []byte) []byte {
	if !bytes.Contains(b, []byte("NaN")) && !bytes.Contains(b, []byte("Infinity")) {
		return b
	}
	var out bytes.Buffer
	inString, escaped := false, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			out.WriteByte(c)
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		if c == '"' {
			inString = true
			out.WriteByte(c)
			continue
		}
		matched := false
		for _, tok := range []string{"-Infinity", "Infinity", "NaN"} {
			if bytes.HasPrefix(b[i:], []byte(tok)) {
				out.WriteString(`"` + tok + `"`)
				i += len(tok) - 1
				matched = true
				break
			}
		}
		if !matched {
			out.WriteByte(c)
		}
	}
	return out.Bytes()
}

// rawJSON is an answer already encoded, written as is.
type rawJSON []byte

// appendMetricsJSON encodes a metrics answer by hand: histories run to
// 25,000 points a page, and reflection-based encoding was most of the cost
// of serving them. The output is what encoding/json would write for the
// same wireMetric values.
func appendMetricsJSON(b []byte, ms []tracking.Metric, nextPageToken string) []byte {
	b = append(b, '{')
	if len(ms) > 0 {
		b = append(b, `"metrics":[`...)
		var lastKey string
		var keyJSON []byte
		for i, m := range ms {
			if i > 0 {
				b = append(b, ',')
			}
			if i == 0 || m.Key != lastKey {
				keyJSON, _ = json.Marshal(m.Key)
				lastKey = m.Key
			}
			b = append(b, `{"key":`...)
			b = append(b, keyJSON...)
			b = append(b, `,"value":`...)
			b = appendDouble(b, m.Value)
			b = append(b, `,"timestamp":`...)
			b = strconv.AppendInt(b, m.Timestamp, 10)
			b = append(b, `,"step":`...)
			b = strconv.AppendInt(b, m.Step, 10)
			if m.RunID != "" {
				b = append(b, `,"run_id":`...)
				id, _ := json.Marshal(m.RunID)
				b = append(b, id...)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if nextPageToken != "" {
		if len(ms) > 0 {
			b = append(b, ',')
		}
		tok, _ := json.Marshal(nextPageToken)
		b = append(b, `"next_page_token":`...)
		b = append(b, tok...)
	}
	return append(b, '}', '\n')
}

// appendDouble writes a double as wireDouble does, with encoding/json's
// number format.
func appendDouble(b []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(b, `"NaN"`...)
	case math.IsInf(v, 1):
		return append(b, `"Infinity"`...)
	case math.IsInf(v, -1):
		return append(b, `"-Infinity"`...)
	}
	format := byte('f')
	if abs := math.Abs(v); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, v, format, -1, 64)
	if format == 'e' {
		// 1e-07 -> 1e-7, as encoding/json writes it.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
