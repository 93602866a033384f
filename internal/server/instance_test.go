package server_test

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/store/storetest"
)

// TestInstanceRunsJupyter creates a compute instance running a real
// Jupyter Notebook server (Debian's jupyter-notebook) and uses it through
// Plinth's proxy as a browser would: REST calls, a kernel over a
// WebSocket whose code logs an MLflow run to Plinth with the token the
// instance presets, and a file in the home directory that survives a
// stop and start. Left alone, the instance stops itself.
func TestInstanceRunsJupyter(t *testing.T) {
	if _, err := exec.LookPath("jupyter-notebook"); err != nil {
		requireOrSkip(t, "jupyter-notebook is not installed (Debian: apt-get install jupyter-notebook)")
	}
	t.Setenv("PLINTH_TEST_SHORT_IDLE", "1")
	e := start(t, store.SQLite)
	created := e.must(201, "POST", "/api/v1/workspaces/default/computes", e.admin, map[string]any{"name": "nb", "type": "instance", "size": "local-cpu-small",
		"idle_time_before_shutdown": 3, "applications": []map[string]string{{"name": "jupyter", "type": "jupyter"}}})
	if created.body["state"] != "Running" || !strings.Contains(string(created.raw), `"url":"/compute/nb/apps/jupyter/"`) {
		t.Fatalf("created instance: %s", created.raw)
	}
	api := "/compute/nb/apps/jupyter/api"
	waitFor(t, "Jupyter to answer through the proxy", 60*time.Second, func() bool {
		r := e.call("GET", api, e.admin, nil)
		return r.status == 200 && strings.Contains(string(r.raw), `"version"`)
	})
	if r := e.call("GET", api, "", nil); r.status != 401 {
		t.Fatalf("anonymous: %d %s", r.status, r.raw)
	}
	other := e.principal("olga", "DataScientist", "default")
	if r := e.call("GET", api, other, nil); r.status != 403 || !strings.Contains(string(r.raw), "belongs to admin") {
		t.Fatalf("another user: %d %s", r.status, r.raw)
	}
	// A browser link: the key moves into a cookie for this path.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noRedirect.Get(e.url + "/compute/nb/apps/jupyter/tree?plinth_token=" + e.admin)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	cookie := res.Header.Get("Set-Cookie")
	if res.StatusCode != 302 || !strings.Contains(cookie, "plinth_app_token=") || !strings.Contains(cookie, "Path=/compute/nb/apps/jupyter/") || !strings.Contains(cookie, "HttpOnly") {
		t.Fatalf("token link: %d %v", res.StatusCode, res.Header)
	}

	kernel := e.must(201, "POST", api+"/kernels", e.admin, map[string]any{"name": "python3"})
	kernelID := kernel.body["id"].(string)
	code := `import os, json, urllib.request
req = urllib.request.Request(os.environ["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/runs/create",
    data=json.dumps({"experiment_id": "0", "run_name": "from-notebook"}).encode(),
    headers={"Authorization": "Bearer " + os.environ["MLFLOW_TRACKING_TOKEN"], "Content-Type": "application/json"})
print("RUN", json.load(urllib.request.urlopen(req))["run"]["info"]["run_id"])
open(os.path.join(os.environ["HOME"], "notes.txt"), "w").write("kept")`
	out := runInKernel(t, e, "/compute/nb/apps/jupyter/api/kernels/"+kernelID+"/channels", code)
	_, runID, ok := strings.Cut(out, "RUN ")
	if !ok {
		t.Fatalf("kernel output: %q", out)
	}
	run := e.must(200, "GET", "/api/2.0/mlflow/runs/get?run_id="+strings.TrimSpace(runID), e.admin, nil)
	if !strings.Contains(string(run.raw), `"run_name":"from-notebook"`) || !strings.Contains(string(run.raw), `"key":"plinth.principal","value":"admin"`) {
		t.Fatalf("the notebook's run: %s", run.raw)
	}

	// Idle: no traffic for longer than idle_time_before_shutdown.
	time.Sleep(4 * time.Second)
	if err := e.srv.Instances.Tick(t.Context()); err != nil {
		t.Fatal(err)
	}
	show := e.must(200, "GET", "/api/v1/workspaces/default/computes/nb", e.admin, nil)
	if show.body["state"] != "Stopped" || len(show.body["nodes"].([]any)) != 0 {
		t.Fatalf("idle instance: %s", show.raw)
	}
	if r := e.call("GET", api, e.admin, nil); r.status != 503 || !strings.Contains(string(r.raw), "instance nb is stopped") {
		t.Fatalf("a stopped instance's app: %d %s", r.status, r.raw)
	}
	audit := e.must(200, "GET", "/api/v1/audit?action=compute.stop", e.admin, nil)
	if !strings.Contains(string(audit.raw), "idle for") {
		t.Fatalf("idle stop not audited with its reason: %s", audit.raw)
	}
	e.must(200, "POST", "/api/v1/workspaces/default/computes/nb/start", e.admin, nil)
	var last resp
	deadline := time.Now().Add(60 * time.Second)
	for {
		last = e.call("GET", api+"/contents/notes.txt?content=1", e.admin, nil)
		if last.status == 200 && (strings.Contains(string(last.raw), `"content": "kept"`) || strings.Contains(string(last.raw), `"content":"kept"`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the home directory's file after a restart: %d %s", last.status, last.raw)
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.must(200, "POST", "/api/v1/workspaces/default/computes/nb/stop", e.admin, nil)
	e.must(204, "DELETE", "/api/v1/workspaces/default/computes/nb", e.admin, nil)
}

// runInKernel sends code to a Jupyter kernel over its WebSocket (a
// minimal RFC 6455 client) and returns what it printed.
func runInKernel(t *testing.T, e *env, path, code string) string {
	t.Helper()
	host := strings.TrimPrefix(e.url, "http://")
	conn, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	var nonce [16]byte
	rand.Read(nonce[:])
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nOrigin: %s\r\nAuthorization: Bearer %s\r\n\r\n",
		path, host, base64.StdEncoding.EncodeToString(nonce[:]), e.url, e.admin)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(res.Body, 1000))
		t.Fatalf("WebSocket upgrade through the proxy: %v %v %s", err, res.Status, body)
	}
	msgID := fmt.Sprintf("%x", nonce[:8])
	msg, _ := json.Marshal(map[string]any{
		"header":        map[string]any{"msg_id": msgID, "username": "test", "session": "s1", "msg_type": "execute_request", "version": "5.3"},
		"parent_header": map[string]any{}, "metadata": map[string]any{}, "channel": "shell",
		"content": map[string]any{"code": code, "silent": false, "store_history": false, "user_expressions": map[string]any{}, "allow_stdin": false},
	})
	writeFrame(t, conn, msg)
	var printed strings.Builder
	for {
		payload := readFrame(t, br)
		var m struct {
			MsgType      string         `json:"msg_type"`
			ParentHeader map[string]any `json:"parent_header"`
			Content      map[string]any `json:"content"`
		}
		if json.Unmarshal(payload, &m) != nil || m.ParentHeader["msg_id"] != msgID {
			continue
		}
		switch m.MsgType {
		case "stream":
			printed.WriteString(fmt.Sprint(m.Content["text"]))
		case "error":
			t.Fatalf("the kernel raised %v: %v", m.Content["ename"], m.Content["evalue"])
		case "execute_reply":
			if m.Content["status"] != "ok" {
				t.Fatalf("execute_reply: %v", m.Content)
			}
			return printed.String()
		}
	}
}

