// Package jobs owns job specs, their lifecycle and the scheduler.
package jobs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"sigs.k8s.io/yaml"

	"github.com/plinth-dev/plinth/internal/fault"
)

// Spec is a command job as written in a job file: the Azure ML CLI v2
// commandJob YAML (https://azuremlschemas.azureedge.net/latest/commandJob.schema.json),
// field for field where Azure has the field, with a few Plinth
// extensions (retries, priority). Parse reads one; Validate checks one
// built another way. Relative local paths (code, local inputs,
// conda_file) are relative to BaseDir, the job file's directory.
type Spec struct {
	Schema         string            `json:"$schema,omitempty"`
	Type           string            `json:"type"`
	Name           string            `json:"name,omitempty"`
	DisplayName    string            `json:"display_name,omitempty"`
	ExperimentName string            `json:"experiment_name,omitempty"`
	Description    string            `json:"description,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
	// Command is the shell command line, with ${{inputs.x}} and
	// ${{outputs.y}} references and $[[...]] optional blocks; Render
	// fills them in.
	Command string `json:"command"`
	// Code is the local folder uploaded with the job, as written.
	Code string `json:"code,omitempty"`
	// Environment is nil when the job names none: the executor's default
	// (on the local executor, the host's own environment).
	Environment          *Environment      `json:"environment,omitempty"`
	EnvironmentVariables map[string]string `json:"environment_variables,omitempty"`
	Inputs               map[string]Input  `json:"inputs,omitempty"`
	Outputs              map[string]Output `json:"outputs,omitempty"`
	// Compute is a compute target name, without Azure's "azureml:" prefix.
	Compute   string    `json:"compute,omitempty"`
	Resources Resources `json:"resources"`
	Limits    Limits    `json:"limits,omitzero"`
	// Retries is a Plinth extension: how often a failed run is started again.
	Retries Retries `json:"retries,omitzero"`
	// Priority is a Plinth extension: higher runs first; low, medium and
	// high are -100, 0 and 100.
	Priority      int           `json:"priority,omitempty"`
	QueueSettings QueueSettings `json:"queue_settings,omitzero"`

	// BaseDir is the directory relative local paths are resolved against:
	// the job file's, or "" (the working directory) for a spec that came
	// from no file.
	BaseDir string `json:"-"`
}

// TypeCommand is the only job type for now.
const TypeCommand = "command"

// Environment is what a job runs in: a registered environment
// (Ref, "azureml:name:version" or "azureml:name@latest") or an inline one
// (an image, or a Docker build context, with an optional conda file).
// A job file's plain string that is not an azureml: reference is read
// as an image.
type Environment struct {
	Ref         string            `json:"-"`
	Name        string            `json:"name,omitempty"`
	Version     string            `json:"version,omitempty"`
	Description string            `json:"description,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	Image       string            `json:"image,omitempty"`
	// CondaFile is a local path, recorded for the executor to apply.
	CondaFile string `json:"conda_file,omitempty"`
	Build     *Build `json:"build,omitempty"`
}

// Build is a Docker build context for an environment.
type Build struct {
	Path           string `json:"path"`
	DockerfilePath string `json:"dockerfile_path,omitempty"`
}

// MarshalJSON writes a reference as the plain string a job file uses.
func (e Environment) MarshalJSON() ([]byte, error) {
	if e.Ref != "" {
		return json.Marshal(e.Ref)
	}
	type plain Environment
	return json.Marshal(plain(e))
}

// Input types.
const (
	TypeURIFile     = "uri_file"
	TypeURIFolder   = "uri_folder"
	TypeMLTable     = "mltable"
	TypeMLflowModel = "mlflow_model"
	TypeCustomModel = "custom_model"
	TypeString      = "string"
	TypeInteger     = "integer"
	TypeNumber      = "number"
	TypeBoolean     = "boolean"
)

// Input is one job input: a literal (string, integer, number, boolean)
// or data found at Path.
type Input struct {
	Type string `json:"type"`
	// Path is where data inputs come from: data:name:version (a Plinth data
	// asset; azureml:name:version means the same), runs:/<run id>/<path>,
	// mlflow-artifacts:/..., a URL (s3://, https://, azureml://...) or a
	// local path. See ParseSource.
	Path string `json:"path,omitempty"`
	// Mode is how data reaches the job: ro_mount (the default), download,
	// direct, or for mltable eval_mount and eval_download.
	Mode string `json:"mode,omitempty"`
	// Value is a literal's value, nil when an optional literal is absent.
	// A job file's default is read as the value.
	Value       *string `json:"value,omitempty"`
	Optional    bool    `json:"optional,omitempty"`
	Description string  `json:"description,omitempty"`
}

// IsLiteral reports whether the input is a value rather than data.
func (in Input) IsLiteral() bool { return literalTypes[in.Type] }

// Given reports whether the job supplies the input (a value or a path).
func (in Input) Given() bool {
	if in.IsLiteral() {
		return in.Value != nil
	}
	return in.Path != ""
}

// Output is one job output: a folder or file the job writes, uploaded
// (or mounted read-write) to Path or the run's artifacts, and registered
// as data asset Name (version Version) when Name is given.
type Output struct {
	Type string `json:"type"`
	Path string `json:"path,omitempty"`
	// Mode is rw_mount (the default), upload or direct.
	Mode        string `json:"mode,omitempty"`
	Name        string `json:"name,omitempty"`
	Version     string `json:"version,omitempty"`
	Description string `json:"description,omitempty"`
}

// Resources says what machine to run on, how many of them, and the size
// of /dev/shm.
type Resources struct {
	InstanceType  string `json:"instance_type,omitempty"`
	InstanceCount int    `json:"instance_count"`
	// ShmSize is Docker's format: a number and b, k, m or g.
	ShmSize string `json:"shm_size,omitempty"`
}

