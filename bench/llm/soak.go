package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// soakPoint is one sample of the gateway's memory during the soak.
type soakPoint struct {
	label     string        // "start", "1m", ..., "end"
	elapsed   time.Duration // since the end of the warm-up
	calls     int           // answered calls since the previous point (start: during the warm-up)
	errors    int
	chatP50   time.Duration // of the non-streaming calls since the previous point
	ttftP50   time.Duration // of the streaming calls since the previous point
	rssKiB    int64         // VmRSS of the gateway process
	heap      int64         // Go heap in use after a forced collection (bytes); -1 unknown
	goroutine int
	load      string
}

// soakResult is the whole soak.
type soakResult struct {
	points   []soakPoint
	calls    int // after the warm-up
	errors   int // all, the warm-up's included
	firstErr string
	// maxKiB is the highest RSS sampled. (The kernel's VmHWM is not used:
	// it is updated lazily and was seen below a VmRSS read before it.)
	maxKiB int64
	stats  string
}

// soakTally collects what the workers did since the last point.
type soakTally struct {
	mu       sync.Mutex
	ok, errs int
	firstErr string
	chat     []time.Duration
	ttft     []time.Duration
}

func (s *soakTally) add(k string, lat time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.errs++
		if s.firstErr == "" {
			s.firstErr = err.Error()
		}
		return
	}
	s.ok++
	if k == kStream {
		s.ttft = append(s.ttft, lat)
	} else {
		s.chat = append(s.chat, lat)
	}
}

// take returns and resets the tally.
func (s *soakTally) take() (ok, errs int, chatP50, ttftP50 time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	slices.Sort(s.chat)
	slices.Sort(s.ttft)
	ok, errs, chatP50, ttftP50 = s.ok, s.errs, percentile(s.chat, 50), percentile(s.ttft, 50)
	s.ok, s.errs, s.chat, s.ttft = 0, 0, s.chat[:0], s.ttft[:0]
	return
}

// soak sends calls through the gateway gw for warm + dur over conns
// connections, each alternating a non-streaming and a streaming call,
// back to back or, with rate > 0, paced to rate calls/s in all. It samples
// the gateway's RSS and Go heap when the warm-up ends, every sampleEvery,
// and at the end.
func soak(ctx context.Context, gw *child, t *target, conns int, rate float64, warm, dur, sampleEvery, timeout time.Duration,
	chat, stream []byte, progress io.Writer) soakResult {
	c := newClient(conns, timeout)
	defer c.CloseIdleConnections()
	start := time.Now()
	warmEnd := start.Add(warm)
	end := warmEnd.Add(dur)
	ctx, cancel := context.WithDeadline(ctx, end.Add(timeout))
	defer cancel()

	var tally soakTally
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// Paced workers start spread over one interval, so the calls
			// arrive evenly rather than in bursts of conns.
			var every time.Duration
			next := start
			if rate > 0 {
				every = time.Duration(float64(conns) / rate * float64(time.Second))
				next = start.Add(every * time.Duration(i) / time.Duration(conns))
			}
			k := kChat
			if i%2 == 1 {
				k = kStream
			}
			for {
				if every > 0 {
					sleepUntil(ctx, next)
					next = next.Add(every)
					if now := time.Now(); next.Before(now) {
						next = now // behind: do not send a burst to catch up
					}
				}
				if !time.Now().Before(end) || ctx.Err() != nil {
					return
				}
				lat, err := t.call(ctx, c, k, chat, stream)
				if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
					return
				}
				tally.add(k, lat, err)
				if err != nil {
					time.Sleep(time.Millisecond) // do not spin on a broken gateway
				}
				if k == kChat {
					k = kStream
				} else {
					k = kChat
				}
			}
		}(i)
	}

	var res soakResult
	point := func(label string) {
		p := soakPoint{label: label, elapsed: time.Since(warmEnd), heap: -1, goroutine: -1, load: loadAvg()}
		p.calls, p.errors, p.chatP50, p.ttftP50 = tally.take()
		p.rssKiB = procStatusKiB(gw.pid(), "VmRSS")
		if line, err := gw.command("mem"); err == nil {
			f := fieldsOf(line)
			p.heap, _ = strconv.ParseInt(f["heap_alloc"], 10, 64)
			p.goroutine, _ = strconv.Atoi(f["goroutines"])
		}
		if len(res.points) > 0 {
			res.calls += p.calls
		}
		res.points = append(res.points, p)
		res.errors += p.errors
		fmt.Fprintf(progress, "   soak %-5s %s\n", label, p)
	}
	sleepUntil(ctx, warmEnd)
	if ctx.Err() == nil {
		point("start") // its calls are the warm-up's
	}
	for n := 1; ctx.Err() == nil; n++ {
		at := warmEnd.Add(time.Duration(n) * sampleEvery)
		if !at.Before(end) {
			break
		}
		sleepUntil(ctx, at)
		if ctx.Err() == nil {
			point(durLabel(time.Duration(n) * sampleEvery))
		}
	}
	wg.Wait()
	point("end")
	res.firstErr = tally.firstErr
	for _, p := range res.points {
		res.maxKiB = max(res.maxKiB, p.rssKiB)
	}
	return res
}

func (p soakPoint) String() string {
	return fmt.Sprintf("at %7.1f s  calls %7d  errors %d  chat p50 %.3f ms  TTFT p50 %.3f ms  RSS %s MiB  Go heap after GC %s  goroutines %d  load %s",
		p.elapsed.Seconds(), p.calls, p.errors, ms(p.chatP50), ms(p.ttftP50), rssMiB(p.rssKiB), heapMiB(p.heap), p.goroutine, p.load)
}

func printSoak(w io.Writer, r soakResult) {
	fmt.Fprintln(w, "| sample | at (s) | calls since previous | errors | chat p50 (ms) | stream TTFT p50 (ms) | RSS (MiB) | Go heap after GC (MiB) | goroutines | load average |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, p := range r.points {
		fmt.Fprintf(w, "| %s | %.1f | %s | %d | %.3f | %.3f | %s | %s | %d | %s |\n",
			p.label, p.elapsed.Seconds(), thousands(int64(p.calls)), p.errors, ms(p.chatP50), ms(p.ttftP50), rssMiB(p.rssKiB), heapMiB(p.heap), p.goroutine, p.load)
	}
}

// durLabel writes 1m, 2m, 90s: the sample points' names.
func durLabel(d time.Duration) string {
	if d%time.Minute == 0 {
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

// fieldsOf parses "word k=v k=v" into a map.
func fieldsOf(line string) map[string]string {
	out := map[string]string{}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			out[k] = v
		}
	}
	return out
}

func mib(bytes int64) float64 { return float64(bytes) / (1 << 20) }

func rssMiB(kib int64) string {
	if kib < 0 {
		return "?"
	}
	return strconv.FormatFloat(mib(kib<<10), 'f', 1, 64)
}

func heapMiB(b int64) string {
	if b < 0 {
		return "?"
	}
	return strconv.FormatFloat(mib(b), 'f', 1, 64)
}
