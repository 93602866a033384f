package jobs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/plinth-dev/plinth/internal/fault"
)

// tree writes files (path -> content; a trailing "*" in the path makes
// it executable) under a new folder.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(p, "*") {
			p, mode = strings.TrimSuffix(p, "*"), 0o755
		}
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func paths(s Snapshot) []string {
	var out []string
	for _, f := range s.Files {
		out = append(out, f.Path)
	}
	return out
}

func TestSnapshotCode(t *testing.T) {
	root := tree(t, map[string]string{
		"train.py":                          "print('train')\n",
		"run.sh*":                           "#!/bin/sh\npython train.py\n",
		"pkg/model.py":                      "class M: pass\n",
		"pkg/__pycache__/model.cpython.pyc": "bytecode",
		"pkg/data.csv":                      "a,b\n1,2\n",
		"notebooks/.ipynb_checkpoints/x":    "checkpoint",
		"notebooks/explore.ipynb":           "{}",
		".git/HEAD":                         "ref: refs/heads/main\n",
		"data/big.bin":                      "big",
		"outputs/model.pkl":                 "model",
		"src/outputs/keep.txt":              "kept: /outputs is anchored",
		"logs/a.log":                        "log",
		"deep/er/tmp/x":                     "tmp anywhere",
		"deep/er/cache/y":                   "not a folder rule",
		"empty.txt":                         "",
		".amlignore":                        "# leave data out\ndata/\n/outputs\n*.csv\n**/tmp\nlogs/*.log\n!pkg/data.csv\n\n[bad\n",
		".gitignore":                        "*.py\n", // not read: .amlignore wins
	})
	if err := os.Symlink("train.py", filepath.Join(root, "link.py")); err != nil {
		t.Fatal(err)
	}
	s, err := SnapshotCode(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".amlignore", ".gitignore", "deep/er/cache/y", "empty.txt", "notebooks/explore.ipynb", "pkg/model.py", "run.sh", "src/outputs/keep.txt", "train.py"}
	if got := paths(s); !slices.Equal(got, want) {
		t.Errorf("files\n got %q\nwant %q", got, want)
	}
	if !slices.Equal(s.Skipped, []string{"link.py (a symbolic link)"}) {
		t.Errorf("skipped %q", s.Skipped)
	}
	if want := []string{
		`.amlignore line 7 "!pkg/data.csv": negation is not supported; the line is ignored`,
		`.amlignore line 9 "[bad": not a valid glob; the line is ignored`,
	}; !slices.Equal(s.Warnings, want) {
		t.Errorf("warnings\n got %q\nwant %q", s.Warnings, want)
	}
	var lines strings.Builder
	var total int64
	for _, f := range s.Files {
		data, err := os.ReadFile(filepath.Join(root, f.Path))
		if err != nil {
			t.Fatal(err)
		}
		if f.SHA256 != sum(string(data)) || f.Size != int64(len(data)) || f.Executable != (f.Path == "run.sh") {
			t.Errorf("%+v does not describe %q", f, data)
		}
		total += f.Size
		lines.WriteString(f.SHA256 + "  " + f.Path + "\n")
	}
	if s.Hash != sum(lines.String()) || s.Bytes != total {
		t.Errorf("hash %s bytes %d; want %s %d", s.Hash, s.Bytes, sum(lines.String()), total)
	}

	// The hash is what sha256sum prints for the files, hashed again.
	if _, err := exec.LookPath("sha256sum"); err == nil {
		cmd := exec.Command("sh", "-c", `sha256sum "$@" | sha256sum`, "sh")
		cmd.Args = append(cmd.Args, paths(s)...)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Fields(string(out))[0]; got != s.Hash {
			t.Errorf("sha256sum says %s, Snapshot.Hash %s", got, s.Hash)
		}
	}

	// The same content elsewhere has the same hash; a changed byte changes it.
	again, err := SnapshotCode(root)
	if err != nil || again.Hash != s.Hash {
		t.Fatalf("second snapshot %s, %v", again.Hash, err)
	}
	if err := os.WriteFile(filepath.Join(root, "train.py"), []byte("print('Train')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	changed, err := SnapshotCode(root)
	if err != nil || changed.Hash == s.Hash {
		t.Errorf("a changed file kept the hash: %v", err)
	}
}

func TestSnapshotGitignore(t *testing.T) {
	root := tree(t, map[string]string{
		"a.py":             "a",
		"venv/bin/python":  "py",
		"build/out.o":      "o",
		"src/build/keep.c": "nested build folder is ignored too",
		"src/x.tmp":        "tmp",
		".gitignore":       "venv/\nbuild\n*.tmp\n",
	})
	s, err := SnapshotCode(root)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{".gitignore", "a.py"}; !slices.Equal(paths(s), want) {
		t.Errorf("files %q, want %q", paths(s), want)
	}
}

func TestSnapshotEmptyFolder(t *testing.T) {
	s, err := SnapshotCode(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Files) != 0 || s.Hash != sum("") {
		t.Errorf("empty folder: %+v", s)
	}
}

func TestSnapshotLimits(t *testing.T) {
	root := tree(t, map[string]string{"a": "12345", "b": "12345", "c/d": "12345"})
	if _, err := snapshotCode(root, 3, 15); err != nil {
		t.Fatalf("at the limits: %v", err)
	}
	_, err := snapshotCode(root, 2, 1<<30)
	if !fault.Is(err, fault.TooLarge) || err.Error() != "code folder "+root+" has more than 2 files; leave data, virtual environments and outputs out with a .amlignore" {
		t.Errorf("too many files: %v", err)
	}
	_, err = snapshotCode(root, 100, 14)
	if !fault.Is(err, fault.TooLarge) || err.Error() != "code folder "+root+" holds more than 14 bytes; leave data, virtual environments and outputs out with a .amlignore" {
		t.Errorf("too many bytes: %v", err)
	}
	if MaxSnapshotBytes != 1<<30 || MaxSnapshotFiles != 100000 || sizeText(MaxSnapshotBytes) != "1 GiB" {
		t.Error("the documented limits changed")
	}
}

func TestSnapshotErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	_, err := SnapshotCode(missing)
	checkError(t, err, "code: folder "+missing+" does not exist")

	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = SnapshotCode(file)
	checkError(t, err, "code: "+file+" is not a folder")

	root := tree(t, map[string]string{"ok": "x", "bad\\name": "y"})
	_, err = SnapshotCode(root)
	checkError(t, err, `code: file name "bad\\name" contains a line break or a backslash, which the content hash cannot represent; rename it or ignore it in .amlignore`)
}

func TestSnapshotThroughSymlinkedRoot(t *testing.T) {
	root := tree(t, map[string]string{"a.py": "a"})
	link := filepath.Join(t.TempDir(), "code")
	if err := os.Symlink(root, link); err != nil {
		t.Fatal(err)
	}
	s, err := SnapshotCode(link)
	if err != nil || !slices.Equal(paths(s), []string{"a.py"}) {
		t.Errorf("%+v, %v", s, err)
	}
}

func TestWriteTarGz(t *testing.T) {
	files := map[string]string{"train.py": "print(1)\n", "run.sh*": "#!/bin/sh\n", "pkg/sub/m.py": "m", "pkg/a.py": "a", "empty": ""}
	root := tree(t, files)
	s, err := SnapshotCode(root)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.WriteTarGz(&buf); err != nil {
		t.Fatal(err)
	}
	var buf2 bytes.Buffer
	if err := s.WriteTarGz(&buf2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), buf2.Bytes()) {
		t.Error("the same snapshot made different archives")
	}

	gz, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(tarTime) {
			t.Errorf("%s: uid %d gid %d time %v", h.Name, h.Uid, h.Gid, h.ModTime)
		}
		if h.Typeflag == tar.TypeDir {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		want, ok := files[h.Name]
		wantMode := int64(0o644)
		if !ok {
			want, wantMode = files[h.Name+"*"], 0o755
		}
		if string(data) != want || h.Mode != wantMode {
			t.Errorf("%s: %q mode %o; want %q mode %o", h.Name, data, h.Mode, want, wantMode)
		}
	}
	if want := []string{"empty", "pkg/", "pkg/a.py", "pkg/sub/", "pkg/sub/m.py", "run.sh", "train.py"}; !slices.Equal(names, want) {
		t.Errorf("entries %q, want %q", names, want)
	}

	// A file changed after the snapshot fails the archive.
	for _, change := range []string{"print(2)\n", "print(1)\n# longer\n", "p"} {
		if err := os.WriteFile(filepath.Join(root, "train.py"), []byte(change), 0o644); err != nil {
			t.Fatal(err)
		}
		err := s.WriteTarGz(io.Discard)
		if !fault.Is(err, fault.FailedPrecondition) || err.Error() != "code folder changed since the snapshot: train.py is not what was hashed; snapshot it again" {
			t.Errorf("after changing train.py to %q: %v", change, err)
		}
	}
	if err := os.Remove(filepath.Join(root, "train.py")); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteTarGz(io.Discard); err == nil || !strings.HasPrefix(err.Error(), "code folder changed since the snapshot: open ") {
		t.Errorf("after removing train.py: %v", err)
	}
}

func TestIgnorePatterns(t *testing.T) {
	rules, warnings := parseIgnore(".amlignore", []byte("*.pyc\n/build\ndata/\na/**/b\nlogs/*.txt\n**/tmp\nx/**\n"))
	if len(warnings) != 0 {
		t.Fatal(warnings)
	}
	tests := []struct {
		path  string
		isDir bool
		want  bool
	}{
		{"m.pyc", false, true}, {"pkg/m.pyc", false, true}, {"m.py", false, false},
		{"build", true, true}, {"build", false, true}, {"src/build", true, false},
		{"data", true, true}, {"data", false, false}, {"pkg/data", true, true},
		{"a/b", false, true}, {"a/x/y/b", false, true}, {"c/a/b", false, false},
		{"logs/x.txt", false, true}, {"logs/sub/x.txt", false, false}, {"src/logs/x.txt", false, false},
		{"tmp", true, true}, {"p/q/tmp", true, true},
		{"x/anything", false, true}, {"y/x/anything", false, false},
	}
	for _, tt := range tests {
		if got := rules.match(tt.path, tt.isDir); got != tt.want {
			t.Errorf("match(%q, dir=%v) = %v, want %v", tt.path, tt.isDir, got, tt.want)
		}
	}
}
