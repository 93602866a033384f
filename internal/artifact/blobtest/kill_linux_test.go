//go:build linux

package blobtest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/testproc"
)

const envKillHelper = "PLINTH_BLOBTEST_KILL_HELPER"

// TestKilledBinaryLeavesNoServer runs this test binary again as a child
// that starts a server, SIGKILLs the child, and checks that the server is
// gone soon after.
func TestKilledBinaryLeavesNoServer(t *testing.T) {
	if kind := os.Getenv(envKillHelper); kind != "" {
		// The child: start the server, report it, wait to be killed.
		var srv *Server
		if kind == KindS3 {
			srv = StartS3(t)
		} else {
			srv = StartAzure(t)
		}
		fmt.Printf("READY %d\n", srv.PID)
		time.Sleep(time.Minute)
		return
	}
	if testing.Short() {
		t.Skip("starts throwaway servers in a child process; skipped in -short")
	}
	for _, c := range []struct{ kind, env, name string }{{KindS3, EnvMinIO, "MinIO"}, {KindAzure, EnvAzurite, "Azurite"}} {
		t.Run(c.kind, func(t *testing.T) {
			if os.Getenv(c.env) == "" {
				unavailable(t, c.name, c.env+" is not set")
			}
			child := exec.Command(os.Args[0], "-test.run=^TestKilledBinaryLeavesNoServer$", "-test.count=1", "-test.v")
			child.Env = append(os.Environ(), envKillHelper+"="+c.kind)
			var stderr bytes.Buffer
			child.Stderr = &stderr
			stdout, err := child.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := child.Start(); err != nil {
				t.Fatal(err)
			}
			defer child.Wait()
			defer child.Process.Kill()
			sc := bufio.NewScanner(stdout)
			var pid int
			var out []string
			for sc.Scan() {
				line := sc.Text()
				out = append(out, line)
				if rest, ok := strings.CutPrefix(line, "READY "); ok {
					pid, _ = strconv.Atoi(rest)
					break
				}
			}
			if pid == 0 {
				t.Fatalf("child did not report a server; output: %s %s", strings.Join(out, "\n"), stderr.String())
			}
			if !testproc.Alive(pid) {
				t.Fatalf("server %d is not running before the kill", pid)
			}
			if err := child.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			child.Wait()
			deadline := time.Now().Add(15 * time.Second)
			for testproc.Alive(pid) {
				if time.Now().After(deadline) {
					t.Fatalf("server %d still running 15s after its test binary was killed", pid)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}
