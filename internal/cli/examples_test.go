package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/plinth-dev/plinth/internal/jobs"
)

// The YAML files in examples/ are read as the CLI reads them (unknown
// fields refused), so a typo or a renamed field fails here rather than in
// a newcomer's terminal. The README's quickstart test runs the rest.
func TestExampleFiles(t *testing.T) {
	ep, err := readEndpointFile("../../examples/endpoint/endpoint.yml")
	if err != nil || ep.Name != "fraud" || ep.AuthMode != "key" || ep.RateLimit == nil || *ep.RateLimit != 600 {
		t.Errorf("examples/endpoint/endpoint.yml: %v %+v", err, ep)
	}
	all, _ := filepath.Glob("../../examples/endpoint/*.yml")
	var deployments []string
	for _, p := range all {
		if filepath.Base(p) != "endpoint.yml" {
			deployments = append(deployments, p)
		}
	}
	if len(deployments) < 2 {
		t.Fatalf("deployment examples: %v", deployments)
	}
	for _, path := range deployments {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		j, err := yaml.YAMLToJSON(raw)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var f deploymentFile
		dec := json.NewDecoder(bytes.NewReader(j))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if f.Name != strings.TrimSuffix(filepath.Base(path), ".yml") || f.EndpointName != "fraud" || !strings.HasPrefix(f.Model, "models:/fraud/") ||
			!strings.HasSuffix(f.Command, "/bin/serve") || f.Routes.Scoring != "/score" || f.Routes.Readiness != "/ready" {
			t.Errorf("%s: %+v", path, f)
		}
	}
	for _, path := range []string{"../../examples/train/job.yml"} {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		spec, err := jobs.Parse(raw, path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if spec.Code != "." || spec.Inputs["transactions"].Path != "data:transactions:1" || spec.Outputs["model"].Name != "fraud-model" {
			t.Errorf("%s: %+v", path, spec)
		}
	}
}