// ShmBytes returns ShmSize in bytes, 0 when not set.
func (r Resources) ShmBytes() int64 {
	n, _ := parseShmSize(r.ShmSize)
	return n
}

// Limits bounds a run.
type Limits struct {
	// Timeout is in whole seconds, as Azure writes it; 0 means none.
	Timeout int64 `json:"timeout,omitempty"`
}

// TimeoutDuration returns the timeout, 0 when there is none.
func (l Limits) TimeoutDuration() time.Duration { return time.Duration(l.Timeout) * time.Second }

// Retries is how often a failed run is started again, and how long to
// wait first; BackoffSeconds 0 leaves the wait to the scheduler.
type Retries struct {
	Max            int   `json:"max"`
	BackoffSeconds int64 `json:"backoff_seconds,omitempty"`
}

// QueueSettings carries Azure's job tier: "spot" (preemptible, cheaper)
// or "standard".
type QueueSettings struct {
	JobTier string `json:"job_tier,omitempty"`
}

// Priorities by name.
const (
	PriorityLow    = -100
	PriorityMedium = 0
	PriorityHigh   = 100
	maxPriority    = 1000
)

// Limits on a spec, so that one job cannot bloat the database or the
// process table.
const (
	MaxSpecBytes     = 1 << 20
	maxCommand       = 64 << 10
	maxDisplayName   = 256
	maxDescription   = 16 << 10
	maxTags          = 50
	maxTagKey        = 128
	maxTagValue      = 512
	maxEnvVars       = 200
	maxEnvValue      = 32 << 10
	maxPorts         = 100 // inputs, and outputs
	maxValue         = 16 << 10
	maxPath          = 4096
	maxInstanceCount = 1000
	maxRetries       = 100
	maxTimeout       = 366 * 24 * 3600 // seconds
	maxShmBytes      = 1 << 40
)

var (
	jobNameRE     = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{0,254}$`)
	portNameRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,254}$`)
	computeRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$`)
	skuRE         = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	envVarRE      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	assetNameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)
	assetVerRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	envRefRE      = regexp.MustCompile(`^azureml:([A-Za-z0-9_][A-Za-z0-9._-]{0,254})(?::([A-Za-z0-9][A-Za-z0-9._-]{0,63})|@([A-Za-z0-9_-]{1,64}))$`)
	shmSizeRE     = regexp.MustCompile(`^([0-9]{1,13})([bkmgBKMG]?)$`)
	urlSchemeRE   = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*)://`)
	literalTypes  = map[string]bool{TypeString: true, TypeInteger: true, TypeNumber: true, TypeBoolean: true}
	inputTypes    = []string{TypeURIFile, TypeURIFolder, TypeMLTable, TypeMLflowModel, TypeCustomModel, TypeString, TypeInteger, TypeNumber, TypeBoolean}
	outputTypes   = []string{TypeURIFolder, TypeURIFile, TypeMLTable, TypeMLflowModel, TypeCustomModel}
	inputModes    = []string{"ro_mount", "download", "direct", "eval_mount", "eval_download"}
	outputModes   = []string{"rw_mount", "upload", "direct"}
	jobTiers      = []string{"spot", "standard"}
	priorityNames = map[string]int{"low": PriorityLow, "medium": PriorityMedium, "high": PriorityHigh}
)

// Parse reads a command job file, YAML or JSON, and validates it.
// filename (may be empty) sets BaseDir. Errors are fault.Invalid with the
// path of the offending field ("inputs.lr.type") in Field and leading the
// message.
func Parse(data []byte, filename string) (Spec, error) {
	if len(data) > MaxSpecBytes {
		return Spec{}, fault.New(fault.TooLarge, "job file is larger than %d bytes", MaxSpecBytes)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return Spec{}, fault.New(fault.Invalid, "job file is empty")
	}
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return Spec{}, fault.New(fault.Invalid, "job file is not valid YAML or JSON: %s", strings.TrimPrefix(err.Error(), "error converting YAML to JSON: "))
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return Spec{}, fault.Wrap(fault.Invalid, err, "job file is not valid YAML or JSON")
	}
	top, ok := tree.(map[string]any)
	if !ok {
		return Spec{}, fault.New(fault.Invalid, "job file must be a mapping of fields (type, command, inputs...), not %s", kindOf(tree))
	}
	s, err := decodeSpec(node{m: top})
	if err != nil {
		return Spec{}, err
	}
	if filename != "" {
		s.BaseDir = filepath.Dir(filename)
	}
	if err := s.Validate(); err != nil {
		return Spec{}, err
	}
	return s, nil
}

// node is a decoded JSON object and its field path.
type node struct {
	path string
	m    map[string]any
}

func (n node) at(key string) string {
	if n.path == "" {
		return key
	}
	return n.path + "." + key
}

// get returns a field's value; null counts as absent.
func (n node) get(key string) (any, bool) {
	v, ok := n.m[key]
	return v, ok && v != nil
}

// fields refuses fields not in known, naming the first (in sorted order)
// with a suggestion when one is close; unsupported are Azure fields
// Plinth does not implement yet.
func (n node) fields(known []string, unsupported ...string) error {
	keys := make([]string, 0, len(n.m))
	for k := range n.m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if slices.Contains(known, k) {
			continue
		}
		if slices.Contains(unsupported, k) {
			return fault.InvalidField(n.at(k), "not supported by Plinth yet")
		}
		if s := suggest(k, known); s != "" {
			return fault.InvalidField(n.at(k), "unknown field (did you mean %s?)", s)
		}
		return fault.InvalidField(n.at(k), "unknown field")
	}
	return nil
}

