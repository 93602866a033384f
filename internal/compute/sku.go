// Package compute owns the SKU catalogue, compute targets, quotas, idle stop and cost.
package compute

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"sigs.k8s.io/yaml"

	"github.com/plinth-dev/plinth/internal/fault"
)

// GiB is the unit SKU files use for memory.
const GiB = 1 << 30

// SKU is a machine size a job or a deployment can ask for by name (its
// instance_type), like an Azure VM size: what it has and what an hour of
// it costs.
type SKU struct {
	// Name is matched case-insensitively ("standard_d4s_v3" finds
	// "Standard_D4s_v3").
	Name   string `json:"name"`
	Family string `json:"family"`
	VCPUs  int    `json:"vcpus"`
	// MemoryBytes is 0 when it is not known (a machine whose memory could
	// not be detected).
	MemoryBytes int64  `json:"memory_bytes"`
	GPUs        int    `json:"gpus"`
	GPUType     string `json:"gpu_type,omitempty"`
	// GPUMemoryBytes is the memory of each GPU, not of all of them.
	GPUMemoryBytes int64 `json:"gpu_memory_bytes,omitempty"`
	// PricePerHour is the pay-as-you-go price of one instance, in the
	// currency the operator bills in (the built-in prices are US dollars).
	PricePerHour float64 `json:"price_per_hour"`
	// SpotPricePerHour is 0 when the SKU has no spot (preemptible) offer.
	SpotPricePerHour float64 `json:"spot_price_per_hour"`
	Description      string  `json:"description,omitempty"`
	// Source says where the entry came from: "detected" (this machine),
	// "builtin" (the cloud list below) or "file" (the operator's SKU file,
	// including built-in entries it overrode).
	Source string `json:"source"`
}

// Sources of a SKU.
const (
	SourceDetected = "detected"
	SourceBuiltin  = "builtin"
	SourceFile     = "file"
)

// Cost returns what running one instance for the given number of seconds
// costs at the SKU's price; spot uses the spot price when the SKU has one
// and the pay-as-you-go price when it has none. Multiply by the instance
// count for multi-node work.
func (s SKU) Cost(seconds float64, spot bool) float64 {
	if !(seconds > 0) || math.IsInf(seconds, 1) {
		return 0
	}
	price := s.PricePerHour
	if spot && s.SpotPricePerHour > 0 {
		price = s.SpotPricePerHour
	}
	return price * seconds / 3600
}

// Limits on a SKU's numbers: far above any real machine, low enough that
// sums over many instances cannot overflow.
const (
	maxVCPUs       = 4096
	maxGPUs        = 1024
	maxMemoryGiB   = 1 << 20 // 1 PiB
	maxPrice       = 1e6
	maxDescription = 1024
	maxFileBytes   = 1 << 20
	maxSKUs        = 10000
)

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	familyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
)

// Catalogue is an immutable set of SKUs, looked up by name without regard
// to case. It is safe for concurrent use.
type Catalogue struct {
	skus     []SKU          // in List order
	byName   map[string]int // lower-case name -> index in skus
	warnings []string
}

// NewCatalogue validates the SKUs and builds a catalogue of them; names
// must be unique without regard to case.
func NewCatalogue(skus []SKU) (*Catalogue, error) {
	return newCatalogue(skus, nil, func(i int, s SKU) (string, string) {
		return fmt.Sprintf("skus[%d] %q", i, s.Name), fmt.Sprintf("skus[%d]", i)
	})
}

// where says how error messages name the i'th SKU (label) and the field
// path of its entry (prefix).
type where func(i int, s SKU) (label, prefix string)

// newCatalogue validates and sorts.
func newCatalogue(skus []SKU, warnings []string, where where) (*Catalogue, error) {
	if len(skus) > maxSKUs {
		return nil, fault.InvalidField("skus", "more than %d SKUs", maxSKUs)
	}
	c := &Catalogue{skus: slices.Clone(skus), byName: make(map[string]int, len(skus)), warnings: slices.Clone(warnings)}
	seen := make(map[string]int, len(skus))
	for i, s := range c.skus {
		label, prefix := where(i, s)
		if err := validateSKU(s, label, prefix); err != nil {
			return nil, err
		}
		key := strings.ToLower(s.Name)
		if j, dup := seen[key]; dup {
			other, _ := where(j, c.skus[j])
			return nil, skuError(prefix, "name", label, "duplicates %s (names are compared without regard to case)", other)
		}
		seen[key] = i
	}
	slices.SortFunc(c.skus, func(a, b SKU) int {
		if c := strings.Compare(strings.ToLower(a.Family), strings.ToLower(b.Family)); c != 0 {
			return c
		}
		if a.VCPUs != b.VCPUs {
			return a.VCPUs - b.VCPUs
		}
		return strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name))
	})
	for i, s := range c.skus {
		c.byName[strings.ToLower(s.Name)] = i
	}
	return c, nil
}

