package compute

import (
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/plinth-dev/plinth/internal/fault"
)

// laptop is a fixed detector: 4 CPUs, 16 GiB, no GPUs.
func laptop() (Machine, error) { return Machine{CPUs: 4, MemoryBytes: 16 << 30}, nil }

// gpuBox is a fixed detector with two GPUs.
func gpuBox() (Machine, error) {
	return Machine{CPUs: 32, MemoryBytes: 256 << 30, GPUs: []GPU{{0, "NVIDIA L4", 23034 << 20}, {1, "NVIDIA L4", 23034 << 20}}}, nil
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultCatalogue(t *testing.T) {
	c, err := LoadCatalogue("", laptop)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 + len(CloudSKUs()); c.Len() != want {
		t.Errorf("Len %d, want %d", c.Len(), want)
	}
	full, ok := c.Lookup("local-cpu-full")
	if !ok || full.VCPUs != 4 || full.MemoryBytes != 16<<30 || full.PricePerHour != 0 {
		t.Errorf("local-cpu-full = %+v, %v", full, ok)
	}
	if _, ok := c.Lookup("local-gpu-1"); ok {
		t.Error("a machine without GPUs has local-gpu-1")
	}
	if len(CloudSKUs()) > 12 {
		t.Errorf("%d built-in cloud SKUs; keep the list short", len(CloudSKUs()))
	}
	// Every built-in cloud SKU is valid on its own.
	if _, err := NewCatalogue(CloudSKUs()); err != nil {
		t.Fatal(err)
	}
}

func TestLookupIgnoresCase(t *testing.T) {
	c, err := LoadCatalogue("", gpuBox)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Standard_D4s_v3", "standard_d4s_v3", "STANDARD_D4S_V3", "P4D.24XLARGE", "Local-GPU-2"} {
		s, ok := c.Lookup(name)
		if !ok || !strings.EqualFold(s.Name, name) {
			t.Errorf("Lookup(%q) = %q, %v", name, s.Name, ok)
		}
	}
	if s, _ := c.Lookup("standard_d4s_v3"); s.Name != "Standard_D4s_v3" {
		t.Errorf("Lookup keeps the canonical spelling; got %q", s.Name)
	}
	_, err = c.Get("Standard_D4s_v9")
	if !fault.Is(err, fault.NotFound) || err.Error() != `unknown instance type "Standard_D4s_v9"` {
		t.Errorf("Get unknown: %v", err)
	}
	if s, err := c.Get("local-gpu-1"); err != nil || s.GPUs != 1 || s.GPUType != "NVIDIA L4" || s.VCPUs != 16 || s.MemoryBytes != 128<<30 {
		t.Errorf("Get(local-gpu-1) = %+v, %v", s, err)
	}
}

