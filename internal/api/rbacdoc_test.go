package api

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plinth-dev/plinth/internal/auth"
)

const (
	matrixBegin = "<!-- BEGIN GENERATED: TestRBACDoc; regenerate with PLINTH_UPDATE_DOCS=1 go test ./internal/api -run RBACDoc -->"
	matrixEnd   = "<!-- END GENERATED -->"
)

// TestRBACDoc keeps the generated part of docs/rbac.md (the role x
// permission matrix and the route table) equal to the code.
func TestRBACDoc(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "rbac.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	begin, end := strings.Index(text, matrixBegin), strings.Index(text, matrixEnd)
	if begin < 0 || end < begin {
		t.Fatalf("%s lacks the generated-section markers", path)
	}
	generated := renderRBAC((&API{}).Routes())
	current := text[begin+len(matrixBegin) : end]
	if current == generated {
		return
	}
	if os.Getenv("PLINTH_UPDATE_DOCS") == "1" {
		if err := os.WriteFile(path, []byte(text[:begin+len(matrixBegin)]+generated+text[end:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("%s is stale; regenerate it with PLINTH_UPDATE_DOCS=1 go test ./internal/api -run RBACDoc", path)
}

func renderRBAC(routes []Route) string {
	var b strings.Builder
	b.WriteString("\n## Role x permission matrix\n\n| permission | scope | ")
	for _, r := range auth.Roles {
		b.WriteString(string(r) + " | ")
	}
	b.WriteString("what it allows |\n|---|---|")
	for range auth.Roles {
		b.WriteString("---|")
	}
	b.WriteString("---|\n")
	for _, p := range auth.Permissions {
		scope := "workspace"
		if p.PlatformOnly {
			scope = "platform"
		}
		b.WriteString("| `" + string(p.Permission) + "` | " + scope + " | ")
		for _, r := range auth.Roles {
			if auth.RoleGrants(r, p.Permission) {
				b.WriteString("yes | ")
			} else {
				b.WriteString("- | ")
			}
		}
		b.WriteString(p.Description + " |\n")
	}
	b.WriteString("\n## Run tokens\n\nA run token (the `MLFLOW_TRACKING_TOKEN` of a batch job's training script, made by\n" +
		"`auth.CreateRunToken`) is an API key that belongs to the job's submitter and is limited to one\n" +
		"workspace and one MLflow run. Whatever roles its owner holds, it is granted at most\n")
	for i, p := range auth.RunTokenPermissions {
		switch {
		case i == len(auth.RunTokenPermissions)-1:
			b.WriteString(" and ")
		case i > 0:
			b.WriteString(", ")
		}
		b.WriteString("`" + string(p) + "`")
	}
	b.WriteString("\nin its workspace (the intersection of these and its owner's permissions), and nothing at\n" +
		"platform scope or in other workspaces. On the MLflow routes it reads what those allow, but every\n" +
		"write must target its own run: the logging calls, `runs/update` and the run tag calls must name it\n" +
		"in `run_id`, and artifact uploads, deletes and multipart uploads must lie under its artifact root.\n" +
		"Creating experiments or runs, deleting or restoring runs, experiment changes and registry changes\n" +
		"are refused with 403 `PERMISSION_DENIED` naming the run (and audited like any refused write).\n" +
		"Under `/api/v1` it may call only the self-service routes marked so below (never the key routes)\n" +
		"and the reads its permissions allow. It expires after its TTL and is revoked when the job ends;\n" +
		"what it writes is audited under its owner and its key id.\n")
	b.WriteString("\n## Routes and the permission each needs\n\n| method | path | permission | checked at |\n|---|---|---|---|\n")
	for _, rt := range routes {
		where := "platform"
		switch {
		case rt.Permission == auth.Public:
			where = "-"
		case rt.Permission == auth.Authenticated && rt.RunToken:
			where = "any authenticated caller, run tokens included"
		case rt.Permission == auth.Authenticated:
			where = "any authenticated caller but a run token"
		case rt.Scoped:
			where = "workspace `{ws}`"
		}
		b.WriteString("| " + rt.Method + " | `" + rt.Path + "` | `" + string(rt.Permission) + "` | " + where + " |\n")
	}
	return b.String()
}
