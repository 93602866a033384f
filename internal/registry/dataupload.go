package registry

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/tracking"
)

// Uploads of data versions.
//
// An upload is a session: the client lists the files (path, size and,
// optionally, SHA-256), sends each file in chunks at increasing offsets,
// and completes the session, which creates the version. Plinth hashes the
// bytes as they arrive and keeps each file's SHA-256 state between
// chunks, so the digest is computed while uploading, survives an
// interrupted upload and is checked against the client's claim. A client
// that lost its connection asks for the session and resumes each file at
// the offset the server reports. Chunks are stored as separate blobs (one
// per request, under a random name so that two racing requests never
// write the same blob); a file of one chunk keeps its blob, a file of
// several is joined into one at completion.

// Upload limits.
const (
	// DataChunkSize is the chunk size the server suggests.
	DataChunkSize = 32 << 20
	// MaxDataChunk bounds one chunk request.
	MaxDataChunk = 64 << 20
	// DataUploadTTL is how long an unfinished upload is kept.
	DataUploadTTL = 7 * 24 * time.Hour
)

// DataUploadInput starts an upload: what the version will be and its
// files. SHA-256s are optional; given, they let the server recognise
// content it already has before any byte is sent, and are checked
// against what arrives.
type DataUploadInput struct {
	Version     string            `json:"version,omitempty"`
	Type        string            `json:"type"`
	Region      string            `json:"region,omitempty"`
	Description string            `json:"description,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	// Origin says where the files came from (host:path), for provenance.
	Origin string     `json:"origin,omitempty"`
	Files  []DataFile `json:"files"`
}

// DataUpload is an upload in progress.
type DataUpload struct {
	ID            string           `json:"id"`
	Name          string           `json:"name"`
	Version       string           `json:"version,omitempty"`
	Type          string           `json:"type"`
	ChunkSize     int64            `json:"chunk_size"`
	TotalBytes    int64            `json:"total_bytes"`
	ReceivedBytes int64            `json:"received_bytes"`
	Files         []DataUploadFile `json:"files"`
	CreatedBy     string           `json:"created_by"`
	CreatedAt     time.Time        `json:"created_at"`
	ExpiresAt     time.Time        `json:"expires_at"`
	spec          DataUploadInput  `json:"-"`
	storageKey    string           `json:"-"`
	parts         map[int][]string `json:"-"`
	claimed       map[int]string   `json:"-"`
}

// DataUploadFile is one file's progress.
type DataUploadFile struct {
	Index    int    `json:"index"`
	Path     string `json:"path"`
	Size     int64  `json:"size"`
	Received int64  `json:"received"`
	Done     bool   `json:"done"`
	SHA256   string `json:"sha256,omitempty"`
}

// DataUploadStart answers a start: the new upload, or, when a version of
// the asset already has exactly these bytes, that version (nothing needs
// sending).
type DataUploadStart struct {
	Upload   *DataUpload  `json:"upload,omitempty"`
	Existing *DataVersion `json:"existing,omitempty"`
}

var emptySHA256 = hex.EncodeToString(sha256.New().Sum(nil))

func randomID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("making an id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// StartDataUpload opens an upload session for a new version of name.
func (s *Service) StartDataUpload(ctx context.Context, ds DataScope, name string, in DataUploadInput) (DataUploadStart, error) {
	if s.dataStore == nil {
		return DataUploadStart{}, fault.New(fault.FailedPrecondition, "this server has no artifact store to upload into")
	}
	if err := ValidDataName(name); err != nil {
		return DataUploadStart{}, err
	}
	if in.Version != "" {
		if err := validDataVersion(in.Version); err != nil {
			return DataUploadStart{}, err
		}
	}
	if err := validDataType(in.Type); err != nil {
		return DataUploadStart{}, err
	}
	if err := validDataMeta(in.Description, in.Tags); err != nil {
		return DataUploadStart{}, err
	}
	if len(in.Origin) > MaxDataPathLength {
		return DataUploadStart{}, fault.InvalidField("origin", "is longer than %d bytes", MaxDataPathLength)
	}
	if err := validFiles(in.Type, in.Files, false); err != nil {
		return DataUploadStart{}, err
	}
	region, err := checkRegion(ds, firstNonEmpty(in.Region, s.storeRegion))
	if err != nil {
		return DataUploadStart{}, err
	}
	if s.storeRegion != "" && region != s.storeRegion {
		return DataUploadStart{}, fault.InvalidField("region", "uploads are stored in region %s, where this server's artifact store is; %q cannot be honoured", s.storeRegion, clipText(in.Region))
	}
	in.Region = region
	if in.Version != "" {
		if _, err := s.dataVersion(ctx, s.db.Read(), ds.Scope, name, in.Version); err == nil {
			return DataUploadStart{}, fault.New(fault.AlreadyExists, "data asset %s already has a version %s; versions are immutable, so give the new one another version", name, in.Version)
		} else if !fault.Is(err, fault.NotFound) {
			return DataUploadStart{}, err
		}
	} else if digest := DataDigest(in.Type, in.Files); digest != "" {
		same, err := s.dataVersions(ctx, s.db.Read(), `v.workspace_id = ? AND v.name = ? AND v.digest = ? AND v.type = ? AND v.digest_verified AND NOT v.archived`,
			[]any{ds.WorkspaceID, name, digest, in.Type}, "v.seq DESC", 1)
		if err != nil {
			return DataUploadStart{}, err
		}
		if len(same) == 1 {
			return DataUploadStart{Existing: &same[0]}, nil
		}
	}
	id, err := randomID()
	if err != nil {
		return DataUploadStart{}, err
	}
	caller := audit.CallerFrom(ctx)
	storageKey := ds.Workspace + "/" + name + "/" + id
	files := in.Files
	in.Files = nil
	spec, _ := json.Marshal(in)
	now := s.now().UTC().Truncate(time.Millisecond)
	// Empty files are complete from the start.
	for i, f := range files {
		if f.Size == 0 {
			if f.SHA256 != "" && f.SHA256 != emptySHA256 {
				return DataUploadStart{}, fault.InvalidField(fmt.Sprintf("files[%d].sha256", i), "is not the SHA-256 of an empty file, yet the size is 0")
			}
			if _, err := s.dataStore.Put(ctx, emptyKey(storageKey, i), strings.NewReader("")); err != nil {
				return DataUploadStart{}, err
			}
		}
	}
	err = s.db.Tx(ctx, func(tx store.Querier) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO data_uploads (id, workspace_id, name, spec, storage_key, created_at, created_by, created_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			id, ds.WorkspaceID, name, string(spec), storageKey, now.UnixMilli(), caller.Principal, caller.KeyID); err != nil {
			return fmt.Errorf("starting upload: %w", err)
		}
		const batch = 200
		for start := 0; start < len(files); start += batch {
			end := min(start+batch, len(files))
			var sb strings.Builder
			sb.WriteString(`INSERT INTO data_upload_files (upload_id, idx, path, size_bytes, sha256, received, done, parts) VALUES `)
			args := make([]any, 0, 8*(end-start))
			for i := start; i < end; i++ {
				if i > start {
					sb.WriteString(", ")
				}
				sb.WriteString("(?, ?, ?, ?, ?, 0, ?, ?)")
				f := files[i]
				sum, parts := f.SHA256, ""
				if f.Size == 0 {
					sum, parts = emptySHA256, emptyKey(storageKey, i)
				}
				args = append(args, id, i, f.Path, f.Size, sum, f.Size == 0, parts)
			}
			if _, err := tx.ExecContext(ctx, sb.String(), args...); err != nil {
				return fmt.Errorf("starting upload: %w", err)
			}
		}
		var total int64
		for _, f := range files {
			total += f.Size
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "data.upload.start", Resource: dataResource(ds.Workspace, name, "") + "/uploads/" + id,
			Workspace: ds.Workspace, Details: map[string]any{"files": len(files), "total_bytes": total, "type": in.Type}})
	})
	if err != nil {
		_ = s.dataStore.Delete(ctx, storageKey)
		return DataUploadStart{}, err
	}
	up, err := s.GetDataUpload(ctx, ds.Scope, name, id)
	if err != nil {
		return DataUploadStart{}, err
	}
	return DataUploadStart{Upload: &up}, nil
}

func emptyKey(storageKey string, index int) string {
	return storageKey + "/" + strconv.Itoa(index) + "/empty"
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// GetDataUpload reports an upload's progress, file by file.
func (s *Service) GetDataUpload(ctx context.Context, sc tracking.Scope, name, id string) (DataUpload, error) {
	return s.dataUpload(ctx, s.db.Read(), sc, name, id)
}

func (s *Service) dataUpload(ctx context.Context, q store.Querier, sc tracking.Scope, name, id string) (DataUpload, error) {
	up := DataUpload{ID: id, Name: name, ChunkSize: DataChunkSize, parts: map[int][]string{}, claimed: map[int]string{}}
	var spec string
	var created int64
	err := q.QueryRowContext(ctx, `SELECT spec, storage_key, created_at, created_by FROM data_uploads WHERE id = ? AND workspace_id = ? AND name = ?`,
		id, sc.WorkspaceID, name).Scan(&spec, &up.storageKey, &created, &up.CreatedBy)
	if errNoRows(err) {
		return up, fault.New(fault.NotFound, "data asset %s has no upload %s in workspace %s (it was completed, aborted, expired or never started)", clipText(name), clipText(id), sc.Workspace)
	}
	if err != nil {
		return up, fmt.Errorf("reading upload %s: %w", id, err)
	}
	if err := json.Unmarshal([]byte(spec), &up.spec); err != nil {
		return up, fmt.Errorf("reading upload %s: %w", id, err)
	}
	up.Version, up.Type = up.spec.Version, up.spec.Type
	up.CreatedAt = time.UnixMilli(created).UTC()
	up.ExpiresAt = up.CreatedAt.Add(DataUploadTTL)
	rows, err := q.QueryContext(ctx, `SELECT idx, path, size_bytes, sha256, received, done, parts FROM data_upload_files WHERE upload_id = ? ORDER BY idx`, id)
	if err != nil {
		return up, err
	}
	defer rows.Close()
	up.Files = []DataUploadFile{}
	for rows.Next() {
		var f DataUploadFile
		var parts string
		if err := rows.Scan(&f.Index, &f.Path, &f.Size, &f.SHA256, &f.Received, &f.Done, &parts); err != nil {
			return up, err
		}
		if f.Done {
			f.Received = f.Size
		} else {
			up.claimed[f.Index] = f.SHA256
			f.SHA256 = ""
		}
		up.parts[f.Index] = strings.Fields(parts)
		up.TotalBytes += f.Size
		up.ReceivedBytes += f.Received
		up.Files = append(up.Files, f)
	}
	return up, rows.Err()
}

// PutDataChunk stores bytes of one file of an upload, starting at offset,
// which must be where the file's received bytes end (the client resumes
// from what GetDataUpload reports). It returns the file's progress.
func (s *Service) PutDataChunk(ctx context.Context, sc tracking.Scope, name, id string, index int, offset int64, body io.Reader) (DataUploadFile, error) {
	var f DataUploadFile
	var claimed, state, parts, storageKey string
	err := s.db.Read().QueryRowContext(ctx, `SELECT f.idx, f.path, f.size_bytes, f.sha256, f.received, f.done, f.hash_state, f.parts, u.storage_key
		FROM data_upload_files f JOIN data_uploads u ON u.id = f.upload_id
		WHERE u.id = ? AND u.workspace_id = ? AND u.name = ? AND f.idx = ?`, id, sc.WorkspaceID, name, index).
		Scan(&f.Index, &f.Path, &f.Size, &claimed, &f.Received, &f.Done, &state, &parts, &storageKey)
	if errNoRows(err) {
		if _, uerr := s.GetDataUpload(ctx, sc, name, id); uerr != nil {
			return f, uerr
		}
		return f, fault.InvalidField("index", "upload %s has no file number %d", clipText(id), index)
	}
	if err != nil {
		return f, fmt.Errorf("reading upload %s: %w", id, err)
	}
	if f.Done {
		if offset == f.Size {
			f.Received, f.SHA256 = f.Size, claimed
			return f, nil
		}
		// A retry of a chunk whose answer was lost: say where the file
		// stands, as for any other offset mismatch.
		e := fault.New(fault.FailedPrecondition, "file %s of upload %s is already complete (%d bytes)", clipText(f.Path), clipText(id), f.Size)
		e.Details = map[string]any{"received": f.Size}
		return f, e
	}
	if offset != f.Received {
		e := fault.New(fault.FailedPrecondition, "file %s: this chunk starts at byte %d, but %d bytes have been received; resume from byte %d", clipText(f.Path), offset, f.Received, f.Received)
		e.Details = map[string]any{"received": f.Received}
		return f, e
	}
	h := sha256.New()
	if state != "" {
		raw, err := base64.StdEncoding.DecodeString(state)
		if err == nil {
			err = h.(encoding.BinaryUnmarshaler).UnmarshalBinary(raw)
		}
		if err != nil {
			return f, fmt.Errorf("restoring the SHA-256 state of %s: %w", f.Path, err)
		}
	}
	token, err := randomID()
	if err != nil {
		return f, err
	}
	remaining := f.Size - offset
	key := fmt.Sprintf("%s/%d/%d-%s", storageKey, index, offset, token[:12])
	lr := &io.LimitedReader{R: body, N: remaining + 1}
	n, err := s.dataStore.Put(ctx, key, io.TeeReader(lr, h))
	if err != nil {
		return f, err
	}
	discard := func() { _ = s.dataStore.Delete(context.WithoutCancel(ctx), key) }
	if n > remaining {
		discard()
		return f, fault.InvalidField("body", "file %s is declared as %d bytes; this chunk goes past its end (it starts at byte %d and may hold at most %d bytes)", clipText(f.Path), f.Size, offset, remaining)
	}
	if n == 0 {
		discard()
		return f, fault.InvalidField("body", "the chunk for file %s is empty; send bytes from offset %d", clipText(f.Path), offset)
	}
	received := offset + n
	done := received == f.Size
	sum := claimed
	if done {
		got := hex.EncodeToString(h.Sum(nil))
		if claimed != "" && got != claimed {
			// The file changed while it was being sent, or was damaged:
			// none of what arrived can be trusted.
			for _, p := range append(strings.Fields(parts), key) {
				_ = s.dataStore.Delete(context.WithoutCancel(ctx), p)
			}
			if _, err := s.db.Exec(ctx, `UPDATE data_upload_files SET received = 0, hash_state = '', parts = '' WHERE upload_id = ? AND idx = ? AND received = ?`,
				id, index, offset); err != nil {
				return f, err
			}
			return f, fault.InvalidField("body", "file %s: the SHA-256 of the received bytes is %s, not %s as the upload's file list says; the file changed during the upload or was damaged, so its progress was reset: send it again from byte 0",
				clipText(f.Path), got, claimed)
		}
		sum = got
	}
	st, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		discard()
		return f, err
	}
	changedRows, err := s.db.Exec(ctx, `UPDATE data_upload_files SET received = ?, hash_state = ?, parts = ?, done = ?, sha256 = ?
		WHERE upload_id = ? AND idx = ? AND received = ? AND NOT done`,
		received, base64.StdEncoding.EncodeToString(st), strings.TrimSpace(parts+" "+key), done, sum, id, index, offset)
	if err != nil {
		discard()
		return f, fmt.Errorf("recording upload progress: %w", err)
	}
	if changedRows != 1 {
		discard()
		return f, fault.New(fault.FailedPrecondition, "file %s: another request stored this chunk meanwhile; ask for the upload's progress and resume from there", clipText(f.Path))
	}
	f.Received, f.Done = received, done
	if done {
		f.SHA256 = sum
	}
	return f, nil
}

// CompleteDataUpload ends an upload whose files have all arrived and
// creates the version (or, when an active version of the asset has the
// same digest and no version name was asked for, returns that version and
// drops the uploaded copy).
func (s *Service) CompleteDataUpload(ctx context.Context, ds DataScope, name, id string) (DataCreated, error) {
	up, err := s.GetDataUpload(ctx, ds.Scope, name, id)
	if err != nil {
		return DataCreated{}, err
	}
	var missing []string
	for _, f := range up.Files {
		if !f.Done {
			if len(missing) < 5 {
				missing = append(missing, fmt.Sprintf("%s (%d of %d bytes)", clipText(f.Path), f.Received, f.Size))
			} else if len(missing) == 5 {
				missing = append(missing, "...")
			}
		}
	}
	if len(missing) > 0 {
		return DataCreated{}, fault.New(fault.FailedPrecondition, "upload %s is not finished: %s; send the rest, then complete it", clipText(id), strings.Join(missing, ", "))
	}
	files := make([]DataFile, len(up.Files))
	var made []string
	cleanup := func() {
		for _, k := range made {
			_ = s.dataStore.Delete(context.WithoutCancel(ctx), k)
		}
	}
	for i, f := range up.Files {
		parts := up.parts[f.Index]
		key := ""
		switch len(parts) {
		case 0:
			cleanup()
			return DataCreated{}, fmt.Errorf("upload %s: file %s has no stored bytes", id, f.Path)
		case 1:
			key = parts[0]
		default:
			token, err := randomID()
			if err != nil {
				cleanup()
				return DataCreated{}, err
			}
			key = fmt.Sprintf("%s/%d/whole-%s", up.storageKey, f.Index, token[:12])
			n, err := s.dataStore.Put(ctx, key, &chainReader{ctx: ctx, s: s, keys: parts})
			if err != nil {
				cleanup()
				return DataCreated{}, err
			}
			made = append(made, key)
			if n != f.Size {
				cleanup()
				return DataCreated{}, fmt.Errorf("upload %s: joining file %s gave %d bytes, not %d", id, f.Path, n, f.Size)
			}
		}
		files[i] = DataFile{Path: f.Path, Size: f.Size, SHA256: f.SHA256, blobKey: key}
	}
	v := DataVersion{Name: name, Type: up.spec.Type, Storage: StorageUpload, storageKey: up.storageKey, Origin: up.spec.Origin,
		Region: up.spec.Region, Description: up.spec.Description, Tags: up.spec.Tags, DigestVerified: true}
	v.Digest = DataDigest(v.Type, files)
	out, err := s.insertDataVersion(ctx, ds, v, up.spec.Version, files, func(tx store.Querier) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM data_uploads WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fault.New(fault.FailedPrecondition, "upload %s was completed or aborted by another request", clipText(id))
		}
		return nil
	})
	if err != nil {
		cleanup()
		return DataCreated{}, err
	}
	if !out.Created {
		// The same bytes are already a version: this copy is not needed.
		_ = s.dataStore.Delete(context.WithoutCancel(ctx), up.storageKey)
		return out, nil
	}
	// Chunks joined into whole files, and chunks of losing racers, are
	// no longer needed.
	keep := make(map[string]bool, len(files))
	for _, f := range files {
		keep[f.blobKey] = true
	}
	for _, f := range up.Files {
		for _, p := range up.parts[f.Index] {
			if !keep[p] {
				_ = s.dataStore.Delete(context.WithoutCancel(ctx), p)
			}
		}
	}
	return out, nil
}

// chainReader reads blobs one after another, opening each when needed.
type chainReader struct {
	ctx  context.Context
	s    *Service
	keys []string
	cur  io.ReadCloser
}

func (c *chainReader) Read(p []byte) (int, error) {
	for {
		if c.cur == nil {
			if len(c.keys) == 0 {
				return 0, io.EOF
			}
			r, _, err := c.s.dataStore.Open(c.ctx, c.keys[0])
			if err != nil {
				return 0, err
			}
			c.cur, c.keys = r, c.keys[1:]
		}
		n, err := c.cur.Read(p)
		if err == io.EOF {
			c.cur.Close()
			c.cur = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

// AbortDataUpload ends an upload and deletes what it stored.
func (s *Service) AbortDataUpload(ctx context.Context, sc tracking.Scope, name, id string) error {
	up, err := s.GetDataUpload(ctx, sc, name, id)
	if err != nil {
		return err
	}
	err = s.db.Tx(ctx, func(tx store.Querier) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM data_uploads WHERE id = ?`, id); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "data.upload.abort", Resource: dataResource(sc.Workspace, name, "") + "/uploads/" + id, Workspace: sc.Workspace})
	})
	if err != nil {
		return err
	}
	return s.dataStore.Delete(ctx, up.storageKey)
}

// PruneDataUploads aborts uploads started before before and returns how
// many it removed: clients do not always finish what they start.
func (s *Service) PruneDataUploads(ctx context.Context, before time.Time) (int, error) {
	if s.dataStore == nil {
		return 0, nil
	}
	rows, err := s.db.Read().QueryContext(ctx, `SELECT id, storage_key FROM data_uploads WHERE created_at < ?`, before.UnixMilli())
	if err != nil {
		return 0, err
	}
	type stale struct{ id, key string }
	var list []stale
	for rows.Next() {
		var st stale
		if err := rows.Scan(&st.id, &st.key); err != nil {
			rows.Close()
			return 0, err
		}
		list = append(list, st)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	n := 0
	for _, st := range list {
		if _, err := s.db.Exec(ctx, `DELETE FROM data_uploads WHERE id = ?`, st.id); err != nil {
			return n, err
		}
		if err := s.dataStore.Delete(ctx, st.key); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// DeleteWorkspaceData removes the uploaded files of a deleted workspace.
func (s *Service) DeleteWorkspaceData(ctx context.Context, workspace string) error {
	if s.dataStore == nil {
		return nil
	}
	return s.dataStore.Delete(ctx, workspace)
}
