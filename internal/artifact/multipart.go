package artifact

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/plinth-dev/plinth/internal/fault"
)

// MaxParts is the most parts one multipart upload may have (S3's limit).
const MaxParts = 10000

// multipartRoot holds pending uploads: <root><uploadID>/upload.json names
// the target key, <root><uploadID>/<part, 5 digits> holds each part.
const multipartRoot = ReservedPrefix + "multipart/"

// Part identifies one uploaded part when completing an upload.
type Part struct {
	Number int
	// ETag is what PutPart returned for this part.
	ETag string
}

// Upload describes a pending multipart upload.
type Upload struct {
	ID      string    `json:"-"`
	Key     string    `json:"key"`
	Created time.Time `json:"created"`
}

func uploadDir(id string) string           { return multipartRoot + id + "/" }
func manifestKey(id string) string         { return uploadDir(id) + "upload.json" }
func partKey(id string, number int) string { return fmt.Sprintf("%s%05d", uploadDir(id), number) }

// validUploadID reports whether id has the shape CreateMultipart gives
// ids (32 lower-case hex digits), so no id can reach outside its directory.
func validUploadID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')) {
			return false
		}
	}
	return true
}

func noSuchUpload(id string) error {
	return fault.New(fault.NotFound, "multipart upload %s does not exist (it was completed, aborted or never created)", clip(id))
}

// CreateMultipart starts a multipart upload to key and returns its id: 128
// random bits, so that the id can serve as the credential for uploading
// parts (as a presigned URL does on S3).
func (s *Store) CreateMultipart(ctx context.Context, key string) (string, error) {
	k, err := s.writableKey(key)
	if err != nil {
		return "", err
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("making upload id: %w", err)
	}
	id := hex.EncodeToString(b[:])
	manifest, err := json.Marshal(Upload{Key: k, Created: s.now().UTC()})
	if err != nil {
		return "", err
	}
	if _, err := s.write(ctx, manifestKey(id), strings.NewReader(string(manifest)), nil); err != nil {
		return "", err
	}
	return id, nil
}

// Multipart returns the pending upload with this id, or fault.NotFound.
// Each store sees only the uploads it started: a Private view those into
// its area, the store none of any area's.
func (s *Store) Multipart(ctx context.Context, id string) (Upload, error) {
	u, err := s.manifest(ctx, id)
	if err != nil {
		return Upload{}, err
	}
	if !s.owns(u.Key) {
		return Upload{}, noSuchUpload(id)
	}
	u.Key = strings.TrimPrefix(u.Key, s.root)
	return u, nil
}

// owns reports whether a key of the bucket (as an upload's manifest
// records it) lies in this store's part of the key space.
func (s *Store) owns(bucketKey string) bool {
	rel, ok := strings.CutPrefix(bucketKey, s.root)
	if !ok {
		return false
	}
	_, err := CleanKey(rel)
	return err == nil
}

// manifest reads the record of an upload, whichever store started it;
// its Key is the bucket's key.
func (s *Store) manifest(ctx context.Context, id string) (Upload, error) {
	if !validUploadID(id) {
		return Upload{}, noSuchUpload(id)
	}
	r, err := s.bucket.NewReader(ctx, manifestKey(id), nil)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return Upload{}, noSuchUpload(id)
	}
	if err != nil {
		return Upload{}, s.storageError(err, "reading", manifestKey(id))
	}
	defer r.Close()
	var u Upload
	if err := json.NewDecoder(io.LimitReader(r, 64<<10)).Decode(&u); err != nil {
		return Upload{}, fmt.Errorf("reading multipart upload %s: %w", id, err)
	}
	u.ID = id
	return u, nil
}

// PutPart stores part number part (1 to MaxParts) of an upload, replacing
// an earlier upload of the same part, and returns its ETag: the quoted hex
// MD5 of its bytes, as S3 answers.
func (s *Store) PutPart(ctx context.Context, uploadID string, part int, r io.Reader) (string, error) {
	if part < 1 || part > MaxParts {
		return "", fault.InvalidField("part_number", "must be from 1 to %d, not %d", MaxParts, part)
	}
	if _, err := s.Multipart(ctx, uploadID); err != nil {
		return "", err
	}
	h := md5.New()
	if _, err := s.write(ctx, partKey(uploadID, part), sourceReader{r}, h); err != nil {
		return "", err
	}
	return `"` + hex.EncodeToString(h.Sum(nil)) + `"`, nil
}

