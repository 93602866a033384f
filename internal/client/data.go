package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/plinth-dev/plinth/internal/registry"
)

func dataPath(ws, name string) string {
	return "/api/v1/workspaces/" + esc(ws) + "/data/" + esc(name)
}

// ListDataAssets lists a workspace's data assets.
func (c *Client) ListDataAssets(ctx context.Context, ws string) ([]registry.DataAsset, error) {
	var out struct {
		DataAssets []registry.DataAsset `json:"data_assets"`
	}
	err := c.Do(ctx, "GET", "/api/v1/workspaces/"+esc(ws)+"/data", nil, nil, &out)
	return out.DataAssets, err
}

// FindDataByDigest lists the versions, of any asset, with this content.
func (c *Client) FindDataByDigest(ctx context.Context, ws, digest string) ([]registry.DataVersion, error) {
	var out struct {
		Versions []registry.DataVersion `json:"versions"`
	}
	err := c.Do(ctx, "GET", "/api/v1/workspaces/"+esc(ws)+"/data", url.Values{"digest": {digest}}, nil, &out)
	return out.Versions, err
}

// ListDataVersions lists an asset's versions, newest first.
func (c *Client) ListDataVersions(ctx context.Context, ws, name string, archived bool) ([]registry.DataVersion, error) {
	var out struct {
		Versions []registry.DataVersion `json:"versions"`
	}
	var q url.Values
	if archived {
		q = url.Values{"archived": {"true"}}
	}
	err := c.Do(ctx, "GET", dataPath(ws, name)+"/versions", q, nil, &out)
	return out.Versions, err
}

// GetDataVersion shows one version ("latest" for the newest).
func (c *Client) GetDataVersion(ctx context.Context, ws, name, version string) (registry.DataVersion, error) {
	var v registry.DataVersion
	err := c.Do(ctx, "GET", dataPath(ws, name)+"/versions/"+esc(version), nil, nil, &v)
	return v, err
}

// CreateDataReference records a version whose files are elsewhere.
func (c *Client) CreateDataReference(ctx context.Context, ws, name string, in registry.DataReference) (registry.DataCreated, error) {
	var out registry.DataCreated
	err := c.Do(ctx, "POST", dataPath(ws, name)+"/versions", nil, in, &out)
	return out, err
}

// UpdateDataVersion changes a version's description, tags or archived flag.
func (c *Client) UpdateDataVersion(ctx context.Context, ws, name, version string, in registry.DataUpdate) (registry.DataVersion, error) {
	var v registry.DataVersion
	err := c.Do(ctx, "PATCH", dataPath(ws, name)+"/versions/"+esc(version), nil, in, &v)
	return v, err
}

// DataFileList is a version's manifest.
type DataFileList struct {
	Name    string              `json:"name"`
	Version string              `json:"version"`
	Type    string              `json:"type"`
	Storage string              `json:"storage"`
	Digest  string              `json:"digest"`
	Files   []registry.DataFile `json:"files"`
}

// ListDataFiles lists a version's files.
func (c *Client) ListDataFiles(ctx context.Context, ws, name, version string) (DataFileList, error) {
	var out DataFileList
	err := c.Do(ctx, "GET", dataPath(ws, name)+"/versions/"+esc(version)+"/files", nil, nil, &out)
	return out, err
}

// transfer is the HTTP client for long transfers: no overall timeout,
// since a large file may take longer than any fixed bound; cancel ctx
// instead.
func (c *Client) transfer() *http.Client {
	hc := *c.HTTP
	hc.Timeout = 0
	return &hc
}

// UploadOptions tune UploadData.
type UploadOptions struct {
	Version     string
	Type        string // "" means uri_file for a file, uri_folder for a folder
	Description string
	Tags        map[string]string
	Region      string
	// StateDir keeps what is needed to resume an interrupted upload;
	// empty means no resumption.
	StateDir string
	// Concurrency is how many files are sent at once (default 4).
	Concurrency int
	// ChunkSize overrides the server's suggested chunk size.
	ChunkSize int64
	// Progress, when set, is told how far the upload is; calls never
	// overlap.
	Progress func(UploadProgress)
}

