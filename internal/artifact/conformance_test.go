package artifact

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/plinth-dev/plinth/internal/artifact/blobtest"
	"github.com/plinth-dev/plinth/internal/fault"
)

// backend starts what one kind of store needs for a test and returns how
// to open a fresh, empty store on it.
type backend struct {
	name  string
	start func(t *testing.T) func(t *testing.T) *Store
}

// backends are the stores every case of the conformance suite runs on:
// local disk, S3 (a throwaway MinIO) and Azure Blob Storage (a throwaway
// Azurite). The cloud ones skip when their server is not installed (fail
// under PLINTH_TEST_REQUIRE_ALL=1; see package blobtest).
var backends = []backend{
	{"file", func(t *testing.T) func(t *testing.T) *Store {
		return func(t *testing.T) *Store { s, _ := newStore(t); return s }
	}},
	{"s3", func(t *testing.T) func(t *testing.T) *Store {
		srv := blobtest.StartS3(t)
		return func(t *testing.T) *Store {
			u := srv.NewBucket(t)
			s := openURL(t, u)
			s3Buckets.Store(s, strings.TrimPrefix(u[:strings.IndexByte(u, '?')], "s3://"))
			return s
		}
	}},
	{"azure", func(t *testing.T) func(t *testing.T) *Store {
		srv := blobtest.StartAzure(t)
		return func(t *testing.T) *Store { return openURL(t, srv.NewBucket(t)) }
	}},
}

// s3Buckets maps the stores on S3 to their bucket names.
var s3Buckets sync.Map

// noPendingS3Uploads checks, on S3, that no multipart upload of the
// driver's was left pending: an aborted write must abort its upload, or
// its parts stay stored (and billed) unseen.
func noPendingS3Uploads(t *testing.T, s *Store) {
	t.Helper()
	name, ok := s3Buckets.Load(s)
	if !ok {
		return
	}
	var c *s3.Client
	if !s.bucket.As(&c) {
		t.Fatal("the s3 bucket exposes no client")
	}
	bucket := name.(string)
	out, err := c.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: &bucket})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range out.Uploads {
		t.Errorf("multipart upload of %s left pending", *u.Key)
	}
}

// openURL opens a store through Open, as the server does with its
// --artifacts URL.
func openURL(t *testing.T, u string) *Store {
	t.Helper()
	s, err := Open(context.Background(), u)
	if err != nil {
		t.Fatalf("Open(%q): %v", u, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// conformance is the suite: each case gets a fresh, empty store.
var conformance = []struct {
	name string
	fn   func(t *testing.T, s *Store)
}{
	{"PutOpen", testPutOpen},
	{"Ranges", testRanges},
	{"List", testList},
	{"ListPages", testListPages},
	{"Delete", testDelete},
	{"Keys", testKeys},
	{"Traversal", testTraversal},
	{"FailedPut", testFailedPut},
	{"ConcurrentPut", testConcurrentPut},
	{"ConcurrentLargePut", testConcurrentLargePut},
	{"StreamedPut", testStreamedPut},
	{"Multipart", testMultipart},
	{"MultipartAbort", testMultipartAbort},
	{"PruneMultipart", testPruneMultipart},
	{"PrivateArea", testPrivateArea},
	{"Download", testDownload},
	{"DriverCopy", testDriverCopy},
}

// TestArtifactConformance runs the suite on every backend: the store must
// behave the same on local disk, S3 and Azure Blob Storage.
func TestArtifactConformance(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			fresh := b.start(t)
			for _, c := range conformance {
				t.Run(c.name, func(t *testing.T) { c.fn(t, fresh(t)) })
			}
		})
	}
}

// rawKeys lists every blob in the store's bucket, reserved ones included,
// sorted: what is really stored, on any backend.
func rawKeys(t *testing.T, s *Store) []string {
	t.Helper()
	out := []string{}
	it := s.bucket.List(nil)
	for {
		obj, err := it.Next(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("listing the bucket: %v", err)
		}
		if !obj.IsDir {
			out = append(out, obj.Key)
		}
	}
	sort.Strings(out)
	return out
}

func wantKeys(t *testing.T, s *Store, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	sort.Strings(want)
	if got := rawKeys(t, s); !reflect.DeepEqual(got, want) {
		t.Fatalf("the bucket holds %q, want %q", got, want)
	}
}

func testPutOpen(t *testing.T, s *Store) {
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
	for _, k := range []string{"ws/1/r/artifacts/missing", "ws/1/r", "ws/1/r/", "nothing"} {
		_, _, err := s.Open(ctx, k)
		if fe, ok := fault.As(err); !ok || fe.Kind != fault.NotFound {
			t.Errorf("Open(%q) = %v, want not found", k, err)
		}
	}
	r, size, err := s.Open(ctx, "ws/1/r/artifacts/a.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if size != int64(len("second, longer")) {
		t.Errorf("size %d", size)
	}
	if _, ok := r.(io.ReadSeeker); !ok {
		t.Errorf("the reader (%T) cannot seek, so ranges cannot be served", r)
	}
}

