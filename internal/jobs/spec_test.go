package jobs

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/fault"
)

func ptr(s string) *string { return &s }

func parseFile(t *testing.T, name string) Spec {
	t.Helper()
	p := filepath.Join("testdata", name)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse(data, p)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return s
}

func TestParseMinimal(t *testing.T) {
	got := parseFile(t, "minimal.yml")
	want := Spec{Type: "command", Command: "echo hello", Compute: "local", Resources: Resources{InstanceCount: 1}, BaseDir: "testdata"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestParseFull(t *testing.T) {
	got := parseFile(t, "full.yml")
	want := Spec{
		Schema:         "https://azuremlschemas.azureedge.net/latest/commandJob.schema.json",
		Type:           "command",
		Name:           "train-iris-svm-01",
		DisplayName:    "Train an SVM on iris",
		ExperimentName: "iris-classifier",
		Description:    "Trains a scikit-learn SVM on the Iris data set and registers the model.",
		Tags:           map[string]string{"team": "vision", "version": "2"},
		Code:           "src",
		Command: "python train.py --iris-csv ${{inputs.iris_csv}} --train-data ${{inputs.train_data}} --C ${{inputs.C}} " +
			"--kernel ${{inputs.kernel}} --coef0 ${{inputs.coef0}} --epochs ${{ inputs.epochs }} " +
			"$[[--warm-start ${{inputs.warm_start}}]] --model-dir ${{outputs.model_output}}",
		Inputs: map[string]Input{
			"iris_csv":   {Type: "uri_file", Path: "https://azuremlexamples.blob.core.windows.net/datasets/iris.csv"},
			"train_data": {Type: "uri_folder", Path: "azureml:iris-train:3", Mode: "download"},
			"C":          {Type: "number", Value: ptr("0.8")},
			"kernel":     {Type: "string", Value: ptr("rbf")},
			"coef0":      {Type: "number", Value: ptr("0.1")},
			"epochs":     {Type: "integer", Value: ptr("10")},
			"warm_start": {Type: "boolean", Optional: true},
		},
		Outputs: map[string]Output{
			"model_output": {Type: "mlflow_model", Name: "iris-model", Version: "1"},
		},
		Environment:          &Environment{Ref: "azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest"},
		EnvironmentVariables: map[string]string{"OMP_NUM_THREADS": "4"},
		Compute:              "cpu-cluster",
		Resources:            Resources{InstanceType: "Standard_D4s_v3", InstanceCount: 2, ShmSize: "2g"},
		Limits:               Limits{Timeout: 7200},
		Retries:              Retries{Max: 3, BackoffSeconds: 30},
		Priority:             PriorityHigh,
		QueueSettings:        QueueSettings{JobTier: "spot"},
		BaseDir:              "testdata",
	}
	if !reflect.DeepEqual(got, want) {
		gj, _ := json.MarshalIndent(got, "", "  ")
		wj, _ := json.MarshalIndent(want, "", "  ")
		t.Errorf("got  %s\nwant %s", gj, wj)
	}
	if got.CodeDir() != filepath.Join("testdata", "src") {
		t.Errorf("CodeDir %q", got.CodeDir())
	}
	if got.Resources.ShmBytes() != 2<<30 || got.Limits.TimeoutDuration() != 2*time.Hour {
		t.Errorf("ShmBytes %d, TimeoutDuration %v", got.Resources.ShmBytes(), got.Limits.TimeoutDuration())
	}
	ins, outs, err := got.References()
	if err != nil || strings.Join(ins, ",") != "iris_csv,train_data,C,kernel,coef0,epochs,warm_start" || strings.Join(outs, ",") != "model_output" {
		t.Errorf("References = %q, %q, %v", ins, outs, err)
	}
}

func TestParseLocalJSON(t *testing.T) {
	got := parseFile(t, "local.json")
	if got.Environment == nil || !reflect.DeepEqual(*got.Environment, Environment{Image: "python:3.12-slim", CondaFile: "env/conda.yaml"}) {
		t.Errorf("environment %+v", got.Environment)
	}
	if got.Limits.Timeout != 5400 || got.Retries != (Retries{Max: 2}) || got.Priority != 5 || got.Compute != "" ||
		got.Resources != (Resources{InstanceType: "local-gpu-1", InstanceCount: 1}) {
		t.Errorf("limits %+v retries %+v priority %d compute %q resources %+v", got.Limits, got.Retries, got.Priority, got.Compute, got.Resources)
	}
	if in := got.Inputs["data"]; in.Path != "./my data" || got.Resolve(in.Path) != filepath.Join("testdata", "my data") {
		t.Errorf("data input %+v resolves to %q", in, got.Resolve(in.Path))
	}
	if got.Resolve(got.Environment.CondaFile) != filepath.Join("testdata", "env", "conda.yaml") || got.CodeDir() != "testdata" {
		t.Errorf("conda file %q, code dir %q", got.Resolve(got.Environment.CondaFile), got.CodeDir())
	}
	if out := got.Outputs["checkpoints"]; out != (Output{Type: "uri_folder", Mode: "upload"}) {
		t.Errorf("output %+v", out)
	}
}

func TestParseDefaultsAndShorthands(t *testing.T) {
	s, err := Parse([]byte(`
command: run ${{inputs.flag}} ${{inputs.big}} ${{inputs.name}} ${{outputs.out}}
resources: {instance_type: local-cpu-small}
inputs:
  flag: true
  big: 12345678901
  name: "007"
  data: {path: ./data}
outputs:
  out:
limits: {timeout: 90m}
priority: LOW
`), "")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Input{
		"flag": {Type: "boolean", Value: ptr("true")},
		"big":  {Type: "integer", Value: ptr("12345678901")},
		"name": {Type: "string", Value: ptr("007")},
		"data": {Type: "uri_folder", Path: "./data"},
	}
	if !reflect.DeepEqual(s.Inputs, want) {
		t.Errorf("inputs %+v", s.Inputs)
	}
	if s.Outputs["out"] != (Output{Type: "uri_folder"}) || s.Limits.Timeout != 5400 || s.Priority != PriorityLow || s.BaseDir != "" {
		t.Errorf("outputs %+v timeout %d priority %d basedir %q", s.Outputs, s.Limits.Timeout, s.Priority, s.BaseDir)
	}
	if s.Resolve("./data") != "data" {
		t.Errorf("Resolve without a file: %q", s.Resolve("./data"))
	}
}

func TestTimeouts(t *testing.T) {
	for in, want := range map[string]int64{
		"60": 60, `"90m"`: 5400, `"1h30m"`: 5400, `"PT1H"`: 3600, `"pt1h"`: 3600, `"PT1H30M"`: 5400, `"P1DT2H"`: 93600,
		`"P1W"`: 604800, `"PT0.5S"`: 1, `"1.5s"`: 2, `"PT45S"`: 45, `"366d"`: -1, `"8784h"`: 8784 * 3600,
	} {
		s, err := Parse([]byte("command: x\ncompute: c\nlimits:\n  timeout: "+in+"\n"), "")
		if want < 0 {
			if err == nil {
				t.Errorf("%s: accepted", in)
			}
			continue
		}
		if err != nil || s.Limits.Timeout != want {
			t.Errorf("%s: %d, %v; want %d", in, s.Limits.Timeout, err, want)
		}
	}
}

func TestSourceKinds(t *testing.T) {
	tests := []struct {
		path string
		want Source
	}{
		{"data:iris:3", Source{Kind: SourceAsset, Asset: "iris", Version: "3"}},
		{"data:iris@latest", Source{Kind: SourceAsset, Asset: "iris", Version: "latest"}},
		{"data:iris:latest", Source{Kind: SourceAsset, Asset: "iris", Version: "latest"}},
		{"azureml:iris-train:1.2", Source{Kind: SourceAsset, Asset: "iris-train", Version: "1.2"}},
		{"runs:/0f3c2a/model", Source{Kind: SourceRun, RunID: "0f3c2a", ArtifactPath: "model"}},
		{"runs:/0f3c2a", Source{Kind: SourceRun, RunID: "0f3c2a"}},
		{"mlflow-artifacts:/1/abc/artifacts/model", Source{Kind: SourceArtifact}},
		{"s3://bucket/key", Source{Kind: SourceURL}},
		{"https://example.com/iris.csv", Source{Kind: SourceURL}},
		{"azureml://datastores/workspaceblobstore/paths/iris/", Source{Kind: SourceURL}},
		{"abfss://c@acct.dfs.core.windows.net/x", Source{Kind: SourceURL}},
		{"file:///tmp/x", Source{Kind: SourceLocal}},
		{"./data", Source{Kind: SourceLocal}},
		{"/abs/my data", Source{Kind: SourceLocal}},
		{"weird:name", Source{Kind: SourceLocal}},
	}
	for _, tt := range tests {
		got, err := ParseSource(tt.path)
		tt.want.Raw = tt.path
		if err != nil || got != tt.want {
			t.Errorf("ParseSource(%q) = %+v, %v; want %+v", tt.path, got, err, tt.want)
		}
	}
}

// job prefixes a valid command job to some lines.
func job(extra string) string { return "command: echo hi\ncompute: cpu\n" + extra }

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, file, msg string
	}{
		{"empty", "", "job file is empty"},
		{"only spaces", "  \n\n", "job file is empty"},
		{"a list", "- a\n- b\n", "job file must be a mapping of fields (type, command, inputs...), not a list"},
		{"a string", "hello\n", "job file must be a mapping of fields (type, command, inputs...), not a string"},
		{"bad YAML", "command: [\n", "job file is not valid YAML or JSON: yaml: line 1: did not find expected node content"},
		{"duplicate key", "command: a\ncommand: b\n", "job file is not valid YAML or JSON: yaml: unmarshal errors:\n  line 2: key \"command\" already set in map"},
		{"misspelt field", job("enviroment: python:3.12\n"), "enviroment: unknown field (did you mean environment?)"},
		{"unknown field", job("colour: blue\n"), "colour: unknown field"},
		{"unsupported Azure field", job("distribution:\n  type: pytorch\n"), "distribution: not supported by Plinth yet"},
		{"sweep", "type: sweep\ntrial: x\n", `type: "sweep" jobs are not supported yet; only "command" jobs are`},
		{"unknown type", "type: commandd\ncommand: x\n", `type: "commandd" is not a job type; only "command" jobs are supported`},
		{"type not a string", "type: 1\n", "type: must be a string, not a number"},
		{"bad name", job("name: -x\n"), `name: "-x" must be 1-255 letters, digits, '_' or '-', starting with a letter or digit`},
		{"no command", "compute: cpu\n", "command: required: the command line to run"},
		{"blank command", "command: '  '\ncompute: cpu\n", "command: required: the command line to run"},
		{"command a number", "command: 5\ncompute: cpu\n", "command: must be a string, not a number"},
		{"display_name too long", job("display_name: " + strings.Repeat("x", 257) + "\n"), "display_name: longer than 256 characters"},
		{"blank experiment", job("experiment_name: ' '\n"), "experiment_name: is blank"},
		{"tags a list", job("tags: [a, b]\n"), "tags: must be a mapping, not a list"},
		{"tag value a mapping", job("tags:\n  a: {b: c}\n"), "tags.a: must be a string, number or boolean, not a mapping"},
		{"env var name", job("environment_variables:\n  1X: a\n"), "environment_variables.1X: not a valid variable name (letters, digits and '_', not starting with a digit)"},
		{"code asset", job("code: azureml:src:1\n"), `code: "azureml:src:1" must be a local folder; code assets are not supported yet`},
		{"code URL", job("code: https://github.com/a/b\n"), `code: "https://github.com/a/b" must be a local folder; code assets are not supported yet`},
		{"environment a number", job("environment: 5\n"), "environment: must be a reference (azureml:name:version), an image name or a mapping with image, not a number"},
		{"environment reference without version", job("environment: azureml:sklearn\n"),
			`environment: "azureml:sklearn" is not an environment reference (azureml:name:version or azureml:name@latest)`},
		{"environment without image", job("environment:\n  conda_file: env.yml\n"), "environment.image: required (or build): the container image to run in"},
		{"environment image and build", job("environment:\n  image: python\n  build:\n    path: docker\n"), "environment.build: give image or build, not both"},
		{"environment build without path", job("environment:\n  build: {dockerfile_path: Dockerfile}\n"), "environment.build.path: required: the Docker build context folder"},
		{"environment conda file with build", job("environment:\n  build: {path: ctx}\n  conda_file: c.yml\n"), "environment.conda_file: needs an image to install into"},
		{"environment image with spaces", job("environment: my image\n"), `environment.image: "my image" is not an image name`},
		{"environment os_type", job("environment:\n  image: python\n  os_type: windows\n"), "environment.os_type: not supported by Plinth yet"},
		{"environment variables field", job("environment:\n  image: python\n  variables: {A: b}\n"), "environment.variables: unknown field"},
		{"inputs a list", job("inputs: [a]\n"), "inputs: must be a mapping, not a list"},
		{"input null", job("inputs:\n  x:\n"), "inputs.x: has no value: give a literal (lr: 0.01) or a mapping with type and path"},
		{"input a list", job("inputs:\n  x: [1, 2]\n"), "inputs.x: must be a literal or a mapping with type and path, not a list"},
		{"input name", job("inputs:\n  1x: 1\n"), "inputs.1x: not a valid input name (letters, digits and '_', not starting with a digit)"},
		{"input name with a dash", job("inputs:\n  learning-rate: 1\n"), "inputs.learning-rate: not a valid input name (letters, digits and '_', not starting with a digit)"},
		{"input type", job("inputs:\n  x: {type: uri_files, path: a}\n"),
			`inputs.x.type: "uri_files" is not an input type (uri_file, uri_folder, mltable, mlflow_model, custom_model, string, integer, number, boolean)`},
		{"input without path", job("inputs:\n  x: {type: uri_file}\n"), "inputs.x.path: required (or mark the input optional: true)"},
		{"input mode", job("inputs:\n  x: {type: uri_file, path: a, mode: rw_mount}\n"),
			`inputs.x.mode: "rw_mount" is not an input mode (ro_mount, download, direct, eval_mount, eval_download)`},
		{"eval mode on a folder", job("inputs:\n  x: {path: a, mode: eval_mount}\n"), "inputs.x.mode: eval_mount is only for mltable inputs"},
		{"literal with a path", job("inputs:\n  x: {type: string, path: a}\n"), "inputs.x.path: string inputs take a value, not a path"},
		{"literal with a mode", job("inputs:\n  x: {type: string, value: a, mode: download}\n"), "inputs.x.mode: string inputs have no mode"},
		{"literal without a value", job("inputs:\n  x: {type: integer}\n"), "inputs.x.value: required (or mark the input optional: true)"},
		{"value and default", job("inputs:\n  x: {type: integer, value: 1, default: 2}\n"), "inputs.x.default: give value or default, not both"},
		{"integer not an integer", job("inputs:\n  x: {type: integer, value: ten}\n"), `inputs.x.value: "ten" is not an integer`},
		{"integer a fraction", job("inputs:\n  x: {type: integer, default: 1.5}\n"), `inputs.x.value: "1.5" is not an integer`},
		{"number not a number", job("inputs:\n  x: {type: number, value: fast}\n"), `inputs.x.value: "fast" is not a number`},
		{"boolean not a boolean", job("inputs:\n  x: {type: boolean, value: maybe}\n"), `inputs.x.value: "maybe" is not true or false`},
		{"value on a folder", job("inputs:\n  x: {type: uri_folder, value: a}\n"),
			"inputs.x.value: only literal inputs (string, integer, number, boolean) have a value; uri_folder inputs take a path"},
		{"value a mapping", job("inputs:\n  x: {type: string, value: {a: b}}\n"), "inputs.x.value: must be a string, number or boolean, not a mapping"},
		{"optional not a boolean", job("inputs:\n  x: {type: string, optional: maybe}\n"), "inputs.x.optional: must be true or false, not a string"},
		{"asset without a version", job("inputs:\n  x: {path: 'data:iris'}\n"), `inputs.x.path: "data:iris": name a version (data:name:1) or the newest one (data:name@latest)`},
		{"asset with another label", job("inputs:\n  x: {path: 'azureml:iris@prod'}\n"), `inputs.x.path: "azureml:iris@prod": @ takes a label, and the only label is latest`},
		{"asset bad name", job("inputs:\n  x: {path: 'data:my data:1'}\n"),
			`inputs.x.path: "data:my data:1": data asset name "my data" must be letters, digits, '.', '_' or '-', starting with a letter or digit`},
		{"asset bad version", job("inputs:\n  x: {path: 'data:iris:'}\n"),
			`inputs.x.path: "data:iris:": version "" must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`},
		{"unsupported scheme", job("inputs:\n  x: {path: 'ftp://host/x'}\n"),
			`inputs.x.path: "ftp://host/x": unsupported URL scheme "ftp" (s3, gs, https, http, azureml, wasbs, abfss, hdfs...)`},
		{"run without an id", job("inputs:\n  x: {path: 'runs://model'}\n"), `inputs.x.path: "runs://model": want runs:/<run id>/<artifact path>`},
		{"unknown input field", "", ""}, // from testdata/bad/unknown-field.yml, below
		{"output a number", job("outputs:\n  m: 3\n"), "outputs.m: must be a mapping (type, path, mode, name, version), not a number"},
		{"output type", job("outputs:\n  m: {type: string}\n"), `outputs.m.type: "string" is not an output type (uri_folder, uri_file, mltable, mlflow_model, custom_model)`},
		{"output mode", job("outputs:\n  m: {mode: ro_mount}\n"), `outputs.m.mode: "ro_mount" is not an output mode (rw_mount, upload, direct)`},
		{"output to an asset path", job("outputs:\n  m: {path: 'data:iris:2'}\n"),
			`outputs.m.path: "data:iris:2": an output is written to a URL or a local path; to register it as a data asset, give name and version`},
		{"output version without name", job("outputs:\n  m: {version: 2}\n"), "outputs.m.version: needs name: the data asset to register the output as"},
		{"output version latest", job("outputs:\n  m: {name: iris, version: latest}\n"),
			`outputs.m.version: "latest" must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, and not "latest"`},
		{"output unknown field", job("outputs:\n  m: {tpye: uri_file}\n"), "outputs.m.tpye: unknown field (did you mean type?)"},
		{"compute name", "command: x\ncompute: my cluster\n", `compute: "my cluster" is not a compute target name (letters, digits, '_' or '-', starting with a letter or digit)`},
		{"compute a mapping", "command: x\ncompute: {name: c}\n", "compute: must be a string, not a mapping"},
		{"instance type", "command: x\nresources: {instance_type: 'big box'}\n", `resources.instance_type: "big box" is not a machine size name`},
		{"instance count zero", job("resources: {instance_count: 0}\n"), "resources.instance_count: must be between 1 and 1000"},
		{"instance count a string", job("resources: {instance_count: two}\n"), "resources.instance_count: must be a whole number, not a string"},
		{"instance count a fraction", job("resources: {instance_count: 1.5}\n"), "resources.instance_count: must be a whole number, not 1.5"},
		{"shm size", job("resources: {shm_size: lots}\n"), `resources.shm_size: "lots" is not a size like 2g, 512m or 1073741824 (at most 1 TiB)`},
		{"shm size too big", job("resources: {shm_size: 2048g}\n"), `resources.shm_size: "2048g" is not a size like 2g, 512m or 1073741824 (at most 1 TiB)`},
		{"docker args", job("resources: {docker_args: --ipc=host}\n"), "resources.docker_args: not supported by Plinth yet"},
		{"timeout zero", job("limits: {timeout: 0}\n"), "limits.timeout: must be more than 0 seconds"},
		{"timeout negative", job("limits: {timeout: -5}\n"), "limits.timeout: must be more than 0 seconds"},
		{"timeout a word", job("limits: {timeout: forever}\n"), `limits.timeout: must be whole seconds (3600) or a duration like "90m" or "PT1H", not "forever"`},
		{"timeout in years", job("limits: {timeout: P1Y}\n"), `limits.timeout: must be whole seconds (3600) or a duration like "90m" or "PT1H", not "P1Y"`},
		{"timeout a fraction", job("limits: {timeout: 1.5}\n"), `limits.timeout: must be whole seconds (3600) or a duration like "90m" or "PT1H", not "1.5"`},
		{"timeout too long", job("limits: {timeout: 9000h}\n"), "limits.timeout: more than 366 days"},
		{"limits max_total_trials", job("limits: {max_total_trials: 5}\n"), "limits.max_total_trials: unknown field"},
		{"retries negative", job("retries: -1\n"), "retries: must be between 0 and 100"},
		{"retries max too big", job("retries: {max: 200}\n"), "retries.max: must be between 0 and 100"},
		{"retries without max", job("retries: {backoff_seconds: 5}\n"), "retries.max: required"},
		{"retries a word", job("retries: many\n"), "retries: must be a whole number of retries or a mapping with max and backoff_seconds, not a string"},
		{"retries a fraction", job("retries: 1.5\n"), "retries: must be a whole number of retries or a mapping with max and backoff_seconds"},
		{"retries backoff", job("retries: {max: 1, backoff_seconds: -1}\n"), "retries.backoff_seconds: must be between 0 and 86400"},
		{"priority word", job("priority: urgent\n"), `priority: must be low, medium, high or a whole number from -1000 to 1000, not "urgent"`},
		{"priority too high", job("priority: 5000\n"), `priority: must be low, medium, high or a whole number from -1000 to 1000, not "5000"`},
		{"job tier", job("queue_settings: {job_tier: Premium}\n"), `queue_settings.job_tier: "premium" is not a job tier (spot or standard)`},
		{"queue settings field", job("queue_settings: {priority: 1}\n"), "queue_settings.priority: unknown field"},
		{"unclosed reference", "command: echo ${{inputs.x\ncompute: c\n", `command: "${{" at byte 5 is not closed with "}}"`},
		{"other expression", "command: echo ${{search_space.lr}}\ncompute: c\n",
			"command: ${{search_space.lr}} at byte 5: only ${{inputs.<name>}} and ${{outputs.<name>}} are supported"},
		{"unclosed block", "command: echo $[[--x ${{inputs.x}}\ncompute: c\ninputs: {x: 1}\n", `command: optional block "$[[" at byte 5 is not closed with "]]"`},
		{"nested blocks", "command: echo $[[a $[[b]] ]]\ncompute: c\n", "command: optional block at byte 10 starts inside the one at byte 5; blocks do not nest"},
		{"undeclared with none declared", "command: echo ${{inputs.x}} ${{outputs.y}} ${{inputs.x}}\ncompute: c\n",
			"command: refers to undeclared inputs.x, outputs.y (none are declared)"},
		{"too big", "command: " + strings.Repeat("x", MaxSpecBytes), "job file is larger than 1048576 bytes"},
	}
	for _, tt := range tests {
		if tt.file == "" && tt.msg == "" {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.file), "job.yml")
			checkError(t, err, tt.msg)
		})
	}
}

