package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"testing"
	"time"
)

// TestMain lets the test binary play the children's roles: the benchmark
// starts os.Executable() again with childEnv set.
func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChild(role, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestSmoke runs the whole benchmark briefly, soak included: the upstream
// and the gateway in their own processes, one connection, and checks that
// every call succeeded (the exit status), that metering dropped nothing,
// and that the report has its table, target lines and soak series.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and puts load on the machine for a few seconds")
	}
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := run(context.Background(), []string{
		"-duration", "300ms", "-warmup", "100ms", "-conns", "1", "-rounds", "1",
		"-soak", "1s", "-soak-warmup", "200ms", "-soak-sample", "500ms", "-soak-conns", "2",
	}, &stdout, &stderr)
	out := stdout.String()
	t.Logf("took %s\n%s", time.Since(start), out)
	if code != 0 {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr.String())
	}
	for _, want := range []string{
		`(?m)^\| 1 \| chat: latency \| direct \| [\d,]+ \| [\d.]+ \| [\d.]+ \| [1-9][\d,]* \| 0 \| — \|$`,
		`(?m)^\| 1 \| chat: latency \| plinth \| [\d,]+ \| [\d.]+ \| [\d.]+ \| [1-9][\d,]* \| 0 \| \d+ \|$`,
		`(?m)^\| 1 \| stream: time to first token \| direct \| [\d,]+ \| [\d.]+ \| [\d.]+ \| [1-9][\d,]* \| 0 \| — \|$`,
		`(?m)^\| 1 \| stream: time to first token \| plinth \| [\d,]+ \| [\d.]+ \| [\d.]+ \| [1-9][\d,]* \| 0 \| \d+ \|$`,
		`At 1 connection\(s\): Plinth adds [-+][\d.]+ ms at p50 and [-+][\d.]+ ms at p99 to a non-streaming call; [-+][\d.]+ ms at p50`,
		`Plinth adds -?[\d.]+ ms at p50 \(non-streaming, 1 connection\(s\); target ≤ 0.5 ms\): (MET|MISSED)`,
		`Time to first token overhead \(1 connection\(s\)\): [-+][\d.]+ ms at p50, [-+][\d.]+ ms at p99`,
		`Plinth metering: [1-9]\d* records written by the sink, 0 dropped`,
		`(?m)^\| start \| 0.0 \| [\d,]+ \| 0 \| [\d.]+ \| [\d.]+ \| [1-9][\d.]* \| [\d.]+ \| \d+ \|`,
		`(?m)^\| 0.5s \| `,
		`(?m)^\| end \| 1\.\d \| [1-9][\d,]* \| 0 \| `,
		`Soak \(1s\): RSS start [\d.]+ MiB, end [\d.]+ MiB \(end/start [\d.]+; flat means ≤ 1.10\): (MET|MISSED); highest sample [\d.]+ MiB; Go heap after GC start [\d.]+ MiB, end [\d.]+ MiB; [1-9][\d,]* calls, 0 errors`,
		`Soak gateway metering: [1-9]\d* records written by the sink, 0 dropped`,
		`Load average before`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("output lacks %s", want)
		}
	}
}

func TestFlags(t *testing.T) {
	c, err := parseFlags(nil, &bytes.Buffer{})
	if err != nil || len(c.conns) != 2 || c.conns[0] != 1 || c.conns[1] != 16 || c.duration != 10*time.Second ||
		c.warmup != time.Second || c.rounds != 2 || c.soak != 0 || c.soakConns != 8 || c.timeout != 10*time.Second ||
		c.chunkDelay != 0 || c.ttftFirst != 20*time.Millisecond || c.ttftChunk != 5*time.Millisecond {
		t.Errorf("defaults: %+v, %v", c, err)
	}
	c, err = parseFlags([]string{"-conns", "16, 1,16", "-soak", "10m", "-rounds", "0", "-duration", "300ms"}, &bytes.Buffer{})
	if err != nil || len(c.conns) != 2 || c.conns[0] != 1 || c.soak != 10*time.Minute || c.rounds != 0 || c.duration != 300*time.Millisecond {
		t.Errorf("-conns '16, 1,16' -soak 10m -rounds 0: %+v, %v", c, err)
	}
	for _, bad := range [][]string{
		{"-conns", "0"},
		{"-conns", ","},
		{"-conns", "x"},
		{"-duration", "0s"},
		{"-rounds", "0"},
		{"-rounds", "-1"},
		{"-soak", "-1s"},
		{"-soak", "1m", "-soak-conns", "0"},
		{"-soak", "1m", "-soak-sample", "0s"},
		{"-soak-rate", "-5"},
		{"-chunk-delay", "-1ms"},
		{"extra"},
	} {
		if _, err := parseFlags(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestHelpers(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i))
	}
	if percentile(s, 50) != 50 || percentile(s, 99) != 99 || percentile(nil, 50) != 0 {
		t.Error("percentile")
	}
	if median([]float64{3, 1, 2}) != 2 || median([]float64{4, 1}) != 2.5 {
		t.Error("median")
	}
	if thousands(1234567) != "1,234,567" || thousands(12) != "12" {
		t.Error("thousands")
	}
	if durLabel(2*time.Minute) != "2m" || durLabel(1500*time.Millisecond) != "1.5s" {
		t.Error("durLabel")
	}
	if f := fieldsOf("mem heap_alloc=12 goroutines=3"); f["heap_alloc"] != "12" || f["goroutines"] != "3" {
		t.Error("fieldsOf")
	}
	// The request is the realistic ~1 KiB chat the benchmark promises.
	if n := len(chatBody(false)); n < 900 || n > 1200 {
		t.Errorf("chat body is %d bytes", n)
	}
}
