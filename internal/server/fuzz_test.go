package server_test

import (
	"strings"
	"testing"

	"github.com/plinth-dev/plinth/internal/store"
)

// FuzzCreateWorkspace sends arbitrary bodies to the create route: every
// answer must be a 201 or a 4xx in the API's error shape, never a 5xx,
// and a refused body must create nothing.
func FuzzCreateWorkspace(f *testing.F) {
	for _, seed := range []string{
		`{"name":"abc"}`, `{"name":"abc","region":"eastus","allowed_regions":["eastus","westus"]}`,
		`{"name":"x'); DROP TABLE workspaces;--"}`, `{"name":"abc","tags":{"a":"b"}}`, `{`, `[]`, `null`,
		`{"name":"abc","description":"\u0000\ud800"}`, `{"name":"abc"}{"name":"def"}`, `{"name":"abc","team":""}`,
		`{"name":"` + strings.Repeat("é", 20) + `"}`,
	} {
		f.Add(seed)
	}
	e := start(f, store.SQLite)
	f.Fuzz(func(t *testing.T, body string) {
		e := &env{t: t, srv: e.srv, url: e.url, admin: e.admin}
		r := e.call("POST", "/api/v1/workspaces", e.admin, body)
		switch {
		case r.status == 201:
			e.must(204, "DELETE", "/api/v1/workspaces/"+r.body["name"].(string), e.admin, nil)
		case r.status >= 400 && r.status < 500:
			if r.errCode() == "" || r.errMessage() == "" {
				t.Fatalf("%d without the error shape: %s", r.status, r.raw)
			}
		default:
			t.Fatalf("body %q: status %d %s", body, r.status, r.raw)
		}
	})
}
