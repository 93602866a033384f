package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/plinth-dev/plinth/internal/server"
)

// The references in docs/ that are generated from the code: the CLI
// reference from the command tree, the REST reference from the OpenAPI
// document, and the configuration reference's tables from the server
// roles' flags and the config file's fields. Each test fails when its
// file is stale; PLINTH_UPDATE_DOCS=1 rewrites the file instead.

const updateHint = "regenerate with PLINTH_UPDATE_DOCS=1 go test ./internal/cli -run Doc"

// checkDoc compares a generated file (or the part of it between begin and
// end, when begin is not empty) with what the code says.
func checkDoc(t *testing.T, path, begin, end, want string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil && !(os.IsNotExist(err) && begin == "") {
		t.Fatal(err)
	}
	got := string(raw)
	updated := want
	if begin != "" {
		i, j := strings.Index(got, begin), strings.Index(got, end)
		if i < 0 || j < i {
			t.Fatalf("%s: no %q ... %q markers", path, begin, end)
		}
		updated = got[:i+len(begin)] + "\n" + want + got[j:]
	}
	if updated == got {
		return
	}
	if os.Getenv("PLINTH_UPDATE_DOCS") != "" {
		if err := os.WriteFile(path, []byte(updated), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote %s", path)
		return
	}
	t.Errorf("%s is stale: %s", path, updateHint)
}

func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// ---- CLI reference ----

func TestCLIDoc(t *testing.T) {
	checkDoc(t, "../../docs/cli.md", "", "", cliDoc(NewRoot(io.Discard, io.Discard)))
}

func flagDefault(f *pflag.Flag) string {
	switch {
	case f.Value.Type() == "bool" && f.DefValue == "false":
		return ""
	case f.DefValue == "" || f.DefValue == "[]":
		return ""
	}
	return "`" + f.DefValue + "`"
}

func flagName(f *pflag.Flag) string {
	name := "`--" + f.Name
	if f.Value.Type() != "bool" {
		name += " " + f.Value.Type()
	}
	name += "`"
	if f.Shorthand != "" {
		name = "`-" + f.Shorthand + "`, " + name
	}
	return name
}

func flagTable(b *strings.Builder, fs *pflag.FlagSet) {
	var flags []*pflag.Flag
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden && f.Name != "help" {
			flags = append(flags, f)
		}
	})
	if len(flags) == 0 {
		return
	}
	b.WriteString("| flag | default | description |\n|---|---|---|\n")
	for _, f := range flags {
		fmt.Fprintf(b, "| %s | %s | %s |\n", flagName(f), flagDefault(f), cell(f.Usage))
	}
	b.WriteString("\n")
}

func visible(cmds []*cobra.Command) []*cobra.Command {
	var out []*cobra.Command
	for _, c := range cmds {
		if !c.Hidden && c.Name() != "help" && c.IsAvailableCommand() {
			out = append(out, c)
		}
	}
	return out
}

func anchor(path string) string { return strings.ReplaceAll(path, " ", "-") }

func cliDoc(root *cobra.Command) string {
	root.InitDefaultCompletionCmd()
	var all []*cobra.Command
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, s := range visible(c.Commands()) {
			all = append(all, s)
			walk(s)
		}
	}
	walk(root)

	var b strings.Builder
	b.WriteString("<!-- Generated from the command tree by TestCLIDoc (internal/cli/docs_test.go); do not edit.\n     " + updateHint + " -->\n")
	b.WriteString("# CLI reference\n\n")
	b.WriteString(root.Long + "\n\n")
	b.WriteString("Every command below takes the global flags:\n\n")
	flagTable(&b, root.PersistentFlags())
	b.WriteString("## Commands\n\n")
	for _, c := range all {
		depth := strings.Count(c.CommandPath(), " ") - 1
		fmt.Fprintf(&b, "%s- [`%s`](#%s) — %s\n", strings.Repeat("  ", depth), c.CommandPath(), anchor(c.CommandPath()), cell(c.Short))
	}
	b.WriteString("\n")
	for _, c := range all {
		fmt.Fprintf(&b, "## %s\n\n", c.CommandPath())
		if c.Long != "" {
			b.WriteString(strings.TrimSpace(c.Long) + "\n\n")
		} else {
			b.WriteString(c.Short + ".\n\n")
		}
		if c.Runnable() {
			fmt.Fprintf(&b, "```\n%s\n```\n\n", c.UseLine())
		}
		if subs := visible(c.Commands()); len(subs) > 0 {
			b.WriteString("Subcommands: ")
			for i, s := range subs {
				if i > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "[`%s`](#%s)", s.Name(), anchor(s.CommandPath()))
			}
			b.WriteString(".\n\n")
		}
		if c.Example != "" {
			fmt.Fprintf(&b, "Examples:\n\n```sh\n%s\n```\n\n", strings.TrimRight(dedent(c.Example), "\n"))
		}
		// Flags of this command and those its parents share with it,
		// the root's global ones left out.
		fs := pflag.NewFlagSet(c.Name(), pflag.ContinueOnError)
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if root.PersistentFlags().Lookup(f.Name) == nil {
				fs.AddFlag(f)
			}
		})
		c.InheritedFlags().VisitAll(func(f *pflag.Flag) {
			if root.PersistentFlags().Lookup(f.Name) == nil && fs.Lookup(f.Name) == nil {
				fs.AddFlag(f)
			}
		})
		flagTable(&b, fs)
	}
	return strings.TrimRight(b.String(), "\n") + "\n"
}

