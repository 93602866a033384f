package jobs

import (
	"regexp"
	"strings"

	"github.com/plinth-dev/plinth/internal/fault"
)

// A command line is text with references, ${{inputs.x}} and
// ${{outputs.y}} (spaces inside the braces allowed), and optional blocks,
// $[[ ... ]], dropped as a whole when an optional input they refer to is
// absent, as in Azure ML:
//
//	python train.py --data ${{inputs.data}} $[[--lr ${{inputs.lr}}]]
//
// Blocks do not nest. A "]]" outside a block is plain text (so bash's
// [[ ... ]] still works).

// part is literal text, a reference, or an optional block of parts.
type part struct {
	text  string
	ref   *reference
	block []part
}

type reference struct {
	kind string // "inputs" or "outputs"
	name string
}

func (r reference) String() string { return r.kind + "." + r.name }

var refRE = regexp.MustCompile(`^(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)$`)

// parseCommand splits a command into parts.
func parseCommand(cmd string) ([]part, error) {
	var top []part
	var block []part
	inBlock, blockAt := false, 0
	add := func(p part) {
		if inBlock {
			block = append(block, p)
		} else {
			top = append(top, p)
		}
	}
	var text strings.Builder
	flush := func() {
		if text.Len() > 0 {
			add(part{text: text.String()})
			text.Reset()
		}
	}
	for i := 0; i < len(cmd); {
		switch {
		case strings.HasPrefix(cmd[i:], "${{"):
			end := strings.Index(cmd[i+3:], "}}")
			if end < 0 {
				return nil, fault.InvalidField("command", "\"${{\" at byte %d is not closed with \"}}\"", i)
			}
			expr := strings.TrimSpace(cmd[i+3 : i+3+end])
			m := refRE.FindStringSubmatch(expr)
			if m == nil {
				return nil, fault.InvalidField("command", "${{%s}} at byte %d: only ${{inputs.<name>}} and ${{outputs.<name>}} are supported", clip(expr), i)
			}
			flush()
			add(part{ref: &reference{kind: m[1], name: m[2]}})
			i += 3 + end + 2
		case strings.HasPrefix(cmd[i:], "$[["):
			if inBlock {
				return nil, fault.InvalidField("command", "optional block at byte %d starts inside the one at byte %d; blocks do not nest", i, blockAt)
			}
			flush()
			inBlock, blockAt, block = true, i, []part{}
			i += 3
		case inBlock && strings.HasPrefix(cmd[i:], "]]"):
			flush()
			inBlock = false
			top = append(top, part{block: block})
			i += 2
		default:
			text.WriteByte(cmd[i])
			i++
		}
	}
	if inBlock {
		return nil, fault.InvalidField("command", "optional block \"$[[\" at byte %d is not closed with \"]]\"", blockAt)
	}
	flush()
	return top, nil
}

// checkReferences checks that every reference names a declared input or
// output and that optional inputs appear only inside optional blocks.
func (s Spec) checkReferences(parts []part) error {
	var unknown, bare []string
	seen := map[string]bool{}
	var walk func(ps []part, inBlock bool)
	walk = func(ps []part, inBlock bool) {
		for _, p := range ps {
			if p.block != nil {
				walk(p.block, true)
				continue
			}
			if p.ref == nil {
				continue
			}
			r := *p.ref
			declared, optional := false, false
			if r.kind == "inputs" {
				in, ok := s.Inputs[r.name]
				declared, optional = ok, in.Optional
			} else {
				_, declared = s.Outputs[r.name]
			}
			switch {
			case !declared && !seen[r.String()]:
				unknown = append(unknown, r.String())
			case declared && optional && !inBlock && !seen["bare "+r.String()]:
				bare = append(bare, r.String())
				seen["bare "+r.String()] = true
			}
			seen[r.String()] = true
		}
	}
	walk(parts, false)
	if len(unknown) > 0 {
		var declared []string
		for _, k := range sortedKeys(s.Inputs) {
			declared = append(declared, "inputs."+k)
		}
		for _, k := range sortedKeys(s.Outputs) {
			declared = append(declared, "outputs."+k)
		}
		list := "none are declared"
		if len(declared) > 0 {
			list = "declared: " + strings.Join(declared, ", ")
		}
		return fault.InvalidField("command", "refers to undeclared %s (%s)", strings.Join(unknown, ", "), list)
	}
	if len(bare) > 0 {
		return fault.InvalidField("command", "optional %s must be referred to inside an optional block, as in $[[--%s ${{%s}}]], so that it can be left out",
			strings.Join(bare, ", "), strings.TrimPrefix(bare[0], "inputs."), bare[0])
	}
	return nil
}