// suggest returns the known field closest to k, if it is close.
func suggest(k string, known []string) string {
	best, bestD := "", 3
	for _, c := range known {
		if d := editDistance(strings.ToLower(k), c); d < bestD && d < len(c)/2+1 {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func kindOf(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func (n node) object(key string) (node, bool, error) {
	v, ok := n.get(key)
	if !ok {
		return node{}, false, nil
	}
	m, isMap := v.(map[string]any)
	if !isMap {
		return node{}, false, fault.InvalidField(n.at(key), "must be a mapping, not %s", kindOf(v))
	}
	return node{path: n.at(key), m: m}, true, nil
}

func (n node) str(key string, dst *string) error {
	v, ok := n.get(key)
	if !ok {
		return nil
	}
	s, isStr := v.(string)
	if !isStr {
		return fault.InvalidField(n.at(key), "must be a string, not %s", kindOf(v))
	}
	*dst = s
	return nil
}

// scalar turns a string, number or boolean into its string form.
func scalar(path string, v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case json.Number:
		return v.String(), nil
	case bool:
		return strconv.FormatBool(v), nil
	default:
		return "", fault.InvalidField(path, "must be a string, number or boolean, not %s", kindOf(v))
	}
}

func (n node) integer(key string, dst *int64) error {
	v, ok := n.get(key)
	if !ok {
		return nil
	}
	num, isNum := v.(json.Number)
	if !isNum {
		return fault.InvalidField(n.at(key), "must be a whole number, not %s", kindOf(v))
	}
	i, err := strconv.ParseInt(num.String(), 10, 64)
	if err != nil {
		return fault.InvalidField(n.at(key), "must be a whole number, not %s", clip(num.String()))
	}
	*dst = i
	return nil
}

func (n node) boolean(key string, dst *bool) error {
	v, ok := n.get(key)
	if !ok {
		return nil
	}
	b, isBool := v.(bool)
	if !isBool {
		return fault.InvalidField(n.at(key), "must be true or false, not %s", kindOf(v))
	}
	*dst = b
	return nil
}

// stringMap reads a mapping of scalars (tags: {version: 1} is "1").
func (n node) stringMap(key string) (map[string]string, error) {
	o, ok, err := n.object(key)
	if err != nil || !ok {
		return nil, err
	}
	out := make(map[string]string, len(o.m))
	for k, v := range o.m {
		if v == nil {
			out[k] = ""
			continue
		}
		s, err := scalar(o.at(k), v)
		if err != nil {
			return nil, err
		}
		out[k] = s
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

var topFields = []string{"$schema", "type", "name", "display_name", "experiment_name", "description", "tags", "command", "code",
	"environment", "environment_variables", "inputs", "outputs", "compute", "resources", "limits", "retries", "priority", "queue_settings"}

func decodeSpec(n node) (Spec, error) {
	s := Spec{Type: TypeCommand}
	// The type first: another type's fields are unknown to a command job.
	if err := n.str("type", &s.Type); err != nil {
		return s, err
	}
	if err := checkType(s.Type); err != nil {
		return s, err
	}
	if err := n.fields(topFields, "distribution", "identity", "services", "properties"); err != nil {
		return s, err
	}
	for _, f := range []struct {
		key string
		dst *string
	}{{"$schema", &s.Schema}, {"name", &s.Name}, {"display_name", &s.DisplayName},
		{"experiment_name", &s.ExperimentName}, {"description", &s.Description}, {"command", &s.Command}, {"code", &s.Code}} {
		if err := n.str(f.key, f.dst); err != nil {
			return s, err
		}
	}
	var err error
	if s.Tags, err = n.stringMap("tags"); err != nil {
		return s, err
	}
	if s.EnvironmentVariables, err = n.stringMap("environment_variables"); err != nil {
		return s, err
	}
	if v, ok := n.get("environment"); ok {
		if s.Environment, err = decodeEnvironment(n.at("environment"), v); err != nil {
			return s, err
		}
	}
	if in, ok, err := n.object("inputs"); err != nil {
		return s, err
	} else if ok {
		s.Inputs = make(map[string]Input, len(in.m))
		for _, name := range sortedKeys(in.m) {
			if s.Inputs[name], err = decodeInput(in.at(name), in.m[name]); err != nil {
				return s, err
			}
		}
	}
	if out, ok, err := n.object("outputs"); err != nil {
		return s, err
	} else if ok {
		s.Outputs = make(map[string]Output, len(out.m))
		for _, name := range sortedKeys(out.m) {
			if s.Outputs[name], err = decodeOutput(out.at(name), out.m[name]); err != nil {
				return s, err
			}
		}
	}
	if err := n.str("compute", &s.Compute); err != nil {
		return s, err
	}
	s.Compute = strings.TrimPrefix(s.Compute, "azureml:")
	s.Resources.InstanceCount = 1
	if r, ok, err := n.object("resources"); err != nil {
		return s, err
	} else if ok {
		if err := r.fields([]string{"instance_type", "instance_count", "shm_size"}, "docker_args", "properties", "locations"); err != nil {
			return s, err
		}
		if err := r.str("instance_type", &s.Resources.InstanceType); err != nil {
			return s, err
		}
		var count int64 = 1
		if err := r.integer("instance_count", &count); err != nil {
			return s, err
		}
		if count < 1 || count > maxInstanceCount {
			return s, fault.InvalidField(r.at("instance_count"), "must be between 1 and %d", maxInstanceCount)
		}
		s.Resources.InstanceCount = int(count)
		if v, ok := r.get("shm_size"); ok {
			if s.Resources.ShmSize, err = scalar(r.at("shm_size"), v); err != nil {
				return s, err
			}
		}
	}
	if l, ok, err := n.object("limits"); err != nil {
		return s, err
	} else if ok {
		if err := l.fields([]string{"timeout"}); err != nil {
			return s, err
		}
		if v, ok := l.get("timeout"); ok {
			if s.Limits.Timeout, err = parseTimeout(l.at("timeout"), v); err != nil {
				return s, err
			}
		}
	}
	if v, ok := n.get("retries"); ok {
		if s.Retries, err = decodeRetries(n.at("retries"), v); err != nil {
			return s, err
		}
	}
	if v, ok := n.get("priority"); ok {
		if s.Priority, err = decodePriority(n.at("priority"), v); err != nil {
			return s, err
		}
	}
	if q, ok, err := n.object("queue_settings"); err != nil {
		return s, err
	} else if ok {
		if err := q.fields([]string{"job_tier"}); err != nil {
			return s, err
		}
		if err := q.str("job_tier", &s.QueueSettings.JobTier); err != nil {
			return s, err
		}
		s.QueueSettings.JobTier = strings.ToLower(s.QueueSettings.JobTier) // Azure writes Spot, Standard
	}
	return s, nil
}

func checkType(t string) error {
	switch t {
	case TypeCommand:
		return nil
	case "sweep", "pipeline", "spark", "automl", "parallel":
		return fault.InvalidField("type", "%q jobs are not supported yet; only \"command\" jobs are", t)
	default:
		return fault.InvalidField("type", "%q is not a job type; only \"command\" jobs are supported", clip(t))
	}
}

func decodeEnvironment(path string, v any) (*Environment, error) {
	switch v := v.(type) {
	case string:
		if strings.HasPrefix(v, "azureml:") {
			return &Environment{Ref: v}, nil
		}
		return &Environment{Image: v}, nil
	case map[string]any:
		n := node{path: path, m: v}
		if err := n.fields([]string{"$schema", "name", "version", "description", "tags", "image", "conda_file", "build"}, "os_type", "inference_config"); err != nil {
			return nil, err
		}
		e := &Environment{}
		var schema string
		for _, f := range []struct {
			key string
			dst *string
		}{{"$schema", &schema}, {"name", &e.Name}, {"description", &e.Description}, {"image", &e.Image}, {"conda_file", &e.CondaFile}} {
			if err := n.str(f.key, f.dst); err != nil {
				return nil, err
			}
		}
		if ver, ok := n.get("version"); ok {
			var err error
			if e.Version, err = scalar(n.at("version"), ver); err != nil {
				return nil, err
			}
		}
		var err error
		if e.Tags, err = n.stringMap("tags"); err != nil {
			return nil, err
		}
		if b, ok, err := n.object("build"); err != nil {
			return nil, err
		} else if ok {
			if err := b.fields([]string{"path", "dockerfile_path"}); err != nil {
				return nil, err
			}
			e.Build = &Build{}
			if err := b.str("path", &e.Build.Path); err != nil {
				return nil, err
			}
			if err := b.str("dockerfile_path", &e.Build.DockerfilePath); err != nil {
				return nil, err
			}
		}
		return e, nil
	default:
		return nil, fault.InvalidField(path, "must be a reference (azureml:name:version), an image name or a mapping with image, not %s", kindOf(v))
	}
}

func decodeInput(path string, v any) (Input, error) {
	switch v := v.(type) {
	case nil:
		return Input{}, fault.InvalidField(path, "has no value: give a literal (lr: 0.01) or a mapping with type and path")
	case string:
		return Input{Type: TypeString, Value: &v}, nil
	case bool:
		s := strconv.FormatBool(v)
		return Input{Type: TypeBoolean, Value: &s}, nil
	case json.Number:
		s := v.String()
		if _, err := strconv.ParseInt(s, 10, 64); err == nil {
			return Input{Type: TypeInteger, Value: &s}, nil
		}
		return Input{Type: TypeNumber, Value: &s}, nil
	case []any:
		return Input{}, fault.InvalidField(path, "must be a literal or a mapping with type and path, not a list")
	}
	n := node{path: path, m: v.(map[string]any)}
	if err := n.fields([]string{"type", "path", "mode", "value", "default", "optional", "description"}); err != nil {
		return Input{}, err
	}
	var in Input
	for _, f := range []struct {
		key string
		dst *string
	}{{"type", &in.Type}, {"path", &in.Path}, {"mode", &in.Mode}, {"description", &in.Description}} {
		if err := n.str(f.key, f.dst); err != nil {
			return in, err
		}
	}
	if err := n.boolean("optional", &in.Optional); err != nil {
		return in, err
	}
	value, hasValue := n.get("value")
	def, hasDefault := n.get("default")
	if hasValue && hasDefault {
		return in, fault.InvalidField(n.at("default"), "give value or default, not both")
	}
	key := "value"
	if hasDefault {
		value, hasValue, key = def, true, "default"
	}
	if in.Type == "" {
		in.Type = TypeURIFolder // Azure's default for inputs with a path
		if hasValue {
			in.Type = TypeString
		}
	}
	if hasValue {
		if !literalTypes[in.Type] {
			return in, fault.InvalidField(n.at(key), "only literal inputs (string, integer, number, boolean) have a %s; %s inputs take a path", key, in.Type)
		}
		s, err := scalar(n.at(key), value)
		if err != nil {
			return in, err
		}
		in.Value = &s
	}
	return in, nil
}

func decodeOutput(path string, v any) (Output, error) {
	out := Output{Type: TypeURIFolder}
	if v == nil {
		return out, nil // "outputs: {model: }" asks for a default folder
	}
	m, ok := v.(map[string]any)
	if !ok {
		return out, fault.InvalidField(path, "must be a mapping (type, path, mode, name, version), not %s", kindOf(v))
	}
	n := node{path: path, m: m}
	if err := n.fields([]string{"type", "path", "mode", "name", "version", "description"}); err != nil {
		return out, err
	}
	for _, f := range []struct {
		key string
		dst *string
	}{{"type", &out.Type}, {"path", &out.Path}, {"mode", &out.Mode}, {"name", &out.Name}, {"description", &out.Description}} {
		if err := n.str(f.key, f.dst); err != nil {
			return out, err
		}
	}
	if out.Type == "" {
		out.Type = TypeURIFolder
	}
	if ver, ok := n.get("version"); ok {
		var err error
		if out.Version, err = scalar(n.at("version"), ver); err != nil {
			return out, err
		}
	}
	return out, nil
}

// parseTimeout reads whole seconds (3600), a Go duration ("90m", "1h30m")
// or an ISO-8601 duration ("PT1H", "P1DT12H"), rounding fractions of a
// second up.
func parseTimeout(path string, v any) (int64, error) {
	bad := func() error {
		return fault.InvalidField(path, "must be whole seconds (3600) or a duration like \"90m\" or \"PT1H\", not %s", describe(v))
	}
	var d time.Duration
	switch v := v.(type) {
	case json.Number:
		secs, err := strconv.ParseInt(v.String(), 10, 64)
		if err != nil {
			return 0, bad()
		}
		if secs <= 0 {
			return 0, fault.InvalidField(path, "must be more than 0 seconds")
		}
		if secs > maxTimeout {
			return 0, fault.InvalidField(path, "more than 366 days")
		}
		return secs, nil
	case string:
		s := strings.TrimSpace(v)
		var err error
		if strings.HasPrefix(strings.ToUpper(s), "P") {
			d, err = parseISODuration(s)
		} else {
			d, err = time.ParseDuration(s)
		}
		if err != nil {
			return 0, bad()
		}
	default:
		return 0, bad()
	}
	if d <= 0 {
		return 0, fault.InvalidField(path, "must be more than 0 seconds")
	}
	if d > maxTimeout*time.Second {
		return 0, fault.InvalidField(path, "more than 366 days")
	}
	return int64((d + time.Second - 1) / time.Second), nil
}

var isoDurationRE = regexp.MustCompile(`^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$`)

// parseISODuration reads the ISO-8601 durations with fixed lengths:
// weeks, days, hours, minutes and seconds (years and months vary).
func parseISODuration(s string) (time.Duration, error) {
	s = strings.ToUpper(s)
	m := isoDurationRE.FindStringSubmatch(s)
	if m == nil || s == "P" || strings.HasSuffix(s, "T") {
		return 0, fmt.Errorf("not an ISO-8601 duration")
	}
	var total float64
	for i, unit := range []float64{7 * 86400, 86400, 3600, 60, 1} {
		if m[i+1] == "" {
			continue
		}
		f, err := strconv.ParseFloat(m[i+1], 64)
		if err != nil {
			return 0, err
		}
		total += f * unit
	}
	if total > float64(math.MaxInt64/int64(time.Second)) {
		return 0, fmt.Errorf("too long")
	}
	return time.Duration(total * float64(time.Second)), nil
}

func describe(v any) string {
	if s, err := scalar("", v); err == nil {
		return strconv.Quote(clip(s))
	}
	return kindOf(v)
}

func decodeRetries(path string, v any) (Retries, error) {
	var r Retries
	var max int64
	switch v := v.(type) {
	case json.Number:
		n := node{path: "", m: map[string]any{"retries": v}}
		if err := n.integer("retries", &max); err != nil {
			return r, fault.InvalidField(path, "must be a whole number of retries or a mapping with max and backoff_seconds")
		}
	case map[string]any:
		n := node{path: path, m: v}
		if err := n.fields([]string{"max", "backoff_seconds"}); err != nil {
			return r, err
		}
		if _, ok := n.get("max"); !ok {
			return r, fault.InvalidField(n.at("max"), "required")
		}
		if err := n.integer("max", &max); err != nil {
			return r, err
		}
		if err := n.integer("backoff_seconds", &r.BackoffSeconds); err != nil {
			return r, err
		}
		if r.BackoffSeconds < 0 || r.BackoffSeconds > 86400 {
			return r, fault.InvalidField(n.at("backoff_seconds"), "must be between 0 and 86400")
		}
		path = n.at("max")
	default:
		return r, fault.InvalidField(path, "must be a whole number of retries or a mapping with max and backoff_seconds, not %s", kindOf(v))
	}
	if max < 0 || max > maxRetries {
		return r, fault.InvalidField(path, "must be between 0 and %d", maxRetries)
	}
	r.Max = int(max)
	return r, nil
}

func decodePriority(path string, v any) (int, error) {
	switch v := v.(type) {
	case string:
		if p, ok := priorityNames[strings.ToLower(v)]; ok {
			return p, nil
		}
	case json.Number:
		p, err := strconv.ParseInt(v.String(), 10, 64)
		if err == nil && p >= -maxPriority && p <= maxPriority {
			return int(p), nil
		}
	}
	return 0, fault.InvalidField(path, "must be low, medium, high or a whole number from %d to %d, not %s", -maxPriority, maxPriority, describe(v))
}

func parseShmSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	m := shmSizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("bad size")
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	shift := map[string]uint{"": 0, "b": 0, "k": 10, "m": 20, "g": 30}[strings.ToLower(m[2])]
	if n > maxShmBytes>>shift {
		return 0, fmt.Errorf("too large")
	}
	return n << shift, nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:61] + "..."
	}
	return s
}

// Validate checks a spec's rules: names and sizes, input and output
// types, modes and paths, where to run, and that the command refers only
// to declared inputs and outputs (optional inputs only inside $[[...]]
// blocks). Errors name the field.
func (s Spec) Validate() error {
	if err := checkType(s.Type); err != nil {
		return err
	}
	if s.Name != "" && !jobNameRE.MatchString(s.Name) {
		return fault.InvalidField("name", "%q must be 1-255 letters, digits, '_' or '-', starting with a letter or digit", clip(s.Name))
	}
	if err := text("display_name", s.DisplayName, maxDisplayName); err != nil {
		return err
	}
	if err := text("experiment_name", s.ExperimentName, maxDisplayName); err != nil {
		return err
	}
	if s.ExperimentName != "" && strings.TrimSpace(s.ExperimentName) == "" {
		return fault.InvalidField("experiment_name", "is blank")
	}
	if err := text("description", s.Description, maxDescription); err != nil {
		return err
	}
	if err := tags("tags", s.Tags); err != nil {
		return err
	}
	if strings.TrimSpace(s.Command) == "" {
		return fault.InvalidField("command", "required: the command line to run")
	}
	if len(s.Command) > maxCommand {
		return fault.InvalidField("command", "longer than %d bytes", maxCommand)
	}
	if strings.ContainsRune(s.Command, 0) || !utf8.ValidString(s.Command) {
		return fault.InvalidField("command", "must be UTF-8 text without NUL bytes")
	}
	if s.Code != "" {
		if err := localPath("code", s.Code, "a local folder; code assets are not supported yet"); err != nil {
			return err
		}
	}
	if err := s.validateEnvironment(); err != nil {
		return err
	}
	if len(s.EnvironmentVariables) > maxEnvVars {
		return fault.InvalidField("environment_variables", "more than %d variables", maxEnvVars)
	}
	for _, k := range sortedKeys(s.EnvironmentVariables) {
		if !envVarRE.MatchString(k) || len(k) > 256 {
			return fault.InvalidField("environment_variables."+clip(k), "not a valid variable name (letters, digits and '_', not starting with a digit)")
		}
		if v := s.EnvironmentVariables[k]; len(v) > maxEnvValue || strings.ContainsRune(v, 0) || !utf8.ValidString(v) {
			return fault.InvalidField("environment_variables."+k, "must be UTF-8 text of at most %d bytes without NUL bytes", maxEnvValue)
		}
	}
	if err := s.validateInputs(); err != nil {
		return err
	}
	if err := s.validateOutputs(); err != nil {
		return err
	}
	if err := s.validateCompute(); err != nil {
		return err
	}
	if s.Limits.Timeout < 0 || s.Limits.Timeout > maxTimeout {
		return fault.InvalidField("limits.timeout", "must be between 1 second and 366 days")
	}
	if s.Retries.Max < 0 || s.Retries.Max > maxRetries {
		return fault.InvalidField("retries.max", "must be between 0 and %d", maxRetries)
	}
	if s.Retries.BackoffSeconds < 0 || s.Retries.BackoffSeconds > 86400 {
		return fault.InvalidField("retries.backoff_seconds", "must be between 0 and 86400")
	}
	if s.Priority < -maxPriority || s.Priority > maxPriority {
		return fault.InvalidField("priority", "must be between %d and %d", -maxPriority, maxPriority)
	}
	if t := s.QueueSettings.JobTier; t != "" && !slices.Contains(jobTiers, t) {
		return fault.InvalidField("queue_settings.job_tier", "%q is not a job tier (spot or standard)", clip(t))
	}
	tmpl, err := parseCommand(s.Command)
	if err != nil {
		return err
	}
	return s.checkReferences(tmpl)
}

func text(field, v string, max int) error {
	if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
		return fault.InvalidField(field, "must be UTF-8 text without NUL bytes")
	}
	if utf8.RuneCountInString(v) > max {
		return fault.InvalidField(field, "longer than %d characters", max)
	}
	return nil
}

func tags(field string, t map[string]string) error {
	if len(t) > maxTags {
		return fault.InvalidField(field, "more than %d tags", maxTags)
	}
	for _, k := range sortedKeys(t) {
		if k == "" || len(k) > maxTagKey || !utf8.ValidString(k) {
			return fault.InvalidField(field, "tag key %q must be 1-%d characters", clip(k), maxTagKey)
		}
		if v := t[k]; len(v) > maxTagValue || !utf8.ValidString(v) {
			return fault.InvalidField(field+"."+k, "longer than %d characters", maxTagValue)
		}
	}
	return nil
}

// localPath checks a path that must be on the submitting machine.
func localPath(field, p, what string) error {
	src, err := ParseSource(p)
	if err != nil {
		return fault.InvalidField(field, "%s", err.Error())
	}
	if src.Kind != SourceLocal {
		return fault.InvalidField(field, "%q must be %s", clip(p), what)
	}
	return nil
}

func (s Spec) validateEnvironment() error {
	e := s.Environment
	if e == nil {
		return nil
	}
	if e.Ref != "" {
		if !envRefRE.MatchString(e.Ref) {
			return fault.InvalidField("environment", "%q is not an environment reference (azureml:name:version or azureml:name@latest)", clip(e.Ref))
		}
		if e.Image != "" || e.Build != nil || e.CondaFile != "" || e.Name != "" || e.Version != "" {
			return fault.InvalidField("environment", "a reference cannot also set image, build, conda_file, name or version")
		}
		return nil
	}
	switch {
	case e.Image == "" && e.Build == nil:
		return fault.InvalidField("environment.image", "required (or build): the container image to run in")
	case e.Image != "" && e.Build != nil:
		return fault.InvalidField("environment.build", "give image or build, not both")
	case e.Image != "" && (len(e.Image) > 1024 || strings.ContainsAny(e.Image, " \t\r\n\x00")):
		return fault.InvalidField("environment.image", "%q is not an image name", clip(e.Image))
	case e.Build != nil && e.Build.Path == "":
		return fault.InvalidField("environment.build.path", "required: the Docker build context folder")
	case e.CondaFile != "" && e.Image == "":
		return fault.InvalidField("environment.conda_file", "needs an image to install into")
	case e.Name != "" && !assetNameRE.MatchString(e.Name):
		return fault.InvalidField("environment.name", "%q must be letters, digits, '.', '_' or '-', starting with a letter or digit", clip(e.Name))
	case e.Version != "" && !assetVerRE.MatchString(e.Version):
		return fault.InvalidField("environment.version", "%q must be 1-64 letters, digits, '.', '_' or '-'", clip(e.Version))
	}
	if e.CondaFile != "" {
		if err := localPath("environment.conda_file", e.CondaFile, "a local file"); err != nil {
			return err
		}
	}
	if e.Build != nil {
		if err := localPath("environment.build.path", e.Build.Path, "a local folder"); err != nil {
			return err
		}
	}
	if err := text("environment.description", e.Description, maxDescription); err != nil {
		return err
	}
	return tags("environment.tags", e.Tags)
}

func (s Spec) validateInputs() error {
	if len(s.Inputs) > maxPorts {
		return fault.InvalidField("inputs", "more than %d inputs", maxPorts)
	}
	for _, name := range sortedKeys(s.Inputs) {
		in, f := s.Inputs[name], "inputs."+name
		if !portNameRE.MatchString(name) {
			return fault.InvalidField("inputs."+clip(name), "not a valid input name (letters, digits and '_', not starting with a digit)")
		}
		if !slices.Contains(inputTypes, in.Type) {
			return fault.InvalidField(f+".type", "%q is not an input type (%s)", clip(in.Type), strings.Join(inputTypes, ", "))
		}
		if err := text(f+".description", in.Description, maxDescription); err != nil {
			return err
		}
		if in.IsLiteral() {
			if in.Path != "" {
				return fault.InvalidField(f+".path", "%s inputs take a value, not a path", in.Type)
			}
			if in.Mode != "" {
				return fault.InvalidField(f+".mode", "%s inputs have no mode", in.Type)
			}
			if in.Value == nil {
				if !in.Optional {
					return fault.InvalidField(f+".value", "required (or mark the input optional: true)")
				}
				continue
			}
			if err := checkLiteral(f+".value", in.Type, *in.Value); err != nil {
				return err
			}
			continue
		}
		if in.Value != nil {
			return fault.InvalidField(f+".value", "%s inputs take a path, not a value", in.Type)
		}
		if in.Path == "" {
			if !in.Optional {
				return fault.InvalidField(f+".path", "required (or mark the input optional: true)")
			}
		} else {
			if _, err := ParseSource(in.Path); err != nil {
				return fault.InvalidField(f+".path", "%s", err.Error())
			}
		}
		if in.Mode != "" && !slices.Contains(inputModes, in.Mode) {
			return fault.InvalidField(f+".mode", "%q is not an input mode (%s)", clip(in.Mode), strings.Join(inputModes, ", "))
		}
		if strings.HasPrefix(in.Mode, "eval_") && in.Type != TypeMLTable {
			return fault.InvalidField(f+".mode", "%s is only for mltable inputs", in.Mode)
		}
	}
	return nil
}

// checkLiteral checks a literal value against its type.
func checkLiteral(field, typ, v string) error {
	if len(v) > maxValue || strings.ContainsRune(v, 0) || !utf8.ValidString(v) {
		return fault.InvalidField(field, "must be UTF-8 text of at most %d bytes without NUL bytes", maxValue)
	}
	switch typ {
	case TypeInteger:
		if _, err := strconv.ParseInt(v, 10, 64); err != nil {
			return fault.InvalidField(field, "%q is not an integer", clip(v))
		}
	case TypeNumber:
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return fault.InvalidField(field, "%q is not a number", clip(v))
		}
	case TypeBoolean:
		if v != "true" && v != "false" {
			return fault.InvalidField(field, "%q is not true or false", clip(v))
		}
	}
	return nil
}