// testRanges reads parts of a blob by seeking, and serves them as HTTP
// range requests the way the download routes do.
func testRanges(t *testing.T, s *Store) {
	ctx := context.Background()
	const size = 3<<20 + 123
	body, err := io.ReadAll(&patternReader{n: size})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "ws/r/data.bin", bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	r, n, err := s.Open(ctx, "ws/r/data.bin")
	if err != nil || n != size {
		t.Fatalf("Open = %d, %v", n, err)
	}
	defer r.Close()
	rs := r.(io.ReadSeeker)
	for _, c := range []struct {
		off    int64
		whence int
		at     int64
		n      int
	}{
		{1 << 20, io.SeekStart, 1 << 20, 1000},
		{-10, io.SeekEnd, size - 10, 10},
		{5, io.SeekStart, 5, 1},
		{100, io.SeekCurrent, 106, 300 << 10},
		{0, io.SeekStart, 0, 16},
		{size, io.SeekStart, size, 0},
	} {
		pos, err := rs.Seek(c.off, c.whence)
		if err != nil || pos != c.at {
			t.Fatalf("Seek(%d, %d) = %d, %v; want %d", c.off, c.whence, pos, err, c.at)
		}
		got := make([]byte, c.n)
		if _, err := io.ReadFull(rs, got); err != nil {
			t.Fatalf("reading %d bytes at %d: %v", c.n, c.at, err)
		}
		if !bytes.Equal(got, body[c.at:c.at+int64(c.n)]) {
			t.Fatalf("bytes at %d differ", c.at)
		}
	}
	if n, err := rs.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read at the end = %d, %v", n, err)
	}

	serve := func(rangeHeader string) *httptest.ResponseRecorder {
		r, _, err := s.Open(ctx, "ws/r/data.bin")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		req := httptest.NewRequest("GET", "/data.bin", nil)
		req.Header.Set("Range", rangeHeader)
		w := httptest.NewRecorder()
		http.ServeContent(w, req, "data.bin", time.Time{}, r.(io.ReadSeeker))
		return w
	}
	if w := serve("bytes=10-19"); w.Code != http.StatusPartialContent || !bytes.Equal(w.Body.Bytes(), body[10:20]) ||
		w.Header().Get("Content-Range") != fmt.Sprintf("bytes 10-19/%d", size) {
		t.Fatalf("range 10-19: %d %q %v", w.Code, w.Body.Bytes(), w.Header())
	}
	if w := serve("bytes=-5"); w.Code != http.StatusPartialContent || !bytes.Equal(w.Body.Bytes(), body[size-5:]) {
		t.Fatalf("suffix range: %d %q", w.Code, w.Body.Bytes())
	}
	if w := serve("bytes=3000000-"); w.Code != http.StatusPartialContent || !bytes.Equal(w.Body.Bytes(), body[3000000:]) {
		t.Fatalf("open range: %d, %d bytes", w.Code, w.Body.Len())
	}
	if w := serve("bytes=0-1,100-101"); w.Code != http.StatusPartialContent ||
		!strings.HasPrefix(w.Header().Get("Content-Type"), "multipart/byteranges") ||
		!bytes.Contains(w.Body.Bytes(), body[100:102]) {
		t.Fatalf("two ranges: %d %v", w.Code, w.Header())
	}
	if w := serve(fmt.Sprintf("bytes=%d-", size+1)); w.Code != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("range past the end: %d", w.Code)
	}
}

