package jobs

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/fault"
)

// Bounds on a code snapshot: code, not data. Leave data sets, virtual
// environments and outputs out with a .amlignore.
const (
	MaxSnapshotBytes = 1 << 30
	MaxSnapshotFiles = 100_000
)

// alwaysSkipped are directories never uploaded.
var alwaysSkipped = []string{".git", "__pycache__", ".ipynb_checkpoints"}

// Snapshot is the content of a job's code folder at submission.
type Snapshot struct {
	// Dir is the folder, with symbolic links resolved.
	Dir string `json:"-"`
	// Files are sorted by Path (byte order).
	Files []SnapshotFile `json:"files"`
	Bytes int64          `json:"bytes"`
	// Hash is the hex SHA-256 of the lines "<hex sha256>  <path>\n", one a
	// file in Files' order: what `sha256sum` prints for the files, so
	// `sha256sum $(files) | sha256sum` with the paths sorted with
	// LC_ALL=C gives the same value.
	Hash string `json:"hash"`
	// Skipped are entries left out that an ignore file did not ask for:
	// symbolic links and special files (sockets, devices, pipes).
	Skipped []string `json:"skipped,omitempty"`
	// Warnings are ignore-file lines that were not understood and so not
	// applied.
	Warnings []string `json:"warnings,omitempty"`
}

// SnapshotFile is one file of a snapshot.
type SnapshotFile struct {
	// Path is relative to the folder, with '/' separators.
	Path       string `json:"path"`
	Size       int64  `json:"size"`
	SHA256     string `json:"sha256"`
	Executable bool   `json:"executable,omitempty"`
}

// SnapshotCode reads a code folder: every regular file except those in
// .git, __pycache__ and .ipynb_checkpoints folders and those the
// folder's .amlignore (or, when it has none, its .gitignore) names. At
// most MaxSnapshotFiles files and MaxSnapshotBytes bytes.
//
// Ignore files are read as simple glob lines, which covers most real
// ones: "*.pyc", "data/" (folders only), "/build" (from the root only),
// "logs/*.txt" (a slash inside anchors it at the root), "**/tmp" and
// "a/**/b" (any number of folders). Not supported: negation ("!keep.me",
// reported in Warnings and otherwise ignored), ignore files in sub
// folders, and backslash-escaped trailing spaces.
func SnapshotCode(dir string) (Snapshot, error) {
	return snapshotCode(dir, MaxSnapshotFiles, MaxSnapshotBytes)
}

type walked struct {
	rel  string
	size int64
	exec bool
}

func snapshotCode(dir string, maxFiles int, maxBytes int64) (Snapshot, error) {
	root, err := filepath.EvalSymlinks(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return Snapshot{}, fault.InvalidField("code", "folder %s does not exist", dir)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("reading code folder: %w", err)
	}
	info, err := os.Stat(root)
	if err != nil {
		return Snapshot{}, fmt.Errorf("reading code folder: %w", err)
	}
	if !info.IsDir() {
		return Snapshot{}, fault.InvalidField("code", "%s is not a folder", dir)
	}
	snap := Snapshot{Dir: root}
	ign, warnings, err := loadIgnore(root)
	if err != nil {
		return Snapshot{}, err
	}
	snap.Warnings = warnings

	// First find what to read, within the bounds, then read it: a folder
	// far too big is refused without hashing a byte of it.
	var files []walked
	var total int64
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("reading code folder: %w", err)
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if slices.Contains(alwaysSkipped, d.Name()) || ign.match(rel, true) {
				return filepath.SkipDir
			}
			return nil
		}
		if ign.match(rel, false) {
			return nil
		}
		if !d.Type().IsRegular() {
			what := "a symbolic link"
			if d.Type()&fs.ModeSymlink == 0 {
				what = "not a regular file"
			}
			snap.Skipped = append(snap.Skipped, rel+" ("+what+")")
			return nil
		}
		if strings.ContainsAny(rel, "\n\r\\") {
			return fault.InvalidField("code", "file name %q contains a line break or a backslash, which the content hash cannot represent; rename it or ignore it in .amlignore", rel)
		}
		fi, err := d.Info()
		if err != nil {
			return fmt.Errorf("reading code folder: %w", err)
		}
		files = append(files, walked{rel: rel, size: fi.Size(), exec: fi.Mode()&0o111 != 0})
		total += fi.Size()
		if len(files) > maxFiles {
			return fault.New(fault.TooLarge, "code folder %s has more than %d files; leave data, virtual environments and outputs out with a .amlignore", dir, maxFiles)
		}
		if total > maxBytes {
			return fault.New(fault.TooLarge, "code folder %s holds more than %s; leave data, virtual environments and outputs out with a .amlignore", dir, sizeText(maxBytes))
		}
		return nil
	})
	if err != nil {
		return Snapshot{}, err
	}
	slices.SortFunc(files, func(a, b walked) int { return strings.Compare(a.rel, b.rel) })
	all := sha256.New()
	for _, f := range files {
		sum, n, err := hashFile(filepath.Join(root, filepath.FromSlash(f.rel)))
		if err != nil {
			return Snapshot{}, fmt.Errorf("reading code folder: %w", err)
		}
		snap.Bytes += n
		if snap.Bytes > maxBytes {
			return Snapshot{}, fault.New(fault.TooLarge, "code folder %s holds more than %s; leave data, virtual environments and outputs out with a .amlignore", dir, sizeText(maxBytes))
		}
		snap.Files = append(snap.Files, SnapshotFile{Path: f.rel, Size: n, SHA256: sum, Executable: f.exec})
		fmt.Fprintf(all, "%s  %s\n", sum, f.rel)
	}
	snap.Hash = hex.EncodeToString(all.Sum(nil))
	return snap, nil
}

