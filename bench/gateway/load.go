package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxSamples bounds the latencies kept per measurement (8 bytes each);
// requests beyond it are still counted.
const maxSamples = 20_000_000

// target is one way to reach the model.
type target struct {
	name  string
	urls  []string // connection i uses urls[i % len(urls)]
	token string
	// pids returns the proxy's processes, whose CPU time is measured; nil
	// for none.
	pids func() []int
}

// sample is one measurement of one target at one concurrency level.
type sample struct {
	ok, errors  int
	elapsed     time.Duration // from the end of the warm-up to the last answer
	p50, p99    time.Duration
	cpuPer      time.Duration // proxy CPU per request; -1 when not measured
	firstErr    string
	deployments map[string]int // x-plinth-deployment of the answers
}

func (s sample) rps() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.ok) / s.elapsed.Seconds()
}

func (s sample) String() string {
	cpu := "—"
	if s.cpuPer >= 0 {
		cpu = fmt.Sprintf("%d µs", s.cpuPer.Microseconds())
	}
	out := fmt.Sprintf("%8.0f req/s  p50 %.3f ms  p99 %.3f ms  errors %d  proxy CPU/req %s", s.rps(), ms(s.p50), ms(s.p99), s.errors, cpu)
	if s.firstErr != "" {
		out += "  first error: " + s.firstErr
	}
	return out
}

// newClient returns a client with exactly n keep-alive connections per
// host, talking to loopback only (no proxy from the environment, no
// redirects, no compression).
func newClient(n int, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxConnsPerHost:     n,
		MaxIdleConnsPerHost: n,
		MaxIdleConns:        2 * n,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// do sends one scoring call; it returns the deployment that answered (for
// Plinth) and an error for anything but 200.
func (t *target) do(ctx context.Context, c *http.Client, url string, body []byte) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header["Content-Type"] = []string{"application/json"}
	req.Header["Authorization"] = []string{"Bearer " + t.token}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	var errBody []byte
	if resp.StatusCode != http.StatusOK {
		errBody, _ = io.ReadAll(io.LimitReader(resp.Body, 300))
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(errBody)))
	}
	if err != nil {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	if d := resp.Header["X-Plinth-Deployment"]; len(d) > 0 {
		return d[0], nil
	}
	return "", nil
}

// probe sends one call per URL and fails unless each is answered 200.
func (t *target) probe(ctx context.Context, body []byte, timeout time.Duration) error {
	c := newClient(1, timeout)
	defer c.CloseIdleConnections()
	for _, u := range t.urls {
		if _, err := t.do(ctx, c, u, body); err != nil {
			return fmt.Errorf("POST %s: %w", u, err)
		}
	}
	return nil
}

// worker is what one connection's goroutine collects.
type worker struct {
	lat         []time.Duration
	ok, errs    int
	firstErr    string
	last        time.Time
	deployments map[string]int
}

// measure runs n connections against t, each sending calls back to back:
// for warm (not measured), then for dur. Calls started in the measured
// window are counted; latency is from before the request is built to the
// end of the response body.
func measure(ctx context.Context, t *target, n int, warm, dur, timeout time.Duration, body []byte) sample {
	c := newClient(n, timeout)
	defer c.CloseIdleConnections()
	start := time.Now()
	warmEnd := start.Add(warm)
	end := warmEnd.Add(dur)
	ctx, cancel := context.WithDeadline(ctx, end.Add(timeout))
	defer cancel()

	perWorker := maxSamples / n
	ws := make([]worker, n)
	var wg sync.WaitGroup
	for i := range ws {
		wg.Add(1)
		go func(w *worker, url string) {
			defer wg.Done()
			w.lat = make([]time.Duration, 0, min(perWorker, 1<<16))
			w.deployments = map[string]int{}
			for {
				t0 := time.Now()
				if !t0.Before(end) || ctx.Err() != nil {
					return
				}
				dep, err := t.do(ctx, c, url, body)
				t1 := time.Now()
				if t0.Before(warmEnd) {
					continue
				}
				w.last = t1
				if err != nil {
					w.errs++
					if w.firstErr == "" {
						w.firstErr = err.Error()
					}
					if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
						return
					}
					// Do not spin on a broken target.
					time.Sleep(time.Millisecond)
					continue
				}
				w.ok++
				if len(w.lat) < perWorker {
					w.lat = append(w.lat, t1.Sub(t0))
				}
				if dep != "" {
					w.deployments[dep]++
				}
			}
		}(&ws[i], t.urls[i%len(t.urls)])
	}

	// Proxy CPU over the measured window.
	cpuPer := time.Duration(-1)
	var cpu0 time.Duration
	cpuOK := false
	if t.pids != nil {
		sleepUntil(ctx, warmEnd)
		cpu0, cpuOK = cpuTime(t.pids())
	}
	wg.Wait()
	s := sample{deployments: map[string]int{}}
	if cpuOK {
		if cpu1, ok := cpuTime(t.pids()); ok {
			cpu0 = cpu1 - cpu0
		} else {
			cpuOK = false
		}
	}
	var all []time.Duration
	last := warmEnd
	for i := range ws {
		w := &ws[i]
		s.ok += w.ok
		s.errors += w.errs
		if s.firstErr == "" {
			s.firstErr = w.firstErr
		}
		if w.last.After(last) {
			last = w.last
		}
		all = append(all, w.lat...)
		for d, k := range w.deployments {
			s.deployments[d] += k
		}
	}
	s.elapsed = last.Sub(warmEnd)
	slices.Sort(all)
	s.p50, s.p99 = percentile(all, 50), percentile(all, 99)
	if cpuOK && s.ok+s.errors > 0 {
		cpuPer = cpu0 / time.Duration(s.ok+s.errors)
	}
	s.cpuPer = cpuPer
	return s
}

func sleepUntil(ctx context.Context, t time.Time) {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}
