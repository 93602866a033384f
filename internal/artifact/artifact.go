// Package artifact stores run artifacts and data files in blob storage
// (local disk, S3, Azure Blob) through gocloud.dev/blob, streaming every
// byte.
//
// Keys are relative, slash-separated paths checked by CleanKey. Writes are
// atomic from a reader's point of view: a reader sees the old blob or the
// whole new one, and a failed or aborted write leaves nothing behind (the
// drivers write to a temporary file, a pending multipart upload or
// uncommitted blocks, and commit on Close). Large uploads may also arrive
// in parts (CreateMultipart, PutPart, CompleteMultipart), kept as
// temporary blobs under ReservedPrefix until they are joined.
package artifact

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/gcerrors"

	"github.com/plinth-dev/plinth/internal/fault"
)

// Store reads and writes artifacts in one bucket.
type Store struct {
	bucket *blob.Bucket
	// dir is the root directory of a local-disk store, "" otherwise.
	dir string
	// now is the clock, a seam for tests.
	now func() time.Time
	// root prefixes every key of a view made by Private; "" for the
	// store itself.
	root string
	// view marks a Private view, which shares its parent's bucket.
	view bool
	// abortsCleanly is set for drivers that never commit a write whose
	// reader failed (S3, Azure); see write.
	abortsCleanly bool
}

// Private returns a view of the part of the store named area, under
// ReservedPrefix, where callers' keys are relative to that area. The
// artifact routes can never name keys there (CleanKey refuses the reserved
// prefix), so domains keep files in it that users must not overwrite, such
// as the immutable files of data asset versions. The view shares the
// store's bucket: closing it does nothing, closing the store closes both.
func (s *Store) Private(area string) *Store {
	v := *s
	v.root, v.view = s.root+ReservedPrefix+area+"/", true
	return &v
}

// Entry is one item of a listing.
type Entry struct {
	// Path is the entry's name relative to the listed directory (what
	// MLflow's list-artifacts answers; the client joins it to the path it
	// asked for).
	Path  string
	IsDir bool
	// Size is the file size in bytes; 0 for directories.
	Size int64
}

// Open opens the store a URL names:
//
//	file:///abs/dir        a directory on local disk, created if missing
//	/abs/dir, rel/dir      the same, as a plain path
//	s3://bucket?region=r   an S3 (or S3-compatible) bucket
//	azblob://container     an Azure Blob Storage container
//
// Cloud credentials come from the environment in the usual way for each
// cloud (see gocloud.dev/blob/s3blob and azureblob).
func Open(ctx context.Context, rawURL string) (*Store, error) {
	if strings.TrimSpace(rawURL) == "" {
		return nil, errors.New("artifact store: no location given (want a directory, file:///dir, s3://bucket or azblob://container)")
	}
	if !strings.Contains(rawURL, "://") {
		return openDir(rawURL)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("artifact store %q: %w", rawURL, err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("artifact store %q: a file URL names a local directory (file:///abs/dir), not host %q", rawURL, u.Host)
		}
		if u.RawQuery != "" {
			return nil, fmt.Errorf("artifact store %q: file URLs take no options", rawURL)
		}
		return openDir(u.Path)
	case "s3", "azblob":
		b, err := blob.OpenBucket(ctx, rawURL)
		if err != nil {
			return nil, fmt.Errorf("opening artifact store %s: %w", u.Redacted(), err)
		}
		return FromBucket(b), nil
	default:
		return nil, fmt.Errorf("artifact store %q: unsupported scheme %q (want file, s3 or azblob)", rawURL, u.Scheme)
	}
}

func openDir(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("artifact store %q: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("creating artifact directory: %w", err)
	}
	// Temporary files go next to their targets, not to os.TempDir: the
	// rename that commits a write must not cross file systems (/tmp is
	// often tmpfs). No metadata sidecars: the directory holds only the
	// artifacts themselves.
	b, err := fileblob.OpenBucket(abs, &fileblob.Options{NoTempDir: true, Metadata: fileblob.MetadataDontWrite})
	if err != nil {
		return nil, fmt.Errorf("opening artifact directory %s: %w", abs, err)
	}
	s := FromBucket(b)
	s.dir = abs
	return s, nil
}