// checkError wants an invalid-argument fault (too large for the size
// limit) with the exact message, its Field leading the message.
func checkError(t *testing.T, err error, msg string) {
	t.Helper()
	fe, ok := fault.As(err)
	if !ok {
		t.Fatalf("error %v is not a fault", err)
	}
	if fe.Error() != msg {
		t.Errorf("message\n got %s\nwant %s", fe.Error(), msg)
	}
	if fe.Kind != fault.Invalid && fe.Kind != fault.TooLarge {
		t.Errorf("kind %s", fe.Kind)
	}
	if fe.Field != "" && !strings.HasPrefix(fe.Message, fe.Field+": ") {
		t.Errorf("field %q does not lead the message %q", fe.Field, fe.Message)
	}
}

func TestParseBadFiles(t *testing.T) {
	tests := map[string]string{
		"unknown-field.yml": "inputs.lr.typo: unknown field (did you mean type?)",
		"undeclared.yml":    "command: refers to undeclared inputs.learning_rate, outputs.model (declared: inputs.data, inputs.lr, outputs.checkpoints)",
		"sweep.yml":         `type: "sweep" jobs are not supported yet; only "command" jobs are`,
		"nowhere.yml":       "compute: required: name a compute target (compute: cpu-cluster) or a machine size (resources.instance_type: local-cpu-small)",
		"optional-outside-block.yml": "command: optional inputs.checkpoint must be referred to inside an optional block, " +
			"as in $[[--checkpoint ${{inputs.checkpoint}}]], so that it can be left out",
	}
	for name, msg := range tests {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join("testdata", "bad", name)
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(data, p)
			checkError(t, err, msg)
		})
	}
}