// UploadProgress is a snapshot of an upload.
type UploadProgress struct {
	// Phase is "hashing" (reading the files to digest them) or
	// "uploading".
	Phase      string
	Done       int64
	Total      int64
	Files      int
	FilesTotal int
}

// UploadResult is the outcome of UploadData.
type UploadResult struct {
	registry.DataCreated
	// Resumed says an earlier, interrupted upload was continued.
	Resumed bool
	// SentBytes is how many bytes this call sent.
	SentBytes int64
}

// uploadState is what a resumption needs, kept in StateDir.
type uploadState struct {
	UploadID string      `json:"upload_id"`
	Files    []localFile `json:"files"`
}

type localFile struct {
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtime_ns"`
	SHA256  string `json:"sha256"`
	abs     string
}

// ScanLocal lists the regular files at root (a file or a folder) with
// their sizes; paths are relative and slash-separated (a file's path is
// its name). Symbolic links to files are followed; to folders, not.
func ScanLocal(root string) (files []localFile, isDir bool, err error) {
	st, err := os.Stat(root)
	if err != nil {
		return nil, false, err
	}
	if !st.IsDir() {
		if !st.Mode().IsRegular() {
			return nil, false, fmt.Errorf("%s is not a regular file or a folder", root)
		}
		return []localFile{{Path: filepath.Base(root), Size: st.Size(), ModTime: st.ModTime().UnixNano(), abs: root}}, false, nil
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		info, err := os.Stat(p)
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		files = append(files, localFile{Path: filepath.ToSlash(rel), Size: info.Size(), ModTime: info.ModTime().UnixNano(), abs: p})
		return nil
	})
	if err == nil && len(files) == 0 {
		err = fmt.Errorf("%s holds no files", root)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, true, err
}

// hashLocal fills in each file's SHA-256, reusing those of a previous
// state whose size and modification time still match.
func hashLocal(ctx context.Context, files []localFile, previous []localFile, progress func(UploadProgress)) error {
	known := map[string]localFile{}
	for _, f := range previous {
		known[f.Path] = f
	}
	var total, done int64
	for _, f := range files {
		total += f.Size
	}
	for i := range files {
		f := &files[i]
		if k, ok := known[f.Path]; ok && k.Size == f.Size && k.ModTime == f.ModTime && k.SHA256 != "" {
			f.SHA256 = k.SHA256
			done += f.Size
			continue
		}
		fh, err := os.Open(f.abs)
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, &ctxReader{ctx: ctx, r: fh, onRead: func(n int) {
			done += int64(n)
			if progress != nil {
				progress(UploadProgress{Phase: "hashing", Done: done, Total: total, Files: i, FilesTotal: len(files)})
			}
		}})
		fh.Close()
		if err != nil {
			return err
		}
		f.SHA256 = hex.EncodeToString(h.Sum(nil))
	}
	return nil
}

// ctxReader stops reading when ctx ends and reports what it read.
type ctxReader struct {
	ctx    context.Context
	r      io.Reader
	onRead func(int)
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	if n > 0 && c.onRead != nil {
		c.onRead(n)
	}
	return n, err
}

// stateFile is where the resumption state of one upload target lives.
func (c *Client) stateFile(dir, ws, name, abs string, o UploadOptions) string {
	h := sha256.Sum256([]byte(c.BaseURL + "\x00" + ws + "\x00" + name + "\x00" + abs + "\x00" + o.Version + "\x00" + o.Type))
	return filepath.Join(dir, hex.EncodeToString(h[:16])+".json")
}

