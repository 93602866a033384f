//go:build linux

package local

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// The files of one work item, in root/<ID>/.
const (
	fileLaunch = "launch.json" // what the supervisor runs (written by Start)
	fileHandle = "handle.json" // the handle (written by the supervisor once the job runs)
	fileStatus = "status.json" // the final status, written once
	fileStop   = "stop.json"   // a stop request: the grace period
	fileShim   = "shim.log"    // the supervisor's own diagnostics
	fileOutput = "output.log"  // stdout and stderr combined
	fileStdout = "stdout.log"
	fileStderr = "stderr.log"
	dirWork    = "work" // the default working directory
)

// writeTemp writes v as JSON to a temporary file beside path, synced to
// disk when durable.
func writeTemp(path string, v any, durable bool) (string, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", err
	}
	var r [6]byte
	rand.Read(r[:])
	tmp := path + ".tmp-" + hex.EncodeToString(r[:])
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}

// writeJSON replaces path atomically (temporary file, rename): a reader
// sees the old or the new content, never half. It does not fsync: these
// files (launch, handle, stop request) must survive the control plane's
// crash, which the page cache does, not the machine's, after which no job
// runs anyway and each is found lost.
func writeJSON(path string, v any) error {
	tmp, err := writeTemp(path, v, false)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// writeOnce creates path atomically and durably (fsync of file and
// directory: a final status must survive a power loss) unless it exists;
// the first writer wins (creating a hard link is atomic and fails on an
// existing name). It reports whether this call wrote it.
func writeOnce(path string, v any) (bool, error) {
	tmp, err := writeTemp(path, v, true)
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return false, nil
		}
		return false, err
	}
	syncDir(filepath.Dir(path))
	return true, nil
}

// readJSON reads path into v; ok is false when the file does not exist.
func readJSON(path string, v any) (ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	return true, nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