// Lookup finds a SKU by name, without regard to case.
func (c *Catalogue) Lookup(name string) (SKU, bool) {
	i, ok := c.byName[strings.ToLower(name)]
	if !ok {
		return SKU{}, false
	}
	return c.skus[i], true
}

// Get is Lookup with a NotFound error naming the unknown instance type.
func (c *Catalogue) Get(name string) (SKU, error) {
	s, ok := c.Lookup(name)
	if !ok {
		shown := name
		if len(shown) > 64 {
			shown = shown[:61] + "..."
		}
		return SKU{}, fault.New(fault.NotFound, "unknown instance type %q", shown)
	}
	return s, nil
}

// List returns every SKU sorted by family, then vCPUs, then name.
func (c *Catalogue) List() []SKU { return slices.Clone(c.skus) }

// Len returns the number of SKUs.
func (c *Catalogue) Len() int { return len(c.skus) }

// Warnings returns what machine detection could not find out (for
// example why no GPUs were listed), to be logged once at start.
func (c *Catalogue) Warnings() []string { return slices.Clone(c.warnings) }

// LoadCatalogue builds the catalogue: this machine's SKUs (from detect;
// nil means DetectSystem) and the built-in cloud SKUs, then the SKU file
// at path, when path is not empty, merged over them by name or replacing
// them (replace_builtin: true, in which case detect is not called).
//
// The file is YAML or JSON:
//
//	replace_builtin: false     # default: merge by name
//	skus:
//	  - name: local-gpu-1      # a built-in name: only the fields given change
//	    price_per_hour: 0.35
//	  - name: lab-a100         # a new name: vcpus is required
//	    family: lab
//	    vcpus: 32
//	    memory_gib: 256
//	    gpus: 1
//	    gpu_type: A100
//	    gpu_memory_gib: 80
//	    price_per_hour: 1.2
//	    spot_price_per_hour: 0
//	    description: the lab's shared box
func LoadCatalogue(path string, detect Detector) (*Catalogue, error) {
	var f *skuFile
	if path != "" {
		data, err := readLimited(path, maxFileBytes)
		if err != nil {
			return nil, err
		}
		f, err = parseSKUFile(data)
		if err != nil {
			return nil, prefixed(fmt.Sprintf("SKU file %s", path), err)
		}
	}
	var base []SKU
	var warnings []string
	if f == nil || !f.replace {
		if detect == nil {
			detect = DetectSystem
		}
		m, err := detect()
		if err != nil {
			return nil, fmt.Errorf("detecting this machine's CPUs, memory and GPUs: %w", err)
		}
		base = append(LocalSKUs(m), CloudSKUs()...)
		warnings = m.Notes
	}
	if f == nil {
		return newCatalogue(base, warnings, builtinWhere)
	}
	skus, where, err := f.merge(base)
	if err != nil {
		return nil, prefixed(fmt.Sprintf("SKU file %s", path), err)
	}
	c, err := newCatalogue(skus, warnings, where)
	if err != nil {
		return nil, prefixed(fmt.Sprintf("SKU file %s", path), err)
	}
	return c, nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading SKU file: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading SKU file %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fault.New(fault.Invalid, "SKU file %s is larger than %d bytes", path, limit)
	}
	return data, nil
}

// prefixed puts where in front of a fault's message, keeping its kind and
// field.
func prefixed(where string, err error) error {
	if fe, ok := fault.As(err); ok {
		c := *fe
		c.Message = where + ": " + fe.Message
		return &c
	}
	return fmt.Errorf("%s: %w", where, err)
}

// skuFile is a parsed SKU file.
type skuFile struct {
	replace bool
	entries []skuEntry
}

// skuEntry is one entry of a SKU file; nil fields were not given.
type skuEntry struct {
	Name             *string  `json:"name"`
	Family           *string  `json:"family"`
	VCPUs            *int     `json:"vcpus"`
	MemoryGiB        *float64 `json:"memory_gib"`
	GPUs             *int     `json:"gpus"`
	GPUType          *string  `json:"gpu_type"`
	GPUMemoryGiB     *float64 `json:"gpu_memory_gib"`
	PricePerHour     *float64 `json:"price_per_hour"`
	SpotPricePerHour *float64 `json:"spot_price_per_hour"`
	Description      *string  `json:"description"`
}

