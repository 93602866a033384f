package server_test

import (
	"context"
	"strings"
	"testing"

	"github.com/plinth-dev/plinth/internal/audit"
)

func TestAuditRecordsEveryChange(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		e.workspace("audited")
		reader := e.principal("rita", "Reader", "audited")
		e.must(200, "PATCH", "/api/v1/workspaces/audited", e.admin, map[string]any{"team": "ml"})
		e.must(403, "DELETE", "/api/v1/workspaces/audited", reader, nil)
		e.must(409, "POST", "/api/v1/workspaces", e.admin, map[string]any{"name": "audited"})
		e.must(200, "GET", "/api/v1/workspaces/audited", e.admin, nil) // reads leave no record

		r := e.must(200, "GET", "/api/v1/audit?resource=workspaces/audited", e.admin, nil)
		var got []string
		for _, rec := range r.body["records"].([]any) {
			m := rec.(map[string]any)
			got = append(got, m["principal"].(string)+" "+m["action"].(string)+" "+m["result"].(string))
			if m["request_id"] == "" || m["source"] == "" || m["key_id"] == "" {
				t.Errorf("record lacks who/where: %v", m)
			}
		}
		want := []string{
			"rita workspace.delete permission_denied",
			"admin workspace.update success",
			"admin role.assign success",
			"admin workspace.create success",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("audit for workspaces/audited:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		// Filters: by principal, and the workspace view for its Owner.
		byRita := e.must(200, "GET", "/api/v1/audit?principal=rita", e.admin, nil)
		if n := len(byRita.body["records"].([]any)); n != 1 {
			t.Fatalf("records by rita: %d", n)
		}
		e.must(403, "GET", "/api/v1/audit", reader, nil)
		e.must(403, "GET", "/api/v1/workspaces/audited/audit", reader, nil)
		e.must(400, "GET", "/api/v1/audit?since=yesterday", e.admin, nil)
		rep := e.must(200, "GET", "/api/v1/audit/verify", e.admin, nil)
		if rep.body["ok"] != true {
			t.Fatalf("verify: %s", rep.raw)
		}
	})
}

func TestAuditVerifyFindsTampering(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		for _, n := range []string{"aaa", "bbb", "ccc", "ddd", "eee"} {
			e.workspace(n)
		}
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := rawExec(e, q, args...); err != nil {
				t.Fatal(err)
			}
		}
		verify := func() audit.Report {
			t.Helper()
			rep, err := e.srv.Audit.Verify(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return rep
		}
		// bootstrap, the default workspace, and the five above
		if rep := verify(); !rep.OK || rep.Records != 7 {
			t.Fatalf("clean log: %+v", rep)
		}

		// Edit: change who did something.
		exec(`UPDATE audit_log SET principal = 'mallory' WHERE seq = 3`)
		rep := verify()
		if rep.OK || !hasProblem(rep, 3, "edited") {
			t.Fatalf("edit not found: %+v", rep)
		}
		exec(`UPDATE audit_log SET principal = 'admin' WHERE seq = 3`)
		if !verify().OK {
			t.Fatal("restoring the record did not restore the chain")
		}

		// Reorder: swap two records' positions.
		exec(`UPDATE audit_log SET seq = -1 WHERE seq = 2`)
		exec(`UPDATE audit_log SET seq = 2 WHERE seq = 4`)
		exec(`UPDATE audit_log SET seq = 4 WHERE seq = -1`)
		rep = verify()
		if rep.OK || !hasProblem(rep, 2, "edited") {
			t.Fatalf("reorder not found: %+v", rep)
		}
		exec(`UPDATE audit_log SET seq = -1 WHERE seq = 2`)
		exec(`UPDATE audit_log SET seq = 2 WHERE seq = 4`)
		exec(`UPDATE audit_log SET seq = 4 WHERE seq = -1`)

		// Delete from the middle.
		exec(`DELETE FROM audit_log WHERE seq = 3`)
		rep = verify()
		if rep.OK || !hasProblem(rep, 4, "missing") {
			t.Fatalf("deletion not found: %+v", rep)
		}

		// Delete from the end: the chain head still remembers.
		e2 := start(t, dialectOf(e))
		e2.workspace("zzz")
		var last int64
		if err := e2.srv.DB().Read().QueryRowContext(ctx, `SELECT MAX(seq) FROM audit_log`).Scan(&last); err != nil {
			t.Fatal(err)
		}
		if _, err := rawExec(e2, `DELETE FROM audit_log WHERE seq = ?`, last); err != nil {
			t.Fatal(err)
		}
		rep, err := e2.srv.Audit.Verify(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK || !hasProblem(rep, last, "missing") {
			t.Fatalf("tail deletion not found: %+v", rep)
		}
		// The API reports the same.
		api := e2.must(200, "GET", "/api/v1/audit/verify", e2.admin, nil)
		if api.body["ok"] != false {
			t.Fatalf("API verify: %s", api.raw)
		}
	})
}

func hasProblem(rep audit.Report, seq int64, kind string) bool {
	for _, p := range rep.Problems {
		if p.Seq == seq && p.Kind == kind {
			return true
		}
	}
	return false
}