// FromBucket wraps an already opened bucket (for example a memblob in a
// test, or a bucket opened with custom options). The store owns it:
// Close closes it.
func FromBucket(b *blob.Bucket) *Store {
	var s3c *s3.Client
	var azc *container.Client
	return &Store{bucket: b, now: time.Now, abortsCleanly: b.As(&s3c) || b.As(&azc)}
}

// Close releases the bucket; on a Private view it does nothing.
func (s *Store) Close() error {
	if s.view {
		return nil
	}
	return s.bucket.Close()
}

// Put stores the bytes of r under key, replacing any blob there, and
// returns how many bytes it stored. r is streamed through buffers of a
// bounded size (a few parts or blocks on S3 and Azure); the blob appears
// only once r has reached EOF and the driver has committed it. If r fails
// or ctx ends first, nothing is stored and the previous blob, if any, is
// unchanged.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	k, err := s.writableKey(key)
	if err != nil {
		return 0, err
	}
	return s.write(ctx, k, sourceReader{r}, nil)
}

// writableKey cleans a key for writing. fileblob cannot store names that
// end in its sidecar suffix, so a local store refuses them up front. No
// store can keep a folder whose name ends in "..": gocloud escapes the
// slash after it ("v1../x" is stored as the one name "v1..__0x2f__x" on
// disk, S3 and Azure alike), so the file would be listed as "v1../x" at
// the folder's level and not at all inside "v1..".
func (s *Store) writableKey(key string) (string, error) {
	k, err := CleanKey(key)
	if err != nil {
		return "", err
	}
	if strings.Contains(k, "../") {
		return "", fault.InvalidField("path", "%s: folder names ending in '..' cannot be stored", clip(key))
	}
	if s.dir != "" && strings.HasSuffix(k, ".attrs") {
		return "", fault.InvalidField("path", "%s: names ending in .attrs cannot be stored on a local-disk artifact store", clip(key))
	}
	return s.root + k, nil
}

// readError marks a failure of the caller's reader, as opposed to the
// store's.
type readError struct{ err error }

func (e readError) Error() string { return e.err.Error() }
func (e readError) Unwrap() error { return e.err }

type sourceReader struct{ r io.Reader }

func (s sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = readError{err}
	}
	return n, err
}

// abortGrace is how long a write to S3 or Azure may go on after its
// caller's context ended, to finish the request in flight and abort the
// upload cleanly (see write).
const abortGrace = 30 * time.Second

// write streams r to key, also into tee when it is not nil, and returns
// how many bytes it read from r. The driver reads r itself (gocloud's
// Upload) through buffers of a bounded size: 32 KiB on local disk; on S3
// the AWS transfer manager's (up to 16 MiB read to choose between one PUT
// and a multipart upload, then 6 parts of 8 MiB); on Azure 5 blocks of
// 8 MiB, mapped outside the Go heap.
//
// A write that fails must leave nothing behind, and how differs by
// driver. fileblob commits on Close unless its context has ended, so a
// failure of r, or the end of ctx, cancels the driver's context at once.
// S3 and Azure commit only after reading r to its end and abort on their
// own when r fails; but the AWS transfer manager aborts its multipart
// upload with the context it was given, so cancelling that context first
// would leave the upload pending, its parts stored (and billed) unseen.
// There the end of ctx makes r fail at its next read instead, and the
// driver's context ends abortGrace later, in case the store hangs.
//
// Wrap a caller's reader in sourceReader so that its failures are told
// apart from the store's; errors of other readers are returned as they
// are.
//
// Writing through blob.Writer instead (NewWriter, Write, Close) is not
// safe on Azure: in gocloud v0.47 the azureblob writer's Close panics on
// a nil pipe when the upload failed first, as it does when a write is
// aborted.
func (s *Store) write(ctx context.Context, key string, r io.Reader, tee io.Writer) (int64, error) {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	src := &uploadSource{ctx: ctx, r: r, tee: tee}
	if !s.abortsCleanly {
		src.onFail = cancel
	}
	stop := context.AfterFunc(ctx, func() {
		if s.abortsCleanly {
			time.AfterFunc(abortGrace, cancel)
		} else {
			cancel()
		}
	})
	defer stop()
	ct := mime.TypeByExtension(path.Ext(key))
	if ct == "" {
		ct = "application/octet-stream"
	}
	err := s.bucket.Upload(wctx, key, src, &blob.WriterOptions{ContentType: ct})
	if src.err != nil {
		var re readError
		if errors.As(src.err, &re) {
			return src.n, fault.Wrap(fault.Invalid, re.err, "upload of %s ended early: nothing was stored", clip(strings.TrimPrefix(key, s.root)))
		}
		if _, ok := fault.As(src.err); ok {
			return src.n, src.err
		}
		return src.n, s.storageError(src.err, "writing", key)
	}
	if err != nil {
		return src.n, s.storageError(err, "writing", key)
	}
	return src.n, nil
}

