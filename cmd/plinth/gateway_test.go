package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/client"
	"github.com/plinth-dev/plinth/internal/endpoint"
)

const modelServer = `import os, json, http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.reply(b'{"status":"ok"}')
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.reply(json.dumps({"deployment": os.environ["PLINTH_DEPLOYMENT"]}).encode())
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestStandaloneGatewayOutlivesControlPlane runs `plinth gateway` as its
// own process following `plinth up`, scores through it with an endpoint
// key and a platform key, then kills the control plane with SIGKILL: the
// gateway goes on serving from its last route snapshot.
func TestStandaloneGatewayOutlivesControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills real processes")
	}
	dataDir := t.TempDir()
	ctx := context.Background()
	cmd, url := startPlinth(t, dataDir)
	c := client.New(url, crashKey)
	script := filepath.Join(t.TempDir(), "serve.py")
	os.WriteFile(script, []byte(modelServer), 0o644)
	ep, err := c.CreateEndpoint(ctx, "default", endpoint.EndpointInput{Name: "standalone-gw"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutDeployment(ctx, "default", "standalone-gw", "blue", endpoint.DeploymentSpec{Command: "exec python3 " + script,
		InstanceType: "local-cpu-small", Readiness: endpoint.Probe{Period: 1, FailureThreshold: 30}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		d, err := c.GetDeployment(ctx, "default", "standalone-gw", "blue")
		if err == nil && d.State == endpoint.StateSucceeded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployment not ready: %+v %v", d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := c.UpdateEndpoint(ctx, "default", "standalone-gw", endpoint.EndpointInput{Traffic: map[string]int{"blue": 100}}); err != nil {
		t.Fatal(err)
	}
	cleanup := func() {
		// Bring a control plane back to take the replicas down.
		cmd2, url2 := startPlinth(t, dataDir)
		c2 := client.New(url2, crashKey)
		_ = c2.DeleteEndpoint(ctx, "default", "standalone-gw")
		defer func() { cmd2.Process.Signal(syscall.SIGTERM); cmd2.Wait() }()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			left, _ := filepath.Glob("/proc/[0-9]*/environ")
			alive := 0
			for _, f := range left {
				if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), "PLINTH_ENDPOINT=standalone-gw\x00") {
					alive++
				}
			}
			if alive == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d replica processes left after the endpoint was deleted", alive)
			}
		}
	}

	addr := freeAddr(t)
	bin, _ := exec.LookPath("plinth")
	gw := exec.Command(bin, "gateway", "--control-plane", url, "--addr", addr)
	gw.Env = append(os.Environ(), "PLINTH_API_KEY="+crashKey, "PLINTH_CONFIG_DIR="+t.TempDir(), "PLINTH_LOG_FORMAT=json")
	gw.Stderr = os.Stderr
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { gw.Process.Kill(); gw.Wait() }()
	g := client.New("http://"+addr, crashKey)
	invoke := func(key string) (int, string) {
		code, _, body, err := g.Invoke(ctx, "default", "standalone-gw", key, "", strings.NewReader(`{}`))
		if err != nil {
			return 0, err.Error()
		}
		return code, string(body)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		code, body := invoke(ep.Keys.PrimaryKey)
		if code == 200 && strings.Contains(body, `"deployment": "blue"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the standalone gateway never served: %d %s", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, body := invoke(crashKey); code != 200 {
		t.Fatalf("platform key through the standalone gateway: %d %s", code, body)
	}
	if code, _ := invoke("pek_not-a-key"); code != 401 {
		t.Fatalf("a wrong key: %d", code)
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	for i := range 20 {
		for _, key := range []string{ep.Keys.PrimaryKey, crashKey} {
			if code, body := invoke(key); code != 200 {
				t.Fatalf("call %d after the control plane died: %d %s", i, code, body)
			}
		}
	}
	cleanup()
}
