package executor

import (
	"math"
	"strings"

	"github.com/plinth-dev/plinth/internal/fault"
)

// MaxPorts bounds Spec.Ports.
const MaxPorts = 64

// Validate checks what every backend requires of a spec: a well-formed ID,
// exactly one of Command and Shell, a sane environment and non-negative
// resources. Backends call it first in Start; errors are fault.Invalid
// naming the field.
func (s Spec) Validate() error {
	if err := ValidateID(s.ID); err != nil {
		return err
	}
	switch {
	case len(s.Command) > 0 && s.Shell != "":
		return fault.InvalidField("command", "set either command or shell, not both")
	case len(s.Command) == 0 && s.Shell == "":
		return fault.InvalidField("command", "one of command or shell is required")
	case len(s.Command) > 0 && s.Command[0] == "":
		return fault.InvalidField("command", "the program name (command[0]) is empty")
	}
	for _, a := range s.Command {
		if strings.ContainsRune(a, 0) {
			return fault.InvalidField("command", "an argument contains a NUL byte")
		}
	}
	if strings.ContainsRune(s.Shell, 0) {
		return fault.InvalidField("shell", "contains a NUL byte")
	}
	if strings.ContainsRune(s.Dir, 0) {
		return fault.InvalidField("dir", "contains a NUL byte")
	}
	for k, v := range s.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fault.InvalidField("env", "bad variable name %q", k)
		}
		if strings.ContainsRune(v, 0) {
			return fault.InvalidField("env", "%s contains a NUL byte", k)
		}
	}
	r := s.Resources
	if r.CPUs < 0 || math.IsNaN(r.CPUs) || math.IsInf(r.CPUs, 0) {
		return fault.InvalidField("resources.cpus", "must be a non-negative number, got %v", r.CPUs)
	}
	if r.MemoryBytes < 0 {
		return fault.InvalidField("resources.memory_bytes", "must not be negative")
	}
	if r.DiskBytes < 0 {
		return fault.InvalidField("resources.disk_bytes", "must not be negative")
	}
	for _, g := range r.GPUs {
		if g == "" || strings.ContainsAny(g, ", \t\n\x00") {
			return fault.InvalidField("resources.gpus", "bad device %q", g)
		}
	}
	if s.Ports < 0 || s.Ports > MaxPorts {
		return fault.InvalidField("ports", "must be between 0 and %d, got %d", MaxPorts, s.Ports)
	}
	if s.Stage != nil {
		return s.Stage.Validate(s.Env)
	}
	return nil
}

// ValidateID checks a work ID: 1 to 128 of letters, digits, '.', '_' and
// '-', starting with a letter or digit, so it is safe as a file name.
func ValidateID(id string) error {
	if id == "" || len(id) > 128 {
		return fault.InvalidField("id", "must be 1 to 128 characters, got %d", len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			i > 0 && (c == '.' || c == '_' || c == '-')
		if !ok {
			return fault.InvalidField("id", "%q: only letters, digits, '.', '_' and '-' (not first) are allowed", id)
		}
	}
	return nil
}

// Stage lists what remote work moves between the control plane and itself,
// through the Plinth API, with the API key in Env[TokenEnv].
type Stage struct {
	// Server is the control plane's base URL as the work reaches it.
	Server string `json:"server"`
	// TokenEnv names the variable of Spec.Env that holds the API key.
	TokenEnv string `json:"token_env"`
	// Dirs are made empty before anything is fetched (outputs' folders).
	Dirs   []string `json:"dirs,omitempty"`
	Fetch  []Fetch  `json:"fetch,omitempty"`
	Upload []Upload `json:"upload,omitempty"`
}

// What a Fetch brings.
const (
	// FetchCode is a job's code snapshot (a tar.gz), extracted into To.
	FetchCode = "code"
	// FetchData is every file of a data asset version, under To.
	FetchData = "data"
	// FetchArtifacts is every artifact under a key, under To.
	FetchArtifacts = "artifacts"
)

// Fetch is one thing remote work downloads before its command runs.
type Fetch struct {
	Kind      string `json:"kind"`
	Workspace string `json:"workspace"`
	// Source is the code snapshot's digest, the data asset's name, or the
	// artifact key (it starts with the workspace).
	Source string `json:"source"`
	// Version is the data asset's version.
	Version string `json:"version,omitempty"`
	// To is an absolute path inside the work's filesystem.
	To string `json:"to"`
}

// Upload is one file or folder remote work uploads into the artifact store
// (under the artifact key To) after its command succeeded. A path that
// does not exist is skipped: the caller decides whether that is an error.
type Upload struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// StagedRunEnv is the variable through which a remote backend hands
// `plinth workload run` its StagedRun (as JSON).
const StagedRunEnv = "PLINTH_STAGED_RUN"

// StagedRun is a Stage with the command it wraps.
type StagedRun struct {
	Stage
	Command []string `json:"command,omitempty"`
	Shell   string   `json:"shell,omitempty"`
	// Dir is where the command runs; it is made when missing.
	Dir string `json:"dir,omitempty"`
}

// Validate checks a stage against the spec's environment; errors are
// fault.Invalid naming the field.
func (st *Stage) Validate(env map[string]string) error {
	if !strings.HasPrefix(st.Server, "http://") && !strings.HasPrefix(st.Server, "https://") {
		return fault.InvalidField("stage.server", "must be an http:// or https:// URL, got %q", st.Server)
	}
	if st.TokenEnv == "" || env[st.TokenEnv] == "" {
		return fault.InvalidField("stage.token_env", "must name a variable of env that holds the API key, got %q", st.TokenEnv)
	}
	abs := func(field, p string) error {
		if !strings.HasPrefix(p, "/") || strings.Contains("/"+p+"/", "/../") || strings.ContainsRune(p, 0) {
			return fault.InvalidField(field, "must be an absolute path without '..', got %q", p)
		}
		return nil
	}
	for _, d := range st.Dirs {
		if err := abs("stage.dirs", d); err != nil {
			return err
		}
	}
	for _, f := range st.Fetch {
		switch f.Kind {
		case FetchCode, FetchData, FetchArtifacts:
		default:
			return fault.InvalidField("stage.fetch.kind", "must be %s, %s or %s, got %q", FetchCode, FetchData, FetchArtifacts, f.Kind)
		}
		if f.Workspace == "" || f.Source == "" {
			return fault.InvalidField("stage.fetch", "%s needs a workspace and a source", f.Kind)
		}
		if f.Kind == FetchData && f.Version == "" {
			return fault.InvalidField("stage.fetch.version", "data %s needs a version", f.Source)
		}
		if err := abs("stage.fetch.to", f.To); err != nil {
			return err
		}
	}
	for _, u := range st.Upload {
		if err := abs("stage.upload.from", u.From); err != nil {
			return err
		}
		if u.To == "" || strings.HasPrefix(u.To, "/") {
			return fault.InvalidField("stage.upload.to", "must be an artifact key (workspace/...), got %q", u.To)
		}
	}
	return nil
}
