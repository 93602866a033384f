package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The README's quickstart is a test: the ```sh blocks between the
// <!-- quickstart --> and <!-- /quickstart --> markers run in order, in one
// bash session (exported variables carry over), against a fresh `plinth up`
// in a copy of the repository, and each block's output (stdout and stderr
// together) must match the ```text block that follows it, if any.
//
// Matching is line by line after normalising both sides (see normalize):
// whitespace runs collapse, and ids, keys, times, generated names and
// numbers stand for any of their kind, so the README can show real output.
// A line "..." in the expected output stands for any number of lines.
// The README's address http://127.0.0.1:8080 means the test's server.
const (
	readmePath   = "../../README.md"
	readmeAddr   = "http://127.0.0.1:8080"
	startMarker  = "<!-- quickstart -->"
	endMarker    = "<!-- /quickstart -->"
	blockTimeout = 3 * time.Minute
)

// step is one ```sh block and the ```text block after it.
type step struct {
	line     int    // where the sh block starts in README.md
	script   string // the commands
	expected string // the output shown for them; "" means unchecked
	checked  bool
}

// quickstartSteps extracts the steps between the markers.
func quickstartSteps(readme string) ([]step, error) {
	_, rest, ok := strings.Cut(readme, startMarker)
	if !ok {
		return nil, fmt.Errorf("no %s marker", startMarker)
	}
	section, _, ok := strings.Cut(rest, endMarker)
	if !ok {
		return nil, fmt.Errorf("no %s marker", endMarker)
	}
	offset := strings.Count(readme[:strings.Index(readme, startMarker)], "\n") + 1
	var steps []step
	var fence, body strings.Builder
	inBlock, start := false, 0
	for i, line := range strings.Split(section, "\n") {
		switch {
		case !inBlock && strings.HasPrefix(line, "```"):
			inBlock, start = true, offset+i
			fence.Reset()
			fence.WriteString(strings.TrimSpace(strings.TrimPrefix(line, "```")))
			body.Reset()
		case inBlock && strings.TrimSpace(line) == "```":
			inBlock = false
			switch lang := strings.Fields(fence.String() + " x")[0]; lang {
			case "sh":
				steps = append(steps, step{line: start, script: body.String()})
			case "text":
				if len(steps) == 0 || steps[len(steps)-1].checked {
					return nil, fmt.Errorf("README.md:%d: a text block that follows no sh block", start)
				}
				steps[len(steps)-1].expected, steps[len(steps)-1].checked = body.String(), true
			default:
				return nil, fmt.Errorf("README.md:%d: a %q block in the quickstart: only sh and text blocks belong there", start, lang)
			}
		case inBlock:
			body.WriteString(line + "\n")
		}
	}
	if inBlock {
		return nil, fmt.Errorf("README.md:%d: unterminated code block", start)
	}
	return steps, nil
}

