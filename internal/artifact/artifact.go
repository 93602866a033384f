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
}

// Private returns a view of the part of the store named area, under
// ReservedPrefix, where callers' keys are relative to that area. The
// artifact routes can never name keys there (CleanKey refuses the reserved
// prefix), so domains keep files in it that users must not overwrite, such
// as the immutable files of data asset versions. The view shares the
// store's bucket: closing it does nothing, closing the store closes both.
func (s *Store) Private(area string) *Store {
	return &Store{bucket: s.bucket, dir: s.dir, now: s.now, root: s.root + ReservedPrefix + area + "/", view: true}
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
	return &Store{bucket: b, now: time.Now}
}

// Close releases the bucket; on a Private view it does nothing.
func (s *Store) Close() error {
	if s.view {
		return nil
	}
	return s.bucket.Close()
}

// Put stores the bytes of r under key, replacing any blob there, and
// returns how many bytes it stored. r is streamed through a fixed-size
// buffer; the blob appears only once r has reached EOF and the driver has
// committed it. If r fails or ctx ends first, nothing is stored and the
// previous blob, if any, is unchanged.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	k, err := s.writableKey(key)
	if err != nil {
		return 0, err
	}
	return s.write(ctx, k, sourceReader{r}, nil)
}

// writableKey cleans a key for writing. fileblob cannot store names that
// end in its sidecar suffix, so a local store refuses them up front.
func (s *Store) writableKey(key string) (string, error) {
	k, err := CleanKey(key)
	if err != nil {
		return "", err
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

// write streams r to key through a cancellable writer, also into tee when
// it is not nil. Cancelling the writer's context before Close is how
// gocloud aborts a write. Wrap a caller's reader in sourceReader so that
// its failures are told apart from the store's; errors of other readers
// are returned as they are.
func (s *Store) write(ctx context.Context, key string, r io.Reader, tee io.Writer) (int64, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ct := mime.TypeByExtension(path.Ext(key))
	if ct == "" {
		ct = "application/octet-stream"
	}
	w, err := s.bucket.NewWriter(wctx, key, &blob.WriterOptions{ContentType: ct})
	if err != nil {
		return 0, s.storageError(err, "writing", key)
	}
	var dst io.Writer = w
	if tee != nil {
		dst = io.MultiWriter(w, tee)
	}
	buf := make([]byte, 256<<10)
	n, err := io.CopyBuffer(onlyWriter{dst}, onlyReader{r}, buf)
	if err != nil {
		cancel()
		_ = w.Close()
		var re readError
		if errors.As(err, &re) {
			return n, fault.Wrap(fault.Invalid, re.err, "upload of %s ended early: nothing was stored", clip(key))
		}
		if _, ok := fault.As(err); ok {
			return n, err
		}
		return n, s.storageError(err, "writing", key)
	}
	if err := w.Close(); err != nil {
		return n, s.storageError(err, "writing", key)
	}
	return n, nil
}

// onlyReader hides WriteTo, for the same reason.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// onlyWriter hides ReadFrom so that io.CopyBuffer uses the given buffer
// and the source's read errors stay recognisable.
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

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
	return r, r.Size(), nil
}

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
