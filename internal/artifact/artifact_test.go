package artifact

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/fault"
)

func newStore(t *testing.T) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "artifacts")
	s, err := Open(context.Background(), "file://"+dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func put(t *testing.T, s *Store, key, body string) {
	t.Helper()
	n, err := s.Put(context.Background(), key, strings.NewReader(body))
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	if n != int64(len(body)) {
		t.Fatalf("Put(%q) stored %d bytes, want %d", key, n, len(body))
	}
}

func get(t *testing.T, s *Store, key string) string {
	t.Helper()
	r, size, err := s.Open(context.Background(), key)
	if err != nil {
		t.Fatalf("Open(%q): %v", key, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != size {
		t.Fatalf("Open(%q) said size %d, read %d bytes", key, size, len(b))
	}
	return string(b)
}

// files lists every regular file under dir, relative and slash-separated.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

func TestArtifactCleanKey(t *testing.T) {
	good := []struct{ in, want string }{
		{"a", "a"},
		{"ws/1/run/artifacts/model.pkl", "ws/1/run/artifacts/model.pkl"},
		{"dir/", "dir"},
		{"./a/./b", "a/b"},
		{"a b/c%20d.txt", "a b/c d.txt"},
		{"100%.txt", "100%.txt"},
		{"x/%zz", "x/%zz"},
		{"a%2Fb", "a/b"},
		{"données/é.csv", "données/é.csv"},
		{"...", "..."},
		{"a..b/..c", "a..b/..c"},
		{"C:x", "C:x"},
		{".hidden/x", ".hidden/x"},
	}
	for _, c := range good {
		got, err := CleanKey(c.in)
		if err != nil || got != c.want {
			t.Errorf("CleanKey(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	bad := []struct{ in, why string }{
		{"", "empty"},
		{"..", "'..'"},
		{"../etc/passwd", "'..'"},
		{"a/../../b", "'..'"},
		{"a/..", "'..'"},
		{"%2e%2e/x", "'..'"},
		{"%2E%2E%2Fx", "'..'"},
		{"a/%2e%2e", "'..'"},
		{"%252e%252e/x", "'..'"},
		{"/etc/passwd", "absolute"},
		{"%2Fetc/passwd", "absolute"},
		{"//server/share", "absolute"},
		{"C:/Windows", "drive letter"},
		{"c:", "drive letter"},
		{`a\b`, "backslash"},
		{`..\..\x`, "backslash"},
		{"a%5cb", "backslash"},
		{"a\x00b", "control character"},
		{"a%00b", "control character"},
		{"a\nb", "control character"},
		{"a\x7fb", "control character"},
		{"a//b", "empty segment"},
		{"a%2F%2Fb", "empty segment"},
		{"a#b", "'#'"},
		{".", "names no file"},
		{"./", "names no file"},
		{"\xff\xfe", "UTF-8"},
		{".plinth-multipart/x/1", "reserved"},
		{strings.Repeat("a", MaxKeyBytes+1), "longer than"},
		{"%" + strings.Repeat("25", 11) + "2e", "percent-encoding"},
	}
	for _, c := range bad {
		got, err := CleanKey(c.in)
		if err == nil {
			t.Errorf("CleanKey(%q) = %q, want an error (%s)", c.in, got, c.why)
			continue
		}
		fe, ok := fault.As(err)
		if !ok || fe.Kind != fault.Invalid || fe.Field != "path" {
			t.Errorf("CleanKey(%q) error %v is not an invalid-path fault", c.in, err)
		}
		if !strings.Contains(err.Error(), c.why) {
			t.Errorf("CleanKey(%q) error %q does not say %q", c.in, err, c.why)
		}
		if c.in != "" && len(c.in) < 100 && !strings.Contains(err.Error(), clip(c.in)) {
			t.Errorf("CleanKey(%q) error %q does not name the path", c.in, err)
		}
	}
}

func FuzzArtifactCleanKey(f *testing.F) {
	for _, s := range []string{"a/b", "../x", "%2e%2e/x", "a//b", `a\b`, "/x", "%252F"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		k, err := CleanKey(p)
		if err != nil {
			return
		}
		if k == "" || strings.HasPrefix(k, "/") || strings.ContainsAny(k, "\\\x00#") {
			t.Fatalf("CleanKey(%q) = %q", p, k)
		}
		for _, seg := range strings.Split(k, "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("CleanKey(%q) = %q has segment %q", p, k, seg)
			}
		}
		if again, err := CleanKey(k); err != nil || again != k {
			t.Fatalf("CleanKey is not idempotent on %q: %q, %v", k, again, err)
		}
	})
}

func TestArtifactStoreLocations(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	for _, loc := range []string{"file://" + filepath.Join(base, "u", "v"), filepath.Join(base, "plain")} {
		s, err := Open(ctx, loc)
		if err != nil {
			t.Fatalf("Open(%q): %v", loc, err)
		}
		put(t, s, "x/y.txt", "hi")
		s.Close()
	}
	for _, want := range []string{"u/v/x/y.txt", "plain/x/y.txt"} {
		if b, err := os.ReadFile(filepath.Join(base, want)); err != nil || string(b) != "hi" {
			t.Errorf("%s: %q, %v", want, b, err)
		}
	}
	// No metadata sidecars next to the artifacts.
	if got := files(t, base); !reflect.DeepEqual(got, []string{"plain/x/y.txt", "u/v/x/y.txt"}) {
		t.Errorf("files on disk = %v", got)
	}
	for _, loc := range []string{"", "gs://bucket", "file://otherhost/x", "file:///x?metadata=skip", "ftp://h/x"} {
		if s, err := Open(ctx, loc); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded, want an error", loc)
		}
	}
}

func TestArtifactStorePutOpenDelete(t *testing.T) {
	s, dir := newStore(t)
	ctx := context.Background()
	put(t, s, "ws/1/r/artifacts/a.txt", "first")
	put(t, s, "ws/1/r/artifacts/a.txt", "second, longer")
	if got := get(t, s, "ws/1/r/artifacts/a.txt"); got != "second, longer" {
		t.Fatalf("read %q", got)
	}
	put(t, s, "ws/1/r/artifacts/empty", "")
	if got := get(t, s, "ws/1/r/artifacts/empty"); got != "" {
		t.Fatalf("read %q", got)
	}
	for _, k := range []string{"ws/1/r/artifacts/missing", "ws/1/r"} {
		if _, _, err := s.Open(ctx, k); !fault.Is(err, fault.NotFound) {
			t.Errorf("Open(%q) = %v, want not found", k, err)
		}
	}
	put(t, s, "ws/1/r/artifacts/model/MLmodel", "m")
	put(t, s, "ws/1/r/artifacts/model/data/w.bin", "w")
	put(t, s, "ws/1/r/artifacts/model2", "keep")

	if err := s.Delete(ctx, "ws/1/r/artifacts/a.txt"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "ws/1/r/artifacts/model"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "ws/1/r/artifacts/never-there"); err != nil {
		t.Fatalf("deleting nothing: %v", err)
	}
	got := files(t, dir)
	want := []string{"ws/1/r/artifacts/empty", "ws/1/r/artifacts/model2"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after deletes the files are %v, want %v", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "ws/1/r/artifacts/model")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("deleted directory left behind: %v", err)
	}
	if err := s.Delete(ctx, "../ws"); !fault.Is(err, fault.Invalid) {
		t.Errorf("Delete(../ws) = %v", err)
	}
}

func TestArtifactStoreList(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	put(t, s, "ws/r/a.txt", "aaa")
	put(t, s, "ws/r/dir/b.txt", "b")
	put(t, s, "ws/r/dir/sub/c.txt", "cc")
	put(t, s, "ws/r/dir-x", "dd")
	if _, err := s.CreateMultipart(ctx, "ws/r/big.bin"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		prefix string
		want   []Entry
	}{
		{"", []Entry{{Path: "ws", IsDir: true}}},
		{"ws/r", []Entry{{Path: "a.txt", Size: 3}, {Path: "dir", IsDir: true}, {Path: "dir-x", Size: 2}}},
		{"ws/r/", []Entry{{Path: "a.txt", Size: 3}, {Path: "dir", IsDir: true}, {Path: "dir-x", Size: 2}}},
		{"ws/r/dir", []Entry{{Path: "b.txt", Size: 1}, {Path: "sub", IsDir: true}}},
		{"ws/r/dir/sub", []Entry{{Path: "c.txt", Size: 2}}},
		{"ws/r/a.txt", []Entry{}},
		{"ws/nothing", []Entry{}},
	}
	for _, c := range cases {
		got, err := s.List(ctx, c.prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", c.prefix, err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("List(%q) = %+v, want %+v", c.prefix, got, c.want)
		}
	}
	if _, err := s.List(ctx, "ws/../.."); !fault.Is(err, fault.Invalid) {
		t.Errorf("List(traversal) = %v", err)
	}
}

func TestArtifactStoreTraversal(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "root")
	s, err := Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, k := range []string{"../escape", "%2e%2e/escape", "a/../../escape", "/tmp/escape", `..\escape`, "%2Fescape", "a/%252e%252e/%252e%252e/escape"} {
		if _, err := s.Put(context.Background(), k, strings.NewReader("x")); !fault.Is(err, fault.Invalid) {
			t.Errorf("Put(%q) = %v, want invalid", k, err)
		}
		if _, err := s.CreateMultipart(context.Background(), k); !fault.Is(err, fault.Invalid) {
			t.Errorf("CreateMultipart(%q) = %v, want invalid", k, err)
		}
	}
	if got := files(t, base); len(got) != 0 {
		t.Fatalf("files written: %v", got)
	}
}

// failingReader yields n bytes and then fails.
type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("connection reset")
	}
	k := min(len(p), f.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	f.n -= k
	return k, nil
}