var normalizers = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\b(plk|pek)_[A-Za-z0-9_-]+`), "KEY"},
	{regexp.MustCompile(`\b\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?Z?`), "TIME"},
	{regexp.MustCompile(`\b[a-z]+_[a-z]+_[0-9a-f]{8}\b`), "NAME"}, // job names
	{regexp.MustCompile(`\b[a-z]+-[a-z]+-\d+\b`), "NAME"},         // MLflow run names
	{regexp.MustCompile(`\b[0-9a-z]*\d[0-9a-z]*\b`), ""},          // ids and numbers: see below
	{regexp.MustCompile(`[ \t]+`), " "},
}

var idLike = regexp.MustCompile(`^[0-9a-z]{16,}$`)
var number = regexp.MustCompile(`^\d+$`)

// normalize makes a line comparable: what differs from run to run becomes
// a placeholder of its kind.
func normalize(line string) string {
	for _, n := range normalizers[:4] {
		line = n.re.ReplaceAllString(line, n.with)
	}
	line = normalizers[4].re.ReplaceAllStringFunc(line, func(tok string) string {
		switch {
		case number.MatchString(tok):
			return "N"
		case idLike.MatchString(tok):
			return "ID"
		}
		return tok
	})
	line = regexp.MustCompile(`N(\.N)+`).ReplaceAllString(line, "N")
	return strings.TrimSpace(normalizers[5].re.ReplaceAllString(line, " "))
}

// matchOutput reports whether got matches want, and if not, a diagnosis.
func matchOutput(want, got string) (bool, string) {
	lines := func(s string) []string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if strings.TrimSpace(l) != "" {
				out = append(out, l)
			}
		}
		return out
	}
	w, g := lines(want), lines(got)
	// match reports whether w[i:] matches g[j:]; "..." matches any run of
	// lines. Memoised: the README's outputs are short, but a few "..."
	// lines must not make this exponential.
	memo := map[[2]int]bool{}
	var match func(i, j int) bool
	match = func(i, j int) bool {
		if r, ok := memo[[2]int{i, j}]; ok {
			return r
		}
		var r bool
		switch {
		case i == len(w):
			r = j == len(g)
		case strings.TrimSpace(w[i]) == "...":
			r = match(i+1, j) || (j < len(g) && match(i, j+1))
		default:
			r = j < len(g) && normalize(w[i]) == normalize(g[j]) && match(i+1, j+1)
		}
		memo[[2]int{i, j}] = r
		return r
	}
	if match(0, 0) {
		return true, ""
	}
	// Say where the first difference is, for the README's author.
	j := 0
	for i, l := range w {
		if strings.TrimSpace(l) == "..." {
			return false, "the lines after the ... do not match"
		}
		if j >= len(g) {
			return false, fmt.Sprintf("expected line %d %q, but the output ended", i+1, l)
		}
		if normalize(l) != normalize(g[j]) {
			return false, fmt.Sprintf("line %d: expected %q, got %q\n(normalised: %q vs %q)", i+1, l, g[j], normalize(l), normalize(g[j]))
		}
		j++
	}
	return false, fmt.Sprintf("the output goes on after the expected lines: %q", g[j])
}

func TestQuickstartParsing(t *testing.T) {
	steps, err := quickstartSteps("intro\n" + startMarker + "\ntext\n```sh\necho a\n```\n\n```text\na\n```\n```sh\ntrue\n```\n" + endMarker + "\n```sh\nnot me\n```\n")
	if err != nil || len(steps) != 2 || steps[0].script != "echo a\n" || steps[0].expected != "a\n" || !steps[0].checked || steps[1].checked || steps[0].line != 4 {
		t.Fatalf("%v %+v", err, steps)
	}
	for _, tc := range []struct {
		want, got string
		ok        bool
	}{
		{"a  b\n", "a b\n", true},
		{"run 4b89837fca574d97aeade06dcd6b868c at 2026-11-27 13:03:04", "run 0123456789abcdef0123456789abcdef at 2027-01-02 03:04:05", true},
		{"epoch 1/20 loss=0.4877\n...\nepoch 20/20 loss=0.3", "epoch 1/20 loss=0.1\nepoch 2/20 loss=0.2\nepoch 20/20 loss=0.3", true},
		{"key pek_abc-DEF_1 quiet-whale-822 eager_pepper_4b3b730b", "key pek_XYZ other-name-1 calm_otter_0123abcd", true},
		{"...\nlast", "last", true},
		{"registered model fraud version 1", "registered model fraud version 2", true},
		{"registered model fraud version 1", "registered model other version 1", false},
		{"a\nb", "a", false},
		{"a", "a\nb", false},
		{"blue=100", "green=100", false},
	} {
		if ok, why := matchOutput(tc.want, tc.got); ok != tc.ok {
			t.Errorf("matchOutput(%q, %q) = %v (%s), want %v", tc.want, tc.got, ok, why, tc.ok)
		}
	}
}

// TestQuickstart runs the README's quickstart.
func TestQuickstart(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the quickstart is written for a POSIX shell")
	}
	for _, tool := range []string{"bash", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s on PATH: %v", tool, err)
		}
	}
	raw, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	steps, err := quickstartSteps(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) < 5 {
		t.Fatalf("only %d quickstart steps in README.md", len(steps))
	}

	// A copy of the working tree, as a fresh clone would have it: the
	// quickstart builds into bin/ and writes files, which must not land in
	// the developer's checkout. The copy's path stays the same from run to
	// run, since Go's build cache keys packages by their directory: only
	// the first run compiles the server's packages; later ones link.
	tmp := t.TempDir()
	repo := stableCopy(t)
	config := filepath.Join(tmp, "config")

	// The server: this test binary, which runs the CLI as "plinth" (see
	// TestMain), started as the README says `plinth up` is, on a free port.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	server := exec.CommandContext(ctx, "plinth", "up", "--addr", "127.0.0.1:0", "--data-dir", filepath.Join(tmp, "data"))
	server.Dir = repo
	server.Env = quickstartEnv(config)
	var serverOut bytes.Buffer
	server.Stdout, server.Stderr = &serverOut, &serverOut
	server.Cancel = func() error { return server.Process.Signal(os.Interrupt) }
	server.WaitDelay = 30 * time.Second
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	var url string
	deadline := time.Now().Add(30 * time.Second)
	for url == "" {
		var creds struct {
			Current  string                       `json:"current"`
			Profiles map[string]map[string]string `json:"profiles"`
		}
		if b, err := os.ReadFile(filepath.Join(config, "credentials.json")); err == nil && json.Unmarshal(b, &creds) == nil {
			url = creds.Profiles[creds.Current]["url"]
		}
		if time.Now().After(deadline) {
			t.Fatalf("plinth up did not log the CLI in within 30s:\n%s", serverOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The session: each block runs in bash with what the blocks before it
	// exported, and from the directory they left.
	state := filepath.Join(tmp, "session.sh")
	if err := os.WriteFile(state, []byte("cd "+shellQuote(repo)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer stopReplicas(t, repo, config, url)
	for n, st := range steps {
		script := strings.ReplaceAll(st.script, readmeAddr, url)
		prologue := fmt.Sprintf("set -e\n. %s\ntrap '{ export -p; echo cd \"$(printf %%q \"$PWD\")\"; } > %s' EXIT\n", shellQuote(state), shellQuote(state))
		bctx, bcancel := context.WithTimeout(ctx, blockTimeout)
		cmd := exec.CommandContext(bctx, "bash", "-c", prologue+script)
		cmd.Env = quickstartEnv(config)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 5 * time.Second
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		began := time.Now()
		err := cmd.Run()
		bcancel()
		got := strings.ReplaceAll(out.String(), url, readmeAddr)
		t.Logf("README.md:%d (step %d, %.1fs):\n%s", st.line, n+1, time.Since(began).Seconds(), got)
		if err != nil {
			t.Fatalf("README.md:%d: the quickstart's commands failed: %v\n%s\noutput:\n%s", st.line, err, st.script, got)
		}
		if !st.checked {
			continue
		}
		if ok, why := matchOutput(st.expected, got); !ok {
			t.Fatalf("README.md:%d: the output differs from the README's: %s\ncommands:\n%s\nREADME shows:\n%s\ngot:\n%s", st.line, why, st.script, st.expected, got)
		}
	}
}

// quickstartEnv is the environment of the quickstart's shell and server:
// the developer's (for the Go toolchain and its caches) without what would
// point the CLI or MLflow elsewhere.
func quickstartEnv(config string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PLINTH_") || strings.HasPrefix(k, "MLFLOW_") || k == "GOFLAGS" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "PLINTH_CONFIG_DIR="+config, "PLINTH_LOG_FORMAT=json")
	if raceEnabled {
		// Share what `go test -race` compiled of the standard library and
		// the dependencies: a plain build would compile them all again.
		env = append(env, "GOFLAGS=-race")
	}
	return env
}

// stopReplicas deletes what the quickstart deployed, so that no model
// server outlives the test (replicas outlive the control plane by
// design), and waits for their processes to go.
func stopReplicas(t *testing.T, repo, config, url string) {
	cmd := exec.Command("plinth", "--url", url, "endpoint", "delete", "fraud")
	cmd.Env = quickstartEnv(config)
	if out, err := cmd.CombinedOutput(); err != nil && !strings.Contains(string(out), "not found") && !strings.Contains(string(out), "does not exist") {
		t.Logf("deleting the endpoint: %v %s", err, out)
	}
	serve := filepath.Join(repo, "bin", "serve")
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if !processRunning(serve) {
			return
		}
	}
	t.Errorf("%s still runs 15s after its endpoint was deleted", serve)
}

// processRunning reports whether a process runs the executable at path
// (Linux; elsewhere it waits a little and says no).
func processRunning(path string) bool {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		time.Sleep(2 * time.Second)
		return false
	}
	for _, p := range procs {
		if exe, err := os.Readlink(filepath.Join("/proc", p.Name(), "exe")); err == nil && exe == path {
			return true
		}
	}
	return false
}

// stableCopy copies the working tree to a directory of the user's cache
// named after the checkout, holding a lock on it until the test ends so
// that two runs do not share it.
func stableCopy(t *testing.T) string {
	t.Helper()
	src, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	sum := sha256.Sum256([]byte(src))
	dir := filepath.Join(cache, "plinth-test", "quickstart-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() }) // closing releases the lock
	repo := filepath.Join(dir, "repo")
	if err := os.RemoveAll(repo); err != nil {
		t.Fatal(err)
	}
	copyTree(t, src, repo)
	return repo
}

// copyTree copies the working tree at src to dst, leaving out what git
// ignores here and what a clone does not have.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		name := d.Name()
		if d.IsDir() {
			switch {
			case rel == ".":
			case name == ".git" || name == "node_modules" || rel == ".plinth" || rel == "bin":
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() || rel == "plinth" || strings.HasSuffix(name, ".test") || strings.HasSuffix(name, ".out") {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		info, err := in.Stat()
		if err != nil {
			return err
		}
		out, err := os.OpenFile(filepath.Join(dst, rel), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, info.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatalf("copying the repository: %v", err)
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