func testList(t *testing.T, s *Store) {
	ctx := context.Background()
	put(t, s, "ws/r/a.txt", "aaa")
	put(t, s, "ws/r/dir/b.txt", "b")
	put(t, s, "ws/r/dir/sub/c.txt", "cc")
	put(t, s, "ws/r/dir-x", "dd")
	put(t, s, "ws/r/dir.y", "e")
	put(t, s, "ws/r2/z", "z")
	if _, err := s.CreateMultipart(ctx, "ws/r/big.bin"); err != nil {
		t.Fatal(err)
	}
	put(t, s.Private("data"), "ws/r/hidden", "h")
	cases := []struct {
		prefix string
		want   []Entry
	}{
		{"", []Entry{{Path: "ws", IsDir: true}}},
		{"ws", []Entry{{Path: "r", IsDir: true}, {Path: "r2", IsDir: true}}},
		{"ws/r", []Entry{{Path: "a.txt", Size: 3}, {Path: "dir", IsDir: true}, {Path: "dir-x", Size: 2}, {Path: "dir.y", Size: 1}}},
		{"ws/r/", []Entry{{Path: "a.txt", Size: 3}, {Path: "dir", IsDir: true}, {Path: "dir-x", Size: 2}, {Path: "dir.y", Size: 1}}},
		{"./ws/r", []Entry{{Path: "a.txt", Size: 3}, {Path: "dir", IsDir: true}, {Path: "dir-x", Size: 2}, {Path: "dir.y", Size: 1}}},
		{"ws/r/dir", []Entry{{Path: "b.txt", Size: 1}, {Path: "sub", IsDir: true}}},
		{"ws/r/dir/sub", []Entry{{Path: "c.txt", Size: 2}}},
		{"ws/r/a.txt", []Entry{}},
		{"ws/r/di", []Entry{}},
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
	for _, bad := range []string{"ws/../..", "/ws", ".plinth-data", ".plinth-multipart/x"} {
		if _, err := s.List(ctx, bad); !fault.Is(err, fault.Invalid) {
			t.Errorf("List(%q) = %v, want invalid", bad, err)
		}
	}
}

// testListPages lists and deletes more entries than one page of a cloud
// listing holds (1000), directories among them.
func testListPages(t *testing.T, s *Store) {
	if testing.Short() {
		t.Skip("stores 1010 blobs")
	}
	ctx := context.Background()
	const files, dirs = 1000, 10
	var want []Entry
	var keys []string
	for i := range files {
		name := fmt.Sprintf("f%04d.txt", i)
		want = append(want, Entry{Path: name, Size: int64(len(name))})
		keys = append(keys, name)
	}
	for i := range dirs {
		// Directories sort among and after the files, so some fall on
		// the second page.
		name := fmt.Sprintf("f%04d", i*150)
		if i == dirs-1 {
			name = "zz"
		}
		want = append(want, Entry{Path: name, IsDir: true})
		keys = append(keys, name+"/inner/x.txt")
	}
	sort.Slice(want, func(i, j int) bool { return want[i].Path < want[j].Path })
	work := make(chan string)
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 16 {
		wg.Go(func() {
			for k := range work {
				// Each blob holds its own name, so files' sizes are known.
				name := k[strings.LastIndexByte(k, '/')+1:]
				if _, err := s.Put(ctx, "ws/many/"+k, strings.NewReader(name)); err != nil {
					failed.Store(err)
				}
			}
		})
	}
	for _, k := range keys {
		work <- k
	}
	close(work)
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatal(err)
	}
	got, err := s.List(ctx, "ws/many")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("List returned %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("entry %d is %+v, want %+v", i, got[i], want[i])
		}
	}
	put(t, s, "ws/many-sibling", "keep")
	if err := s.Delete(ctx, "ws/many"); err != nil {
		t.Fatal(err)
	}
	wantKeys(t, s, "ws/many-sibling")
}

func testDelete(t *testing.T, s *Store) {
	ctx := context.Background()
	put(t, s, "ws/1/r/artifacts/a.txt", "a")
	put(t, s, "ws/1/r/artifacts/empty", "")
	put(t, s, "ws/1/r/artifacts/model/MLmodel", "m")
	put(t, s, "ws/1/r/artifacts/model/data/w.bin", "w")
	put(t, s, "ws/1/r/artifacts/model2", "keep")
	put(t, s, "ws/1/r/artifacts/model.txt", "keep")
	for _, k := range []string{"ws/1/r/artifacts/a.txt", "ws/1/r/artifacts/model", "ws/1/r/artifacts/never-there", "ws/1/r/artifacts/model/"} {
		if err := s.Delete(ctx, k); err != nil {
			t.Fatalf("Delete(%q): %v", k, err)
		}
	}
	wantKeys(t, s, "ws/1/r/artifacts/empty", "ws/1/r/artifacts/model.txt", "ws/1/r/artifacts/model2")
	if _, _, err := s.Open(ctx, "ws/1/r/artifacts/a.txt"); !fault.Is(err, fault.NotFound) {
		t.Fatalf("deleted blob opens: %v", err)
	}
	if got, _ := s.List(ctx, "ws/1/r/artifacts"); len(got) != 3 {
		t.Fatalf("listing after deletes: %+v", got)
	}
	if err := s.Delete(ctx, "../ws"); !fault.Is(err, fault.Invalid) {
		t.Errorf("Delete(../ws) = %v", err)
	}
	// A workspace goes as a whole.
	if err := s.Delete(ctx, "ws"); err != nil {
		t.Fatal(err)
	}
	wantKeys(t, s)
}