func TestListOrder(t *testing.T) {
	c, err := NewCatalogue([]SKU{
		{Name: "b-8", Family: "beta", VCPUs: 8},
		{Name: "a-16", Family: "Alpha", VCPUs: 16},
		{Name: "z-2", Family: "alpha", VCPUs: 2},
		{Name: "B-2", Family: "beta", VCPUs: 2},
		{Name: "a-2", Family: "beta", VCPUs: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range c.List() {
		names = append(names, s.Name)
	}
	if want := []string{"z-2", "a-16", "a-2", "B-2", "b-8"}; !slices.Equal(names, want) {
		t.Errorf("List order %q, want %q", names, want)
	}
	// List returns a copy.
	l := c.List()
	l[0].Name = "changed"
	if c.List()[0].Name != "z-2" {
		t.Error("List shares its slice with the catalogue")
	}
}

func TestSKUFileMerges(t *testing.T) {
	path := writeFile(t, "skus.yaml", `
# our prices
skus:
  - name: LOCAL-GPU-1          # built-in: only the given fields change
    price_per_hour: 0.35
    description: one L4 of the lab box
  - name: standard_d4s_v3
    price_per_hour: 0.15
    spot_price_per_hour: 0.03
  - name: lab-a100
    family: lab
    vcpus: 32
    memory_gib: 256
    gpus: 1
    gpu_type: A100
    gpu_memory_gib: 80
    price_per_hour: 1.2
  - name: tiny
    vcpus: 1
    memory_gib: 0.5
`)
	c, err := LoadCatalogue(path, gpuBox)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 + 2 + len(CloudSKUs()) + 2; c.Len() != want {
		t.Errorf("Len %d, want %d", c.Len(), want)
	}
	g, _ := c.Lookup("local-gpu-1")
	if g.Name != "local-gpu-1" || g.PricePerHour != 0.35 || g.Description != "one L4 of the lab box" || g.GPUs != 1 ||
		g.VCPUs != 16 || g.GPUType != "NVIDIA L4" || g.Source != SourceFile {
		t.Errorf("local-gpu-1 = %+v", g)
	}
	d, _ := c.Lookup("Standard_D4s_v3")
	if d.PricePerHour != 0.15 || d.SpotPricePerHour != 0.03 || d.VCPUs != 4 || d.MemoryBytes != 16<<30 || d.Family != "DSv3" {
		t.Errorf("Standard_D4s_v3 = %+v", d)
	}
	lab, _ := c.Lookup("lab-a100")
	want := SKU{Name: "lab-a100", Family: "lab", VCPUs: 32, MemoryBytes: 256 << 30, GPUs: 1, GPUType: "A100",
		GPUMemoryBytes: 80 << 30, PricePerHour: 1.2, Source: SourceFile}
	if lab != want {
		t.Errorf("lab-a100 = %+v, want %+v", lab, want)
	}
	tiny, _ := c.Lookup("tiny")
	if tiny.Family != "custom" || tiny.MemoryBytes != 512<<20 {
		t.Errorf("tiny = %+v", tiny)
	}
	// The untouched ones are as built in.
	if s, _ := c.Lookup("local-gpu-2"); s.Source != SourceDetected || s.PricePerHour != 0 {
		t.Errorf("local-gpu-2 = %+v", s)
	}
}

func TestSKUFileReplaces(t *testing.T) {
	path := writeFile(t, "skus.json", `{"replace_builtin": true, "skus": [
		{"name": "only-one", "family": "ours", "vcpus": 2, "memory_gib": 8, "price_per_hour": 0.1}]}`)
	c, err := LoadCatalogue(path, func() (Machine, error) {
		t.Error("detection ran although the file replaces the built-in SKUs")
		return Machine{}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if l := c.List(); len(l) != 1 || l[0].Name != "only-one" || l[0].MemoryBytes != 8<<30 {
		t.Errorf("List = %+v", l)
	}
	if _, ok := c.Lookup("Standard_D4s_v3"); ok {
		t.Error("a replaced built-in SKU is still there")
	}
}

func TestSKUFileEmpty(t *testing.T) {
	for _, content := range []string{"", "# nothing yet\n", "skus: []\n", "{}"} {
		c, err := LoadCatalogue(writeFile(t, "skus.yaml", content), laptop)
		if err != nil {
			t.Fatalf("%q: %v", content, err)
		}
		if c.Len() != 3+len(CloudSKUs()) {
			t.Errorf("%q: Len %d", content, c.Len())
		}
	}
}

func TestSKUFileErrors(t *testing.T) {
	tests := []struct {
		name, file, field, msg string
	}{
		{"unknown field in an entry", "skus:\n  - name: a\n    vcpus: 1\n    typo: 2\n", "skus[0].typo",
			`skus[0] "a": typo: unknown field`},
		{"unknown top-level field", "replace: true\n", "replace", `replace: unknown field`},
		{"missing name", "skus:\n  - vcpus: 1\n", "skus[0].name", `skus[0]: name: required`},
		{"empty name", "skus:\n  - name: ''\n    vcpus: 1\n", "skus[0].name", `skus[0]: name: required`},
		{"bad name", "skus:\n  - name: my sku\n    vcpus: 1\n", "skus[0].name",
			`skus[0] "my sku": name: must be 1-128 characters: letters, digits, '.', '_', '-', starting with a letter or digit`},
		{"duplicate names", "skus:\n  - name: box\n    vcpus: 1\n  - name: BOX\n    vcpus: 2\n", "skus[1].name",
			`skus[1] "BOX": name: duplicates skus[0] (names are compared without regard to case)`},
		{"duplicate of an overridden built-in", "skus:\n  - name: local-cpu-full\n    price_per_hour: 1\n  - name: Local-CPU-Full\n    price_per_hour: 2\n", "skus[1].name",
			`skus[1] "Local-CPU-Full": name: duplicates skus[0] (names are compared without regard to case)`},
		{"vcpus missing on a new SKU", "skus:\n  - name: box\n    memory_gib: 4\n", "skus[0].vcpus",
			`skus[0] "box": vcpus: required (not a built-in SKU, so every field starts empty)`},
		{"vcpus missing when replacing", "replace_builtin: true\nskus:\n  - name: local-cpu-full\n", "skus[0].vcpus",
			`skus[0] "local-cpu-full": vcpus: required (replace_builtin is true, so every field starts empty)`},
		{"vcpus zero", "skus:\n  - name: box\n    vcpus: 0\n", "skus[0].vcpus", `skus[0] "box": vcpus: must be at least 1`},
		{"vcpus negative", "skus:\n  - name: box\n    vcpus: -2\n", "skus[0].vcpus", `skus[0] "box": vcpus: must be at least 1`},
		{"vcpus huge", "skus:\n  - name: box\n    vcpus: 100000\n", "skus[0].vcpus", `skus[0] "box": vcpus: more than 4096`},
		{"vcpus fractional", "skus:\n  - name: box\n    vcpus: 1.5\n", "skus[0].vcpus", `skus[0] "box": vcpus: must be a whole number, not number 1.5`},
		{"vcpus a string", "skus:\n  - name: box\n    vcpus: four\n", "skus[0].vcpus", `skus[0] "box": vcpus: must be a whole number, not string`},
		{"negative memory", "skus:\n  - name: box\n    vcpus: 1\n    memory_gib: -1\n", "skus[0].memory_gib", `skus[0] "box": memory_gib: must not be negative`},
		{"huge memory", "skus:\n  - name: box\n    vcpus: 1\n    memory_gib: 2e6\n", "skus[0].memory_gib", `skus[0] "box": memory_gib: more than 1048576 GiB`},
		{"negative gpus", "skus:\n  - name: box\n    vcpus: 1\n    gpus: -1\n", "skus[0].gpus", `skus[0] "box": gpus: must not be negative`},
		{"gpus without gpu_type", "skus:\n  - name: box\n    vcpus: 1\n    gpus: 2\n", "skus[0].gpu_type",
			`skus[0] "box": gpu_type: required when gpus is more than 0`},
		{"gpu_type without gpus", "skus:\n  - name: box\n    vcpus: 1\n    gpu_type: T4\n", "skus[0].gpu_type", `skus[0] "box": gpu_type: given but gpus is 0`},
		{"negative gpu memory", "skus:\n  - name: box\n    vcpus: 1\n    gpus: 1\n    gpu_type: T4\n    gpu_memory_gib: -16\n", "skus[0].gpu_memory_gib",
			`skus[0] "box": gpu_memory_gib: must not be negative`},
		{"gpu memory without gpus", "skus:\n  - name: box\n    vcpus: 1\n    gpu_memory_gib: 16\n", "skus[0].gpu_memory_gib",
			`skus[0] "box": gpu_memory_gib: given but gpus is 0`},
		{"negative price", "skus:\n  - name: box\n    vcpus: 1\n    price_per_hour: -0.1\n", "skus[0].price_per_hour",
			`skus[0] "box": price_per_hour: must not be negative`},
		{"negative spot price", "skus:\n  - name: box\n    vcpus: 1\n    price_per_hour: 1\n    spot_price_per_hour: -1\n", "skus[0].spot_price_per_hour",
			`skus[0] "box": spot_price_per_hour: must not be negative`},
		{"spot above price", "skus:\n  - name: box\n    vcpus: 1\n    price_per_hour: 1\n    spot_price_per_hour: 2\n", "skus[0].spot_price_per_hour",
			`skus[0] "box": spot_price_per_hour: 2 is more than price_per_hour 1 (0 means no spot offer)`},
		{"override leaves spot above price", "skus:\n  - name: standard_d4s_v3\n    price_per_hour: 0.01\n", "skus[0].spot_price_per_hour",
			`skus[0] "Standard_D4s_v3": spot_price_per_hour: 0.0384 is more than price_per_hour 0.01 (0 means no spot offer)`},
		{"bad family", "skus:\n  - name: box\n    family: my family\n    vcpus: 1\n", "skus[0].family",
			`skus[0] "box": family: must be 1-64 characters: letters, digits, '.', '_', '-', starting with a letter or digit`},
		{"replace with nothing", "replace_builtin: true\n", "skus", `skus: empty, and replace_builtin: true would leave no SKUs at all`},
		{"skus not a list", "skus: 3\n", "skus", `skus: must be a list, not number`},
		{"entry not an object", "skus: [3]\n", "skus[0]", `skus[0]: must be an object, not number`},
		{"replace_builtin not a bool", "replace_builtin: sometimes\n", "replace_builtin", `replace_builtin: must be true or false, not string`},
		{"file is a list", "- name: box\n", "", `must be an object with replace_builtin and skus, not array`},
		{"not YAML", "skus: [\n", "", `not valid YAML or JSON: yaml: line 1: did not find expected node content`},
		{"duplicate key", "skus:\n  - name: a\n    name: b\n    vcpus: 1\n", "",
			`not valid YAML or JSON: yaml: unmarshal errors:
  line 3: key "name" already set in map`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "skus.yaml", tt.file)
			_, err := LoadCatalogue(path, gpuBox)
			fe, ok := fault.As(err)
			if !ok {
				t.Fatalf("error %v is not a fault", err)
			}
			if want := "SKU file " + path + ": " + tt.msg; fe.Message != want {
				t.Errorf("message\n got %s\nwant %s", fe.Message, want)
			}
			if fe.Kind != fault.Invalid || fe.Field != tt.field {
				t.Errorf("kind %s, field %q; want invalid_argument, %q", fe.Kind, fe.Field, tt.field)
			}
		})
	}
}

func TestSKUFileUnreadable(t *testing.T) {
	_, err := LoadCatalogue(filepath.Join(t.TempDir(), "missing.yaml"), laptop)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	big := writeFile(t, "big.yaml", "# "+strings.Repeat("x", maxFileBytes)+"\n")
	_, err = LoadCatalogue(big, laptop)
	if err == nil || err.Error() != "SKU file "+big+" is larger than 1048576 bytes" {
		t.Errorf("big file: %v", err)
	}
}

func TestNewCatalogueValidates(t *testing.T) {
	_, err := NewCatalogue([]SKU{{Name: "ok", Family: "f", VCPUs: 1}, {Name: "bad", Family: "f", VCPUs: 0}})
	if err == nil || err.Error() != `skus[1] "bad": vcpus: must be at least 1` {
		t.Errorf("got %v", err)
	}
	_, err = NewCatalogue([]SKU{{Name: "ok", Family: "f", VCPUs: 1}, {Name: "OK", Family: "f", VCPUs: 1}})
	if err == nil || err.Error() != `skus[1] "OK": name: duplicates skus[0] "ok" (names are compared without regard to case)` {
		t.Errorf("got %v", err)
	}
	_, err = NewCatalogue([]SKU{{Name: "nan", Family: "f", VCPUs: 1, PricePerHour: math.NaN()}})
	if err == nil || err.Error() != `skus[0] "nan": price_per_hour: must not be negative` {
		t.Errorf("got %v", err)
	}
}

func TestCost(t *testing.T) {
	d4 := SKU{PricePerHour: 0.192, SpotPricePerHour: 0.0384}
	noSpot := SKU{PricePerHour: 3.06}
	tests := []struct {
		sku     SKU
		seconds float64
		spot    bool
		want    float64
	}{
		{d4, 3600, false, 0.192},
		{d4, 3600, true, 0.0384},
		{d4, 1800, false, 0.096},
		{d4, 90, true, 0.00096},
		{noSpot, 7200, true, 6.12}, // no spot offer: pay-as-you-go
		{d4, 0, false, 0},
		{d4, -10, false, 0},
		{d4, math.NaN(), false, 0},
		{d4, math.Inf(1), false, 0},
		{SKU{}, 3600, false, 0},
	}
	for _, tt := range tests {
		if got := tt.sku.Cost(tt.seconds, tt.spot); math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("%+v.Cost(%v, %v) = %v, want %v", tt.sku, tt.seconds, tt.spot, got, tt.want)
		}
	}
}

func TestSKUJSON(t *testing.T) {
	c, _ := LoadCatalogue("", gpuBox)
	s, _ := c.Lookup("Standard_NC24ads_A100_v4")
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name":"Standard_NC24ads_A100_v4","family":"NC_A100_v4","vcpus":24,"memory_bytes":236223201280,"gpus":1,` +
		`"gpu_type":"A100","gpu_memory_bytes":85899345920,"price_per_hour":3.673,"spot_price_per_hour":1.102,` +
		`"description":"Azure, 1 NVIDIA A100 80 GB (PCIe)","source":"builtin"}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

func FuzzSKUFile(f *testing.F) {
	f.Add([]byte("skus:\n  - name: a\n    vcpus: 1\n"))
	f.Add([]byte("replace_builtin: true\nskus:\n  - name: b\n    vcpus: 2\n    gpus: 1\n    gpu_type: T4\n"))
	f.Add([]byte(`{"skus":[{"name":"local-cpu-full","price_per_hour":1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		sf, err := parseSKUFile(data)
		if err != nil {
			if _, ok := fault.As(err); !ok {
				t.Fatalf("not a fault: %v", err)
			}
			return
		}
		m, _ := laptop()
		skus, where, err := sf.merge(append(LocalSKUs(m), CloudSKUs()...))
		if err != nil {
			return
		}
		c, err := newCatalogue(skus, nil, where)
		if err != nil {
			return
		}
		for _, s := range c.List() {
			if got, ok := c.Lookup(strings.ToUpper(s.Name)); !ok || got != s {
				t.Fatalf("Lookup(%q) = %+v, %v", s.Name, got, ok)
			}
		}
	})
}
