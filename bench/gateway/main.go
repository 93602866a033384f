// Command gateway measures the overhead of Plinth's gateway
// (internal/gateway) against nginx, side by side, in one run.
//
// Usage:
//
//	go run ./bench/gateway [-duration 10s] [-conns 1,16,64] [-nginx /usr/sbin/nginx] [-body 256]
//
// It starts a trivial model server (two HTTP/1.1 listeners answering
// POST /score with a small JSON body) in a process of its own, Plinth's
// gateway in another (key authentication, per-key and team rate limits,
// metering, metrics and a 50/50 traffic split all on), and nginx from the
// system's package (a generated proxy_pass configuration with upstream
// keep-alive) as a third. Then, from this process, it sends the same
// requests over N persistent connections to each target in turn: the
// model directly, through Plinth, through nginx, and again, at every
// concurrency level, and prints throughput and p50/p99 latency with the
// medians of the rounds, checked against the targets of the issue:
// Plinth adds at most 0.3 ms at p50 (at the lowest concurrency) and reaches
// at least 0.8x nginx's throughput at the highest (64).
//
// Everything runs on loopback and nothing is downloaded; -nginx "" skips
// nginx. -goproxy adds a fourth target, a bare net/http reverse proxy in a
// process of its own, to tell what net/http costs from what Plinth's
// features cost; -h1 adds the same gateway served by Plinth's own HTTP/1.1
// server (internal/gateway/h1) as target plinth-h1, so that one run compares
// the two servers; -cpuprofile profiles the gateway process. Measurements on a shared machine are noisy: the output says what
// the load average was.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Targets of the issue.
const (
	targetAddedP50   = 300 * time.Microsecond // Plinth's added p50 vs direct
	targetNginxRatio = 0.8                    // Plinth / nginx throughput at the top concurrency
)

// Target names, in the order they run within a round.
const (
	tDirect = "direct"
	tPlinth = "plinth"
	tNginx  = "nginx"
	tGo     = "go-proxy"  // -goproxy: a bare net/http reverse proxy
	tH1     = "plinth-h1" // -h1: Plinth's gateway served by internal/gateway/h1
)

func main() {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChild(role, os.Args[1:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type config struct {
	duration     time.Duration
	warmup       time.Duration
	conns        []int
	nginx        string
	nginxWorkers string
	body         int
	rounds       int
	auth         string // "key" or "platform"
	accessLog    bool
	cpuprofile   string
	timeout      time.Duration
	goproxy      bool
	h1           bool
	gogc         int
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	var conns string
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: go run ./bench/gateway [flags]\n\n"+
			"Measures a trivial model directly, through Plinth's gateway and through nginx, side by side.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "measured time per target, concurrency level and round")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "unmeasured load before each measurement (connections opened, caches warm)")
	fs.StringVar(&conns, "conns", "1,16,64", "comma-separated concurrency levels: persistent connections, each sending requests back to back")
	fs.StringVar(&c.nginx, "nginx", "/usr/sbin/nginx", `nginx binary; "" skips nginx`)
	fs.StringVar(&c.nginxWorkers, "nginx-workers", "auto", "nginx worker_processes")
	fs.IntVar(&c.body, "body", 256, "request body size in bytes (a JSON document)")
	fs.IntVar(&c.rounds, "rounds", 2, "rounds per concurrency level (each runs every target once); medians are reported")
	fs.StringVar(&c.auth, "auth", "key", `credential the load sends through Plinth: "key" (an endpoint key, checked by SHA-256) or "platform" (a platform token, checked by the Authenticator)`)
	fs.BoolVar(&c.accessLog, "access-log", false, "write an access log line per call in both Plinth (JSON) and nginx (combined), to files in the temporary directory")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of the Plinth gateway process (the whole run) to this file")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "timeout of one request")
	fs.IntVar(&c.gogc, "gogc", 0, "GOGC of the Plinth gateway and bare Go proxy processes (0: Go's default, as `plinth gateway` runs; `plinth serve` uses 800)")
	fs.BoolVar(&c.goproxy, "goproxy", false, "also measure a bare net/http reverse proxy (the gateway's proxy step without its features), in its own process")
	fs.BoolVar(&c.h1, "h1", false, "also measure Plinth's gateway served by its own HTTP/1.1 server (internal/gateway/h1) as target plinth-h1, in a process of its own; plinth stays on net/http")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	for _, s := range strings.Split(conns, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 4096 {
			return c, fmt.Errorf("-conns: %q is not a number of connections between 1 and 4096", s)
		}
		if !slices.Contains(c.conns, n) {
			c.conns = append(c.conns, n)
		}
	}
	switch {
	case len(c.conns) == 0:
		return c, errors.New("-conns names no concurrency level")
	case c.duration <= 0 || c.warmup < 0 || c.timeout <= 0:
		return c, errors.New("-duration and -timeout must be positive, -warmup not negative")
	case c.body < 2 || c.body > 64<<20:
		return c, errors.New("-body must be between 2 bytes and 64 MiB")
	case c.gogc < 0:
		return c, errors.New("-gogc must not be negative")
	case c.rounds < 1:
		return c, errors.New("-rounds must be at least 1")
	case c.auth != "key" && c.auth != "platform":
		return c, fmt.Errorf(`-auth %q: want "key" or "platform"`, c.auth)
	}
	if c.nginx != "" {
		if _, err := os.Stat(c.nginx); err != nil {
			return c, fmt.Errorf("-nginx %s: %v (install it with `apt-get install -y nginx`, or pass -nginx \"\" to skip nginx)", c.nginx, err)
		}
	}
	if c.cpuprofile != "" {
		abs, err := filepath.Abs(c.cpuprofile)
		if err != nil {
			return c, err
		}
		c.cpuprofile = abs
	}
	return c, nil
}

// run is the whole program; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench/gateway:", err)
		return 2
	}
	stderr = &syncWriter{w: stderr} // children write to it too
	code, err := bench(ctx, cfg, stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "bench/gateway:", err)
		return 1
	}
	return code
}