func parseSKUFile(data []byte) (*skuFile, error) {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fault.New(fault.Invalid, "not valid YAML or JSON: %s", strings.TrimPrefix(err.Error(), "error converting YAML to JSON: "))
	}
	if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
		return &skuFile{}, nil // empty, or only comments
	}
	var top struct {
		ReplaceBuiltin *bool             `json:"replace_builtin"`
		SKUs           []json.RawMessage `json:"skus"`
	}
	if err := decodeStrict(j, &top); err != nil {
		return nil, jsonFieldError("", "", err)
	}
	if len(top.SKUs) > maxSKUs {
		return nil, fault.InvalidField("skus", "more than %d entries", maxSKUs)
	}
	f := &skuFile{replace: top.ReplaceBuiltin != nil && *top.ReplaceBuiltin}
	if f.replace && len(top.SKUs) == 0 {
		return nil, fault.InvalidField("skus", "empty, and replace_builtin: true would leave no SKUs at all")
	}
	for i, raw := range top.SKUs {
		var e skuEntry
		if err := decodeStrict(raw, &e); err != nil {
			name := ""
			var probe struct {
				Name any `json:"name"`
			}
			if json.Unmarshal(raw, &probe) == nil {
				if s, ok := probe.Name.(string); ok {
					name = s
				}
			}
			return nil, jsonFieldError(fmt.Sprintf("skus[%d]", i), entryLabel(i, name), err)
		}
		f.entries = append(f.entries, e)
	}
	return f, nil
}

func decodeStrict(j []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	return nil
}

// jsonFieldError turns a json decoding error into one naming the field.
// prefix is the field path of the object decoded ("" or "skus[2]"), label
// how messages name it.
func jsonFieldError(prefix, label string, err error) error {
	join := func(field string) string {
		if prefix == "" {
			return field
		}
		return prefix + "." + field
	}
	lead := ""
	if label != "" {
		lead = label + ": "
	}
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			if prefix == "" {
				return fault.New(fault.Invalid, "must be an object with replace_builtin and skus, not %s", te.Value)
			}
			return &fault.Error{Kind: fault.Invalid, Field: prefix, Message: fmt.Sprintf("%smust be an object, not %s", lead, te.Value)}
		}
		want := map[string]string{"int": "a whole number", "float64": "a number", "string": "a string", "bool": "true or false",
			"[]json.RawMessage": "a list", "compute.skuEntry": "an object"}[te.Type.String()]
		if want == "" {
			want = te.Type.String()
		}
		return &fault.Error{Kind: fault.Invalid, Field: join(field), Message: fmt.Sprintf("%s%s: must be %s, not %s", lead, field, want, te.Value)}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field, _ := strconvUnquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		return &fault.Error{Kind: fault.Invalid, Field: join(field), Message: fmt.Sprintf("%s%s: unknown field", lead, field)}
	default:
		if prefix == "" {
			return fault.Wrap(fault.Invalid, err, "not a valid SKU file")
		}
		return &fault.Error{Kind: fault.Invalid, Field: prefix, Message: lead + "not a valid SKU entry", Err: err}
	}
}

func strconvUnquote(s string) (string, bool) {
	var out string
	if json.Unmarshal([]byte(s), &out) == nil {
		return out, true
	}
	return s, false
}

func entryLabel(i int, name string) string {
	if name == "" {
		return fmt.Sprintf("skus[%d]", i)
	}
	return fmt.Sprintf("skus[%d] %q", i, name)
}

func builtinWhere(_ int, s SKU) (string, string) {
	return fmt.Sprintf("built-in SKU %q", s.Name), "skus"
}

// skuError is an Invalid fault for a field of the entry at prefix.
func skuError(prefix, field, label, format string, args ...any) error {
	return &fault.Error{Kind: fault.Invalid, Field: prefix + "." + field,
		Message: label + ": " + field + ": " + fmt.Sprintf(format, args...)}
}