func (s Spec) validateOutputs() error {
	if len(s.Outputs) > maxPorts {
		return fault.InvalidField("outputs", "more than %d outputs", maxPorts)
	}
	for _, name := range sortedKeys(s.Outputs) {
		out, f := s.Outputs[name], "outputs."+name
		if !portNameRE.MatchString(name) {
			return fault.InvalidField("outputs."+clip(name), "not a valid output name (letters, digits and '_', not starting with a digit)")
		}
		if !slices.Contains(outputTypes, out.Type) {
			return fault.InvalidField(f+".type", "%q is not an output type (%s)", clip(out.Type), strings.Join(outputTypes, ", "))
		}
		if out.Mode != "" && !slices.Contains(outputModes, out.Mode) {
			return fault.InvalidField(f+".mode", "%q is not an output mode (%s)", clip(out.Mode), strings.Join(outputModes, ", "))
		}
		if out.Path != "" {
			src, err := ParseSource(out.Path)
			if err != nil {
				return fault.InvalidField(f+".path", "%s", err.Error())
			}
			if src.Kind != SourceLocal && src.Kind != SourceURL {
				return fault.InvalidField(f+".path", "%q: an output is written to a URL or a local path; to register it as a data asset, give name and version", clip(out.Path))
			}
		}
		if out.Name != "" && !assetNameRE.MatchString(out.Name) {
			return fault.InvalidField(f+".name", "%q must be 1-255 letters, digits, '.', '_' or '-', starting with a letter or digit", clip(out.Name))
		}
		if out.Version != "" {
			if out.Name == "" {
				return fault.InvalidField(f+".version", "needs name: the data asset to register the output as")
			}
			if !assetVerRE.MatchString(out.Version) || out.Version == "latest" {
				return fault.InvalidField(f+".version", "%q must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, and not \"latest\"", clip(out.Version))
			}
		}
		if err := text(f+".description", out.Description, maxDescription); err != nil {
			return err
		}
	}
	return nil
}

