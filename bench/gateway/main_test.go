package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
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

// TestSmoke runs the whole benchmark briefly, without nginx: the model and
// the gateway (on net/http and on h1) in their own processes, 1 and 4
// connections, and checks that every call succeeded, the split and
// metering worked, and the report has its table and target lines.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and puts load on the machine for a few seconds")
	}
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := run(context.Background(), []string{
		"-duration", "1s", "-warmup", "200ms", "-conns", "1,4", "-rounds", "1", "-nginx", "", "-goproxy", "-h1",
	}, &stdout, &stderr)
	out := stdout.String()
	t.Logf("took %s\n%s", time.Since(start), out)
	if code != 0 {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr.String())
	}
	for _, want := range []string{
		`(?m)^\| 1 \| direct \| [\d,]+ \| [\d.]+ \| [\d.]+ \| 0 \| — \|$`,
		`(?m)^\| 1 \| plinth \| [\d,]+ \| [\d.]+ \| [\d.]+ \| 0 \| \d+ \|$`,
		`(?m)^\| 4 \| direct \| [\d,]+ \| [\d.]+ \| [\d.]+ \| 0 \| — \|$`,
		`(?m)^\| 4 \| plinth \| [\d,]+ \| [\d.]+ \| [\d.]+ \| 0 \| \d+ \|$`,
		`(?m)^\| 4 \| go-proxy \| [\d,]+ \| [\d.]+ \| [\d.]+ \| 0 \| \d+ \|$`,
		`(?m)^\| 4 \| plinth-h1 \| [\d,]+ \| [\d.]+ \| [\d.]+ \| 0 \| \d+ \|$`,
		`Plinth on h1 added p50 \(vs direct, 1 connection\(s\)\): -?[\d.]+ ms \(target ≤ 0.3 ms\): (MET|MISSED)`,
		`Plinth on h1 metering: [1-9]\d* records written by the sink, 0 dropped`,
		`Plinth added p50 \(vs direct, 1 connection\(s\)\): -?[\d.]+ ms \(target ≤ 0.3 ms\): (MET|MISSED)`,
		`Plinth / nginx throughput at 4 connections: not measured \(nginx skipped\)`,
		`Plinth split \(x-plinth-deployment of the answers\): blue \d+\.\d%, green \d+\.\d%`,
		`Plinth metering: [1-9]\d* records written by the sink, 0 dropped`,
		`Load average before`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("output lacks %s", want)
		}
	}
	if strings.Contains(out, "| nginx |") {
		t.Error("nginx was measured with -nginx \"\"")
	}
}

func TestNginxConfig(t *testing.T) {
	c := nginxConfig("/tmp/d", "127.0.0.1:9000", []string{"127.0.0.1:1", "127.0.0.1:2"}, "auto", true, false)
	for _, want := range []string{
		"daemon off;", "master_process on;", "worker_processes auto;", "user root;",
		"pid /tmp/d/nginx.pid;", "error_log /tmp/d/error.log warn;", "access_log off;",
		"server 127.0.0.1:1;", "server 127.0.0.1:2;", "keepalive 64;",
		"listen 127.0.0.1:9000;", "proxy_pass http://model;", "proxy_http_version 1.1;",
		`proxy_set_header Connection "";`, "proxy_temp_path /tmp/d/proxy_temp;",
	} {
		if !strings.Contains(c, want) {
			t.Errorf("config lacks %q:\n%s", want, c)
		}
	}
	if c := nginxConfig("/tmp/d", "127.0.0.1:9000", []string{"127.0.0.1:1"}, "2", false, true); strings.Contains(c, "user root") ||
		!strings.Contains(c, "access_log /tmp/d/nginx-access.log combined;") || !strings.Contains(c, "worker_processes 2;") {
		t.Errorf("non-root config with access log:\n%s", c)
	}
}

func TestFlags(t *testing.T) {
	c, err := parseFlags([]string{"-nginx", ""}, &bytes.Buffer{})
	if err != nil || len(c.conns) != 3 || c.conns[2] != 64 || c.duration != 10*time.Second || c.body != 256 || c.rounds != 2 {
		t.Errorf("defaults: %+v, %v", c, err)
	}
	for _, bad := range [][]string{
		{"-nginx", "", "-conns", "0"},
		{"-nginx", "", "-conns", ","},
		{"-nginx", "", "-body", "1"},
		{"-nginx", "", "-auth", "none"},
		{"-nginx", "/nonexistent/nginx"},
		{"-nginx", "", "extra"},
	} {
		if _, err := parseFlags(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestHelpers(t *testing.T) {
	for _, n := range []int{2, 10, 57, 60, 256, 4096} {
		if b := requestBody(n); len(b) != n {
			t.Errorf("requestBody(%d) has %d bytes", n, len(b))
		}
	}
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
}