// merge applies the file's entries over base. It returns the SKUs and how
// to name each in errors (by its file entry when the file touched it).
func (f *skuFile) merge(base []SKU) ([]SKU, where, error) {
	out := slices.Clone(base)
	if f.replace {
		out = nil
	}
	index := make(map[string]int, len(out)) // lower-case name -> index in out
	for i, s := range out {
		index[strings.ToLower(s.Name)] = i
	}
	fromFile := map[int]int{} // index in out -> entry index
	for i, e := range f.entries {
		label := entryLabel(i, deref(e.Name))
		if e.Name == nil || *e.Name == "" {
			return nil, nil, skuError(fmt.Sprintf("skus[%d]", i), "name", label, "required")
		}
		key := strings.ToLower(*e.Name)
		j, exists := index[key]
		if exists {
			if prev, dup := invert(fromFile, j); dup {
				return nil, nil, skuError(fmt.Sprintf("skus[%d]", i), "name", label, "duplicates skus[%d] (names are compared without regard to case)", prev)
			}
		} else {
			if e.VCPUs == nil {
				what := "not a built-in SKU"
				if f.replace {
					what = "replace_builtin is true"
				}
				return nil, nil, skuError(fmt.Sprintf("skus[%d]", i), "vcpus", label, "required (%s, so every field starts empty)", what)
			}
			out = append(out, SKU{Name: *e.Name, Family: "custom"})
			j = len(out) - 1
			index[key] = j
		}
		s, err := e.apply(i, label, out[j])
		if err != nil {
			return nil, nil, err
		}
		out[j] = s
		fromFile[j] = i
	}
	return out, func(k int, s SKU) (string, string) {
		if i, ok := fromFile[k]; ok {
			return entryLabel(i, s.Name), fmt.Sprintf("skus[%d]", i)
		}
		return builtinWhere(k, s)
	}, nil
}

