//go:build linux

package storetest

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

const envKillHelper = "PLINTH_STORETEST_KILL_HELPER"

// TestKilledBinaryLeavesNoServer runs this test binary again as a child
// that starts the throwaway server, SIGKILLs the child, and checks that
// the server and its directory are gone soon after.
func TestKilledBinaryLeavesNoServer(t *testing.T) {
	if os.Getenv(envKillHelper) == "1" {
		// The child: start the server, report it, wait to be killed.
		if _, err := postgresServer(); err != nil {
			fmt.Printf("SKIP %s\n", oneLine(err.Error()))
			return
		}
		fmt.Printf("READY %d %s\n", cluster.pid, cluster.dir)
		time.Sleep(time.Minute)
		return
	}
	if os.Getenv(EnvPostgresURL) != "" {
		t.Skip("uses the server named by " + EnvPostgresURL + ", not a throwaway one")
	}
	if testing.Short() {
		t.Skip("starts a second throwaway server; skipped in -short")
	}

	child := exec.Command(os.Args[0], "-test.run=^TestKilledBinaryLeavesNoServer$", "-test.count=1")
	child.Env = append(os.Environ(), envKillHelper+"=1")
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
	var dir string
	for sc.Scan() {
		line := sc.Text()
		if reason, ok := strings.CutPrefix(line, "SKIP "); ok {
			unavailable(t, fmt.Errorf("%s", reason))
		}
		if rest, ok := strings.CutPrefix(line, "READY "); ok {
			pidText, d, _ := strings.Cut(rest, " ")
			pid, _ = strconv.Atoi(pidText)
			dir = d
			break
		}
	}
	if pid == 0 || dir == "" {
		t.Fatalf("child did not report a server; stderr: %s", stderr.String())
	}
	if !testproc.Alive(pid) {
		t.Fatalf("postmaster %d is not running before the kill", pid)
	}

	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.Wait()

	deadline := time.Now().Add(15 * time.Second)
	for testproc.Alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("postmaster %d still running 15s after its test binary was killed", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for {
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster directory %s still present 15s after its test binary was killed", dir)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