// testKeys stores keys with characters that each cloud escapes or
// encodes, and reads, lists and deletes them by the same names.
func testKeys(t *testing.T, s *Store) {
	ctx := context.Background()
	keys := []string{
		"sp ace/a b.txt",
		"données/é.csv",
		"100%.txt",
		"x/%zz",
		"q?mark=1&b=2",
		`quo"te`,
		"plus+sign;semi:colon,comma",
		"lit__0x25__eral",
		"a..b/..c",
		"C:x",
		".hidden/x",
		"tilde~star*pipe|caret^",
		"brackets[1]{2}(3)<4>",
		"at@dollar$bang!'quote'",
		"emoji/🙂.bin",
		"trailing space /x ",
		"...",
		"trailing.dot./x.",
		strings.Repeat("long/", 100) + "end",
	}
	for i, k := range keys {
		put(t, s, "ws/"+k, fmt.Sprintf("body %d", i))
	}
	for i, k := range keys {
		if got := get(t, s, "ws/"+k); got != fmt.Sprintf("body %d", i) {
			t.Errorf("%q read back as %q", k, got)
		}
	}
	// Every name is listed as it was given, under its own directory.
	for _, k := range keys {
		dir, name := "ws", k
		if i := strings.LastIndexByte(k, '/'); i >= 0 {
			dir, name = "ws/"+k[:i], k[i+1:]
		}
		entries, err := s.List(ctx, dir)
		if err != nil {
			t.Fatalf("List(%q): %v", dir, err)
		}
		found := false
		for _, e := range entries {
			found = found || (e.Path == name && !e.IsDir)
		}
		if !found {
			t.Errorf("List(%q) = %+v lacks %q", dir, entries, name)
		}
	}
	top, err := s.List(ctx, "ws")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range top {
		if strings.Contains(e.Path, "/") {
			t.Errorf("List(ws) has an entry with a slash in its name: %+v", e)
		}
	}
	for _, k := range keys {
		if err := s.Delete(ctx, "ws/"+k); err != nil {
			t.Errorf("Delete(%q): %v", k, err)
		}
	}
	// gocloud folds a folder named "x.." into its file's name on every
	// backend, so the store refuses such folders.
	for _, k := range []string{"ws/v1../x", "ws/...//x", "ws/a.../b/c"} {
		if _, err := s.Put(ctx, k, strings.NewReader("x")); !fault.Is(err, fault.Invalid) {
			t.Errorf("Put(%q) = %v, want invalid", k, err)
		}
		if _, err := s.CreateMultipart(ctx, k); !fault.Is(err, fault.Invalid) {
			t.Errorf("CreateMultipart(%q) = %v, want invalid", k, err)
		}
	}
	put(t, s, "ws/v1..", "a file may end in '..'")
	wantKeys(t, s, "ws/v1..")
}

func testTraversal(t *testing.T, s *Store) {
	ctx := context.Background()
	put(t, s, "ws/ok", "ok")
	data := s.Private("data")
	put(t, data, "ws/secret", "s")
	for _, k := range []string{"../escape", "%2e%2e/escape", "a/../../escape", "/tmp/escape", `..\escape`, "%2Fescape",
		"a/%252e%252e/%252e%252e/escape", ".plinth-data/ws/secret", ".plinth-multipart/x", "%2eplinth-data/ws/secret", "", ".", "a//b", "a#b", "a\x00b"} {
		if _, err := s.Put(ctx, k, strings.NewReader("x")); !fault.Is(err, fault.Invalid) {
			t.Errorf("Put(%q) = %v, want invalid", k, err)
		}
		if _, err := data.Put(ctx, k, strings.NewReader("x")); !fault.Is(err, fault.Invalid) {
			t.Errorf("Put(%q) in a private area = %v, want invalid", k, err)
		}
		if _, err := s.CreateMultipart(ctx, k); !fault.Is(err, fault.Invalid) {
			t.Errorf("CreateMultipart(%q) = %v, want invalid", k, err)
		}
		if _, _, err := s.Open(ctx, k); !fault.Is(err, fault.Invalid) {
			t.Errorf("Open(%q) = %v, want invalid", k, err)
		}
		if _, _, err := data.Open(ctx, k); !fault.Is(err, fault.Invalid) {
			t.Errorf("Open(%q) in a private area = %v, want invalid", k, err)
		}
		if err := s.Delete(ctx, k); !fault.Is(err, fault.Invalid) {
			t.Errorf("Delete(%q) = %v, want invalid", k, err)
		}
	}
	wantKeys(t, s, ".plinth-data/ws/secret", "ws/ok")
}

func testFailedPut(t *testing.T, s *Store) {
	ctx := context.Background()
	put(t, s, "ws/old.bin", "old")
	// Below and above the size the cloud drivers upload in one request.
	for _, n := range []int{3 << 20, 20 << 20} {
		_, err := s.Put(ctx, "ws/new.bin", &failingReader{n: n})
		if !fault.Is(err, fault.Invalid) || !strings.Contains(err.Error(), "connection reset") {
			t.Fatalf("Put of %d bytes with a failing reader = %v", n, err)
		}
		if _, err := s.Put(ctx, "ws/old.bin", &failingReader{n: n}); err == nil {
			t.Fatal("Put with a failing reader succeeded")
		}
		// A cancelled context aborts the write too.
		cctx, cancel := context.WithCancel(ctx)
		r := &cancelAfter{r: &failingReader{n: 2 * n}, left: n, cancel: cancel}
		if _, err := s.Put(cctx, "ws/old.bin", r); err == nil {
			t.Fatal("Put with a cancelled context succeeded")
		}
	}
	wantKeys(t, s, "ws/old.bin")
	if got := get(t, s, "ws/old.bin"); got != "old" {
		t.Fatalf("old blob changed to %q", got)
	}
	noPendingS3Uploads(t, s)
}