func (s Spec) validateCompute() error {
	r := s.Resources
	if s.Compute != "" && !computeRE.MatchString(s.Compute) {
		return fault.InvalidField("compute", "%q is not a compute target name (letters, digits, '_' or '-', starting with a letter or digit)", clip(s.Compute))
	}
	if r.InstanceType != "" && !skuRE.MatchString(r.InstanceType) {
		return fault.InvalidField("resources.instance_type", "%q is not a machine size name", clip(r.InstanceType))
	}
	if s.Compute == "" && r.InstanceType == "" {
		return fault.InvalidField("compute", "required: name a compute target (compute: cpu-cluster) or a machine size (resources.instance_type: local-cpu-small)")
	}
	if r.InstanceCount < 1 || r.InstanceCount > maxInstanceCount {
		return fault.InvalidField("resources.instance_count", "must be between 1 and %d", maxInstanceCount)
	}
	if _, err := parseShmSize(r.ShmSize); err != nil {
		return fault.InvalidField("resources.shm_size", "%q is not a size like 2g, 512m or 1073741824 (at most 1 TiB)", clip(r.ShmSize))
	}
	return nil
}

// Resolve returns a local path as the executor sees it: relative paths
// are taken from BaseDir.
func (s Spec) Resolve(p string) string {
	p = strings.TrimPrefix(p, "file://")
	if p == "" || filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(s.BaseDir, p)
}