// uploadSource is what a driver reads an upload from: it counts the
// bytes and copies them into tee; it fails when r fails or ctx ends,
// remembering why and calling onFail (if set) before the driver hears of
// it. Only the driver's one reading goroutine touches it until Upload
// returns.
type uploadSource struct {
	ctx    context.Context
	r      io.Reader
	tee    io.Writer
	onFail func()
	n      int64
	err    error
}

func (u *uploadSource) Read(p []byte) (int, error) {
	if u.err != nil {
		return 0, u.err
	}
	if err := u.ctx.Err(); err != nil {
		return 0, u.fail(err)
	}
	n, err := u.r.Read(p)
	u.n += int64(n)
	if n > 0 && u.tee != nil {
		if _, werr := u.tee.Write(p[:n]); werr != nil && err == nil {
			err = werr
		}
	}
	switch {
	case err == io.EOF:
		// The end of ctx after the last byte still aborts the write.
		if cerr := u.ctx.Err(); cerr != nil {
			return n, u.fail(cerr)
		}
	case err != nil:
		return n, u.fail(err)
	}
	return n, err
}

func (u *uploadSource) fail(err error) error {
	u.err = err
	if u.onFail != nil {
		u.onFail()
	}
	return err
}

// Open returns a reader of the blob at key and its size. The reader also
// implements io.Seeker (so HTTP range requests can be served from it); the
// caller must close it. A missing blob, or a key that names a directory,
// is a fault.NotFound.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	k, err := CleanKey(key)
	if err != nil {
		return nil, 0, err
	}
	k = s.root + k
	r, err := s.bucket.NewReader(ctx, k, nil)
	if err != nil {
		return nil, 0, s.storageError(err, "reading", k)
	}
	return &reader{r: r, size: r.Size()}, r.Size(), nil
}

// reader reads a blob and answers io.EOF at its end by itself: after a
// Seek to the end, gocloud's s3blob asks S3 for the range "bytes=<size>-",
// which S3 refuses (416 InvalidRange) rather than reading nothing.
type reader struct {
	r         *blob.Reader
	size, pos int64
}

func (r *reader) Read(p []byte) (int, error) {
	if r.pos >= r.size {
		return 0, io.EOF
	}
	n, err := r.r.Read(p)
	r.pos += int64(n)
	return n, err
}

func (r *reader) Seek(offset int64, whence int) (int64, error) {
	pos, err := r.r.Seek(offset, whence)
	if err == nil {
		r.pos = pos
	}
	return pos, err
}

func (r *reader) Close() error { return r.r.Close() }

// tempFileRE matches the names fileblob gives its in-flight temporary files
// ("<name>.<hex nanoseconds>.tmp").
var tempFileRE = regexp.MustCompile(`\.[0-9a-f]{8,16}\.tmp$`)

// List returns the files and directories directly under prefix ("" for the
// root), sorted by name. A prefix that names a file or nothing at all has
// no entries.
func (s *Store) List(ctx context.Context, prefix string) ([]Entry, error) {
	p := s.root
	if prefix != "" {
		k, err := CleanKey(prefix)
		if err != nil {
			return nil, err
		}
		p = s.root + k + "/"
	}
	out := []Entry{}
	it := s.bucket.List(&blob.ListOptions{Prefix: p, Delimiter: "/"})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, s.storageError(err, "listing", prefix)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(obj.Key, p), "/")
		switch {
		case name == "":
			// A directory marker object ("dir/") of some S3 tools.
			continue
		case p == "" && strings.HasPrefix(name, ReservedPrefix):
			continue
		case s.dir != "" && !obj.IsDir && tempFileRE.MatchString(name):
			continue
		}
		e := Entry{Path: name, IsDir: obj.IsDir}
		if !obj.IsDir {
			e.Size = obj.Size
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// Delete removes the blob at key and everything under key as a directory.
// Deleting what does not exist is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	k, err := CleanKey(key)
	if err != nil {
		return err
	}
	k = s.root + k
	// Exists is false for a directory on local disk, where Delete would
	// fail on it.
	exists, err := s.bucket.Exists(ctx, k)
	if err != nil {
		return s.storageError(err, "deleting", k)
	}
	if exists {
		if err := s.bucket.Delete(ctx, k); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
			return s.storageError(err, "deleting", k)
		}
	}
	return s.deletePrefix(ctx, k+"/")
}