func TestArtifactStoreFailedPut(t *testing.T) {
	s, dir := newStore(t)
	ctx := context.Background()
	_, err := s.Put(ctx, "ws/new.bin", &failingReader{n: 3 << 20})
	if !fault.Is(err, fault.Invalid) || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("Put with a failing reader = %v", err)
	}
	put(t, s, "ws/old.bin", "old")
	if _, err := s.Put(ctx, "ws/old.bin", &failingReader{n: 1 << 20}); err == nil {
		t.Fatal("Put with a failing reader succeeded")
	}
	// A cancelled context aborts the write too.
	cctx, cancel := context.WithCancel(ctx)
	r := &cancelAfter{r: &failingReader{n: 10 << 20}, left: 2 << 20, cancel: cancel}
	if _, err := s.Put(cctx, "ws/old.bin", r); err == nil {
		t.Fatal("Put with a cancelled context succeeded")
	}
	if got := files(t, dir); !reflect.DeepEqual(got, []string{"ws/old.bin"}) {
		t.Fatalf("files after failed writes: %v", got)
	}
	if got := get(t, s, "ws/old.bin"); got != "old" {
		t.Fatalf("old blob changed to %q", got)
	}
}

type cancelAfter struct {
	r      io.Reader
	left   int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.left -= n; c.left <= 0 {
		c.cancel()
	}
	return n, err
}