// CompleteMultipart joins the listed parts, in order, into the upload's
// key, streaming them one after another, and ends the upload. Parts must be
// listed in increasing order with the ETags PutPart returned; a missing
// part or a wrong ETag fails the whole completion and leaves the key as it
// was (the upload stays pending, so the caller may fix it and retry).
func (s *Store) CompleteMultipart(ctx context.Context, uploadID string, parts []Part) error {
	u, err := s.Multipart(ctx, uploadID)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return fault.InvalidField("parts", "must list at least one part")
	}
	for i, p := range parts {
		if p.Number < 1 || p.Number > MaxParts {
			return fault.InvalidField("parts", "part number %d is not from 1 to %d", p.Number, MaxParts)
		}
		if i > 0 && p.Number <= parts[i-1].Number {
			return fault.InvalidField("parts", "must be in increasing order of part number (%d follows %d)", p.Number, parts[i-1].Number)
		}
		if normalETag(p.ETag) == "" {
			return fault.InvalidField("parts", "part %d has no etag", p.Number)
		}
	}
	pr := &partsReader{ctx: ctx, s: s, id: uploadID, parts: parts}
	defer pr.close()
	if _, err := s.write(ctx, s.root+u.Key, pr, nil); err != nil {
		return err
	}
	// The artifact is in place; leftovers of the upload are only clutter,
	// which PruneMultipart removes if this fails.
	_ = s.deletePrefix(ctx, uploadDir(uploadID))
	return nil
}

// AbortMultipart ends an upload and deletes its parts. Aborting an upload
// that no longer exists, or that another store started (see Multipart),
// is not an error; the latter is left alone.
func (s *Store) AbortMultipart(ctx context.Context, uploadID string) error {
	if !validUploadID(uploadID) {
		return fault.InvalidField("upload_id", "%s is not an upload id", clip(uploadID))
	}
	u, err := s.manifest(ctx, uploadID)
	switch {
	case err == nil && !s.owns(u.Key):
		return nil
	case err != nil && !fault.Is(err, fault.NotFound):
		return err
	}
	// Without its record, an upload's leftover parts go too.
	return s.deletePrefix(ctx, uploadDir(uploadID))
}

// PruneMultipart aborts the uploads created before before (and removes
// parts left without an upload, once they are that old), those of every
// store that shares the bucket. It returns how many it removed; run it
// now and then, since clients do not always abort what they abandon.
func (s *Store) PruneMultipart(ctx context.Context, before time.Time) (int, error) {
	var ids []string
	it := s.bucket.List(&blob.ListOptions{Prefix: multipartRoot, Delimiter: "/"})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, s.storageError(err, "listing", multipartRoot)
		}
		if id := strings.TrimSuffix(strings.TrimPrefix(obj.Key, multipartRoot), "/"); obj.IsDir && validUploadID(id) {
			ids = append(ids, id)
		}
	}
	n := 0
	for _, id := range ids {
		u, err := s.manifest(ctx, id)
		stale := false
		switch {
		case err == nil:
			stale = u.Created.Before(before)
		case fault.Is(err, fault.NotFound):
			stale, err = s.olderThan(ctx, uploadDir(id), before)
			if err != nil {
				return n, err
			}
		default:
			return n, err
		}
		if !stale {
			continue
		}
		if err := s.deletePrefix(ctx, uploadDir(id)); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// olderThan reports whether every blob under prefix was last modified
// before t.
func (s *Store) olderThan(ctx context.Context, prefix string, t time.Time) (bool, error) {
	it := s.bucket.List(&blob.ListOptions{Prefix: prefix})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, s.storageError(err, "listing", prefix)
		}
		if !obj.ModTime.Before(t) {
			return false, nil
		}
	}
}

func normalETag(e string) string {
	e = strings.TrimSpace(e)
	e = strings.TrimPrefix(e, "W/")
	return strings.ToLower(strings.Trim(e, `"`))
}

// partsReader reads the listed parts one after another and checks each
// part's MD5 against its ETag as it reaches the part's end, so a
// completion never commits bytes that differ from what was uploaded.
type partsReader struct {
	ctx   context.Context
	s     *Store
	id    string
	parts []Part
	i     int
	cur   *blob.Reader
	h     hash.Hash
}

func (p *partsReader) Read(b []byte) (int, error) {
	for {
		if p.cur == nil {
			if p.i == len(p.parts) {
				return 0, io.EOF
			}
			number := p.parts[p.i].Number
			r, err := p.s.bucket.NewReader(p.ctx, partKey(p.id, number), nil)
			if gcerrors.Code(err) == gcerrors.NotFound {
				return 0, fault.InvalidField("parts", "part %d of upload %s was never uploaded", number, p.id)
			}
			if err != nil {
				return 0, p.s.storageError(err, "reading", partKey(p.id, number))
			}
			p.cur, p.h = r, md5.New()
		}
		n, err := p.cur.Read(b)
		p.h.Write(b[:n])
		if errors.Is(err, io.EOF) {
			part := p.parts[p.i]
			_ = p.cur.Close()
			p.cur = nil
			p.i++
			if got := hex.EncodeToString(p.h.Sum(nil)); got != normalETag(part.ETag) {
				return n, fault.InvalidField("parts", "part %d: etag %s does not match the uploaded part (\"%s\")", part.Number, clip(part.ETag), got)
			}
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (p *partsReader) close() {
	if p.cur != nil {
		_ = p.cur.Close()
	}
}