func writeFrame(t *testing.T, w io.Writer, payload []byte) {
	t.Helper()
	hdr := []byte{0x81}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	hdr = append(hdr, mask[:]...)
	masked := make([]byte, len(payload))
	for i, b := range payload {
		masked[i] = b ^ mask[i%4]
	}
	if _, err := w.Write(append(hdr, masked...)); err != nil {
		t.Fatal(err)
	}
}

// readFrame returns the next data message, joining fragments and
// skipping control frames.
func readFrame(t *testing.T, r *bufio.Reader) []byte {
	t.Helper()
	var msg []byte
	for {
		var h [2]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			t.Fatalf("reading a WebSocket frame: %v", err)
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			io.ReadFull(r, b[:])
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			io.ReadFull(r, b[:])
			n = binary.BigEndian.Uint64(b[:])
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			t.Fatal(err)
		}
		op := h[0] & 0x0f
		if op == 8 {
			t.Fatal("the kernel's WebSocket was closed")
		}
		if op >= 8 {
			continue
		}
		msg = append(msg, payload...)
		if h[0]&0x80 != 0 {
			return msg
		}
	}
}

// requireOrSkip skips a test whose outside tool is missing, or fails it
// when CI requires every test to run.
func requireOrSkip(t *testing.T, why string) {
	t.Helper()
	if os.Getenv(storetest.EnvRequireAll) == "1" {
		t.Fatal(why)
	}
	t.Skip(why)
}