func dedent(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "  ")
	}
	return strings.Join(lines, "\n")
}

// ---- REST API reference ----

func TestAPIDoc(t *testing.T) {
	raw, err := os.ReadFile("../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := apiDoc(raw)
	if err != nil {
		t.Fatal(err)
	}
	checkDoc(t, "../../docs/api.md", "", "", doc)
}

type obj = map[string]any

func str(m obj, k string) string { s, _ := m[k].(string); return s }

// refName is the last segment of a $ref.
func refName(ref string) string { return ref[strings.LastIndex(ref, "/")+1:] }

// schemaType describes a schema in a few words: a linked name, or its type.
func schemaType(s obj) string {
	if ref := str(s, "$ref"); ref != "" {
		return fmt.Sprintf("[%s](#%s)", refName(ref), strings.ToLower(refName(ref)))
	}
	switch t := str(s, "type"); t {
	case "array":
		items, _ := s["items"].(obj)
		return "array of " + schemaType(items)
	case "":
		for _, k := range []string{"oneOf", "anyOf", "allOf"} {
			if list, ok := s[k].([]any); ok {
				var parts []string
				for _, x := range list {
					m, _ := x.(obj)
					parts = append(parts, schemaType(m))
				}
				return strings.Join(parts, " or ")
			}
		}
		return "any"
	default:
		if f := str(s, "format"); f != "" {
			t += " (" + f + ")"
		}
		if e, ok := s["enum"].([]any); ok {
			var vs []string
			for _, v := range e {
				vs = append(vs, fmt.Sprintf("`%v`", v))
			}
			t += ": " + strings.Join(vs, ", ")
		}
		return t
	}
}

func apiDoc(raw []byte) (string, error) {
	j, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return "", err
	}
	var spec obj
	if err := json.Unmarshal(j, &spec); err != nil {
		return "", err
	}
	info, _ := spec["info"].(obj)
	paths, _ := spec["paths"].(obj)
	comps, _ := spec["components"].(obj)
	params, _ := comps["parameters"].(obj)
	responses, _ := comps["responses"].(obj)
	schemas, _ := comps["schemas"].(obj)
	resolve := func(m obj, in obj) obj {
		if ref := str(m, "$ref"); ref != "" {
			if r, ok := in[refName(ref)].(obj); ok {
				return r
			}
		}
		return m
	}

	// Paths in the document's order (JSON objects have none).
	var order []string
	for _, m := range regexp.MustCompile(`(?m)^  (/[^:]*):\s*$`).FindAllStringSubmatch(string(raw), -1) {
		order = append(order, m[1])
	}
	type op struct {
		method, path string
		o, shared    obj
	}
	byTag := map[string][]op{}
	for _, p := range order {
		item, _ := paths[p].(obj)
		for _, method := range []string{"get", "put", "post", "patch", "delete", "head"} {
			o, ok := item[method].(obj)
			if !ok {
				continue
			}
			tag := "other"
			if tags, ok := o["tags"].([]any); ok && len(tags) > 0 {
				tag = fmt.Sprint(tags[0])
			}
			byTag[tag] = append(byTag[tag], op{strings.ToUpper(method), p, o, item})
		}
	}
	var tags []obj
	if list, ok := spec["tags"].([]any); ok {
		for _, x := range list {
			m, _ := x.(obj)
			tags = append(tags, m)
		}
	}
	for tag := range byTag {
		if !slices.ContainsFunc(tags, func(m obj) bool { return str(m, "name") == tag }) {
			tags = append(tags, obj{"name": tag})
		}
	}

	var b strings.Builder
	b.WriteString("<!-- Generated from internal/api/openapi.yaml by TestAPIDoc (internal/cli/docs_test.go); do not edit.\n     " + updateHint + " -->\n")
	fmt.Fprintf(&b, "# %s reference (%s)\n\n", str(info, "title"), str(info, "version"))
	b.WriteString("The running server serves this document as JSON at `GET /api/v1/openapi.json`; point any\nOpenAPI tool at it. The MLflow REST API (`/api/2.0/mlflow/...`) and the OpenAI-compatible API\n(`/openai/...`, see [llm.md](llm.md)) follow their own specifications and are not repeated here.\n\n")
	b.WriteString(strings.TrimSpace(str(info, "description")) + "\n\n")
	b.WriteString("## Operations\n\n")
	for _, tg := range tags {
		ops := byTag[str(tg, "name")]
		if len(ops) == 0 {
			continue
		}
		fmt.Fprintf(&b, "- **%s** — %s\n", str(tg, "name"), cell(str(tg, "description")))
		for _, o := range ops {
			fmt.Fprintf(&b, "  - [`%s %s`](#%s) %s\n", o.method, o.path, strings.ToLower(str(o.o, "operationId")), cell(str(o.o, "summary")))
		}
	}
	b.WriteString("\n")
	for _, tg := range tags {
		ops := byTag[str(tg, "name")]
		if len(ops) == 0 {
			continue
		}
		fmt.Fprintf(&b, "## %s\n\n", str(tg, "name"))
		if d := str(tg, "description"); d != "" {
			b.WriteString(d + "\n\n")
		}
		for _, o := range ops {
			fmt.Fprintf(&b, "### %s\n\n`%s %s` — %s\n\n", str(o.o, "operationId"), o.method, o.path, str(o.o, "summary"))
			if d := strings.TrimSpace(str(o.o, "description")); d != "" {
				b.WriteString(d + "\n\n")
			}
			var ps []obj
			for _, src := range []obj{o.shared, o.o} {
				if list, ok := src["parameters"].([]any); ok {
					for _, x := range list {
						m, _ := x.(obj)
						if p := resolve(m, params); str(p, "name") != "X-Request-Id" {
							ps = append(ps, p)
						}
					}
				}
			}
			if len(ps) > 0 {
				b.WriteString("| parameter | in | type | description |\n|---|---|---|---|\n")
				for _, p := range ps {
					s, _ := p["schema"].(obj)
					name := "`" + str(p, "name") + "`"
					if req, _ := p["required"].(bool); req {
						name += " (required)"
					}
					fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", name, str(p, "in"), schemaType(s), cell(str(p, "description")))
				}
				b.WriteString("\n")
			}
			if rb, ok := o.o["requestBody"].(obj); ok {
				content, _ := rb["content"].(obj)
				var kinds []string
				for ct, x := range content {
					m, _ := x.(obj)
					s, _ := m["schema"].(obj)
					kinds = append(kinds, fmt.Sprintf("`%s` %s", ct, schemaType(s)))
				}
				sort.Strings(kinds)
				fmt.Fprintf(&b, "Request body: %s.\n\n", strings.Join(kinds, "; "))
			}
			if rs, ok := o.o["responses"].(obj); ok {
				codes := make([]string, 0, len(rs))
				for c := range rs {
					codes = append(codes, c)
				}
				sort.Strings(codes)
				b.WriteString("| status | meaning |\n|---|---|\n")
				for _, c := range codes {
					m, _ := rs[c].(obj)
					r := resolve(m, responses)
					desc := cell(str(r, "description"))
					if content, ok := r["content"].(obj); ok {
						if js, ok := content["application/json"].(obj); ok {
							s, _ := js["schema"].(obj)
							desc += " " + schemaType(s)
						}
					}
					fmt.Fprintf(&b, "| %s | %s |\n", c, strings.TrimSpace(desc))
				}
				b.WriteString("\n")
			}
		}
	}
	b.WriteString("## Schemas\n\n")
	names := make([]string, 0, len(schemas))
	for n := range schemas {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s, _ := schemas[n].(obj)
		fmt.Fprintf(&b, "### %s\n\n", n)
		if d := strings.TrimSpace(str(s, "description")); d != "" {
			b.WriteString(d + "\n\n")
		}
		props, _ := s["properties"].(obj)
		if len(props) == 0 {
			fmt.Fprintf(&b, "Type: %s.\n\n", schemaType(s))
			continue
		}
		required := map[string]bool{}
		if list, ok := s["required"].([]any); ok {
			for _, r := range list {
				required[fmt.Sprint(r)] = true
			}
		}
		pn := make([]string, 0, len(props))
		for p := range props {
			pn = append(pn, p)
		}
		sort.Strings(pn)
		b.WriteString("| field | type | description |\n|---|---|---|\n")
		for _, p := range pn {
			m, _ := props[p].(obj)
			name := "`" + p + "`"
			if required[p] {
				name += " (required)"
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", name, schemaType(m), cell(str(m, "description")))
		}
		b.WriteString("\n")
	}
	return strings.TrimRight(b.String(), "\n") + "\n", nil
}

// ---- configuration reference ----

const (
	configBegin = "<!-- BEGIN GENERATED: TestConfigDoc; " + updateHint + " -->"
	configEnd   = "<!-- END GENERATED: TestConfigDoc -->"
)

func TestConfigDoc(t *testing.T) {
	fields, err := structDocs("../server")
	if err != nil {
		t.Fatal(err)
	}
	checkDoc(t, "../../docs/configuration.md", configBegin, configEnd, configDoc(NewRoot(io.Discard, io.Discard), fields))
}

// TestConfigDocNamesEveryVariable: every PLINTH_* variable the CLI and its
// client read is in docs/configuration.md.
func TestConfigDocNamesEveryVariable(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("*.go")
	more, _ := filepath.Glob("../client/*.go")
	for _, f := range append(files, more...) {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`"(PLINTH_[A-Z0-9_]+)"`).FindAllSubmatch(src, -1) {
			if !bytes.Contains(doc, []byte("`"+string(m[1])+"`")) {
				t.Errorf("%s reads %s, which docs/configuration.md does not name", f, m[1])
			}
		}
	}
}

