package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plinth-dev/plinth/internal/gateway"
	"github.com/plinth-dev/plinth/internal/gateway/h1"
)

// The model server and the gateway run in processes of their own: this
// binary, started again with childEnv naming the role, so that the model,
// the gateway and the load generator do not share one Go runtime. A child
// prints "ready <addr>[,<addr>...]" on stdout once it listens, serves
// until its stdin closes (so it also ends when the benchmark dies), then
// prints one "stats ..." line and exits.
const (
	childEnv     = "PLINTH_BENCH_GATEWAY_CHILD"
	roleUpstream = "upstream"
	roleGateway  = "gateway"
	roleGoProxy  = "goproxy"
)

// What the gateway is configured with.
const (
	benchEndpoint      = "bench"
	benchKey           = "bench-endpoint-key-0123456789abcdef"
	benchPlatformToken = "bench-platform-token-0123456789abcdef"
	benchRateLimit     = 10_000_000 // per minute, per key and per team: on, never reached
)

// modelAnswer is what the model returns to POST /score.
var modelAnswer = []byte(`{"predictions":[0.5],"model":"bench"}`)

// runChild runs a child role; it returns the exit status.
func runChild(role string, args []string) int {
	var err error
	switch role {
	case roleUpstream:
		err = upstreamMain(args)
	case roleGateway:
		err = gatewayMain(args)
	case roleGoProxy:
		err = goProxyMain(args)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench/gateway %s: %v\n", role, err)
		return 1
	}
	return 0
}

// upstreamMain serves the trivial model on -listeners loopback ports.
func upstreamMain(args []string) error {
	fs := flag.NewFlagSet(roleUpstream, flag.ContinueOnError)
	listeners := fs.Int("listeners", 2, "loopback listeners")
	if err := fs.Parse(args); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /score", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{strconv.Itoa(len(modelAnswer))}
		w.Write(modelAnswer)
	})
	var addrs []string
	var srvs []*http.Server
	for range *listeners {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
		go srv.Serve(ln)
		srvs = append(srvs, srv)
		addrs = append(addrs, ln.Addr().String())
	}
	fmt.Printf("ready %s\n", strings.Join(addrs, ","))
	io.Copy(io.Discard, os.Stdin)
	for _, s := range srvs {
		s.Close()
	}
	fmt.Println("stats -")
	return nil
}

// fakeAuth accepts one platform token, for any workspace.
type fakeAuth struct{ token string }

func (a fakeAuth) Authorize(_ context.Context, token, _ string) (string, string, error) {
	if token == a.token {
		return "bench-user", "bench-key-id", nil
	}
	return "", "", gateway.ErrUnauthenticated
}

// benchSnapshot is one endpoint, authenticated by key (or platform
// token), rate-limited per key and per team, split 50/50 over two
// deployments that both use every model replica.
func benchSnapshot(key string, replicas []string) *gateway.Snapshot {
	sum := sha256.Sum256([]byte(key))
	dep := func(name string) *gateway.Deployment {
		d := &gateway.Deployment{Name: name, ScoringPath: "/score", MaxConcurrentPerInstance: 1000}
		for i, a := range replicas {
			d.Replicas = append(d.Replicas, gateway.Replica{ID: name + "-" + strconv.Itoa(i), Addr: a})
		}
		return d
	}
	return &gateway.Snapshot{Version: 1, Endpoints: map[string]*gateway.Endpoint{
		"default/" + benchEndpoint: {
			Workspace: "default", Name: benchEndpoint, Team: "bench-team", AuthMode: "key",
			KeyHashes:              []string{hex.EncodeToString(sum[:])},
			Traffic:                map[string]int{"blue": 50, "green": 50},
			Deployments:            map[string]*gateway.Deployment{"blue": dep("blue"), "green": dep("green")},
			RateLimitPerMinute:     benchRateLimit,
			TeamRateLimitPerMinute: benchRateLimit,
		},
	}}
}

