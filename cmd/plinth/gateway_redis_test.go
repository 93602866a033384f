package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/client"
	"github.com/plinth-dev/plinth/internal/endpoint"
	"github.com/plinth-dev/plinth/internal/ratelimit/redistest"
)

// TestGatewaysShareRateLimitInRedis runs two `plinth gateway` processes
// with --redis-url on one redis-server, following one `plinth up`, in
// front of an endpoint limited to 10 requests per minute per key. Calls
// spread over both gateways, all at once or in rounds, are admitted 10
// times in all, not 10 each; the rest are 429 with Retry-After. Then one
// gateway is killed with SIGKILL: the survivor goes on counting what the
// dead one admitted.
func TestGatewaysShareRateLimitInRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills real processes")
	}
	redisURL := redistest.URL(t)
	ctx := context.Background()
	_, url := startPlinth(t, t.TempDir())
	c := client.New(url, crashKey)

	const name, limit = "shared-limit", 10
	script := filepath.Join(t.TempDir(), "serve.py")
	if err := os.WriteFile(script, []byte(modelServer), 0o644); err != nil {
		t.Fatal(err)
	}
	rate := limit
	ep, err := c.CreateEndpoint(ctx, "default", endpoint.EndpointInput{Name: name, RateLimit: &rate})
	if err != nil {
		t.Fatal(err)
	}
	if ep.RateLimit != limit {
		t.Fatalf("endpoint rate limit %d, want %d", ep.RateLimit, limit)
	}
	t.Cleanup(func() { removeEndpoint(t, c, name) })
	// Enough concurrency per replica that only the rate limit refuses.
	if _, err := c.PutDeployment(ctx, "default", name, "blue", endpoint.DeploymentSpec{Command: "exec python3 " + script,
		InstanceType: "local-cpu-small", Readiness: endpoint.Probe{Period: 1, FailureThreshold: 30},
		Request: endpoint.RequestSettings{MaxConcurrentRequestsPerInstance: 64}}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		d, err := c.GetDeployment(ctx, "default", name, "blue")
		if err == nil && d.State == endpoint.StateSucceeded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployment not ready: %+v %v", d, err)
		}
	}
	if _, err := c.UpdateEndpoint(ctx, "default", name, endpoint.EndpointInput{Traffic: map[string]int{"blue": 100}}); err != nil {
		t.Fatal(err)
	}

	// Two gateways, each with its own address, sharing the counters.
	bin, err := exec.LookPath("plinth")
	if err != nil {
		t.Fatal(err)
	}
	type gw struct {
		cmd  *exec.Cmd
		addr string
		c    *client.Client
	}
	var gws []*gw
	for range 2 {
		addr := freeAddr(t)
		cmd := exec.Command(bin, "gateway", "--control-plane", url, "--addr", addr, "--redis-url", redisURL)
		cmd.Env = append(os.Environ(), "PLINTH_API_KEY="+crashKey, "PLINTH_CONFIG_DIR="+t.TempDir())
		// A log line per call: kept in a file, shown when the test fails.
		logPath := filepath.Join(t.TempDir(), "gateway.log")
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			logf.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logPath)
				t.Logf("--- log of the gateway at %s ---\n%s", addr, b)
			}
		})
		gws = append(gws, &gw{cmd: cmd, addr: addr, c: client.New("http://"+addr, crashKey)})
	}
	// Ready once each has a route snapshot, taken after the endpoint was
	// set up; no scoring call is spent on waiting.
	for i, g := range gws {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			resp, err := http.Get("http://" + g.addr + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("gateway %d not ready: %v", i, err)
			}
		}
	}

	type result struct {
		gateway, code int
		retryAfter    string
		body          string
	}
	// call makes n concurrent calls with key, the i-th through gateway
	// pick(i), and sorts the answers: admitted per gateway, and refusals,
	// each of which must be the key's rate limit with a Retry-After.
	call := func(key string, n int, pick func(int) int) (admitted [2]int, refused int) {
		t.Helper()
		results := make([]result, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				g := pick(i)
				code, h, body, err := gws[g].c.Invoke(ctx, "default", name, key, "", strings.NewReader(`{}`))
				if err != nil {
					body = []byte(err.Error())
				}
				results[i] = result{gateway: g, code: code, retryAfter: h.Get("Retry-After"), body: string(body)}
			})
		}
		wg.Wait()
		for _, r := range results {
			switch r.code {
			case http.StatusOK:
				if !strings.Contains(r.body, `"deployment": "blue"`) {
					t.Errorf("gateway %d: 200 with %s", r.gateway, r.body)
				}
				admitted[r.gateway]++
			case http.StatusTooManyRequests:
				refused++
				secs, err := strconv.Atoi(r.retryAfter)
				if err != nil || secs < 1 || secs > 61 {
					t.Errorf("gateway %d: 429 with Retry-After %q, want whole seconds in 1..61", r.gateway, r.retryAfter)
				}
				if !strings.Contains(r.body, fmt.Sprintf("rate limit of %d requests per minute per key", limit)) {
					t.Errorf("gateway %d: 429 for another reason: %s", r.gateway, r.body)
				}
			default:
				t.Errorf("gateway %d: %d %s", r.gateway, r.code, r.body)
			}
		}
		return admitted, refused
	}
	alternate := func(i int) int { return i % 2 }

	// One key, three times its limit, half through each gateway: the
	// limit holds for both together.
	admitted, refused := call(ep.Keys.PrimaryKey, 3*limit, alternate)
	t.Logf("primary key, %d calls over two gateways: admitted %d + %d, refused %d", 3*limit, admitted[0], admitted[1], refused)
	if admitted[0]+admitted[1] != limit || refused != 2*limit {
		t.Fatalf("two gateways admitted %d + %d of %d calls under a limit of %d per minute (refused %d); want %d in all",
			admitted[0], admitted[1], 3*limit, limit, refused, limit)
	}

	// A platform key, in rounds of one call to each gateway at once: both
	// gateways are admitted alike until the shared count is full, so each
	// gets half the limit, where counters of their own would give each
	// the whole of it.
	var split [2]int
	refused = 0
	for range 3 * limit / 2 {
		a, r := call(crashKey, 2, alternate)
		split[0], split[1], refused = split[0]+a[0], split[1]+a[1], refused+r
	}
	t.Logf("platform key, %d rounds of a call to each gateway: admitted %d + %d, refused %d", 3*limit/2, split[0], split[1], refused)
	if split != [2]int{limit / 2, limit / 2} || refused != 2*limit {
		t.Fatalf("platform key in rounds over two gateways: admitted %v, refused %d; want %d each", split, refused, limit/2)
	}

	// Another key: 3 calls through each gateway, all admitted (6 of 10).
	admitted, refused = call(ep.Keys.SecondaryKey, 6, alternate)
	if admitted != [2]int{3, 3} || refused != 0 {
		t.Fatalf("secondary key, 3 calls through each gateway: admitted %v, refused %d", admitted, refused)
	}

	// Kill the first gateway; the second counts what it admitted.
	if err := gws[0].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	gws[0].cmd.Wait()
	if code, _, _, err := gws[0].c.Invoke(ctx, "default", name, ep.Keys.SecondaryKey, "", strings.NewReader(`{}`)); err == nil {
		t.Fatalf("the killed gateway answered %d", code)
	}
	survivor := func(int) int { return 1 }
	admitted, refused = call(ep.Keys.SecondaryKey, limit, survivor)
	t.Logf("secondary key after the kill, %d calls through the survivor: admitted %d, refused %d", limit, admitted[1], refused)
	if admitted[1] != limit-6 || refused != 6 {
		t.Fatalf("the surviving gateway admitted %d of %d calls for a key that had 6 of %d admitted before (refused %d); want %d",
			admitted[1], limit, limit, refused, limit-6)
	}
	admitted, refused = call(ep.Keys.PrimaryKey, 4, survivor)
	if admitted[1] != 0 || refused != 4 {
		t.Fatalf("the exhausted primary key through the survivor: admitted %d, refused %d", admitted[1], refused)
	}
}

// removeEndpoint deletes the endpoint and waits for its replica processes
// to end.
func removeEndpoint(t *testing.T, c *client.Client, name string) {
	if err := c.DeleteEndpoint(context.Background(), "default", name); err != nil {
		t.Errorf("deleting endpoint %s: %v", name, err)
		return
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		environs, _ := filepath.Glob("/proc/[0-9]*/environ")
		alive := 0
		for _, f := range environs {
			if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), "PLINTH_ENDPOINT="+name+"\x00") {
				alive++
			}
		}
		if alive == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d replica processes left after endpoint %s was deleted", alive, name)
			return
		}
	}
}