func TestArtifactStoreConcurrentPut(t *testing.T) {
	s, dir := newStore(t)
	ctx := context.Background()
	const writers = 8
	const size = 512 << 10
	bodies := make([][]byte, writers)
	for i := range bodies {
		bodies[i] = bytes.Repeat([]byte{byte('a' + i)}, size)
	}
	put(t, s, "ws/same.bin", string(bodies[0]))
	var wg sync.WaitGroup
	var stop atomic.Bool
	var readErr atomic.Value
	// A reader running alongside must only ever see a whole version.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			r, _, err := s.Open(ctx, "ws/same.bin")
			if err != nil {
				readErr.Store(err)
				return
			}
			b, err := io.ReadAll(r)
			r.Close()
			if err != nil || len(b) != size || !bytes.Equal(b, bytes.Repeat(b[:1], size)) {
				readErr.Store(fmt.Errorf("torn read: %d bytes, err %v", len(b), err))
				return
			}
		}
	}()
	var writersWG sync.WaitGroup
	for i := range writers {
		writersWG.Add(1)
		go func() {
			defer writersWG.Done()
			if _, err := s.Put(ctx, "ws/same.bin", bytes.NewReader(bodies[i])); err != nil {
				t.Errorf("writer %d: %v", i, err)
			}
		}()
	}
	writersWG.Wait()
	stop.Store(true)
	wg.Wait()
	if err := readErr.Load(); err != nil {
		t.Fatal(err)
	}
	got := get(t, s, "ws/same.bin")
	if len(got) != size || strings.Count(got, got[:1]) != size {
		t.Fatalf("final blob is not one writer's whole body (%d bytes)", len(got))
	}
	if f := files(t, dir); !reflect.DeepEqual(f, []string{"ws/same.bin"}) {
		t.Fatalf("files left: %v", f)
	}
}

// patternReader generates n bytes without holding them.
type patternReader struct{ off, n int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	k := int(min(int64(len(b)), p.n-p.off))
	for i := range b[:k] {
		b[i] = byte((p.off + int64(i)) * 31 >> 3)
	}
	p.off += int64(k)
	return k, nil
}

func TestArtifactStoreStreamedPut(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 64 MiB")
	}
	s, dir := newStore(t)
	const size = 64 << 20
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var n int64
	var err error
	grew := peakHeapGrowth(func() {
		n, err = s.Put(context.Background(), "ws/big.bin", &patternReader{n: size})
	})
	if err != nil || n != size {
		t.Fatalf("Put = %d, %v", n, err)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("64 MiB Put: %d KiB allocated, heap in use grew by at most %d KiB", allocated>>10, grew>>10)
	if allocated > size/8 {
		t.Errorf("Put allocated %d bytes for a %d-byte blob: not streamed", allocated, size)
	}
	if grew > size/8 {
		t.Errorf("heap in use grew by %d bytes during a %d-byte Put", grew, size)
	}
	st, err := os.Stat(filepath.Join(dir, "ws/big.bin"))
	if err != nil || st.Size() != size {
		t.Fatalf("stored file: %v, %v", st, err)
	}
}