var envInUsage = regexp.MustCompile(`\s*\(env (PLINTH_[A-Z0-9_]+)(\)|; )`)

func configDoc(root *cobra.Command, fields map[string][]fieldDoc) string {
	var b strings.Builder
	for _, name := range []string{"up", "server", "gateway"} {
		c, _, err := root.Find([]string{name})
		if err != nil || c.Name() != name {
			continue
		}
		fmt.Fprintf(&b, "### plinth %s\n\n%s.\n\n", name, c.Short)
		b.WriteString("| flag | environment | default | description |\n|---|---|---|---|\n")
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Hidden || f.Name == "help" || root.PersistentFlags().Lookup(f.Name) != nil {
				return
			}
			env, usage := "", f.Usage
			if m := envInUsage.FindStringSubmatch(usage); m != nil {
				env = "`" + m[1] + "`"
				with := ""
				if m[2] == "; " {
					with = " (" // "(env X; default: ...)" keeps "(default: ...)"
				}
				usage = strings.TrimSpace(strings.Replace(usage, m[0], with, 1))
			}
			fmt.Fprintf(&b, "| `--%s` | %s | %s | %s |\n", f.Name, env, flagDefault(f), cell(usage))
		})
		b.WriteString("\n")
	}
	b.WriteString("### Config file keys\n\n")
	b.WriteString("`--config FILE` (`PLINTH_CONFIG`) reads these keys of `plinth up` and `plinth server` from a YAML\nfile; unknown keys are refused. Flags and environment variables override the file.\n\n")
	b.WriteString("| key | type | description |\n|---|---|---|\n")
	var rows func(prefix string, t reflect.Type)
	rows = func(prefix string, t reflect.Type) {
		docs := fields[t.Name()]
		for i := range t.NumField() {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == "-" || !f.IsExported() {
				continue
			}
			key := prefix + tag
			var doc string
			for _, d := range docs {
				if d.name == f.Name {
					doc = d.doc
				}
			}
			if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() != "time" {
				fmt.Fprintf(&b, "| `%s` | object | %s |\n", key, cell(doc))
				rows(key+".", f.Type)
				continue
			}
			typ := f.Type.String()
			if typ == "time.Duration" {
				typ = "duration (90s, 5m)"
			}
			switch f.Type.Kind() {
			case reflect.Slice:
				typ = "list of " + strings.TrimPrefix(f.Type.Elem().String(), "server.")
			case reflect.Map:
				typ = "map"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", key, typ, cell(doc))
		}
	}
	rows("", reflect.TypeFor[server.Config]())
	return b.String()
}

type fieldDoc struct{ name, doc string }

// structDocs reads the doc comments of the struct fields of the Go
// package in dir, by struct name.
func structDocs(dir string) (map[string][]fieldDoc, error) {
	fset := token.NewFileSet()
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	out := map[string][]fieldDoc{}
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return nil, err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return true
			}
			var prev string
			for _, fl := range st.Fields.List {
				doc := strings.TrimSpace(fl.Doc.Text())
				if doc == "" && fl.Comment != nil {
					doc = strings.TrimSpace(fl.Comment.Text())
				}
				for _, name := range fl.Names {
					d := doc
					if d == "" && strings.Contains(prev, name.Name) {
						d = prev // "TLSCert and TLSKey serve ..." documents both
					}
					out[ts.Name.Name] = append(out[ts.Name.Name], fieldDoc{name.Name, d})
				}
				prev = doc
			}
			return false
		})
	}
	return out, nil
}