// deletePrefix removes every blob whose key starts with prefix (which ends
// in "/"), then, on local disk, the directories they leave empty.
func (s *Store) deletePrefix(ctx context.Context, prefix string) error {
	it := s.bucket.List(&blob.ListOptions{Prefix: prefix})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return s.storageError(err, "listing", prefix)
		}
		if obj.IsDir {
			continue
		}
		if err := s.bucket.Delete(ctx, obj.Key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
			return s.storageError(err, "deleting", obj.Key)
		}
	}
	if s.dir != "" {
		removeEmptyDirs(filepath.Join(s.dir, filepath.FromSlash(strings.TrimSuffix(prefix, "/"))))
	}
	return nil
}

// removeEmptyDirs removes dir and the directories below it that hold no
// files, deepest first. Best effort: a directory that gained a file in the
// meantime simply stays.
func removeEmptyDirs(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			removeEmptyDirs(filepath.Join(dir, e.Name()))
		}
	}
	_ = os.Remove(dir) // fails, harmlessly, unless empty
}

// storageError turns a driver error into a fault where the caller can act
// on it, and wraps it otherwise.
func (s *Store) storageError(err error, verb, key string) error {
	key = strings.TrimPrefix(key, s.root)
	if bloberror.HasCode(err, bloberror.InvalidBlockList) {
		// Azure keeps one list of uncommitted blocks a blob: when two
		// writes of the same blob in blocks (above 8 MiB) race, the first
		// to commit drops the other's blocks, and that one fails.
		return fault.Wrap(fault.Unavailable, err, "artifact %s was written by another request at the same time; retry %s it", clip(key), verb)
	}
	switch gcerrors.Code(err) {
	case gcerrors.NotFound:
		return fault.Wrap(fault.NotFound, err, "artifact %s does not exist", clip(key))
	case gcerrors.InvalidArgument:
		return fault.Wrap(fault.Invalid, err, "artifact path %s is not valid for this store", clip(key))
	case gcerrors.Canceled, gcerrors.DeadlineExceeded:
		return fault.Wrap(fault.Unavailable, err, "%s artifact %s was interrupted", verb, clip(key))
	case gcerrors.ResourceExhausted:
		return fault.Wrap(fault.ResourceExhausted, err, "artifact store is busy; retry %s %s later", verb, clip(key))
	}
	return fmt.Errorf("%s artifact %s: %w", verb, key, err)
}

// Download copies the artifact at key to the local directory dir: a file
// to dir/<its name>, a folder's files under dir. It returns the path a
// program should be given (the file, or dir).
func (s *Store) Download(ctx context.Context, key, dir string) (string, error) {
	if r, _, err := s.Open(ctx, key); err == nil {
		defer r.Close()
		target := filepath.Join(dir, path.Base(key))
		return target, WriteFile(target, r)
	}
	found := false
	var walk func(prefix, into string) error
	walk = func(prefix, into string) error {
		entries, err := s.List(ctx, prefix)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.IsDir {
				if err := walk(prefix+"/"+e.Path, filepath.Join(into, e.Path)); err != nil {
					return err
				}
				continue
			}
			r, _, err := s.Open(ctx, prefix+"/"+e.Path)
			if err != nil {
				return err
			}
			err = WriteFile(filepath.Join(into, e.Path), r)
			r.Close()
			if err != nil {
				return err
			}
			found = true
		}
		return nil
	}
	if err := walk(key, dir); err != nil {
		return "", err
	}
	if !found {
		return "", fault.New(fault.NotFound, "no artifacts at %s", clip(key))
	}
	return dir, nil
}

// WriteFile streams r into a local file, making its directory.
func WriteFile(target string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	out, err := os.Create(target)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