// UploadData uploads a local file or folder as a new version of a data
// asset: it hashes the files, asks the server to start an upload (which
// answers at once when a version already has exactly these bytes), sends
// the files in chunks, several at a time, and completes the upload. With
// StateDir set, an interrupted upload (ctx cancelled, connection lost,
// process killed) resumes where the server says each file stopped when
// UploadData is called again with the same arguments.
func (c *Client) UploadData(ctx context.Context, ws, name, local string, o UploadOptions) (UploadResult, error) {
	abs, err := filepath.Abs(local)
	if err != nil {
		return UploadResult{}, err
	}
	files, isDir, err := ScanLocal(abs)
	if err != nil {
		return UploadResult{}, err
	}
	if o.Type == "" {
		o.Type = registry.TypeFile
		if isDir {
			o.Type = registry.TypeFolder
		}
	}
	if o.Type == registry.TypeFile && isDir {
		return UploadResult{}, fmt.Errorf("%s is a folder; a uri_file version is one file", local)
	}
	if o.Type == registry.TypeFolder && !isDir {
		return UploadResult{}, fmt.Errorf("%s is a file; upload it as uri_file, or upload its folder", local)
	}
	var saved uploadState
	statePath := ""
	if o.StateDir != "" {
		statePath = c.stateFile(o.StateDir, ws, name, abs, o)
		if b, err := os.ReadFile(statePath); err == nil {
			_ = json.Unmarshal(b, &saved)
		}
	}
	var progressMu sync.Mutex
	report := func(p UploadProgress) {
		if o.Progress != nil {
			progressMu.Lock()
			o.Progress(p)
			progressMu.Unlock()
		}
	}
	if err := hashLocal(ctx, files, saved.Files, report); err != nil {
		return UploadResult{}, err
	}
	var up *registry.DataUpload
	resumed := false
	if saved.UploadID != "" && sameFiles(saved.Files, files) {
		var cur registry.DataUpload
		err := c.Do(ctx, "GET", dataPath(ws, name)+"/uploads/"+esc(saved.UploadID), nil, nil, &cur)
		var apiErr *Error
		switch {
		case err == nil:
			up, resumed = &cur, true
		case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound:
			// Expired or completed elsewhere: start again.
		default:
			return UploadResult{}, err
		}
	} else if saved.UploadID != "" {
		// The files changed since: that upload can never complete.
		_ = c.Do(ctx, "DELETE", dataPath(ws, name)+"/uploads/"+esc(saved.UploadID), nil, nil, nil)
	}
	if up == nil {
		in := registry.DataUploadInput{Version: o.Version, Type: o.Type, Region: o.Region, Description: o.Description, Tags: o.Tags}
		host, _ := os.Hostname()
		in.Origin = host + ":" + abs
		for _, f := range files {
			in.Files = append(in.Files, registry.DataFile{Path: f.Path, Size: f.Size, SHA256: f.SHA256})
		}
		var start registry.DataUploadStart
		if err := c.Do(ctx, "POST", dataPath(ws, name)+"/uploads", nil, in, &start); err != nil {
			return UploadResult{}, err
		}
		if start.Existing != nil {
			removeState(statePath)
			return UploadResult{DataCreated: registry.DataCreated{Version: *start.Existing}}, nil
		}
		up = start.Upload
		if statePath != "" {
			if err := saveState(statePath, uploadState{UploadID: up.ID, Files: files}); err != nil {
				return UploadResult{}, fmt.Errorf("saving upload state (for resuming): %w", err)
			}
		}
	}
	sent, err := c.sendFiles(ctx, ws, name, up, files, o, report)
	if err != nil {
		if ctx.Err() != nil && statePath != "" {
			return UploadResult{SentBytes: sent}, fmt.Errorf("upload interrupted after %s of %s; run the same command again to resume: %w",
				FormatBytes(up.ReceivedBytes+sent), FormatBytes(up.TotalBytes), ctx.Err())
		}
		return UploadResult{SentBytes: sent}, err
	}
	var created registry.DataCreated
	if err := c.Do(ctx, "POST", dataPath(ws, name)+"/uploads/"+esc(up.ID)+"/complete", nil, nil, &created); err != nil {
		return UploadResult{SentBytes: sent}, err
	}
	removeState(statePath)
	return UploadResult{DataCreated: created, Resumed: resumed, SentBytes: sent}, nil
}