func md5ETag(b []byte) string {
	sum := md5.Sum(b)
	return `"` + hex.EncodeToString(sum[:]) + `"`
}

// TestLocalMultipartLeavesNoFiles: the conformance suite checks multipart
// uploads' behaviour on every store; on local disk, completing or aborting
// must also leave no part files or upload directories behind.
func TestLocalMultipartLeavesNoFiles(t *testing.T) {
	s, dir := newStore(t)
	ctx := context.Background()
	id, err := s.CreateMultipart(ctx, "ws/r/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	etag, err := s.PutPart(ctx, id, 1, strings.NewReader("whole"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CompleteMultipart(ctx, id, []Part{{1, etag}}); err != nil {
		t.Fatal(err)
	}
	if f := files(t, dir); !reflect.DeepEqual(f, []string{"ws/r/big.bin"}) {
		t.Fatalf("files left after completion: %v", f)
	}
	if _, err := os.Stat(filepath.Join(dir, multipartRoot, id)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("upload directory left: %v", err)
	}

	aborted, err := s.CreateMultipart(ctx, "ws/x.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutPart(ctx, aborted, 1, strings.NewReader("abc")); err != nil {
		t.Fatal(err)
	}
	if err := s.AbortMultipart(ctx, aborted); err != nil {
		t.Fatal(err)
	}
	if f := files(t, dir); !reflect.DeepEqual(f, []string{"ws/r/big.bin"}) {
		t.Fatalf("files left after abort: %v", f)
	}
}

func TestArtifactStorePruneMultipart(t *testing.T) {
	s, dir := newStore(t)
	ctx := context.Background()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s.now = func() time.Time { return now }
	old, err := s.CreateMultipart(ctx, "ws/old.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutPart(ctx, old, 1, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	now = now.Add(48 * time.Hour)
	fresh, err := s.CreateMultipart(ctx, "ws/fresh.bin")
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.PruneMultipart(ctx, now.Add(-24*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("PruneMultipart = %d, %v", n, err)
	}
	if _, err := s.Multipart(ctx, old); !fault.Is(err, fault.NotFound) {
		t.Errorf("old upload survived: %v", err)
	}
	if _, err := s.Multipart(ctx, fresh); err != nil {
		t.Errorf("fresh upload pruned: %v", err)
	}
	if f := files(t, dir); len(f) != 1 || !strings.HasSuffix(f[0], fresh+"/upload.json") {
		t.Errorf("files left: %v", f)
	}
}

// A private area holds files the public key space cannot reach: the
// parent store neither lists nor opens them, and a view's keys stay inside
// its area.
func TestArtifactStorePrivateArea(t *testing.T) {
	s, dir := newStore(t)
	ctx := context.Background()
	data := s.Private("data")
	put(t, data, "ws/fraud/u1/train.csv", "a,b\n1,2\n")
	put(t, s, "ws/1/r/artifacts/x", "x")
	if got := get(t, data, "ws/fraud/u1/train.csv"); got != "a,b\n1,2\n" {
		t.Fatalf("read %q", got)
	}
	if got := files(t, dir); !reflect.DeepEqual(got, []string{".plinth-data/ws/fraud/u1/train.csv", "ws/1/r/artifacts/x"}) {
		t.Fatalf("files on disk: %v", got)
	}
	top, err := s.List(ctx, "")
	if err != nil || len(top) != 1 || top[0].Path != "ws" {
		t.Fatalf("the store's root lists %v, %v; want only ws", top, err)
	}
	if _, _, err := s.Open(ctx, ".plinth-data/ws/fraud/u1/train.csv"); !fault.Is(err, fault.Invalid) {
		t.Fatalf("opening a private file through the store: %v, want invalid", err)
	}
	entries, err := data.List(ctx, "ws/fraud")
	if err != nil || len(entries) != 1 || entries[0].Path != "u1" || !entries[0].IsDir {
		t.Fatalf("the view lists %v, %v", entries, err)
	}
	if _, _, err := data.Open(ctx, "../1/r/artifacts/x"); !fault.Is(err, fault.Invalid) {
		t.Fatalf("escaping the area: %v, want invalid", err)
	}
	_, _, err = data.Open(ctx, "ws/fraud/u1/missing.csv")
	if fe, ok := fault.As(err); !ok || fe.Kind != fault.NotFound || strings.Contains(fe.Message, ReservedPrefix) {
		t.Fatalf("a missing private file: %v (want not found, without the internal prefix)", err)
	}
	if err := data.Close(); err != nil {
		t.Fatal(err)
	}
	if err := data.Delete(ctx, "ws"); err != nil {
		t.Fatalf("deleting through the view after closing it (a no-op): %v", err)
	}
	if got := files(t, dir); !reflect.DeepEqual(got, []string{"ws/1/r/artifacts/x"}) {
		t.Fatalf("after deleting the area's ws: %v", got)
	}
}