// gatewayMain serves Plinth's gateway, configured as in production
// (metering, Prometheus metrics, rate limits), on a loopback port.
func gatewayMain(args []string) error {
	fs := flag.NewFlagSet(roleGateway, flag.ContinueOnError)
	replicas := fs.String("replicas", "", "comma-separated model addresses")
	key := fs.String("key", benchKey, "the endpoint key")
	platform := fs.String("platform-token", benchPlatformToken, "the platform token the Authenticator accepts")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile to this file")
	accessLog := fs.String("access-log", "", "write the JSON access log to this file (default: off, as nginx's access_log off)")
	gogc := fs.Int("gogc", 0, "GOGC for this process; 0 keeps Go's default (as `plinth gateway` does)")
	server := fs.String("server", "net", `HTTP server of the data plane: "net" (net/http) or "plinth" (internal/gateway/h1)`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *gogc > 0 {
		debug.SetGCPercent(*gogc)
	}
	if *replicas == "" {
		return errors.New("-replicas is required")
	}
	if *server != "net" && *server != "plinth" {
		return fmt.Errorf("-server %q: want net or plinth", *server)
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

	// The access log: off unless asked (warnings still go to stderr).
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if *accessLog != "" {
		f, err := os.Create(*accessLog)
		if err != nil {
			return err
		}
		defer f.Close()
		log = slog.New(slog.NewJSONHandler(f, nil))
	}

	reg := prometheus.NewRegistry()
	var written atomic.Int64
	meter := gateway.NewMeter(func(_ context.Context, batch []gateway.Record) error {
		written.Add(int64(len(batch)))
		return nil
	}, 1<<16, 500, time.Second, reg, log) // as `plinth gateway` sizes it
	ctx, cancel := context.WithCancel(context.Background())
	meterDone := make(chan struct{})
	go func() { meter.Run(ctx); close(meterDone) }()

	g := gateway.New(gateway.Options{Auth: fakeAuth{*platform}, Meter: meter, Registry: reg, Log: log})
	g.Update(benchSnapshot(*key, strings.Split(*replicas, ",")))
	srv := g.Server("")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		return err
	}
	// Both servers are built from the same http.Server: handler, timeouts
	// and header limit as `plinth gateway` has them.
	var serve func(net.Listener) error
	var shutdown func(context.Context) error
	if *server == "plinth" {
		hs := h1.FromHTTP(srv)
		serve, shutdown = hs.Serve, hs.Shutdown
	} else {
		serve, shutdown = srv.Serve, srv.Shutdown
	}
	go serve(ln)
	fmt.Printf("ready %s\n", ln.Addr())

	io.Copy(io.Discard, os.Stdin)
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	shutdown(sctx)
	scancel()
	g.Close()
	cancel()
	<-meterDone
	fmt.Printf("stats %d records written by the sink, %d dropped\n", written.Load(), meter.Dropped())
	return nil
}

// goProxyMain serves a bare reverse proxy built like the gateway's proxy
// step (the whole body read, one http.Transport with the gateway's
// settings, headers and body copied back) with none of its features: no
// authentication, limits, metering, metrics, split or request ids. It is
// the floor for a gateway built on net/http, so the difference between it
// and Plinth is what Plinth's features cost.
func goProxyMain(args []string) error {
	fs := flag.NewFlagSet(roleGoProxy, flag.ContinueOnError)
	replicas := fs.String("replicas", "", "comma-separated model addresses")
	gogc := fs.Int("gogc", 0, "GOGC for this process; 0 keeps Go's default")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *replicas == "" {
		return errors.New("-replicas is required")
	}
	if *gogc > 0 {
		debug.SetGCPercent(*gogc)
	}
	addrs := strings.Split(*replicas, ",")
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		WriteBufferSize:     32 << 10,
		ReadBufferSize:      32 << 10,
	}
	var next atomic.Uint32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		addr := addrs[int(next.Add(1))%len(addrs)]
		out, _ := http.NewRequestWithContext(r.Context(), r.Method, "http://"+addr+"/score", bytes.NewReader(body))
		for k, v := range r.Header {
			if k != "Authorization" && k != "Connection" {
				out.Header[k] = v
			}
		}
		resp, err := tr.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go srv.Serve(ln)
	fmt.Printf("ready %s\n", ln.Addr())
	io.Copy(io.Discard, os.Stdin)
	srv.Close()
	fmt.Println("stats -")
	return nil
}

// child is a running child process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	addrs []string
	once  sync.Once
	stats string
	done  chan struct{}
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
	c := &child{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout), done: make(chan struct{})}
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
		c.addrs = strings.Split(strings.TrimSpace(strings.TrimPrefix(r.line, "ready ")), ",")
		return c, nil
	case <-time.After(30 * time.Second):
		c.kill()
		return nil, fmt.Errorf("%s child did not start within 30 s", role)
	case <-ctx.Done():
		c.kill()
		return nil, ctx.Err()
	}
}

// stop closes the child's stdin, waits for it to exit (killing it after
// 10 s) and returns what it printed after "stats ".
func (c *child) stop() string {
	c.once.Do(func() {
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

// cpuTime returns the CPU time (user + system) used so far by the
// processes pids, from /proc; false when it cannot be read.
func cpuTime(pids []int) (time.Duration, bool) {
	const ticksPerSecond = 100 // USER_HZ, 100 on every Linux ABI Go supports
	var total int64
	for _, pid := range pids {
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
		total += ut + st
	}
	return time.Duration(total) * time.Second / ticksPerSecond, true
}

// childrenOf returns the pids whose parent is pid, from /proc.
func childrenOf(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}
