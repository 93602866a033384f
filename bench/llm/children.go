package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plinth-dev/plinth/internal/gateway"
	"github.com/plinth-dev/plinth/internal/llm/llmtest"
)

// The fake upstream and the gateway run in processes of their own: this
// binary, started again with childEnv naming the role, so that upstream,
// gateway and load generator do not share one Go runtime (and the
// gateway's RSS is its own). A child prints "ready <addr>" on stdout once
// it listens, then reads commands, one a line, on stdin and answers each
// with one line on stdout; when its stdin closes (the benchmark ended, or
// died) it shuts down, prints one "stats ..." line and exits.
const (
	childEnv     = "PLINTH_BENCH_LLM_CHILD"
	roleUpstream = "upstream"
	roleGateway  = "gateway"
)

// What the upstream and the gateway are configured with.
const (
	benchModel       = "gpt-4o-mini"
	benchBackend     = "bench-upstream"
	benchUpstreamKey = "sk-bench-upstream-0123456789abcdef" // the gateway's credential at the upstream; direct calls send it too
	benchToken       = "plk_bench-platform-token-0123456789"
	benchTeam        = "bench"
	// Limits that are on (so every call runs the limit path: a Reserve of
	// every counter before the call and a settlement after it) but never
	// reached: at 10,000 calls/s of ~600 estimated tokens a minute holds
	// 600,000 calls and 3.6e8 tokens.
	benchRPM = 1_000_000_000
	benchTPM = 1_000_000_000_000
)

// benchReply is every answer's content: 20 words, so a stream has 20
// content chunks.
const benchReply = "The order ships within two business days. You will get a tracking number by email as soon as it leaves."

// runChild runs a child role; it returns the exit status.
func runChild(role string, args []string) int {
	var err error
	switch role {
	case roleUpstream:
		err = upstreamMain(args)
	case roleGateway:
		err = gatewayMain(args)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench/llm %s: %v\n", role, err)
		return 1
	}
	return 0
}

// upstreamMain serves the fake OpenAI upstream. Command: "delays FIRST
// CHUNK" sets the time to the first chunk and between chunks (Go
// durations) for later requests, answered "ok".
func upstreamMain(args []string) error {
	fs := flag.NewFlagSet(roleUpstream, flag.ContinueOnError)
	first := fs.Duration("first-delay", 0, "time to the first streamed chunk")
	chunk := fs.Duration("chunk-delay", 0, "time between streamed chunks")
	if err := fs.Parse(args); err != nil {
		return err
	}
	up := llmtest.New(llmtest.Options{
		Name: benchBackend, APIKey: benchUpstreamKey, Reply: benchReply,
		FirstChunkDelay: *first, ChunkDelay: *chunk,
	})
	fmt.Printf("ready %s\n", strings.TrimPrefix(up.URL(), "http://"))
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "delays" {
			d1, err1 := time.ParseDuration(f[1])
			d2, err2 := time.ParseDuration(f[2])
			if err1 == nil && err2 == nil {
				up.SetDelays(d1, d2)
				fmt.Println("ok")
				continue
			}
		}
		fmt.Printf("error: unknown command %q\n", sc.Text())
	}
	up.Close()
	fmt.Printf("stats %d requests\n", up.Requests())
	return nil
}

// fakeAuth accepts one platform token, for any workspace: what a platform
// key with endpoints.invoke looks like to the gateway, without a control
// plane (plinth gateway's remoteAuth answers from its cache the same way
// once it has seen a key).
type fakeAuth struct{ token string }

func (a fakeAuth) Authorize(_ context.Context, token, _ string) (string, string, error) {
	if token == a.token {
		return "bench-user", "bench-key-id", nil
	}
	return "", "", gateway.ErrUnauthenticated
}

// benchSnapshot is one OpenAI-style backend serving gpt-4o-mini, with
// per-key and team limits on (never reached) and workspace "default"
// charged to team "bench".
func benchSnapshot(upstream string) *gateway.Snapshot {
	return &gateway.Snapshot{Version: 1, LLM: &gateway.LLM{
		Backends: map[string]*gateway.LLMBackend{
			benchBackend: {
				Name: benchBackend, Style: gateway.StyleOpenAI, BaseURL: "http://" + upstream + "/v1",
				Credential: benchUpstreamKey, InputCostPer1K: 0.00015, OutputCostPer1K: 0.0006,
			},
		},
		Models: map[string]*gateway.LLMModel{
			benchModel: {
				Name: benchModel, Pool: []gateway.LLMTarget{{Backend: benchBackend, Weight: 1}},
				RequestsPerMinutePerKey: benchRPM, TokensPerMinutePerKey: benchTPM,
			},
		},
		Teams:          map[string]*gateway.LLMTeamLimits{benchTeam: {RequestsPerMinute: benchRPM, TokensPerMinute: benchTPM}},
		WorkspaceTeams: map[string]string{"default": benchTeam},
	}}
}