// syncWriter serialises writes from the children's output copiers and this
// process.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func bench(ctx context.Context, cfg config, stdout, stderr io.Writer) (int, error) {
	dir, err := os.MkdirTemp("", "plinth-bench-gateway-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	body := requestBody(cfg.body)
	load0 := loadAvg()
	began := time.Now()

	// The model.
	up, err := startChild(ctx, roleUpstream, []string{"-listeners", "2"}, stderr)
	if err != nil {
		return 1, fmt.Errorf("starting the model server: %w", err)
	}
	defer up.stop()
	upstreams := up.addrs

	// Plinth's gateway.
	gwArgs := []string{"-replicas", strings.Join(upstreams, ","), "-key", benchKey, "-platform-token", benchPlatformToken}
	if cfg.cpuprofile != "" {
		gwArgs = append(gwArgs, "-cpuprofile", cfg.cpuprofile)
	}
	if cfg.gogc > 0 {
		gwArgs = append(gwArgs, "-gogc", strconv.Itoa(cfg.gogc))
	}
	if cfg.accessLog {
		gwArgs = append(gwArgs, "-access-log", filepath.Join(dir, "plinth-access.log"))
	}
	gw, err := startChild(ctx, roleGateway, gwArgs, stderr)
	if err != nil {
		return 1, fmt.Errorf("starting Plinth's gateway: %w", err)
	}
	defer gw.stop()

	token := benchKey
	if cfg.auth == "platform" {
		token = benchPlatformToken
	}
	targets := []*target{
		{name: tDirect, urls: mapStrings(upstreams, func(a string) string { return "http://" + a + "/score" }), token: token},
		{name: tPlinth, urls: []string{"http://" + gw.addrs[0] + "/endpoints/" + benchEndpoint + "/score"}, token: token, pids: func() []int { return []int{gw.pid()} }},
	}

	// nginx.
	var ngx *nginxProc
	if cfg.nginx != "" {
		ngx, err = startNginx(ctx, cfg.nginx, dir, upstreams, cfg.nginxWorkers, cfg.accessLog)
		if err != nil {
			return 1, fmt.Errorf("starting nginx: %w", err)
		}
		defer ngx.stop()
		targets = append(targets, &target{name: tNginx, urls: []string{"http://" + ngx.addr + "/score"}, token: token, pids: ngx.pids})
	}

	fmt.Fprintf(stdout, "bench/gateway: %s %s/%s, %d CPUs, GOMAXPROCS=%d, started %s\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), began.UTC().Format(time.RFC3339))
	gogc := "default"
	if cfg.gogc > 0 {
		gogc = strconv.Itoa(cfg.gogc)
	}
	fmt.Fprintf(stdout, "  duration=%s warmup=%s conns=%s rounds=%d body=%d B auth=%s access-log=%v gateway GOGC=%s\n",
		cfg.duration, cfg.warmup, joinInts(cfg.conns), cfg.rounds, cfg.body, cfg.auth, cfg.accessLog, gogc)
	nginxDesc := "skipped (-nginx \"\")"
	if ngx != nil {
		nginxDesc = fmt.Sprintf("%s (%s), worker_processes %s, upstream keepalive 64", cfg.nginx, ngx.version, cfg.nginxWorkers)
	}
	fmt.Fprintf(stdout, "  model: 2 listeners in one process; plinth: key auth + rate limits + metering + 50/50 split, own process; nginx: %s\n", nginxDesc)
	fmt.Fprintf(stdout, "  load average before: %s\n", load0)

	// A bare Go proxy, to separate net/http's cost from Plinth's features.
	if cfg.goproxy {
		gp, err := startChild(ctx, roleGoProxy, []string{"-replicas", strings.Join(upstreams, ","), "-gogc", strconv.Itoa(cfg.gogc)}, stderr)
		if err != nil {
			return 1, fmt.Errorf("starting the bare Go proxy: %w", err)
		}
		defer gp.stop()
		targets = append(targets, &target{name: tGo, urls: []string{"http://" + gp.addrs[0] + "/score"}, token: token, pids: func() []int { return []int{gp.pid()} }})
	}

	// The same gateway on Plinth's own HTTP/1.1 server.
	var g1 *child
	if cfg.h1 {
		args := slices.Clone(gwArgs)
		for i, a := range args {
			if a == "-cpuprofile" {
				args[i+1] += ".h1" // the net/http gateway's profile keeps the name
			}
		}
		if cfg.accessLog {
			args[len(args)-1] = filepath.Join(dir, "plinth-h1-access.log")
		}
		g1, err = startChild(ctx, roleGateway, append(args, "-server", "plinth"), stderr)
		if err != nil {
			return 1, fmt.Errorf("starting Plinth's gateway on its own server: %w", err)
		}
		defer g1.stop()
		targets = append(targets, &target{name: tH1, urls: []string{"http://" + g1.addrs[0] + "/endpoints/" + benchEndpoint + "/score"}, token: token, pids: func() []int { return []int{g1.pid()} }})
	}

	// Every target must answer 200 before anything is measured.
	for _, t := range targets {
		if err := t.probe(ctx, body, cfg.timeout); err != nil {
			return 1, fmt.Errorf("%s does not answer: %w", t.name, err)
		}
	}

	var results []result
	for _, n := range cfg.conns {
		fmt.Fprintf(stderr, "== %d connection(s), load average %s\n", n, loadAvg())
		for round := 1; round <= cfg.rounds; round++ {
			for _, t := range targets {
				if ctx.Err() != nil {
					return 1, ctx.Err()
				}
				s := measure(ctx, t, n, cfg.warmup, cfg.duration, cfg.timeout, body)
				fmt.Fprintf(stderr, "   round %d %-6s %s\n", round, t.name, s)
				results = append(results, result{conns: n, target: t.name, round: round, sample: s})
			}
		}
	}
	load1 := loadAvg()

	// Stop the gateway to read its metering counters (and end its profile).
	gwStats := gw.stop()
	rows := summarize(results, cfg.conns, targets)
	fmt.Fprintln(stdout)
	printTable(stdout, rows)
	fmt.Fprintln(stdout)
	ok := printVerdicts(stdout, rows, cfg.conns)
	fmt.Fprintf(stdout, "\nPlinth split (x-plinth-deployment of the answers): %s\n", splitLine(results))
	if gwStats != "" {
		fmt.Fprintf(stdout, "Plinth metering: %s\n", gwStats)
	}
	if g1 != nil {
		if st := g1.stop(); st != "" {
			fmt.Fprintf(stdout, "Plinth on h1 metering: %s\n", st)
		}
	}
	if cfg.cpuprofile != "" {
		fmt.Fprintf(stdout, "Plinth CPU profile: %s (go tool pprof -top %s)\n", cfg.cpuprofile, cfg.cpuprofile)
	}
	fmt.Fprintf(stdout, "Load average before %s, after %s (%d CPUs). The machine may be shared: figures are medians of %d round(s), "+
		"targets interleaved; client, proxy and model share the CPUs, so proxy CPU/req is the fairer cost comparison.\n",
		load0, load1, runtime.NumCPU(), cfg.rounds)
	if !ok {
		return 1, nil
	}
	return 0, nil
}

// result is one measurement.
type result struct {
	conns  int
	target string
	round  int
	sample sample
}

// row is the median over rounds of one target at one concurrency level.
type row struct {
	conns    int
	target   string
	rps      float64
	p50, p99 time.Duration
	errors   int
	cpuPer   time.Duration // proxy CPU per request; -1 when not measured
	firstErr string
}

func summarize(rs []result, conns []int, targets []*target) []row {
	var rows []row
	for _, n := range conns {
		for _, t := range targets {
			var rps []float64
			var p50, p99, cpu []time.Duration
			r := row{conns: n, target: t.name, cpuPer: -1}
			for _, x := range rs {
				if x.conns != n || x.target != t.name {
					continue
				}
				rps = append(rps, x.sample.rps())
				p50 = append(p50, x.sample.p50)
				p99 = append(p99, x.sample.p99)
				if x.sample.cpuPer >= 0 {
					cpu = append(cpu, x.sample.cpuPer)
				}
				r.errors += x.sample.errors
				if r.firstErr == "" {
					r.firstErr = x.sample.firstErr
				}
			}
			if len(rps) == 0 {
				continue
			}
			r.rps = median(rps)
			r.p50, r.p99 = medianDur(p50), medianDur(p99)
			if len(cpu) > 0 {
				r.cpuPer = medianDur(cpu)
			}
			rows = append(rows, r)
		}
	}
	return rows
}

func printTable(w io.Writer, rows []row) {
	fmt.Fprintln(w, "| connections | target | req/s | p50 (ms) | p99 (ms) | errors | proxy CPU/req (µs) |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		cpu := "—"
		if r.cpuPer >= 0 {
			cpu = strconv.FormatInt(r.cpuPer.Microseconds(), 10)
		}
		fmt.Fprintf(w, "| %d | %s | %s | %.3f | %.3f | %d | %s |\n",
			r.conns, r.target, thousands(int64(r.rps+0.5)), ms(r.p50), ms(r.p99), r.errors, cpu)
	}
	for _, r := range rows {
		if r.errors > 0 {
			fmt.Fprintf(w, "errors: %d connections, %s: %d, the first: %s\n", r.conns, r.target, r.errors, r.firstErr)
		}
	}
}

// printVerdicts prints the added latency at each level and the two target
// lines; it reports whether no target saw errors.
func printVerdicts(w io.Writer, rows []row, conns []int) bool {
	find := func(n int, t string) *row {
		for i := range rows {
			if rows[i].conns == n && rows[i].target == t {
				return &rows[i]
			}
		}
		return nil
	}
	for _, n := range conns {
		d, p := find(n, tDirect), find(n, tPlinth)
		if d == nil || p == nil {
			continue
		}
		line := fmt.Sprintf("At %d connection(s): Plinth adds %+.3f ms at p50 and %+.3f ms at p99 over direct", n, ms(p.p50-d.p50), ms(p.p99-d.p99))
		if x := find(n, tNginx); x != nil {
			line += fmt.Sprintf("; nginx adds %+.3f ms at p50; Plinth / nginx throughput %.2f", ms(x.p50-d.p50), p.rps/x.rps)
		}
		if x := find(n, tGo); x != nil {
			line += fmt.Sprintf("; bare Go proxy adds %+.3f ms at p50; Plinth / bare Go proxy throughput %.2f", ms(x.p50-d.p50), p.rps/x.rps)
		}
		if x := find(n, tH1); x != nil {
			line += fmt.Sprintf("; Plinth on h1 adds %+.3f ms at p50; Plinth on h1 / Plinth throughput %.2f", ms(x.p50-d.p50), x.rps/p.rps)
			if ng := find(n, tNginx); ng != nil && ng.rps > 0 {
				line += fmt.Sprintf("; Plinth on h1 / nginx throughput %.2f", x.rps/ng.rps)
			}
		}
		fmt.Fprintln(w, line)
	}
	lo, hi := slices.Min(conns), slices.Max(conns)
	if d, p := find(lo, tDirect), find(lo, tPlinth); d != nil && p != nil {
		added := p.p50 - d.p50
		fmt.Fprintf(w, "Plinth added p50 (vs direct, %d connection(s)): %.3f ms (target ≤ %.1f ms): %s\n",
			lo, ms(added), ms(targetAddedP50), verdict(added <= targetAddedP50))
	}
	if p, x := find(hi, tPlinth), find(hi, tNginx); p != nil && x != nil && x.rps > 0 {
		ratio := p.rps / x.rps
		fmt.Fprintf(w, "Plinth / nginx throughput at %d connections: %.2f (target ≥ %.2f): %s\n",
			hi, ratio, targetNginxRatio, verdict(ratio >= targetNginxRatio))
	} else {
		fmt.Fprintf(w, "Plinth / nginx throughput at %d connections: not measured (nginx skipped)\n", hi)
	}
	if d, p := find(lo, tDirect), find(lo, tH1); d != nil && p != nil {
		added := p.p50 - d.p50
		fmt.Fprintf(w, "Plinth on h1 added p50 (vs direct, %d connection(s)): %.3f ms (target ≤ %.1f ms): %s\n",
			lo, ms(added), ms(targetAddedP50), verdict(added <= targetAddedP50))
	}
	if p, x := find(hi, tH1), find(hi, tNginx); p != nil && x != nil && x.rps > 0 {
		ratio := p.rps / x.rps
		fmt.Fprintf(w, "Plinth on h1 / nginx throughput at %d connections: %.2f (target ≥ %.2f): %s\n",
			hi, ratio, targetNginxRatio, verdict(ratio >= targetNginxRatio))
	}
	clean := true
	for _, r := range rows {
		clean = clean && r.errors == 0
	}
	return clean
}

func verdict(ok bool) string {
	if ok {
		return "MET"
	}
	return "MISSED"
}

func splitLine(rs []result) string {
	counts := map[string]int{}
	total := 0
	for _, r := range rs {
		if r.target != tPlinth && r.target != tH1 {
			continue
		}
		for d, n := range r.sample.deployments {
			counts[d] += n
			total += n
		}
	}
	if total == 0 {
		return "none"
	}
	names := make([]string, 0, len(counts))
	for d := range counts {
		names = append(names, d)
	}
	slices.Sort(names)
	var parts []string
	for _, d := range names {
		parts = append(parts, fmt.Sprintf("%s %.1f%%", d, 100*float64(counts[d])/float64(total)))
	}
	return strings.Join(parts, ", ")
}

// requestBody is a JSON document of exactly n bytes (n ≥ 2).
func requestBody(n int) []byte {
	const head, tail = `{"input_data":{"columns":["a","b"],"data":[[1,2]]},"pad":"`, `"}`
	if n < len(head)+len(tail) {
		b := []byte(`{}` + strings.Repeat(" ", n-2))
		return b
	}
	return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func medianDur(xs []time.Duration) time.Duration {
	f := make([]float64, len(xs))
	for i, x := range xs {
		f[i] = float64(x)
	}
	return time.Duration(median(f))
}

// percentile is the nearest-rank percentile p (0..100] of sorted s.
func percentile(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	k := int(float64(len(s))*p/100+0.999999999) - 1
	return s[max(0, min(k, len(s)-1))]
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func joinInts(xs []int) string {
	return strings.Join(mapStrings(xs, strconv.Itoa), ",")
}

func mapStrings[T any](xs []T, f func(T) string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}
