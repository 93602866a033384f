// Package workload runs a work item's command inside a container that
// cannot see the control plane's files (a Kubernetes pod): it fetches the
// code and inputs through the Plinth API, runs the command, and uploads the
// outputs after it succeeds. `plinth workload run` is its entry point; a
// remote executor puts the plinth binary into the container with
// `plinth workload install`.
package workload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/plinth-dev/plinth/internal/artifact"
	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/jobs"
)

// ExitStageFailed is the exit status when fetching or uploading failed
// (the command's own statuses are passed through unchanged). 125 is what
// container runtimes use for "the runtime failed, not the command".
const ExitStageFailed = 125

// Install copies the running binary to dst (made executable), so that a
// container of another image can run it from a shared volume.
func Install(dst string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	src, err := os.Open(self)
	if err != nil {
		return err
	}
	defer src.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// FromEnv reads the StagedRun a remote executor put in the environment.
func FromEnv() (executor.StagedRun, error) {
	var run executor.StagedRun
	raw := os.Getenv(executor.StagedRunEnv)
	if raw == "" {
		return run, fmt.Errorf("%s is not set: `plinth workload run` is started by a remote executor, which describes the work there", executor.StagedRunEnv)
	}
	if err := json.Unmarshal([]byte(raw), &run); err != nil {
		return run, fmt.Errorf("%s is not a valid description of the work: %w", executor.StagedRunEnv, err)
	}
	if len(run.Command) == 0 && run.Shell == "" {
		return run, fmt.Errorf("%s names no command", executor.StagedRunEnv)
	}
	return run, nil
}

// Runner runs one staged work item.
type Runner struct {
	Run executor.StagedRun
	// Stderr gets the runner's own messages as well as the command's.
	Stdout, Stderr io.Writer
	// Client makes the API calls; nil means a client with no overall
	// timeout (downloads may be large), retrying each call a few times.
	Client *http.Client
	token  string
}

// Exec fetches, runs and uploads, and returns the exit status the
// container should end with.
func (r *Runner) Exec(ctx context.Context) int {
	if r.Client == nil {
		r.Client = &http.Client{Transport: http.DefaultTransport}
	}
	r.token = os.Getenv(r.Run.TokenEnv)
	start := time.Now()
	if err := r.fetchAll(ctx); err != nil {
		r.say("fetching inputs failed: %v", err)
		return ExitStageFailed
	}
	if len(r.Run.Fetch) > 0 {
		r.say("fetched %d inputs in %s", len(r.Run.Fetch), time.Since(start).Round(time.Millisecond))
	}
	code, err := r.command(ctx)
	if err != nil {
		r.say("%v", err)
		return code
	}
	if code != 0 {
		return code
	}
	start = time.Now()
	n, err := r.uploadAll(ctx)
	if err != nil {
		r.say("uploading outputs failed: %v", err)
		return ExitStageFailed
	}
	if n > 0 {
		r.say("uploaded %d output files in %s", n, time.Since(start).Round(time.Millisecond))
	}
	return 0
}

func (r *Runner) say(format string, args ...any) {
	fmt.Fprintf(r.Stderr, "plinth workload: "+format+"\n", args...)
}

// command runs the work's command with the container's environment (less
// the staging description), passing on the signals the container gets so
// that a Stop reaches it.
func (r *Runner) command(ctx context.Context) (int, error) {
	argv := r.Run.Command
	if r.Run.Shell != "" {
		argv = []string{"/bin/sh", "-c", r.Run.Shell}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = r.Stdout, r.Stderr
	if r.Run.Dir != "" {
		if err := os.MkdirAll(r.Run.Dir, 0o755); err != nil {
			return ExitStageFailed, err
		}
		cmd.Dir = r.Run.Dir
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, executor.StagedRunEnv+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(signals)
	if err := cmd.Start(); err != nil {
		code := 126
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			code = 127
		}
		return code, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case sig := <-signals:
			_ = cmd.Process.Signal(sig)
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
		case err := <-done:
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return 128 + int(ws.Signal()), nil
				}
				return exit.ExitCode(), nil
			}
			if err != nil {
				return ExitStageFailed, err
			}
			return 0, nil
		}
	}
}

func (r *Runner) fetchAll(ctx context.Context) error {
	for _, d := range r.Run.Dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, f := range r.Run.Fetch {
		var err error
		switch f.Kind {
		case executor.FetchCode:
			err = r.fetchCode(ctx, f)
		case executor.FetchData:
			err = r.fetchData(ctx, f)
		case executor.FetchArtifacts:
			err = r.fetchArtifacts(ctx, f.Source, f.To)
		default:
			err = fmt.Errorf("unknown kind %q", f.Kind)
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", f.Kind, f.Source, err)
		}
	}
	return nil
}

func (r *Runner) fetchCode(ctx context.Context, f executor.Fetch) error {
	body, err := r.get(ctx, "/api/v1/workspaces/"+url.PathEscape(f.Workspace)+"/code/"+url.PathEscape(f.Source))
	if err != nil {
		return err
	}
	defer body.Close()
	return jobs.ExtractCode(body, f.To)
}