// gatewayMain serves Plinth's gateway, configured as `plinth gateway` runs
// it (metering sized the same, Prometheus metrics, limits in memory), on a
// loopback port. Command: "mem" forces a garbage collection and answers
// with the Go runtime's memory figures, so a soak can tell a growing live
// heap from a runtime that merely holds on to freed memory.
func gatewayMain(args []string) error {
	fs := flag.NewFlagSet(roleGateway, flag.ContinueOnError)
	upstream := fs.String("upstream", "", "the fake upstream's address")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *upstream == "" {
		return errors.New("-upstream is required")
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}

	// No access log (as bench/gateway runs it); warnings go to stderr.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := prometheus.NewRegistry()
	var written atomic.Int64
	meter := gateway.NewMeter(func(_ context.Context, batch []gateway.Record) error {
		written.Add(int64(len(batch)))
		return nil
	}, 1<<16, 500, time.Second, reg, log) // as `plinth gateway` sizes it
	ctx, cancel := context.WithCancel(context.Background())
	meterDone := make(chan struct{})
	go func() { meter.Run(ctx); close(meterDone) }()

	// Counter nil: the limits' counters in memory, as a single gateway
	// runs without Redis.
	g := gateway.New(gateway.Options{Auth: fakeAuth{benchToken}, Meter: meter, Registry: reg, Log: log})
	g.Update(benchSnapshot(*upstream))
	srv := g.Server("")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		return err
	}
	go srv.Serve(ln)
	fmt.Printf("ready %s\n", ln.Addr())

	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) != "mem" {
			fmt.Printf("error: unknown command %q\n", sc.Text())
			continue
		}
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		fmt.Printf("mem heap_alloc=%d heap_inuse=%d heap_sys=%d heap_released=%d sys=%d goroutines=%d num_gc=%d\n",
			m.HeapAlloc, m.HeapInuse, m.HeapSys, m.HeapReleased, m.Sys, runtime.NumGoroutine(), m.NumGC)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	srv.Shutdown(sctx)
	scancel()
	g.Close()
	cancel()
	<-meterDone
	fmt.Printf("stats %d records written by the sink, %d dropped\n", written.Load(), meter.Dropped())
	return nil
}

// child is a running child process.
type child struct {
	role  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	addr  string
	mu    sync.Mutex // one command at a time
	once  sync.Once
	stats string
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// startChild starts this binary again in role and waits for its "ready"
// line.
func startChild(ctx context.Context, role string, args []string, stderr io.Writer) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), childEnv+"="+role)
	cmd.Stderr = stderr
	// A benchmark killed hard must not leave a gateway serving.
	setParentDeathSignal(cmd, syscall.SIGKILL)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{role: role, cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	type ready struct {
		line string
		err  error
	}
	ch := make(chan ready, 1)
	go func() {
		line, err := c.out.ReadString('\n')
		ch <- ready{line, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil || !strings.HasPrefix(r.line, "ready ") {
			c.kill()
			return nil, fmt.Errorf("%s child did not start: %q %v", role, r.line, r.err)
		}
		c.addr = strings.TrimSpace(strings.TrimPrefix(r.line, "ready "))
		return c, nil
	case <-time.After(30 * time.Second):
		c.kill()
		return nil, fmt.Errorf("%s child did not start within 30 s", role)
	case <-ctx.Done():
		c.kill()
		return nil, ctx.Err()
	}
}

// command sends one command line and returns the child's answer.
func (c *child) command(line string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		return "", err
	}
	type answer struct {
		line string
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		l, err := c.out.ReadString('\n')
		ch <- answer{strings.TrimSpace(l), err}
	}()
	select {
	case a := <-ch:
		if a.err == nil && strings.HasPrefix(a.line, "error") {
			a.err = fmt.Errorf("%s child: %s", c.role, a.line)
		}
		return a.line, a.err
	case <-time.After(30 * time.Second):
		return "", fmt.Errorf("%s child did not answer %q within 30 s", c.role, line)
	}
}

// stop closes the child's stdin, waits for it to exit (killing it after
// 10 s) and returns what it printed after "stats ".
func (c *child) stop() string {
	c.once.Do(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.stdin.Close()
		got := make(chan string, 1)
		go func() {
			line, _ := c.out.ReadString('\n')
			io.Copy(io.Discard, c.out)
			got <- strings.TrimSpace(strings.TrimPrefix(line, "stats "))
		}()
		select {
		case c.stats = <-got:
		case <-time.After(10 * time.Second):
		}
		c.kill()
	})
	return c.stats
}

func (c *child) kill() {
	c.stdin.Close()
	exited := make(chan struct{})
	go func() { c.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		c.cmd.Process.Kill()
		<-exited
	}
}

// cpuTime returns the CPU time (user + system) used so far by process
// pid, from /proc; false when it cannot be read.
func cpuTime(pid int) (time.Duration, bool) {
	const ticksPerSecond = 100 // USER_HZ, 100 on every Linux ABI Go supports
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64) // utime, field 14 of proc(5)
	st, err2 := strconv.ParseInt(f[12], 10, 64) // stime, field 15
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(ut+st) * time.Second / ticksPerSecond, true
}

// procStatusKiB reads a "<field>: N kB" line (VmRSS) of
// /proc/<pid>/status; -1 when it cannot.
func procStatusKiB(pid int, field string) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(line, field+":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			return -1
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return -1
		}
		return n
	}
	return -1
}