// CodeDir returns the code folder resolved against BaseDir, "" when the
// job has none.
func (s Spec) CodeDir() string {
	if s.Code == "" {
		return ""
	}
	return s.Resolve(s.Code)
}

// Source kinds: where a data input comes from.
const (
	SourceLocal    = "local"            // a path on the submitting machine
	SourceAsset    = "asset"            // a data asset version (data:, azureml:)
	SourceRun      = "run"              // runs:/<run id>/<path>, a run's artifacts
	SourceArtifact = "mlflow-artifacts" // mlflow-artifacts:/...
	SourceURL      = "url"              // s3://, https://, azureml://...
)

// Source is a parsed input or output path.
type Source struct {
	Kind string
	// Asset and Version name a data asset version; Version is "latest"
	// for data:name@latest and data:name:latest.
	Asset, Version string
	// RunID and ArtifactPath are a runs:/ URI's parts.
	RunID, ArtifactPath string
	// Raw is the path as written.
	Raw string
}

// urlSchemes are the URL schemes Plinth passes on to the executor (the
// same stores internal/registry records data assets in).
var urlSchemes = map[string]bool{"s3": true, "s3a": true, "gs": true, "azblob": true, "wasbs": true, "wasb": true, "abfss": true,
	"abfs": true, "adl": true, "azureml": true, "https": true, "http": true, "hdfs": true}