func testConcurrentPut(t *testing.T, s *Store) {
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
	wg.Go(func() {
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
	})
	// Writers of different keys at once, too.
	var writersWG sync.WaitGroup
	for i := range writers {
		writersWG.Go(func() {
			if _, err := s.Put(ctx, "ws/same.bin", bytes.NewReader(bodies[i])); err != nil {
				t.Errorf("writer %d: %v", i, err)
			}
		})
		writersWG.Go(func() {
			if _, err := s.Put(ctx, fmt.Sprintf("ws/own/%d.bin", i), bytes.NewReader(bodies[i])); err != nil {
				t.Errorf("writer %d of its own key: %v", i, err)
			}
		})
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
	want := []string{"ws/same.bin"}
	for i := range writers {
		want = append(want, fmt.Sprintf("ws/own/%d.bin", i))
		if got := get(t, s, fmt.Sprintf("ws/own/%d.bin", i)); got != string(bodies[i]) {
			t.Errorf("ws/own/%d.bin holds another writer's bytes", i)
		}
	}
	wantKeys(t, s, want...)
}

// testConcurrentLargePut races writes of one key that the cloud drivers
// upload in parts or blocks. Each write succeeds or fails as retryable
// (Azure lets only the first block list to commit win), and the blob is
// one writer's whole body.
func testConcurrentLargePut(t *testing.T, s *Store) {
	if testing.Short() {
		t.Skip("writes 60 MiB")
	}
	ctx := context.Background()
	const writers, size = 3, 20 << 20
	var wg sync.WaitGroup
	var ok atomic.Int32
	for i := range writers {
		wg.Go(func() {
			_, err := s.Put(ctx, "ws/same.bin", bytes.NewReader(bytes.Repeat([]byte{byte('a' + i)}, size)))
			switch {
			case err == nil:
				ok.Add(1)
			case fault.Is(err, fault.Unavailable) && strings.Contains(err.Error(), "at the same time; retry"):
				t.Logf("writer %d lost the race (retryable)", i)
			default:
				t.Errorf("writer %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if ok.Load() == 0 {
		t.Fatal("no writer succeeded")
	}
	got := get(t, s, "ws/same.bin")
	if len(got) != size || strings.Count(got, got[:1]) != size {
		t.Fatalf("final blob is not one writer's whole body (%d bytes)", len(got))
	}
	wantKeys(t, s, "ws/same.bin")
	noPendingS3Uploads(t, s)
}

// testStreamedPut stores and reads back a blob larger than what the
// drivers buffer, checking that neither direction holds it all in memory
// (in the Go heap, where Plinth's buffers and S3's are; Azure's are mapped
// outside it). S3 peaks at about 70 MiB whatever the size (see write).
func testStreamedPut(t *testing.T, s *Store) {
	if testing.Short() {
		t.Skip("writes 128 MiB")
	}
	const size = 128 << 20
	ctx := context.Background()
	base := make([]byte, 1<<20)
	rand.Read(base)
	var n int64
	grew := peakHeapGrowth(func() {
		var err error
		n, err = s.Put(ctx, "ws/big.bin", newBlockReader(size, base))
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("%d MiB Put: heap in use grew by at most %d MiB", size>>20, grew>>20)
	if n != size {
		t.Fatalf("Put stored %d bytes", n)
	}
	if grew > size*3/4 {
		t.Errorf("heap in use grew by %d MiB during a %d MiB Put: not streamed", grew>>20, size>>20)
	}
	want := sha256.New()
	io.Copy(want, newBlockReader(size, base))
	var got []byte
	grew = peakHeapGrowth(func() {
		r, sz, err := s.Open(ctx, "ws/big.bin")
		if err != nil || sz != size {
			t.Fatalf("Open = %d, %v", sz, err)
		}
		defer r.Close()
		h := sha256.New()
		if _, err := io.CopyBuffer(h, r, make([]byte, 256<<10)); err != nil {
			t.Fatal(err)
		}
		got = h.Sum(nil)
	})
	t.Logf("%d MiB read: heap in use grew by at most %d MiB", size>>20, grew>>20)
	if !bytes.Equal(got, want.Sum(nil)) {
		t.Fatal("the blob read back differs")
	}
	if grew > size/4 {
		t.Errorf("heap in use grew by %d MiB while reading %d MiB: not streamed", grew>>20, size>>20)
	}
}

// blockReader yields n bytes without holding them: 1 MiB blocks of one
// pattern, each stamped with its number, so that a block out of place
// changes the digest. It is quick under the race detector, unlike a
// byte-by-byte generator.
type blockReader struct {
	n, off    int64
	base, cur []byte
}

func newBlockReader(n int64, base []byte) *blockReader {
	return &blockReader{n: n, base: base, cur: make([]byte, len(base))}
}

func (b *blockReader) Read(p []byte) (int, error) {
	if b.off >= b.n {
		return 0, io.EOF
	}
	bs := int64(len(b.base))
	i := b.off % bs
	if i == 0 {
		copy(b.cur, b.base)
		binary.LittleEndian.PutUint64(b.cur, uint64(b.off/bs))
	}
	k := copy(p, b.cur[i:min(bs, i+b.n-b.off)])
	b.off += int64(k)
	return k, nil
}

// peakHeapGrowth runs fn and returns how far the heap in use rose above
// where it started, sampled every 2ms. The collector runs often meanwhile,
// so that the heap in use follows what is live rather than garbage.
func peakHeapGrowth(fn func()) int64 {
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	defer func() {
		close(done)
		<-sampled
	}()
	fn()
	return int64(peak.Load()) - int64(before.HeapInuse)
}

func testMultipart(t *testing.T, s *Store) {
	ctx := context.Background()
	parts := [][]byte{
		bytes.Repeat([]byte("1"), 6<<20),
		bytes.Repeat([]byte("2"), 200<<10),
		[]byte("tail"),
	}
	id, err := s.CreateMultipart(ctx, "ws/r/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	if !validUploadID(id) {
		t.Fatalf("upload id %q", id)
	}
	u, err := s.Multipart(ctx, id)
	if err != nil || u.Key != "ws/r/big.bin" || u.ID != id {
		t.Fatalf("Multipart = %+v, %v", u, err)
	}
	// Parts may arrive in any order, and again.
	etags := make([]string, len(parts))
	for _, i := range []int{2, 0, 1, 0} {
		etags[i], err = s.PutPart(ctx, id, i+1, bytes.NewReader(parts[i]))
		if err != nil {
			t.Fatal(err)
		}
		if etags[i] != md5ETag(parts[i]) {
			t.Fatalf("part %d etag %s, want %s", i+1, etags[i], md5ETag(parts[i]))
		}
	}
	if got, _ := s.List(ctx, ""); !reflect.DeepEqual(got, []Entry{}) {
		t.Fatalf("root listing shows %+v", got)
	}
	if _, _, err := s.Open(ctx, "ws/r/big.bin"); !fault.Is(err, fault.NotFound) {
		t.Fatalf("artifact visible before completion: %v", err)
	}
	bad := [][]Part{
		nil,
		{{Number: 2, ETag: etags[1]}, {Number: 1, ETag: etags[0]}},
		{{Number: 1, ETag: etags[0]}, {Number: 1, ETag: etags[0]}},
		{{Number: 1, ETag: etags[0]}, {Number: 2, ETag: etags[2]}},
		{{Number: 1, ETag: etags[0]}, {Number: 4, ETag: etags[2]}},
		{{Number: 1, ETag: ""}},
		{{Number: 0, ETag: etags[0]}},
	}
	for _, b := range bad {
		if err := s.CompleteMultipart(ctx, id, b); !fault.Is(err, fault.Invalid) {
			t.Errorf("CompleteMultipart(%+v) = %v, want invalid", b, err)
		}
	}
	if _, _, err := s.Open(ctx, "ws/r/big.bin"); !fault.Is(err, fault.NotFound) {
		t.Fatalf("a failed completion left the artifact: %v", err)
	}
	// Clients send ETags back quoted or not.
	all := []Part{{1, etags[0]}, {2, strings.Trim(etags[1], `"`)}, {3, etags[2]}}
	if err := s.CompleteMultipart(ctx, id, all); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "ws/r/big.bin"); got != string(bytes.Join(parts, nil)) {
		t.Fatalf("joined artifact differs (%d bytes)", len(got))
	}
	if _, err := s.Multipart(ctx, id); !fault.Is(err, fault.NotFound) {
		t.Fatalf("upload still pending after completion: %v", err)
	}
	if err := s.CompleteMultipart(ctx, id, all); !fault.Is(err, fault.NotFound) {
		t.Fatalf("completing twice = %v", err)
	}
	wantKeys(t, s, "ws/r/big.bin")
}

func testMultipartAbort(t *testing.T, s *Store) {
	ctx := context.Background()
	id, err := s.CreateMultipart(ctx, "ws/x.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutPart(ctx, id, 1, strings.NewReader("abc")); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, -1, MaxParts + 1} {
		if _, err := s.PutPart(ctx, id, n, strings.NewReader("x")); !fault.Is(err, fault.Invalid) {
			t.Errorf("PutPart(part %d) = %v", n, err)
		}
	}
	for _, bad := range []string{"", "nope", strings.Repeat("0", 32), "../../../../etc/passwd", strings.Repeat("A", 32)} {
		if _, err := s.PutPart(ctx, bad, 1, strings.NewReader("x")); !fault.Is(err, fault.NotFound) {
			t.Errorf("PutPart(upload %q) = %v", bad, err)
		}
	}
	// A part whose reader fails is not stored.
	if _, err := s.PutPart(ctx, id, 2, &failingReader{n: 10}); err == nil {
		t.Fatal("PutPart with a failing reader succeeded")
	}
	if err := s.CompleteMultipart(ctx, id, []Part{{1, md5ETag([]byte("abc"))}, {2, md5ETag(nil)}}); !fault.Is(err, fault.Invalid) {
		t.Fatalf("completing with a part never stored = %v", err)
	}
	if _, _, err := s.Open(ctx, "ws/x.bin"); !fault.Is(err, fault.NotFound) {
		t.Fatalf("a failed completion left the artifact: %v", err)
	}
	if err := s.AbortMultipart(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := s.AbortMultipart(ctx, id); err != nil {
		t.Fatalf("aborting twice: %v", err)
	}
	if err := s.AbortMultipart(ctx, "../x"); !fault.Is(err, fault.Invalid) {
		t.Fatalf("AbortMultipart(bad id) = %v", err)
	}
	if _, err := s.PutPart(ctx, id, 1, strings.NewReader("abc")); !fault.Is(err, fault.NotFound) {
		t.Fatalf("PutPart after abort = %v", err)
	}
	wantKeys(t, s)
}

func testPruneMultipart(t *testing.T, s *Store) {
	ctx := context.Background()
	// Upload records carry the store's clock; orphaned parts only the
	// backend's modification time, which is the real one.
	wall := time.Now()
	now := wall.Add(-24 * time.Hour)
	s.now = func() time.Time { return now }
	old, err := s.CreateMultipart(ctx, "ws/old.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutPart(ctx, old, 1, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	now = wall.Add(24 * time.Hour)
	fresh, err := s.CreateMultipart(ctx, "ws/fresh.bin")
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := s.CreateMultipart(ctx, "ws/orphan.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutPart(ctx, orphan, 1, strings.NewReader("o")); err != nil {
		t.Fatal(err)
	}
	if err := s.bucket.Delete(ctx, manifestKey(orphan)); err != nil {
		t.Fatal(err)
	}
	n, err := s.PruneMultipart(ctx, wall.Add(-23*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("PruneMultipart = %d, %v", n, err)
	}
	if _, err := s.Multipart(ctx, old); !fault.Is(err, fault.NotFound) {
		t.Errorf("old upload survived: %v", err)
	}
	if _, err := s.Multipart(ctx, fresh); err != nil {
		t.Errorf("fresh upload pruned: %v", err)
	}
	wantKeys(t, s, manifestKey(fresh), partKey(orphan, 1))
	// The orphan's part was written just now.
	if n, err := s.PruneMultipart(ctx, wall.Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("PruneMultipart of a recent orphan = %d, %v", n, err)
	}
	if n, err := s.PruneMultipart(ctx, time.Now().Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("PruneMultipart of an old orphan = %d, %v", n, err)
	}
	wantKeys(t, s, manifestKey(fresh))
}

// A private area holds files the public key space cannot reach: the
// parent store neither lists nor opens them, and a view's keys stay inside
// its area.
func testPrivateArea(t *testing.T, s *Store) {
	ctx := context.Background()
	data := s.Private("data")
	code := s.Private("code")
	put(t, data, "ws/fraud/u1/train.csv", "a,b\n1,2\n")
	put(t, code, "ws/fraud/u1/train.csv", "print(1)")
	put(t, s, "ws/1/r/artifacts/x", "x")
	if got := get(t, data, "ws/fraud/u1/train.csv"); got != "a,b\n1,2\n" {
		t.Fatalf("read %q", got)
	}
	if got := get(t, code, "ws/fraud/u1/train.csv"); got != "print(1)" {
		t.Fatalf("the other area read %q", got)
	}
	wantKeys(t, s, ".plinth-code/ws/fraud/u1/train.csv", ".plinth-data/ws/fraud/u1/train.csv", "ws/1/r/artifacts/x")
	top, err := s.List(ctx, "")
	if err != nil || !reflect.DeepEqual(top, []Entry{{Path: "ws", IsDir: true}}) {
		t.Fatalf("the store's root lists %v, %v; want only ws", top, err)
	}
	if top, err := data.List(ctx, ""); err != nil || !reflect.DeepEqual(top, []Entry{{Path: "ws", IsDir: true}}) {
		t.Fatalf("the area's root lists %v, %v", top, err)
	}
	if got, err := s.List(ctx, "ws/fraud"); err != nil || len(got) != 0 {
		t.Fatalf("the store lists the area's files: %v, %v", got, err)
	}
	if _, _, err := s.Open(ctx, ".plinth-data/ws/fraud/u1/train.csv"); !fault.Is(err, fault.Invalid) {
		t.Fatalf("opening a private file through the store: %v, want invalid", err)
	}
	entries, err := data.List(ctx, "ws/fraud")
	if err != nil || !reflect.DeepEqual(entries, []Entry{{Path: "u1", IsDir: true}}) {
		t.Fatalf("the view lists %v, %v", entries, err)
	}
	if _, _, err := data.Open(ctx, "../1/r/artifacts/x"); !fault.Is(err, fault.Invalid) {
		t.Fatalf("escaping the area: %v, want invalid", err)
	}
	_, _, err = data.Open(ctx, "ws/fraud/u1/missing.csv")
	if fe, ok := fault.As(err); !ok || fe.Kind != fault.NotFound || strings.Contains(fe.Message, ReservedPrefix) {
		t.Fatalf("a missing private file: %v (want not found, without the internal prefix)", err)
	}

	// Multipart uploads stay in the area that started them.
	id, err := data.CreateMultipart(ctx, "ws/fraud/u2/big.csv")
	if err != nil {
		t.Fatal(err)
	}
	etag, err := data.PutPart(ctx, id, 1, strings.NewReader("x,y\n"))
	if err != nil {
		t.Fatal(err)
	}
	if u, err := data.Multipart(ctx, id); err != nil || u.Key != "ws/fraud/u2/big.csv" {
		t.Fatalf("the area's upload: %+v, %v", u, err)
	}
	for _, other := range []*Store{s, code} {
		if _, err := other.Multipart(ctx, id); !fault.Is(err, fault.NotFound) {
			t.Errorf("another view sees the area's upload: %v", err)
		}
		if err := other.CompleteMultipart(ctx, id, []Part{{1, etag}}); !fault.Is(err, fault.NotFound) {
			t.Errorf("another view completes the area's upload: %v", err)
		}
		if _, err := other.PutPart(ctx, id, 2, strings.NewReader("z")); !fault.Is(err, fault.NotFound) {
			t.Errorf("another view adds a part to the area's upload: %v", err)
		}
	}
	sid, err := s.CreateMultipart(ctx, "ws/1/r/artifacts/y")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := data.Multipart(ctx, sid); !fault.Is(err, fault.NotFound) {
		t.Errorf("the area sees the store's upload: %v", err)
	}
	if err := s.AbortMultipart(ctx, sid); err != nil {
		t.Fatal(err)
	}
	if err := data.CompleteMultipart(ctx, id, []Part{{1, etag}}); err != nil {
		t.Fatal(err)
	}
	if got := get(t, data, "ws/fraud/u2/big.csv"); got != "x,y\n" {
		t.Fatalf("completed in the area: %q", got)
	}

	if err := data.Close(); err != nil {
		t.Fatal(err)
	}
	if err := data.Delete(ctx, "ws"); err != nil {
		t.Fatalf("deleting through the view after closing it (a no-op): %v", err)
	}
	wantKeys(t, s, ".plinth-code/ws/fraud/u1/train.csv", "ws/1/r/artifacts/x")
}

func testDownload(t *testing.T, s *Store) {
	ctx := context.Background()
	put(t, s, "ws/r/model/MLmodel", "flavors: {}")
	put(t, s, "ws/r/model/data/w.bin", "weights")
	put(t, s, "ws/r/model.txt", "not in the folder")
	dir := t.TempDir()
	got, err := s.Download(ctx, "ws/r/model/MLmodel", filepath.Join(dir, "one"))
	if err != nil || got != filepath.Join(dir, "one", "MLmodel") {
		t.Fatalf("Download(file) = %q, %v", got, err)
	}
	if b, _ := os.ReadFile(got); string(b) != "flavors: {}" {
		t.Fatalf("downloaded %q", b)
	}
	got, err = s.Download(ctx, "ws/r/model", filepath.Join(dir, "all"))
	if err != nil || got != filepath.Join(dir, "all") {
		t.Fatalf("Download(folder) = %q, %v", got, err)
	}
	for p, want := range map[string]string{"MLmodel": "flavors: {}", "data/w.bin": "weights"} {
		if b, err := os.ReadFile(filepath.Join(got, filepath.FromSlash(p))); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v", p, b, err)
		}
	}
	if _, err := os.Stat(filepath.Join(got, "model.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a sibling of the folder was downloaded: %v", err)
	}
	if _, err := s.Download(ctx, "ws/r/none", filepath.Join(dir, "none")); !fault.Is(err, fault.NotFound) {
		t.Fatalf("Download(nothing) = %v", err)
	}
}

// testDriverCopy checks the bucket's server-side copy, which the store
// does not use yet but the cloud drivers must support before it can.
func testDriverCopy(t *testing.T, s *Store) {
	ctx := context.Background()
	body, _ := io.ReadAll(&patternReader{n: 6 << 20})
	if _, err := s.Put(ctx, "ws/src.bin", bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if err := s.bucket.Copy(ctx, "ws/dst dir/copy.bin", "ws/src.bin", nil); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "ws/dst dir/copy.bin"); got != string(body) {
		t.Fatal("the copy differs")
	}
	err := s.bucket.Copy(ctx, "ws/x", "ws/missing", nil)
	if err == nil {
		t.Fatal("copying a missing blob succeeded")
	}
	if e := s.storageError(err, "copying", "ws/missing"); !fault.Is(e, fault.NotFound) {
		t.Errorf("copying a missing blob: %v, want not found", e)
	}
	attrs, err := s.bucket.Attributes(ctx, "ws/dst dir/copy.bin")
	if err != nil || attrs.Size != int64(len(body)) {
		t.Fatalf("attributes of the copy: %+v, %v", attrs, err)
	}
	wantKeys(t, s, "ws/dst dir/copy.bin", "ws/src.bin")
}