func sizeText(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}

func hashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// tarTime is every entry's modification time, so that the same snapshot
// always makes the same bytes.
var tarTime = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// WriteTarGz writes the snapshot's files as a gzipped tar, the same bytes
// for the same snapshot: entries in path order, each folder before its
// first file, mode 0644 (0755 for executables), owner 0, a fixed time.
// It fails if a file changed since the snapshot was taken; what it wrote
// by then must be thrown away.
func (s Snapshot) WriteTarGz(w io.Writer) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	dirs := map[string]bool{}
	var mkdirs func(d string) error
	mkdirs = func(d string) error {
		if d == "." || dirs[d] {
			return nil
		}
		if err := mkdirs(path.Dir(d)); err != nil {
			return err
		}
		dirs[d] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: tarTime, Format: tar.FormatPAX})
	}
	for _, f := range s.Files {
		if err := mkdirs(path.Dir(f.Path)); err != nil {
			return err
		}
		mode := int64(0o644)
		if f.Executable {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.Path, Size: f.Size, Mode: mode, ModTime: tarTime, Format: tar.FormatPAX}); err != nil {
			return err
		}
		if err := copyChecked(tw, filepath.Join(s.Dir, filepath.FromSlash(f.Path)), f); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// copyChecked copies a file's bytes, failing unless they are exactly the
// ones the snapshot hashed.
func copyChecked(w io.Writer, p string, f SnapshotFile) error {
	fh, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("code folder changed since the snapshot: %w", err)
	}
	defer fh.Close()
	h := sha256.New()
	n, err := io.CopyN(io.MultiWriter(w, h), fh, f.Size)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading %s: %w", f.Path, err)
	}
	var extra [1]byte
	more, _ := fh.Read(extra[:])
	if n != f.Size || more > 0 || hex.EncodeToString(h.Sum(nil)) != f.SHA256 {
		return fault.New(fault.FailedPrecondition, "code folder changed since the snapshot: %s is not what was hashed; snapshot it again", f.Path)
	}
	return nil
}

// ignoreRule is one ignore-file line.
type ignoreRule struct {
	segments []string // pattern split on '/'; "**" matches any number of segments
	dirOnly  bool
}

type ignoreRules []ignoreRule

// loadIgnore reads .amlignore, or .gitignore when there is none.
func loadIgnore(root string) (ignoreRules, []string, error) {
	for _, name := range []string{".amlignore", ".gitignore"} {
		data, err := os.ReadFile(filepath.Join(root, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading %s: %w", name, err)
		}
		rules, warnings := parseIgnore(name, data)
		return rules, warnings, nil
	}
	return nil, nil, nil
}

func parseIgnore(name string, data []byte) (ignoreRules, []string) {
	var rules ignoreRules
	var warnings []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), " \t\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			warnings = append(warnings, fmt.Sprintf("%s line %d %q: negation is not supported; the line is ignored", name, n, clip(line)))
			continue
		}
		r := ignoreRule{}
		if strings.HasSuffix(line, "/") {
			r.dirOnly = true
			line = strings.TrimRight(line, "/")
		}
		anchored := strings.Contains(line, "/")
		line = strings.TrimPrefix(line, "/")
		if line == "" {
			continue
		}
		r.segments = strings.Split(line, "/")
		if !anchored {
			r.segments = append([]string{"**"}, r.segments...)
		}
		valid := true
		for _, seg := range r.segments {
			if seg == "**" {
				continue
			}
			if _, err := path.Match(seg, ""); err != nil {
				valid = false
			}
		}
		if !valid {
			warnings = append(warnings, fmt.Sprintf("%s line %d %q: not a valid glob; the line is ignored", name, n, clip(line)))
			continue
		}
		rules = append(rules, r)
	}
	return rules, warnings
}

// match reports whether rel (a '/'-separated path) is ignored.
func (rules ignoreRules) match(rel string, isDir bool) bool {
	segs := strings.Split(rel, "/")
	for _, r := range rules {
		if r.dirOnly && !isDir {
			continue
		}
		if matchSegments(r.segments, segs) {
			return true
		}
	}
	return false
}

func matchSegments(pat, segs []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(segs); i++ {
				if matchSegments(pat[1:], segs[i:]) {
					return true
				}
			}
			return false
		}
		if len(segs) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], segs[0]); !ok {
			return false
		}
		pat, segs = pat[1:], segs[1:]
	}
	return len(segs) == 0
}
