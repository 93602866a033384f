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
