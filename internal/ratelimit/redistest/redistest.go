// Package redistest gives tests a Redis server: the one named by
// PLINTH_TEST_REDIS_URL, or else a throwaway redis-server started for the
// test from the binary on PATH, listening on a free port of 127.0.0.1 with
// persistence off, in the test's temporary directory, and killed when the
// test ends.
//
// When Redis is neither configured nor installed, tests skip with a
// one-line reason; PLINTH_TEST_REQUIRE_ALL=1 turns that skip into a
// failure, as CI sets it.
package redistest

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/testproc"
)

// Environment variables read by this package.
const (
	// EnvRedisURL names an existing server (a redis:// URL) that tests
	// share; they keep apart by key prefix (see Prefix), so nothing they
	// write collides, and nothing is flushed.
	EnvRedisURL = "PLINTH_TEST_REDIS_URL"
	// EnvRequireAll set to 1 makes a missing Redis fail the test instead
	// of skipping it.
	EnvRequireAll = "PLINTH_TEST_REQUIRE_ALL"
)

// URL returns the redis:// URL of a server for t: the configured one, or a
// throwaway server that lives until t's cleanup. It skips t when Redis is
// unavailable (fails it under PLINTH_TEST_REQUIRE_ALL=1).
func URL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(EnvRedisURL); u != "" {
		return u
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		unavailable(t, errors.New("no redis-server on PATH; install redis-server or set "+EnvRedisURL))
	}
	dir := t.TempDir()
	// The free port may be taken between choosing and binding it; retry.
	for attempt := 0; ; attempt++ {
		u, err := start(t, bin, dir)
		if err == nil {
			return u
		}
		if attempt == 2 {
			t.Fatalf("redistest: %v", err)
		}
	}
}

// Prefix returns a key prefix unique to this call, so tests sharing a
// server never see each other's keys.
func Prefix(t testing.TB) string {
	var b [4]byte
	rand.Read(b[:])
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	return "test:" + name + ":" + hex.EncodeToString(b[:])
}

func unavailable(t testing.TB, err error) {
	t.Helper()
	msg := "Redis unavailable: " + err.Error()
	if os.Getenv(EnvRequireAll) == "1" {
		t.Fatal(msg + " (" + EnvRequireAll + "=1)")
	}
	t.Skip(msg)
}

func start(t testing.TB, bin, dir string) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	logPath := filepath.Join(dir, "redis-"+strconv.Itoa(port)+".log")
	cmd := exec.Command(bin,
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--dir", dir,
		"--save", "",
		"--appendonly", "no",
		"--logfile", logPath,
		"--daemonize", "no")
	cmd.Dir = dir
	cmd.SysProcAttr = sysProcAttr()

	exited, err := testproc.Start(cmd)
	if err != nil {
		return "", fmt.Errorf("starting redis-server: %w", err)
	}
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-exited:
			return "", fmt.Errorf("redis-server exited during startup (%v): %s", err, lastLine(logPath))
		default:
		}
		if ping(addr) == nil {
			t.Cleanup(stop)
			return "redis://" + addr + "/0", nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", fmt.Errorf("redis-server did not answer PING within 15s; log: %s", lastLine(logPath))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ping checks that a server answers on addr, speaking the protocol by hand
// so that this package needs no client.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLine(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