func (r *Runner) fetchData(ctx context.Context, f executor.Fetch) error {
	base := "/api/v1/workspaces/" + url.PathEscape(f.Workspace) + "/data/" + url.PathEscape(f.Source) + "/versions/" + url.PathEscape(f.Version)
	var listing struct {
		Files []struct {
			Path string `json:"path"`
		} `json:"files"`
	}
	if err := r.getJSON(ctx, base+"/files", &listing); err != nil {
		return err
	}
	for _, file := range listing.Files {
		target, err := inside(f.To, file.Path)
		if err != nil {
			return err
		}
		if err := r.download(ctx, base+"/download?path="+url.QueryEscape(file.Path), target); err != nil {
			return fmt.Errorf("%s: %w", file.Path, err)
		}
	}
	return nil
}

// fetchArtifacts copies the artifact at key to dir as artifact.Store's
// Download does: a file to dir/<its name>, a folder's files under dir.
func (r *Runner) fetchArtifacts(ctx context.Context, key, dir string) error {
	files := 0
	var walk func(prefix, into string) error
	walk = func(prefix, into string) error {
		var listing struct {
			Files []struct {
				Path  string `json:"path"`
				IsDir bool   `json:"is_dir"`
			} `json:"files"`
		}
		if err := r.getJSON(ctx, "/api/2.0/mlflow-artifacts/artifacts?path="+url.QueryEscape(prefix), &listing); err != nil {
			return err
		}
		for _, e := range listing.Files {
			name := path.Base(e.Path)
			target, err := inside(into, name)
			if err != nil {
				return err
			}
			if e.IsDir {
				if err := walk(prefix+"/"+name, target); err != nil {
					return err
				}
				continue
			}
			if err := r.download(ctx, artifactURL(prefix+"/"+name), target); err != nil {
				return err
			}
			files++
		}
		return nil
	}
	if err := walk(strings.TrimRight(key, "/"), dir); err != nil {
		return err
	}
	if files > 0 {
		return nil
	}
	// Not a folder: the key itself is one file.
	return r.download(ctx, artifactURL(key), filepath.Join(dir, path.Base(key)))
}

func artifactURL(key string) string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return "/api/2.0/mlflow-artifacts/artifacts/" + strings.Join(segs, "/")
}

// inside joins a server-given relative path under dir, refusing one that
// would escape it.
func inside(dir, rel string) (string, error) {
	clean := path.Clean("/" + rel)
	if rel == "" || clean == "/" || strings.Contains(rel, "\x00") {
		return "", fmt.Errorf("bad file path %q", rel)
	}
	return filepath.Join(dir, filepath.FromSlash(clean[1:])), nil
}

func (r *Runner) uploadAll(ctx context.Context) (int, error) {
	n := 0
	for _, u := range r.Run.Upload {
		info, err := os.Stat(u.From)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return n, err
		}
		if !info.IsDir() {
			if err := r.put(ctx, u.From, u.To); err != nil {
				return n, err
			}
			n++
			continue
		}
		err = filepath.WalkDir(u.From, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !d.Type().IsRegular() {
				return err
			}
			rel, err := filepath.Rel(u.From, p)
			if err != nil {
				return err
			}
			if err := r.put(ctx, p, u.To+"/"+filepath.ToSlash(rel)); err != nil {
				return err
			}
			n++
			return nil
		})
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Calls are retried on connection errors and 5xx answers: the control
// plane may be failing over to another replica while work runs.
const tries = 5

func (r *Runner) do(ctx context.Context, method, p string, body func() (io.ReadCloser, int64, error)) (*http.Response, error) {
	var last error
	for i := range tries {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(1<<i) * 250 * time.Millisecond):
			}
		}
		req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(r.Run.Server, "/")+p, nil)
		if err != nil {
			return nil, err
		}
		if body != nil {
			rc, size, err := body()
			if err != nil {
				return nil, err
			}
			req.Body, req.ContentLength = rc, size
		}
		if r.token != "" {
			req.Header.Set("Authorization", "Bearer "+r.token)
		}
		resp, err := r.Client.Do(req)
		if err != nil {
			last = err
			continue
		}
		if resp.StatusCode >= 500 {
			last = apiError(resp)
			continue
		}
		if resp.StatusCode >= 300 {
			return nil, apiError(resp)
		}
		return resp, nil
	}
	return nil, last
}

func apiError(resp *http.Response) error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var e struct {
		Message string `json:"message"`
		Error   any    `json:"error"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && e.Message != "" {
		msg = e.Message
	}
	return fmt.Errorf("%s %s: %s: %s", resp.Request.Method, resp.Request.URL.Path, resp.Status, msg)
}

func (r *Runner) get(ctx context.Context, p string) (io.ReadCloser, error) {
	resp, err := r.do(ctx, http.MethodGet, p, nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

func (r *Runner) getJSON(ctx context.Context, p string, v any) error {
	body, err := r.get(ctx, p)
	if err != nil {
		return err
	}
	defer body.Close()
	return json.NewDecoder(body).Decode(v)
}

func (r *Runner) download(ctx context.Context, p, target string) error {
	body, err := r.get(ctx, p)
	if err != nil {
		return err
	}
	defer body.Close()
	return artifact.WriteFile(target, body)
}

func (r *Runner) put(ctx context.Context, file, key string) error {
	resp, err := r.do(ctx, http.MethodPut, artifactURL(key), func() (io.ReadCloser, int64, error) {
		f, err := os.Open(file)
		if err != nil {
			return nil, 0, err
		}
		info, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, err
		}
		return f, info.Size(), nil
	})
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}