func sameFiles(a, b []localFile) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Path != b[i].Path || a[i].Size != b[i].Size || a[i].SHA256 != b[i].SHA256 {
			return false
		}
	}
	return true
}

func saveState(path string, st uploadState) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func removeState(path string) {
	if path != "" {
		_ = os.Remove(path)
	}
}

// sendFiles sends what the server has not received yet, several files at
// a time, and returns how many bytes it sent.
func (c *Client) sendFiles(ctx context.Context, ws, name string, up *registry.DataUpload, files []localFile, o UploadOptions, report func(UploadProgress)) (int64, error) {
	chunk := up.ChunkSize
	if o.ChunkSize > 0 {
		chunk = o.ChunkSize
	}
	if chunk <= 0 || chunk > registry.MaxDataChunk {
		chunk = registry.DataChunkSize
	}
	workers := o.Concurrency
	if workers <= 0 {
		workers = 4
	}
	byPath := map[string]localFile{}
	for _, f := range files {
		byPath[f.Path] = f
	}
	var mu sync.Mutex
	done, sent, filesDone := up.ReceivedBytes, int64(0), 0
	var todo []registry.DataUploadFile
	for _, f := range up.Files {
		if f.Done {
			filesDone++
		} else {
			todo = append(todo, f)
		}
	}
	tick := func(n int64, fileDone bool) {
		mu.Lock()
		done += n
		sent += n
		if fileDone {
			filesDone++
		}
		p := UploadProgress{Phase: "uploading", Done: done, Total: up.TotalBytes, Files: filesDone, FilesTotal: len(up.Files)}
		mu.Unlock()
		report(p)
	}
	tick(0, false)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan registry.DataUploadFile)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range jobs {
				lf, ok := byPath[f.Path]
				if !ok {
					errc <- fmt.Errorf("the server expects %s, which is not among the local files", f.Path)
					cancel()
					return
				}
				if err := c.sendFile(ctx, ws, name, up.ID, f, lf, chunk, tick); err != nil {
					errc <- err
					cancel()
					return
				}
			}
		}()
	}
feed:
	for _, f := range todo {
		select {
		case jobs <- f:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return sent, err
	}
	return sent, ctx.Err()
}

