// Package blobtest gives tests real object stores to run the artifact
// store on: a throwaway MinIO server (S3) and a throwaway Azurite blob
// service (Azure Blob Storage), each started for the test on a free port of
// 127.0.0.1 with its data in the test's temporary directory, and killed
// when the test ends, or with the test binary if it dies.
//
// The servers come from binaries located by environment variables (see
// scripts/test-servers.sh, which builds and installs them into a cache):
// PLINTH_TEST_MINIO names the minio binary, PLINTH_TEST_AZURITE the
// directory azurite was installed into with npm. When one is not set,
// tests that need it skip with a one-line reason; PLINTH_TEST_REQUIRE_ALL=1
// turns that skip into a failure, as CI sets it.
//
// Each bucket URL is the URL `plinth server --artifacts` takes; the
// credentials it needs are set in the environment with t.Setenv, the way
// an operator sets them for the server, so the tests that use it cannot
// be parallel.
package blobtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob"
	_ "gocloud.dev/blob/s3blob"

	"github.com/plinth-dev/plinth/internal/testproc"
)

// Environment variables read by this package.
const (
	// EnvMinIO is the path of a minio server binary.
	EnvMinIO = "PLINTH_TEST_MINIO"
	// EnvAzurite is the directory azurite was installed into
	// (npm install --prefix DIR azurite), holding
	// node_modules/.bin/azurite-blob.
	EnvAzurite = "PLINTH_TEST_AZURITE"
	// EnvRequireAll set to 1 makes a missing server fail the test instead
	// of skipping it.
	EnvRequireAll = "PLINTH_TEST_REQUIRE_ALL"
)

// The credentials of the throwaway servers.
const (
	// MinIOUser and MinIOPassword are the MinIO root credentials, which
	// S3 clients use as access key id and secret access key.
	MinIOUser     = "plinth-test"
	MinIOPassword = "plinth-test-secret"
	// MinIORegion is MinIO's default region.
	MinIORegion = "us-east-1"
	// AzuriteAccount and AzuriteKey are Azurite's well-known development
	// account (the same in every Azurite installation).
	AzuriteAccount = "devstoreaccount1"
	AzuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Kinds of server.
const (
	KindS3    = "s3"
	KindAzure = "azblob"
)

// Server is a running throwaway object store.
type Server struct {
	// Kind is KindS3 or KindAzure: the scheme of its bucket URLs.
	Kind string
	// Addr is the host:port it listens on.
	Addr string
	// PID is the server process.
	PID int
	// Dir holds its data and log.
	Dir string
	log string
}

// S3 starts a MinIO server for t and returns the URL of a fresh bucket on
// it (see Server.NewBucket).
func S3(t testing.TB) string {
	t.Helper()
	return StartS3(t).NewBucket(t)
}

// Azure starts an Azurite blob service for t and returns the URL of a
// fresh container on it (see Server.NewBucket).
func Azure(t testing.TB) string {
	t.Helper()
	return StartAzure(t).NewBucket(t)
}

// StartS3 starts a MinIO server that lives until t's cleanup. It skips t
// when no MinIO binary is configured (fails it under
// PLINTH_TEST_REQUIRE_ALL=1).
func StartS3(t testing.TB) *Server {
	t.Helper()
	bin := os.Getenv(EnvMinIO)
	if bin == "" {
		unavailable(t, "MinIO", EnvMinIO+" is not set; run scripts/test-servers.sh and set it to the minio binary it prints")
	}
	if _, err := os.Stat(bin); err != nil {
		unavailable(t, "MinIO", fmt.Sprintf("%s=%s: %v", EnvMinIO, bin, err))
	}
	return startRetrying(t, func(dir string, port int) (*exec.Cmd, string, func(string) error) {
		console, err := freePort()
		if err != nil {
			console = port + 1
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cmd := exec.Command(bin, "server",
			"--address", addr,
			"--console-address", net.JoinHostPort("127.0.0.1", strconv.Itoa(console)),
			"--certs-dir", filepath.Join(dir, "certs"),
			"--quiet",
			filepath.Join(dir, "data"))
		cmd.Env = append(os.Environ(),
			"MINIO_ROOT_USER="+MinIOUser,
			"MINIO_ROOT_PASSWORD="+MinIOPassword,
			"MINIO_BROWSER=off",
			"MINIO_UPDATE=off",
			"HOME="+dir)
		return cmd, KindS3, func(addr string) error {
			res, err := httpGet("http://" + addr + "/minio/health/ready")
			if err != nil {
				return err
			}
			if res != http.StatusOK {
				return fmt.Errorf("readiness answered %d", res)
			}
			return nil
		}
	})
}

// StartAzure starts an Azurite blob service that lives until t's cleanup.
// It skips t when no Azurite is configured (fails it under
// PLINTH_TEST_REQUIRE_ALL=1).
func StartAzure(t testing.TB) *Server {
	t.Helper()
	root := os.Getenv(EnvAzurite)
	if root == "" {
		unavailable(t, "Azurite", EnvAzurite+" is not set; run scripts/test-servers.sh and set it to the azurite directory it prints")
	}
	bin := filepath.Join(root, "node_modules", ".bin", "azurite-blob")
	if _, err := os.Stat(bin); err != nil {
		unavailable(t, "Azurite", fmt.Sprintf("%s=%s: %v", EnvAzurite, root, err))
	}
	if _, err := exec.LookPath("node"); err != nil {
		unavailable(t, "Azurite", "no node on PATH")
	}
	return startRetrying(t, func(dir string, port int) (*exec.Cmd, string, func(string) error) {
		cmd := exec.Command(bin,
			"--blobHost", "127.0.0.1",
			"--blobPort", strconv.Itoa(port),
			"--location", filepath.Join(dir, "data"),
			"--disableTelemetry",
			"--skipApiVersionCheck",
			"--loose",
			"--silent")
		cmd.Env = append(os.Environ(), "HOME="+dir)
		return cmd, KindAzure, func(addr string) error {
			// Unauthenticated, the service answers 403: it is up.
			_, err := httpGet("http://" + addr + "/" + AzuriteAccount + "?comp=list")
			return err
		}
	})
}

// NewBucket creates an empty bucket (a container on Azure) on the server
// and returns its URL, the form `plinth server --artifacts` takes:
//
//	s3://NAME?endpoint=http://127.0.0.1:PORT&region=us-east-1&use_path_style=true
//	azblob://NAME?domain=127.0.0.1:PORT&protocol=http&storage_account=devstoreaccount1
//
// It sets the credentials the URL needs in the environment for t (AWS_* or
// AZURE_STORAGE_*). gocloud's azblob scheme reads its credentials from the
// environment once per process; they are the same for every Azurite.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := bucketName()
	var u string
	switch s.Kind {
	case KindS3:
		t.Setenv("AWS_ACCESS_KEY_ID", MinIOUser)
		t.Setenv("AWS_SECRET_ACCESS_KEY", MinIOPassword)
		t.Setenv("AWS_SESSION_TOKEN", "")
		t.Setenv("AWS_PROFILE", "")
		t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
		q := url.Values{"endpoint": {"http://" + s.Addr}, "region": {MinIORegion}, "use_path_style": {"true"}}
		u = "s3://" + name + "?" + q.Encode()
	case KindAzure:
		t.Setenv("AZURE_STORAGE_ACCOUNT", AzuriteAccount)
		t.Setenv("AZURE_STORAGE_KEY", AzuriteKey)
		t.Setenv("AZURE_STORAGE_SAS_TOKEN", "")
		q := url.Values{"domain": {s.Addr}, "protocol": {"http"}, "storage_account": {AzuriteAccount}}
		u = "azblob://" + name + "?" + q.Encode()
	default:
		t.Fatalf("blobtest: unknown kind %q", s.Kind)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := blob.OpenBucket(ctx, u)
	if err != nil {
		t.Fatalf("blobtest: opening %s: %v", u, err)
	}
	defer b.Close()
	switch s.Kind {
	case KindS3:
		var c *s3.Client
		if !b.As(&c) {
			t.Fatal("blobtest: the s3 bucket exposes no *s3.Client")
		}
		_, err = c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &name})
	case KindAzure:
		var c *container.Client
		if !b.As(&c) {
			t.Fatal("blobtest: the azblob bucket exposes no *container.Client")
		}
		_, err = c.Create(ctx, nil)
	}
	if err != nil {
		t.Fatalf("blobtest: creating bucket %s on %s: %v; server log: %s", name, s.Addr, err, lastLines(s.log, 5))
	}
	return u
}