func invert(m map[int]int, k int) (int, bool) {
	v, ok := m[k]
	return v, ok
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// apply sets the fields the entry gives; the merged SKU is validated as a
// whole afterwards.
func (e skuEntry) apply(i int, label string, s SKU) (SKU, error) {
	gibToBytes := func(field string, v float64) (int64, error) {
		if v < 0 || math.IsNaN(v) {
			return 0, skuError(fmt.Sprintf("skus[%d]", i), field, label, "must not be negative")
		}
		if v > maxMemoryGiB {
			return 0, skuError(fmt.Sprintf("skus[%d]", i), field, label, "more than %d GiB", maxMemoryGiB)
		}
		return int64(math.Round(v * GiB)), nil
	}
	var err error
	if e.Family != nil {
		s.Family = *e.Family
	}
	if e.VCPUs != nil {
		s.VCPUs = *e.VCPUs
	}
	if e.MemoryGiB != nil {
		if s.MemoryBytes, err = gibToBytes("memory_gib", *e.MemoryGiB); err != nil {
			return s, err
		}
	}
	if e.GPUs != nil {
		s.GPUs = *e.GPUs
	}
	if e.GPUType != nil {
		s.GPUType = *e.GPUType
	}
	if e.GPUMemoryGiB != nil {
		if s.GPUMemoryBytes, err = gibToBytes("gpu_memory_gib", *e.GPUMemoryGiB); err != nil {
			return s, err
		}
	}
	if e.PricePerHour != nil {
		s.PricePerHour = *e.PricePerHour
	}
	if e.SpotPricePerHour != nil {
		s.SpotPricePerHour = *e.SpotPricePerHour
	}
	if e.Description != nil {
		s.Description = *e.Description
	}
	s.Source = SourceFile
	return s, nil
}

// validateSKU checks one SKU; field names are those of the SKU file.
func validateSKU(s SKU, label, prefix string) error {
	bad := func(field, format string, args ...any) error { return skuError(prefix, field, label, format, args...) }
	switch {
	case !nameRE.MatchString(s.Name):
		return bad("name", "must be 1-128 characters: letters, digits, '.', '_', '-', starting with a letter or digit")
	case !familyRE.MatchString(s.Family):
		return bad("family", "must be 1-64 characters: letters, digits, '.', '_', '-', starting with a letter or digit")
	case s.VCPUs < 1:
		return bad("vcpus", "must be at least 1")
	case s.VCPUs > maxVCPUs:
		return bad("vcpus", "more than %d", maxVCPUs)
	case s.MemoryBytes < 0:
		return bad("memory_gib", "must not be negative")
	case s.MemoryBytes > maxMemoryGiB*GiB:
		return bad("memory_gib", "more than %d GiB", maxMemoryGiB)
	case s.GPUs < 0:
		return bad("gpus", "must not be negative")
	case s.GPUs > maxGPUs:
		return bad("gpus", "more than %d", maxGPUs)
	case s.GPUs > 0 && strings.TrimSpace(s.GPUType) == "":
		return bad("gpu_type", "required when gpus is more than 0")
	case s.GPUs == 0 && s.GPUType != "":
		return bad("gpu_type", "given but gpus is 0")
	case s.GPUMemoryBytes < 0:
		return bad("gpu_memory_gib", "must not be negative")
	case s.GPUMemoryBytes > maxMemoryGiB*GiB:
		return bad("gpu_memory_gib", "more than %d GiB", maxMemoryGiB)
	case s.GPUs == 0 && s.GPUMemoryBytes != 0:
		return bad("gpu_memory_gib", "given but gpus is 0")
	case len(s.GPUType) > 128 || !utf8.ValidString(s.GPUType):
		return bad("gpu_type", "must be at most 128 characters of UTF-8")
	case math.IsNaN(s.PricePerHour) || s.PricePerHour < 0:
		return bad("price_per_hour", "must not be negative")
	case s.PricePerHour > maxPrice:
		return bad("price_per_hour", "more than %g", float64(maxPrice))
	case math.IsNaN(s.SpotPricePerHour) || s.SpotPricePerHour < 0:
		return bad("spot_price_per_hour", "must not be negative")
	case s.SpotPricePerHour > s.PricePerHour:
		return bad("spot_price_per_hour", "%g is more than price_per_hour %g (0 means no spot offer)", s.SpotPricePerHour, s.PricePerHour)
	case utf8.RuneCountInString(s.Description) > maxDescription || !utf8.ValidString(s.Description):
		return bad("description", "must be at most %d characters of UTF-8", maxDescription)
	}
	return nil
}

// CloudSKUs returns the built-in list of well-known cloud machine sizes,
// there for planning and cost estimates (what would this job cost on
// Azure?). Prices are approximate pay-as-you-go list prices in US dollars
// per hour, Linux, in Azure East US / AWS us-east-1, as published around
// 2025-2026; spot prices move hourly and are typical values, not quotes.
// They are for planning only and drift: operators override them (or add
// their negotiated rates) in the SKU file.
func CloudSKUs() []SKU {
	b := func(name, family string, vcpus int, memGiB float64, gpus int, gpuType string, gpuGiB float64, price, spot float64, desc string) SKU {
		return SKU{Name: name, Family: family, VCPUs: vcpus, MemoryBytes: int64(memGiB * GiB), GPUs: gpus, GPUType: gpuType,
			GPUMemoryBytes: int64(gpuGiB * GiB), PricePerHour: price, SpotPricePerHour: spot, Description: desc, Source: SourceBuiltin}
	}
	return []SKU{
		b("Standard_D4s_v3", "DSv3", 4, 16, 0, "", 0, 0.192, 0.0384, "Azure general purpose, 4 vCPUs, 16 GiB"),
		b("Standard_D8s_v3", "DSv3", 8, 32, 0, "", 0, 0.384, 0.0768, "Azure general purpose, 8 vCPUs, 32 GiB"),
		b("Standard_E8s_v3", "ESv3", 8, 64, 0, "", 0, 0.504, 0.1008, "Azure memory optimised, 8 vCPUs, 64 GiB"),
		b("Standard_NC6s_v3", "NCv3", 6, 112, 1, "V100", 16, 3.06, 0.918, "Azure, 1 NVIDIA V100 16 GB"),
		b("Standard_NC24ads_A100_v4", "NC_A100_v4", 24, 220, 1, "A100", 80, 3.673, 1.102, "Azure, 1 NVIDIA A100 80 GB (PCIe)"),
		b("Standard_NC40ads_H100_v5", "NC_H100_v5", 40, 320, 1, "H100", 94, 6.98, 2.094, "Azure, 1 NVIDIA H100 NVL 94 GB"),
		b("Standard_ND96asr_v4", "NDasrA100_v4", 96, 900, 8, "A100", 40, 27.197, 8.159, "Azure, 8 NVIDIA A100 40 GB, NVLink, InfiniBand"),
		b("m5.xlarge", "m5", 4, 16, 0, "", 0, 0.192, 0.0672, "AWS general purpose, 4 vCPUs, 16 GiB"),
		b("g5.xlarge", "g5", 4, 16, 1, "A10G", 24, 1.006, 0.4024, "AWS, 1 NVIDIA A10G 24 GB"),
		b("p4d.24xlarge", "p4d", 96, 1152, 8, "A100", 40, 21.96, 8.784, "AWS, 8 NVIDIA A100 40 GB, NVSwitch, EFA"),
	}
}