// sendFile sends one file from where the server's count ends, chunk by
// chunk, retrying transient failures and following the server when it
// says it has a different count.
func (c *Client) sendFile(ctx context.Context, ws, name, uploadID string, f registry.DataUploadFile, lf localFile, chunk int64, tick func(int64, bool)) error {
	fh, err := os.Open(lf.abs)
	if err != nil {
		return err
	}
	defer fh.Close()
	hc := c.transfer()
	offset := f.Received
	failures := 0
	for offset < f.Size {
		n := min(chunk, f.Size-offset)
		path := dataPath(ws, name) + "/uploads/" + esc(uploadID) + "/files/" + strconv.Itoa(f.Index)
		body := io.NewSectionReader(fh, offset, n)
		var got registry.DataUploadFile
		err := c.send(ctx, hc, "PUT", path, url.Values{"offset": {strconv.FormatInt(offset, 10)}}, body, n, "application/octet-stream", &got)
		var apiErr *Error
		switch {
		case err == nil:
			failures = 0
			tick(got.Received-offset, got.Done)
			offset = got.Received
		case errors.As(err, &apiErr) && apiErr.Status == http.StatusConflict && apiErr.Details["received"] != nil:
			// The server's count differs (a retried chunk that did
			// arrive): go on from its count.
			r, _ := apiErr.Details["received"].(float64)
			tick(int64(r)-offset, false)
			offset = int64(r)
		case ctx.Err() != nil:
			return ctx.Err()
		case transient(err) && failures < 5:
			failures++
			select {
			case <-time.After(time.Duration(failures*failures) * 200 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		default:
			return fmt.Errorf("%s: %w", lf.Path, err)
		}
	}
	return nil
}

// transient reports failures worth retrying: no answer, or the server
// busy or failing.
func transient(err error) bool {
	var apiErr *Error
	if errors.As(err, &apiErr) {
		return apiErr.Status >= 500 || apiErr.Status == http.StatusTooManyRequests
	}
	return true
}

// DownloadData fetches a version's files into dir, checking each file's
// SHA-256; files already there with the right digest are kept, so an
// interrupted download resumes.
func (c *Client) DownloadData(ctx context.Context, ws, name, version, dir string, progress func(UploadProgress)) (DataFileList, error) {
	list, err := c.ListDataFiles(ctx, ws, name, version)
	if err != nil {
		return list, err
	}
	var total, done int64
	for _, f := range list.Files {
		total += f.Size
	}
	hc := c.transfer()
	for i, f := range list.Files {
		target := filepath.Join(dir, filepath.FromSlash(f.Path))
		if rel, err := filepath.Rel(dir, target); err != nil || strings.HasPrefix(rel, "..") {
			return list, fmt.Errorf("refusing file %q: it would land outside %s", f.Path, dir)
		}
		if f.SHA256 != "" && fileHas(target, f.SHA256) {
			done += f.Size
			continue
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return list, err
		}
		u := c.BaseURL + dataPath(ws, name) + "/versions/" + esc(list.Version) + "/download?" + url.Values{"path": {f.Path}}.Encode()
		req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
		if err != nil {
			return list, err
		}
		c.authorize(req)
		resp, err := hc.Do(req)
		if err != nil {
			return list, fmt.Errorf("cannot reach Plinth at %s: %w", c.BaseURL, unwrapURLError(err))
		}
		if resp.StatusCode != http.StatusOK {
			data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			return list, errorFrom(resp, data)
		}
		tmp := target + ".plinth-partial"
		out, err := os.Create(tmp)
		if err != nil {
			resp.Body.Close()
			return list, err
		}
		h := sha256.New()
		_, err = io.Copy(io.MultiWriter(out, h), &ctxReader{ctx: ctx, r: resp.Body, onRead: func(n int) {
			done += int64(n)
			if progress != nil {
				progress(UploadProgress{Phase: "downloading", Done: done, Total: total, Files: i, FilesTotal: len(list.Files)})
			}
		}})
		resp.Body.Close()
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err == nil && f.SHA256 != "" && hex.EncodeToString(h.Sum(nil)) != f.SHA256 {
			err = fmt.Errorf("%s: the downloaded bytes do not have the SHA-256 the version records", f.Path)
		}
		if err != nil {
			os.Remove(tmp)
			return list, err
		}
		if err := os.Rename(tmp, target); err != nil {
			return list, err
		}
	}
	return list, nil
}

func fileHas(path, sum string) bool {
	fh, err := os.Open(path)
	if err != nil {
		return false
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return false
	}
	return bytes.Equal([]byte(hex.EncodeToString(h.Sum(nil))), []byte(sum))
}

// LocalManifest hashes the files at a local path, for recording a local
// path or a copy elsewhere without uploading it.
func LocalManifest(ctx context.Context, root string) ([]registry.DataFile, bool, error) {
	files, isDir, err := ScanLocal(root)
	if err != nil {
		return nil, false, err
	}
	if err := hashLocal(ctx, files, nil, nil); err != nil {
		return nil, false, err
	}
	out := make([]registry.DataFile, len(files))
	for i, f := range files {
		out[i] = registry.DataFile{Path: f.Path, Size: f.Size, SHA256: f.SHA256}
	}
	return out, isDir, nil
}

// FormatBytes renders a byte count in binary units.
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
