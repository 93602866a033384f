package cli

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plinth-dev/plinth/internal/server"
	"github.com/plinth-dev/plinth/internal/store"
)

// The checks that must fail do, each with a fix.
func TestDoctorFailures(t *testing.T) {
	ctx := context.Background()
	t.Run("port held by another program", func(t *testing.T) {
		hs := httptest.NewServer(http.NotFoundHandler())
		defer hs.Close()
		r := checkPort(ctx, server.Config{Addr: strings.TrimPrefix(hs.URL, "http://")})
		if r.Status != checkFail || !strings.Contains(r.Detail, "cannot listen") || !strings.Contains(r.Fix, "another program holds the port") {
			t.Errorf("%+v", r)
		}
	})
	t.Run("unreachable PostgreSQL", func(t *testing.T) {
		r := checkDatabase(ctx, server.Config{Database: "postgres://plinth@127.0.0.1:1/plinth?connect_timeout=5"}, true)
		if r.Status != checkFail || !strings.Contains(r.Detail, "cannot connect") || !strings.Contains(r.Fix, "pg_hba.conf") {
			t.Errorf("%+v", r)
		}
	})
	t.Run("schema newer than the binary", func(t *testing.T) {
		dir := t.TempDir()
		db, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "plinth.db"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(ctx, `INSERT INTO plinth_schema_migrations (version, name, applied_at) VALUES (9999, 'from the future', 0)`); err != nil {
			t.Fatal(err)
		}
		db.Close()
		r := checkDatabase(ctx, server.Config{DataDir: dir}, true)
		if r.Status != checkFail || !strings.Contains(r.Detail, "schema version 9999 is newer") || !strings.Contains(r.Fix, "downgrades") {
			t.Errorf("%+v", r)
		}
	})
	t.Run("unwritable artifact directory", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "file")
		os.WriteFile(file, nil, 0o644)
		r := checkArtifacts(ctx, server.Config{DataDir: dir, Artifacts: "file://" + file + "/below"}, true)
		if r.Status != checkFail || r.Fix == "" {
			t.Errorf("%+v", r)
		}
	})
	t.Run("unknown artifact scheme", func(t *testing.T) {
		r := checkArtifacts(ctx, server.Config{DataDir: t.TempDir(), Artifacts: "gs://bucket"}, true)
		if r.Status != checkFail || !strings.Contains(r.Detail, "unsupported scheme") {
			t.Errorf("%+v", r)
		}
	})
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"s3://bucket?region=eu-west-1&endpoint=http://minio:9000": "s3://bucket",
		"azblob://user:secret@container":                          "azblob://container",
		"file:///var/lib/plinth/artifacts":                        "file:///var/lib/plinth/artifacts",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