func TestComputeAndInstanceType(t *testing.T) {
	s, err := Parse([]byte("command: x\ncompute: azureml:gpu-cluster\nresources:\n  instance_type: Standard_NC6s_v3\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	if s.Compute != "gpu-cluster" || s.Resources.InstanceType != "Standard_NC6s_v3" {
		t.Errorf("compute %q, instance type %q", s.Compute, s.Resources.InstanceType)
	}
}

func TestValidateBuiltSpec(t *testing.T) {
	s := Spec{Type: TypeCommand, Command: "train ${{inputs.lr}}", Compute: "c", Resources: Resources{InstanceCount: 1},
		Inputs: map[string]Input{"lr": {Type: TypeNumber, Value: ptr("0.1")}}}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	s.Resources.InstanceCount = 0
	checkError(t, s.Validate(), "resources.instance_count: must be between 1 and 1000")
	s.Resources.InstanceCount = 1
	s.Type = ""
	checkError(t, s.Validate(), `type: "" is not a job type; only "command" jobs are supported`)
	s.Type = TypeCommand
	s.Environment = &Environment{Ref: "azureml:env:1", Image: "python"}
	checkError(t, s.Validate(), "environment: a reference cannot also set image, build, conda_file, name or version")
	s.Environment = nil
	s.Command = "a\x00b"
	checkError(t, s.Validate(), "command: must be UTF-8 text without NUL bytes")
}

// TestRoundTrip checks that a parsed spec written as JSON parses back to
// itself, so the API can store and return specs as JSON.
func TestRoundTrip(t *testing.T) {
	for _, name := range []string{"minimal.yml", "full.yml", "local.json"} {
		s := parseFile(t, name)
		checkRoundTrip(t, s)
	}
}

func checkRoundTrip(t *testing.T, s Spec) {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(b, "")
	if err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	back.BaseDir = s.BaseDir
	if !reflect.DeepEqual(back, s) {
		t.Fatalf("round trip changed the spec:\n%+v\n%+v\njson %s", s, back, b)
	}
}

func TestRender(t *testing.T) {
	full := parseFile(t, "full.yml")
	tests := []struct {
		name            string
		spec            Spec
		inputs, outputs map[string]string
		want, err       string
	}{
		{name: "optional input absent", spec: full,
			inputs:  map[string]string{"iris_csv": "/mnt/in/iris.csv", "train_data": "/mnt/in/train data"},
			outputs: map[string]string{"model_output": "/mnt/out/model"},
			want:    "python train.py --iris-csv /mnt/in/iris.csv --train-data '/mnt/in/train data' --C 0.8 --kernel rbf --coef0 0.1 --epochs 10  --model-dir /mnt/out/model"},
		{name: "optional input given, literal overridden", spec: full,
			inputs:  map[string]string{"iris_csv": "/in/iris.csv", "train_data": "/in/train", "warm_start": "true", "C": "1.5"},
			outputs: map[string]string{"model_output": "/out/model"},
			want:    "python train.py --iris-csv /in/iris.csv --train-data /in/train --C 1.5 --kernel rbf --coef0 0.1 --epochs 10 --warm-start true --model-dir /out/model"},
		{name: "literal values go in as they are", spec: full,
			inputs:  map[string]string{"iris_csv": "/i", "train_data": "/t", "kernel": "poly degree=3"},
			outputs: map[string]string{"model_output": "/o"},
			want:    "python train.py --iris-csv /i --train-data /t --C 0.8 --kernel poly degree=3 --coef0 0.1 --epochs 10  --model-dir /o"},
		{name: "path missing", spec: full, inputs: map[string]string{"iris_csv": "/i"}, outputs: map[string]string{"model_output": "/o"},
			err: "inputs.train_data: no path given to render the command with"},
		{name: "output missing", spec: full, inputs: map[string]string{"iris_csv": "/i", "train_data": "/t"},
			err: "outputs.model_output: no path given to render the command with"},
		{name: "undeclared input given", spec: full, inputs: map[string]string{"nope": "1"}, err: "inputs.nope: not an input of this job"},
		{name: "undeclared output given", spec: full, outputs: map[string]string{"nope": "/o"}, err: "outputs.nope: not an output of this job"},
		{name: "literal of the wrong type", spec: full, inputs: map[string]string{"epochs": "many"}, err: `inputs.epochs: "many" is not an integer`},
		{name: "empty path", spec: full, inputs: map[string]string{"iris_csv": ""}, err: "inputs.iris_csv: empty path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.spec.Render(tt.inputs, tt.outputs)
			if tt.err != "" {
				checkError(t, err, tt.err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestRenderLocalJSON(t *testing.T) {
	s := parseFile(t, "local.json")
	got, err := s.Render(map[string]string{"data": "/home/me/my data", "base_model": "/tmp/it's here"}, map[string]string{"checkpoints": "/tmp/out"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `python finetune.py --data "/home/me/my data" --base '/tmp/it'\''s here' --out /tmp/out `; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	got, err = s.Render(map[string]string{"data": "d", "base_model": "b", "resume_from": "/ckpt/step 100"}, map[string]string{"checkpoints": "o"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `python finetune.py --data "d" --base 'b' --out o --resume '/ckpt/step 100'`; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestRenderedPathsSurviveTheShell runs rendered commands with /bin/sh -c:
// every path arrives as one argument, byte for byte, wherever the
// reference stands.
func TestRenderedPathsSurviveTheShell(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on this machine")
	}
	s, err := Parse([]byte(`
command: >-
  printf '%s\n' ${{inputs.a}} "${{inputs.a}}" '${{inputs.a}}' pre${{inputs.a}}post "x ${{inputs.a}} y" ${{outputs.o}}
  $[[ ${{inputs.b}} ]]
compute: c
inputs:
  a: {type: uri_folder, path: a}
  b: {type: uri_file, optional: true}
outputs:
  o: {}
`), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/plain/path", "/my data/with spaces", `it's "quoted"`, "$HOME and `date` and \\n", "*", "~user", "-dash", "a\nnewline", "tab\there", "!bang"} {
		cmd, err := s.Render(map[string]string{"a": p, "b": p}, map[string]string{"o": p})
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(sh, "-c", cmd).Output()
		if err != nil {
			t.Fatalf("%q: %s: %v", p, cmd, err)
		}
		want := strings.Join([]string{p, p, p, "pre" + p + "post", "x " + p + " y", p, p}, "\n") + "\n"
		if string(out) != want {
			t.Errorf("path %q rendered as\n%s\nprinted %q, want %q", p, cmd, out, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"minimal.yml", "full.yml", "local.json", "bad/unknown-field.yml", "bad/undeclared.yml"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("command: a $[[b ${{inputs.x}}]] ${{outputs.y}}\ncompute: c\ninputs: {x: {type: string, optional: true}}\noutputs: {y: }\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data, "job.yml")
		if err != nil {
			if _, ok := fault.As(err); !ok {
				t.Fatalf("not a fault: %v", err)
			}
			return
		}
		checkRoundTrip(t, s)
		// Rendering with every path given never fails on a valid spec.
		ins, outs := map[string]string{}, map[string]string{}
		for k, in := range s.Inputs {
			if !in.IsLiteral() && in.Given() {
				ins[k] = "/in/" + k
			}
		}
		for k := range s.Outputs {
			outs[k] = "/out/" + k
		}
		if _, err := s.Render(ins, outs); err != nil {
			t.Fatalf("Render: %v", err)
		}
	})
}