// Render produces the command line to run with /bin/sh -c. inputs holds
// the resolved value of each input given at run time: a local path for
// data inputs, a value for literals (overriding the job's own); outputs
// holds a local path for each output. Literal values are put in as they
// are (quote them in the command if they may contain spaces, as in Azure
// ML); paths are quoted for the shell where they stand (bare, inside
// '...' or inside "..."), so a path with spaces or quotes arrives whole.
// An optional block is dropped when an optional input it refers to has
// no value.
func (s Spec) Render(inputs, outputs map[string]string) (string, error) {
	for _, k := range sortedKeys(inputs) {
		in, ok := s.Inputs[k]
		if !ok {
			return "", fault.InvalidField("inputs."+clip(k), "not an input of this job")
		}
		if in.IsLiteral() {
			if err := checkLiteral("inputs."+k, in.Type, inputs[k]); err != nil {
				return "", err
			}
		} else if err := checkRenderedPath("inputs."+k, inputs[k]); err != nil {
			return "", err
		}
	}
	for _, k := range sortedKeys(outputs) {
		if _, ok := s.Outputs[k]; !ok {
			return "", fault.InvalidField("outputs."+clip(k), "not an output of this job")
		}
		if err := checkRenderedPath("outputs."+k, outputs[k]); err != nil {
			return "", err
		}
	}
	parts, err := parseCommand(s.Command)
	if err != nil {
		return "", err
	}
	if err := s.checkReferences(parts); err != nil {
		return "", err
	}
	// value returns a reference's value, whether it is a path, and
	// whether it is absent because its input is optional.
	value := func(r reference) (v string, isPath, absent bool, err error) {
		if r.kind == "outputs" {
			v, ok := outputs[r.name]
			if !ok {
				return "", false, false, fault.InvalidField("outputs."+r.name, "no path given to render the command with")
			}
			return v, true, false, nil
		}
		in := s.Inputs[r.name]
		if v, ok := inputs[r.name]; ok {
			return v, !in.IsLiteral(), false, nil
		}
		if in.IsLiteral() && in.Value != nil {
			return *in.Value, false, false, nil
		}
		if in.Optional && !in.Given() {
			return "", false, true, nil
		}
		if in.IsLiteral() {
			return "", false, false, fault.InvalidField("inputs."+r.name, "no value to render the command with")
		}
		return "", false, false, fault.InvalidField("inputs."+r.name, "no path given to render the command with")
	}
	var out strings.Builder
	var sh shellState
	emit := func(ps []part) error {
		for _, p := range ps {
			if p.ref == nil {
				out.WriteString(p.text)
				sh.feed(p.text)
				continue
			}
			v, isPath, _, err := value(*p.ref)
			if err != nil {
				return err
			}
			if isPath {
				v = sh.quote(v)
			}
			out.WriteString(v)
			sh.feed(v)
		}
		return nil
	}
	for _, p := range parts {
		if p.block == nil {
			if err := emit([]part{p}); err != nil {
				return "", err
			}
			continue
		}
		drop := false
		for _, q := range p.block {
			if q.ref == nil {
				continue
			}
			_, _, absent, err := value(*q.ref)
			if err != nil {
				return "", err
			}
			drop = drop || absent
		}
		if !drop {
			if err := emit(p.block); err != nil {
				return "", err
			}
		}
	}
	return out.String(), nil
}

func checkRenderedPath(field, p string) error {
	switch {
	case p == "":
		return fault.InvalidField(field, "empty path")
	case strings.ContainsRune(p, 0):
		return fault.InvalidField(field, "path contains a NUL byte")
	}
	return nil
}

// shellState follows the quoting of sh -c text far enough to know
// whether a reference stands bare, inside '...' or inside "...". It
// does not follow $(...), backquotes, here-documents or comments: a
// reference inside those is quoted as if bare.
type shellState struct {
	in      byte // 0, '\'' or '"'
	escaped bool
}

func (st *shellState) feed(s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case st.escaped:
			st.escaped = false
		case st.in == '\'':
			if c == '\'' {
				st.in = 0
			}
		case c == '\\':
			st.escaped = true
		case st.in == '"':
			if c == '"' {
				st.in = 0
			}
		case c == '\'' || c == '"':
			st.in = c
		}
	}
}

// quote makes v one word (or part of one) where the text stands now.
func (st *shellState) quote(v string) string {
	switch st.in {
	case '\'':
		return strings.ReplaceAll(v, "'", `'\''`)
	case '"':
		var b strings.Builder
		for i := 0; i < len(v); i++ {
			if strings.IndexByte("\\\"$`", v[i]) >= 0 {
				b.WriteByte('\\')
			}
			b.WriteByte(v[i])
		}
		return b.String()
	}
	if v != "" && safeBare(v) {
		return v
	}
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}

// safeBare reports whether v means itself unquoted: no spaces, globs,
// quotes, variables or a leading ~.
func safeBare(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_-./:@%+,=", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// References returns the inputs and outputs the command refers to, each
// once, in order of appearance; for a scheduler that mounts only those.
func (s Spec) References() (inputs, outputs []string, err error) {
	parts, err := parseCommand(s.Command)
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	var walk func([]part)
	walk = func(ps []part) {
		for _, p := range ps {
			walk(p.block)
			if p.ref == nil || seen[p.ref.String()] {
				continue
			}
			seen[p.ref.String()] = true
			if p.ref.kind == "inputs" {
				inputs = append(inputs, p.ref.name)
			} else {
				outputs = append(outputs, p.ref.name)
			}
		}
	}
	walk(parts)
	return inputs, outputs, nil
}