// ParseSource classifies an input or output path.
func ParseSource(p string) (Source, error) {
	src := Source{Raw: p}
	switch {
	case p == "":
		return src, fmt.Errorf("empty path")
	case len(p) > maxPath:
		return src, fmt.Errorf("longer than %d bytes", maxPath)
	case strings.ContainsRune(p, 0) || !utf8.ValidString(p):
		return src, fmt.Errorf("must be UTF-8 text without NUL bytes")
	}
	if rest, ok := strings.CutPrefix(p, "runs:/"); ok {
		src.Kind = SourceRun
		id, artifact, _ := strings.Cut(rest, "/")
		if id == "" {
			return src, fmt.Errorf("%q: want runs:/<run id>/<artifact path>", clip(p))
		}
		src.RunID, src.ArtifactPath = id, artifact
		return src, nil
	}
	if strings.HasPrefix(p, "mlflow-artifacts:") {
		src.Kind = SourceArtifact
		if strings.Trim(strings.TrimPrefix(p, "mlflow-artifacts:"), "/") == "" {
			return src, fmt.Errorf("%q names no artifact", clip(p))
		}
		return src, nil
	}
	if m := urlSchemeRE.FindStringSubmatch(p); m != nil {
		scheme := strings.ToLower(m[1])
		if scheme == "file" {
			src.Kind = SourceLocal
			if strings.TrimPrefix(p, m[0]) == "" {
				return src, fmt.Errorf("%q names no file", clip(p))
			}
			return src, nil
		}
		if !urlSchemes[scheme] {
			return src, fmt.Errorf("%q: unsupported URL scheme %q (s3, gs, https, http, azureml, wasbs, abfss, hdfs...)", clip(p), scheme)
		}
		src.Kind = SourceURL
		return src, nil
	}
	for _, prefix := range []string{"data:", "azureml:"} {
		ref, ok := strings.CutPrefix(p, prefix)
		if !ok {
			continue
		}
		src.Kind = SourceAsset
		name, version, found := strings.Cut(ref, ":")
		if !found {
			name, version, found = strings.Cut(ref, "@")
			if found && version != "latest" {
				return src, fmt.Errorf("%q: @ takes a label, and the only label is latest", clip(p))
			}
		}
		if !found {
			return src, fmt.Errorf("%q: name a version (%sname:1) or the newest one (%sname@latest)", clip(p), prefix, prefix)
		}
		if !assetNameRE.MatchString(name) {
			return src, fmt.Errorf("%q: data asset name %q must be letters, digits, '.', '_' or '-', starting with a letter or digit", clip(p), clip(name))
		}
		if !assetVerRE.MatchString(version) {
			return src, fmt.Errorf("%q: version %q must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", clip(p), clip(version))
		}
		src.Asset, src.Version = name, version
		return src, nil
	}
	src.Kind = SourceLocal
	return src, nil
}
