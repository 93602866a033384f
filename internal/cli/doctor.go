package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/plinth-dev/plinth/internal/artifact"
	"github.com/plinth-dev/plinth/internal/buildinfo"
	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/executor/local"
	"github.com/plinth-dev/plinth/internal/server"
	"github.com/plinth-dev/plinth/internal/store"
)

// Doctor check outcomes.
const (
	checkOK   = "ok"
	checkWarn = "warn"
	checkFail = "fail"
)

// checkResult is one line of `plinth doctor`: what was checked, what was
// found and, when it is not ok, how to fix it.
type checkResult struct {
	Check  string `json:"check"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

func newDoctorCmd(g *globals) *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check this machine for running Plinth: port, data directory, database, artifact store, GPUs, cgroups",
		Long: `Check the environment 'plinth up' (or 'plinth server') would run in, with the same flags,
PLINTH_* variables and config file: the listen port, the data directory, the database and its
schema version, the artifact store, the Go toolchain, GPUs and cgroup v2 delegation. Each check
prints ok, warn or fail, and what to do about anything that is not ok. It changes nothing but
probe files it writes and deletes in the data directory and the artifact store (and, where cgroup
v2 is delegated, the cgroups the server would make). The exit status is 1 when any check fails.`,
		Example: "  plinth doctor\n  plinth doctor --addr 0.0.0.0:9000 --database postgres://plinth@db/plinth",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.config(cmd)
			if err != nil {
				return err
			}
			results := runDoctor(cmd.Context(), cfg)
			err = g.printResult(results, func() [][]string {
				rows := [][]string{{"STATUS", "CHECK", "DETAIL"}}
				for _, r := range results {
					rows = append(rows, []string{r.Status, r.Check, r.Detail})
					if r.Fix != "" {
						rows = append(rows, []string{"", "", "fix: " + r.Fix})
					}
				}
				return rows
			})
			if err != nil {
				return err
			}
			for _, r := range results {
				if r.Status == checkFail {
					fmt.Fprintln(g.stderr, "plinth doctor: some checks failed; see the fixes above")
					return exitError{code: 1}
				}
			}
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

// runDoctor runs every check in order.
func runDoctor(ctx context.Context, cfg server.Config) []checkResult {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if abs, err := filepath.Abs(cfg.DataDir); err == nil {
		cfg.DataDir = abs
	}
	out := []checkResult{checkBinary(), checkGo()}
	out = append(out, checkPort(ctx, cfg))
	dataDir, dataExists := checkDataDir(cfg.DataDir)
	out = append(out, dataDir)
	out = append(out, checkDatabase(ctx, cfg, dataExists))
	out = append(out, checkArtifacts(ctx, cfg, dataExists))
	out = append(out, checkGPUs())
	out = append(out, checkCgroups(ctx))
	return out
}

func checkBinary() checkResult {
	b := buildinfo.Get()
	return checkResult{Check: "plinth", Status: checkOK, Detail: fmt.Sprintf("%s built with %s for %s", b.Version, b.GoVersion, b.Platform)}
}

// checkGo looks for the Go toolchain, which the examples and jobs that
// `go run` their code need (Plinth itself does not).
func checkGo() checkResult {
	r := checkResult{Check: "go toolchain"}
	path, err := exec.LookPath("go")
	if err != nil {
		r.Status, r.Detail = checkWarn, "no go command on PATH: jobs and examples that `go run` their code cannot run"
		r.Fix = "install Go 1.26 or newer from https://go.dev/dl/ and put its bin directory on PATH"
		return r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := exec.CommandContext(ctx, path, "env", "GOVERSION").Output()
	if err != nil {
		r.Status, r.Detail, r.Fix = checkWarn, fmt.Sprintf("%s does not run: %v", path, err), "reinstall Go from https://go.dev/dl/"
		return r
	}
	r.Status, r.Detail = checkOK, fmt.Sprintf("%s (%s)", strings.TrimSpace(string(v)), path)
	return r
}

// checkPort tries to listen where the server would; when the address is
// taken it asks whether a Plinth is what holds it.
func checkPort(ctx context.Context, cfg server.Config) checkResult {
	r := checkResult{Check: "listen address"}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err == nil {
		ln.Close()
		r.Status, r.Detail = checkOK, cfg.Addr+" is free"
		return r
	}
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	url := scheme + "://" + dialable(cfg.Addr) + "/healthz"
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // only asks who is there
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	if res, herr := hc.Do(req); herr == nil {
		body, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
		res.Body.Close()
		if res.StatusCode == http.StatusOK && strings.Contains(string(body), `"status"`) {
			r.Status, r.Detail = checkWarn, cfg.Addr+" is in use by a Plinth that is already running (its /healthz answers)"
			r.Fix = "use that one (the CLI talks to it), stop it first, or start another with --addr HOST:PORT and its own --data-dir"
			return r
		}
	}
	r.Status, r.Detail = checkFail, fmt.Sprintf("cannot listen on %s: %v", cfg.Addr, oneLine(err.Error()))
	switch {
	case errors.Is(err, os.ErrPermission) || strings.Contains(err.Error(), "permission denied"):
		r.Fix = "ports below 1024 need privileges: pick --addr 127.0.0.1:8080 or another port above 1023"
	case strings.Contains(err.Error(), "address already in use"):
		r.Fix = "another program holds the port (see `ss -ltnp` or `lsof -i :PORT`): stop it or choose --addr HOST:PORT"
	default:
		r.Fix = "check the host part of --addr (PLINTH_ADDR) names an address of this machine"
	}
	return r
}

// checkDataDir checks the data directory is a writable directory, or can
// be made; it reports whether it exists.
func checkDataDir(dir string) (checkResult, bool) {
	r := checkResult{Check: "data directory"}
	abs, err := filepath.Abs(dir)
	if err != nil {
		r.Status, r.Detail, r.Fix = checkFail, err.Error(), "give --data-dir (PLINTH_HOME) an absolute path"
		return r, false
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		parent := filepath.Dir(abs)
		for {
			if _, err := os.Stat(parent); err == nil || filepath.Dir(parent) == parent {
				break
			}
			parent = filepath.Dir(parent)
		}
		if werr := probeWrite(parent); werr != nil {
			r.Status, r.Detail = checkFail, fmt.Sprintf("%s does not exist and cannot be created: %v", abs, werr)
			r.Fix = fmt.Sprintf("create it with write access for this user (mkdir -p %s), or choose another --data-dir", abs)
			return r, false
		}
		r.Status, r.Detail = checkOK, abs+" does not exist yet; the first start creates it"
		return r, false
	case err != nil:
		r.Status, r.Detail, r.Fix = checkFail, err.Error(), "check the permissions on the path, or choose another --data-dir"
		return r, false
	case !fi.IsDir():
		r.Status, r.Detail, r.Fix = checkFail, abs+" is a file, not a directory", "move the file away, or choose another --data-dir"
		return r, true
	}
	if werr := probeWrite(abs); werr != nil {
		r.Status, r.Detail = checkFail, fmt.Sprintf("%s is not writable: %v", abs, werr)
		r.Fix = fmt.Sprintf("give this user write access (chown -R %s %s), or choose another --data-dir", currentUser(), abs)
		return r, true
	}
	r.Status, r.Detail = checkOK, abs+" is writable"
	return r, true
}

func probeWrite(dir string) error {
	f, err := os.CreateTemp(dir, ".plinth-doctor-*")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

func currentUser() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return fmt.Sprint(os.Getuid())
}

// checkDatabase connects, reads the schema version and compares it with
// what this binary would migrate to; it never migrates.
func checkDatabase(ctx context.Context, cfg server.Config, dataExists bool) checkResult {
	r := checkResult{Check: "database"}
	dsn := cfg.DatabaseURL()
	dialect := store.SQLite
	if cfg.Database != "" {
		dialect = store.Postgres
		if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
			r.Status, r.Detail = checkFail, "--database must be a postgres:// URL"
			r.Fix = "use postgres://USER:PASSWORD@HOST:5432/DB?sslmode=require, or leave --database empty for SQLite"
			return r
		}
	} else if _, err := os.Stat(strings.TrimPrefix(dsn, "sqlite:")); errors.Is(err, os.ErrNotExist) || !dataExists {
		r.Status, r.Detail = checkOK, "SQLite, created on the first start at "+strings.TrimPrefix(dsn, "sqlite:")
		return r
	}
	migrations, err := store.Migrations(dialect)
	if err != nil {
		r.Status, r.Detail = checkFail, "this binary's migrations: "+err.Error()
		return r
	}
	want := 0
	for _, m := range migrations {
		want = max(want, m.Version)
	}
	db, err := store.Open(ctx, dsn)
	if err == nil {
		defer db.Close()
		err = db.Ping(ctx)
	}
	if err != nil {
		r.Status, r.Detail = checkFail, "cannot connect: "+oneLine(err.Error())
		if dialect == store.Postgres {
			r.Fix = "check the host, port, user, password and database in --database (PLINTH_DATABASE), that the server accepts connections from here (pg_hba.conf), and sslmode"
		} else {
			r.Fix = "check the file's permissions; if it is damaged, restore it from a backup (docs/operations.md)"
		}
		return r
	}
	engine := "SQLite"
	if dialect == store.Postgres {
		engine = "PostgreSQL"
	}
	if version, err := db.EngineVersion(ctx); err == nil {
		engine += " " + version
		major, perr := strconv.Atoi(strings.SplitN(version, ".", 2)[0])
		if dialect == store.Postgres && perr == nil && major < 13 {
			r.Status, r.Detail = checkWarn, fmt.Sprintf("%s at %s: older than the PostgreSQL versions Plinth is tested on (13 and newer)", engine, db.Location)
			r.Fix = "upgrade PostgreSQL to a supported major version"
			return r
		}
	}
	have, err := db.SchemaVersion(ctx)
	if err != nil {
		r.Status, r.Detail, r.Fix = checkFail, engine+": reading the schema version: "+oneLine(err.Error()), "the database user needs to read and create tables in its database"
		return r
	}
	switch {
	case have > want:
		r.Status = checkFail
		r.Detail = fmt.Sprintf("%s at %s: schema version %d is newer than this binary's %d", engine, db.Location, have, want)
		r.Fix = "a newer Plinth has used this database: run that version (or newer); downgrades are not supported"
	case have < want:
		r.Status = checkOK
		r.Detail = fmt.Sprintf("%s at %s: schema version %d; the next start migrates it to %d", engine, db.Location, have, want)
	default:
		r.Status, r.Detail = checkOK, fmt.Sprintf("%s at %s: schema version %d (current)", engine, db.Location, have)
	}
	return r
}

// checkArtifacts opens the artifact store the server would use and writes,
// reads back and deletes a probe object in Plinth's private area.
func checkArtifacts(ctx context.Context, cfg server.Config, dataExists bool) checkResult {
	r := checkResult{Check: "artifact store"}
	if cfg.Artifacts == "" && !dataExists {
		r.Status, r.Detail = checkOK, "local directory "+filepath.Join(cfg.DataDir, "artifacts")+", created on the first start"
		return r
	}
	u, err := cfg.ArtifactsURL()
	if err == nil {
		var s *artifact.Store
		if s, err = artifact.Open(ctx, u); err == nil {
			defer s.Close()
			err = probeStore(ctx, s.Private("doctor"))
		}
	}
	where := redactURL(u)
	if err != nil {
		r.Status, r.Detail = checkFail, where+": "+oneLine(err.Error())
		switch {
		case strings.HasPrefix(u, "s3://"):
			r.Fix = "check the bucket exists, the region, endpoint= for S3-compatible stores, and credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or a role) allowing get, put, delete and list"
		case strings.HasPrefix(u, "azblob://"):
			r.Fix = "check the container exists, AZURE_STORAGE_ACCOUNT and a key, SAS token or connection string, or an Azure AD identity with Storage Blob Data Contributor"
		default:
			r.Fix = "give this user write access to the directory, or choose another --artifacts"
		}
		return r
	}
	r.Status, r.Detail = checkOK, where+": wrote, read and deleted a probe object"
	return r
}

func probeStore(ctx context.Context, s *artifact.Store) error {
	key := fmt.Sprintf("probe-%d-%d", os.Getpid(), time.Now().UnixNano())
	want := "plinth doctor probe\n"
	if _, err := s.Put(ctx, key, strings.NewReader(want)); err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	defer s.Delete(context.WithoutCancel(ctx), key)
	rc, _, err := s.Open(ctx, key)
	if err != nil {
		return fmt.Errorf("reading back: %w", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(got) != want {
		return fmt.Errorf("reading back: got %q, %v", got, err)
	}
	return s.Delete(ctx, key)
}

// redactURL drops credentials and query options from a store URL.
func redactURL(u string) string {
	if i := strings.Index(u, "?"); i >= 0 {
		u = u[:i]
	}
	if at := strings.Index(u, "@"); at >= 0 {
		if scheme := strings.Index(u, "://"); scheme >= 0 && scheme < at {
			u = u[:scheme+3] + u[at+1:]
		}
	}
	return u
}

// checkGPUs lists the NVIDIA GPUs nvidia-smi sees, which become GPU SKUs.
func checkGPUs() checkResult {
	r := checkResult{Check: "GPUs"}
	m, err := compute.DetectSystem()
	if err != nil {
		r.Status, r.Detail = checkWarn, "detecting this machine: "+err.Error()
		return r
	}
	if len(m.GPUs) > 0 {
		names := make([]string, len(m.GPUs))
		for i, g := range m.GPUs {
			names[i] = fmt.Sprintf("%d: %s", g.Index, g.Name)
		}
		r.Status, r.Detail = checkOK, fmt.Sprintf("%d NVIDIA GPU(s): %s", len(m.GPUs), strings.Join(names, ", "))
		return r
	}
	r.Status, r.Detail = checkOK, "none: jobs and deployments get CPU SKUs only"
	for _, n := range m.Notes {
		if strings.Contains(n, "GPU") && !strings.Contains(n, "not found") && !strings.Contains(n, "executable file") {
			r.Status, r.Detail = checkWarn, n
			r.Fix = "check the NVIDIA driver: `nvidia-smi` must run for this user"
		}
	}
	return r
}

// checkCgroups reports whether the local executor can enforce CPU and
// memory limits with cgroup v2, as it would at start.
func checkCgroups(ctx context.Context) checkResult {
	r := checkResult{Check: "cgroups"}
	if runtime.GOOS != "linux" {
		r.Status, r.Detail = checkWarn, "not Linux: job CPU and memory limits are not enforced"
		return r
	}
	root, err := os.MkdirTemp("", "plinth-doctor-")
	if err != nil {
		r.Status, r.Detail = checkWarn, err.Error()
		return r
	}
	defer os.RemoveAll(root)
	e, err := local.New(ctx, root, local.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		r.Status, r.Detail = checkWarn, "local executor: "+err.Error()
		return r
	}
	c := e.Capabilities()
	if c.CgroupLimits {
		r.Status, r.Detail = checkOK, "cgroup v2 delegated: job and replica CPU and memory limits are enforced by the kernel"
		return r
	}
	r.Status, r.Detail = checkWarn, "limits not enforced by cgroups: "+c.CgroupReason
	r.Fix = "run Plinth with a delegated cgroup v2 subtree, e.g. as a systemd service with Delegate=yes, or in a container with its own cgroup namespace (fine to ignore on a laptop)"
	return r
}
