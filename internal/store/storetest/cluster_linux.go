//go:build linux

package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/plinth-dev/plinth/internal/testproc"
)

// cluster describes the throwaway server of this test binary.
var cluster struct {
	dir string // temporary directory: data/, postgres.log, the unix socket
	pid int    // the postmaster
	// reaper is the write end of the reaper's stdin. It is never closed:
	// the kernel closes it when this process ends, however it ends, and
	// the reaper then removes dir. Kept here so no finalizer closes it.
	reaper *os.File
}

// startCluster starts one throwaway PostgreSQL server for this test binary
// and returns a URL of its maintenance database.
//
// The server runs in a temporary directory, listens only on 127.0.0.1 (a
// free port, password auth) and a unix socket in that directory, with
// fsync off. There is no TestMain hook to stop it, so the process ends with
// this one by construction: postgres is started directly (not through
// pg_ctl, which would daemonize it) with a parent-death signal of SIGKILL,
// and a small reaper process removes the directory once this process is
// gone, however it ended.
func startCluster() (string, error) {
	bin, err := findPostgresBin()
	if err != nil {
		return "", err
	}
	// initdb and postgres refuse to run as root: run them as the postgres
	// OS user that the Debian package creates.
	var cred *syscall.Credential
	parent := os.TempDir()
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return "", errors.New("running as root and there is no 'postgres' OS user to run initdb and postgres as")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		// Every directory above the cluster must be searchable by that
		// user; $TMPDIR may be under /root.
		parent = "/tmp"
	}
	dir, err := os.MkdirTemp(parent, "plinth-pg-")
	if err != nil {
		return "", fmt.Errorf("creating cluster directory: %w", err)
	}
	cluster.dir = dir
	startReaper(dir)
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return "", fmt.Errorf("handing %s to the postgres user: %w", dir, err)
		}
	}

	var pw [16]byte
	rand.Read(pw[:])
	password := hex.EncodeToString(pw[:])
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(password+"\n"), 0o600); err != nil {
		return "", err
	}
	if cred != nil {
		if err := os.Chown(pwfile, int(cred.Uid), int(cred.Gid)); err != nil {
			return "", err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := command(cred, filepath.Join(bin, "initdb"),
		"-D", data, "-U", "postgres", "--pwfile", pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256",
		"-E", "UTF8", "--no-locale", "--no-sync")
	initdb.Dir = dir
	out, err := initdb.CombinedOutput()
	os.Remove(pwfile)
	if err != nil {
		return "", fmt.Errorf("initdb (%s) failed: %v: %s", bin, err, lastLine(string(out)))
	}

	// The free port may be taken between choosing and binding it; retry.
	for attempt := 0; ; attempt++ {
		url, err := startPostgres(bin, dir, data, cred, password)
		if err == nil || attempt == 2 {
			return url, err
		}
	}
}

// command runs path as cred's user: through runuser when it is installed
// (as for a hand-run initdb), else by setting the credentials directly.
func command(cred *syscall.Credential, path string, args ...string) *exec.Cmd {
	if cred == nil {
		cmd := exec.Command(path, args...)
		cmd.Env = append(os.Environ(), "LC_ALL=C")
		return cmd
	}
	if runuser, err := exec.LookPath("runuser"); err == nil {
		cmd := exec.Command(runuser, append([]string{"-u", "postgres", "--", path}, args...)...)
		cmd.Env = append(os.Environ(), "LC_ALL=C")
		return cmd
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	return cmd
}

func startPostgres(bin, dir, data string, cred *syscall.Credential, password string) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	logPath := filepath.Join(dir, "postgres.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return "", err
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"),
		"-D", data,
		"-h", "127.0.0.1",
		"-p", strconv.Itoa(port),
		"-k", dir,
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=300",
		"-c", "shared_buffers=32MB")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Credentials are set by the fork itself, not by runuser: the kernel
	// clears the parent-death signal when a process changes its user,
	// and Go sets it after switching user, right before exec.
	// Setpgid keeps a terminal's ^C from reaching the server mid-test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true, Credential: cred}

	exited, err := testproc.Start(cmd)
	logf.Close()
	if err != nil {
		return "", fmt.Errorf("starting postgres: %w", err)
	}

	url := fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable", password, port)
	probe, err := sql.Open("pgx", url)
	if err != nil {
		cmd.Process.Kill()
		return "", err
	}
	defer probe.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case err := <-exited:
			return "", fmt.Errorf("postgres exited during startup (%v): %s", err, tail(logPath))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := probe.PingContext(ctx)
		cancel()
		if err == nil {
			cluster.pid = cmd.Process.Pid
			return url, nil
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return "", fmt.Errorf("postgres did not accept connections within a minute: %v; log: %s", err, tail(logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// reaperScript waits for EOF on stdin (this process has ended), then for
// the postmaster named in postmaster.pid to be gone (SIGKILLed by its
// parent-death signal; a zombie counts as gone), then removes the cluster
// directory.
const reaperScript = `cat >/dev/null
pid=$(head -n 1 "$1/data/postmaster.pid" 2>/dev/null)
i=0
while [ -n "$pid" ] && [ $i -lt 100 ] && kill -0 "$pid" 2>/dev/null && ! grep -q ') Z' "/proc/$pid/stat" 2>/dev/null; do
	sleep 0.1; i=$((i+1))
done
for i in 1 2 3 4 5 6 7 8 9 10; do
	rm -rf "$1" 2>/dev/null
	[ -e "$1" ] || exit 0
	sleep 0.2
done`

// startReaper starts, best-effort, a process that removes dir once this
// process has ended. It runs in its own session so a terminal's ^C, which
// ends the tests, does not end it too.
func startReaper(dir string) {
	r, w, err := os.Pipe()
	if err != nil {
		return
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", "-c", reaperScript, "plinth-pg-reaper", dir)
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return
	}
	// Not waited for: it outlives this process by design.
	cluster.reaper = w
}