var bucketSeq atomic.Int64

// bucketName is valid on S3 and Azure alike (3-63 characters of [a-z0-9-],
// no double hyphen) and unique across test binaries sharing a server.
func bucketName() string {
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("plinth-%d-%d-%s", os.Getpid(), bucketSeq.Add(1), hex.EncodeToString(b[:]))
}

func unavailable(t testing.TB, what, why string) {
	t.Helper()
	msg := what + " unavailable: " + why
	if os.Getenv(EnvRequireAll) == "1" {
		t.Fatal(msg + " (" + EnvRequireAll + "=1)")
	}
	t.Skip(msg)
}

// command makes the server command for a data directory and a port, and
// returns its kind and a readiness probe of host:port.
type command func(dir string, port int) (cmd *exec.Cmd, kind string, ready func(addr string) error)

func startRetrying(t testing.TB, mk command) *Server {
	t.Helper()
	// The free port may be taken between choosing and binding it; retry.
	for attempt := 0; ; attempt++ {
		s, err := start(t, mk)
		if err == nil {
			return s
		}
		if attempt == 2 {
			t.Fatalf("blobtest: %v", err)
		}
	}
}

func start(t testing.TB, mk command) (*Server, error) {
	dir := t.TempDir()
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd, kind, ready := mk(dir, port)
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Dir = dir
	cmd.SysProcAttr = sysProcAttr()
	name := filepath.Base(cmd.Path)

	exited, err := testproc.Start(cmd)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	const wait = time.Minute
	deadline := time.Now().Add(wait)
	for {
		select {
		case err := <-exited:
			return nil, fmt.Errorf("%s exited during startup (%v): %s", name, err, lastLines(logPath, 5))
		default:
		}
		err := ready(addr)
		if err == nil {
			t.Cleanup(stop)
			return &Server{Kind: kind, Addr: addr, PID: cmd.Process.Pid, Dir: dir, log: logPath}, nil
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("%s did not become ready on %s within %v (%v); log: %s", name, addr, wait, err, lastLines(logPath, 5))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var probe = &http.Client{Timeout: 2 * time.Second}

// httpGet returns the status of a GET, or the error of a server that does
// not answer.
func httpGet(u string) (int, error) {
	res, err := probe.Get(u)
	if err != nil {
		return 0, err
	}
	res.Body.Close()
	return res.StatusCode, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lastLines returns the last n non-empty lines of a file, joined by " | ".
func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "(no log)"
		}
		return err.Error()
	}
	var lines []string
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		if l = bytes.TrimSpace(l); len(l) > 0 {
			lines = append(lines, string(l))
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 0 {
		return "(empty log)"
	}
	return strings.Join(lines, " | ")
}
