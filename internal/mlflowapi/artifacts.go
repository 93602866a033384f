package mlflowapi

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/artifact"
	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/observe"
	"github.com/plinth-dev/plinth/internal/workspace"
)

// The artifact proxy of `mlflow server --serve-artifacts`.
//
// A run's artifact URI is mlflow-artifacts:/<workspace>/<experiment>/<run>/artifacts.
// The MLflow client turns it into <tracking URI>/api/2.0/mlflow-artifacts/
// artifacts/<workspace>/<experiment>/<run>/artifacts, keeping any path of
// the tracking URI (http://host/w/teamA gives http://host/w/teamA/api/2.0/...),
// so the routes exist at the root and under /w/{ws}. The path's first
// segment names the workspace whose permissions apply: tracking.read to
// download and list, tracking.write to upload, delete and upload in parts.
//
// Multipart uploads follow MLflow's protocol (mpu/create answers a URL per
// part, the client PUTs each part there, then calls mpu/complete). A
// local-disk store has no presigned URLs, so the part URLs point back at
// this server's mpu/upload-part route. The client PUTs parts with no
// credentials of its own (as it would to a presigned S3 URL), so the
// upload id, 128 random bits known only to whoever created the upload,
// is the credential, valid for multipartTTL; completing the upload is
// authorised and audited as an upload.

// multipartTTL is how long the part URLs of a multipart upload stay valid.
const multipartTTL = 24 * time.Hour

// multipartClock is the clock the part URLs' validity is judged by; a seam
// for tests.
var multipartClock = time.Now

// maxArtifactMessage bounds the JSON bodies of the multipart calls; a
// completion lists at most artifact.MaxParts parts.
const maxArtifactMessage = 8 << 20

// artifactBases are the API roots MLflow serves the artifact proxy under.
var artifactBases = []string{"/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts"}

// registerArtifacts adds the artifact proxy's routes, at the root and
// under /w/{ws}.
func (a *API) registerArtifacts(mux *http.ServeMux) {
	for _, prefix := range []string{"", "/w/{ws}"} {
		for _, base := range artifactBases {
			b := prefix + base
			mux.HandleFunc("GET "+b+"/artifacts", a.listArtifactFiles)
			mux.HandleFunc("GET "+b+"/artifacts/{path...}", a.downloadArtifact)
			mux.HandleFunc("PUT "+b+"/artifacts/{path...}", a.uploadArtifact)
			mux.HandleFunc("DELETE "+b+"/artifacts/{path...}", a.deleteArtifact)
			mux.HandleFunc("POST "+b+"/mpu/create/{path...}", a.createMultipartUpload)
			mux.HandleFunc("POST "+b+"/mpu/complete/{path...}", a.completeMultipartUpload)
			mux.HandleFunc("POST "+b+"/mpu/abort/{path...}", a.abortMultipartUpload)
			mux.HandleFunc("PUT "+b+"/mpu/upload-part", a.uploadArtifactPart)
		}
	}
}

// artifactTarget checks a path from a request and returns its key and
// workspace: the key's first segment, which under /w/{ws} must be {ws}.
func artifactTarget(r *http.Request, raw string) (key, ws string, err error) {
	key, err = artifact.CleanKey(raw)
	if err != nil {
		return "", "", err
	}
	ws, _, _ = strings.Cut(key, "/")
	if prefix := r.PathValue("ws"); prefix != "" && prefix != ws {
		return "", "", fault.New(fault.NotFound, "Artifact path '%s' is not in workspace '%s'", key, prefix)
	}
	if workspace.ValidName("path", ws) != nil {
		return "", "", fault.New(fault.Invalid, "Invalid path '%s': artifact paths start with a workspace name, as in %s/<experiment>/<run>/artifacts/...", key, DefaultWorkspace)
	}
	return key, ws, nil
}

// inWorkspace refuses a key that names the workspace itself where a file
// or a directory inside it is needed.
func inWorkspace(key, what string) error {
	if !strings.Contains(key, "/") {
		return fault.New(fault.Invalid, "Invalid path '%s': %s a path inside the workspace, such as %s/<experiment>/<run>/artifacts/...", key, what, key)
	}
	return nil
}

// authorize runs the guard for a call on an artifact in ws, and keeps a
// run token's writes inside its run's artifacts. A refused write leaves
// an audit record, as refused tracking writes do.
func (a *API) authorize(w http.ResponseWriter, r *http.Request, ws string, perm auth.Permission, action, key string) (*http.Request, bool) {
	r, caller, ok := a.guard(w, r, ws, perm)
	if !ok {
		if action != "" && audit.CallerFrom(r.Context()).Principal != "" {
			a.auditArtifact(r, action, ws, key, fault.New(fault.PermissionDenied, "permission denied"), nil)
		}
		return r, false
	}
	if perm != auth.TrackingRead {
		if err := a.runArtifactLimit(r, caller, ws, key); err != nil {
			if action != "" {
				a.auditArtifact(r, action, ws, key, err, nil)
			}
			writeError(w, r, a.Log, err)
			return r, false
		}
	}
	return r, true
}

// auditArtifact records a change to an artifact (err nil) or its failure.
func (a *API) auditArtifact(r *http.Request, action, ws, key string, err error, details map[string]any) {
	rest := strings.TrimPrefix(strings.TrimPrefix(key, ws), "/")
	rec := audit.Record{Action: action, Resource: clipAudit("workspaces/" + ws + "/artifacts/" + rest), Workspace: ws, Details: details}
	if err != nil {
		rec.Result = string(fault.KindOf(err))
		if fe, ok := fault.As(err); ok && fe.Kind != fault.Internal {
			if rec.Details == nil {
				rec.Details = map[string]any{}
			}
			rec.Details["error"] = clipAudit(fe.Message)
		}
	}
	if aerr := a.Audit.Record(r.Context(), rec); aerr != nil {
		a.Log.Error("recording artifact change in audit log", "request_id", observe.RequestID(r.Context()), "error", aerr)
	}
}

func clipAudit(s string) string {
	if len(s) > 512 {
		return s[:509] + "..."
	}
	return s
}

// downloadArtifact streams a file: GET .../artifacts/<path>.
func (a *API) downloadArtifact(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("path")
	if raw == "" {
		// ".../artifacts/" is the listing, as ".../artifacts" is.
		a.listArtifactFiles(w, r)
		return
	}
	key, ws, err := artifactTarget(r, raw)
	if err != nil {
		writeError(w, r, a.Log, err)
		return
	}
	r, ok := a.authorize(w, r, ws, auth.TrackingRead, "", key)
	if !ok {
		return
	}
	rc, size, err := a.Artifacts.Open(r.Context(), key)
	if err != nil {
		writeError(w, r, a.Log, err)
		return
	}
	defer rc.Close()
	name := path.Base(key)
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	disposition := mime.FormatMediaType("attachment", map[string]string{"filename": name})
	if disposition == "" {
		disposition = "attachment"
	}
	h := w.Header()
	h.Set("Content-Type", ct)
	// Always an attachment, never rendered on this origin (MLflow does
	// the same, against stored XSS through uploaded HTML).
	h.Set("Content-Disposition", disposition)
	h.Set("X-Content-Type-Options", "nosniff")
	if rs, ok := rc.(io.ReadSeeker); ok {
		// Sets Content-Length and serves Range requests.
		http.ServeContent(w, r, name, time.Time{}, rs)
		return
	}
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = io.Copy(w, rc)
	}
}

// uploadArtifact stores the request body as a file: PUT .../artifacts/<path>.
func (a *API) uploadArtifact(w http.ResponseWriter, r *http.Request) {
	key, ws, err := artifactTarget(r, r.PathValue("path"))
	if err == nil {
		err = inWorkspace(key, "upload to")
	}
	if err != nil {
		writeError(w, r, a.Log, err)
		return
	}
	r, ok := a.authorize(w, r, ws, auth.TrackingWrite, "artifact.upload", key)
	if !ok {
		return
	}
	var n int64
	if _, err = a.scope(r.Context(), ws); err == nil {
		n, err = a.Artifacts.Put(r.Context(), key, r.Body)
	}
	if err != nil {
		a.auditArtifact(r, "artifact.upload", ws, key, err, nil)
		writeError(w, r, a.Log, err)
		return
	}
	a.auditArtifact(r, "artifact.upload", ws, key, nil, map[string]any{"size": n})
	writeJSON(w, http.StatusOK, struct{}{})
}

// deleteArtifact removes a file or a directory: DELETE .../artifacts/<path>.
func (a *API) deleteArtifact(w http.ResponseWriter, r *http.Request) {
	key, ws, err := artifactTarget(r, r.PathValue("path"))
	if err == nil {
		err = inWorkspace(key, "delete")
	}
	if err != nil {
		writeError(w, r, a.Log, err)
		return
	}
	r, ok := a.authorize(w, r, ws, auth.TrackingWrite, "artifact.delete", key)
	if !ok {
		return
	}
	if _, err = a.scope(r.Context(), ws); err == nil {
		err = a.Artifacts.Delete(r.Context(), key)
	}
	a.auditArtifact(r, "artifact.delete", ws, key, err, nil)
	if err != nil {
		writeError(w, r, a.Log, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// listArtifactFiles lists one directory: GET .../artifacts?path=<path>.
// Entries are named relative to path; files carry their size. Under
// /w/{ws} an absent path lists the workspace's root.
func (a *API) listArtifactFiles(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.Query().Get("path")
	if raw == "" {
		raw = r.PathValue("ws")
	}
	if raw == "" {
		writeError(w, r, a.Log, fault.New(fault.Invalid, "Missing value for parameter 'path': artifact paths start with a workspace name, as in %s/<experiment>/<run>/artifacts", DefaultWorkspace))
		return
	}
	key, ws, err := artifactTarget(r, raw)
	if err != nil {
		writeError(w, r, a.Log, err)
		return
	}
	r, ok := a.authorize(w, r, ws, auth.TrackingRead, "", key)
	if !ok {
		return
	}
	entries, err := a.Artifacts.List(r.Context(), key)
	if err != nil {
		writeError(w, r, a.Log, err)
		return
	}
	// MLflow writes proto2 JSON: is_dir always, file_size for files only,
	// and no "files" at all for an empty directory.
	var out struct {
		Files []fileInfo `json:"files,omitempty"`
	}
	for _, e := range entries {
		fi := fileInfo{Path: e.Path, IsDir: e.IsDir}
		if !e.IsDir {
			size := e.Size
			fi.FileSize = &size
		}
		out.Files = append(out.Files, fi)
	}
	writeJSON(w, http.StatusOK, out)
}

// readArtifactMessage decodes the JSON body of a multipart call. Unknown
// fields are ignored, as MLflow ignores them.
func readArtifactMessage(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxArtifactMessage))
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return fault.New(fault.Invalid, "Request body is larger than %d bytes", maxErr.Limit)
	}
	if err != nil {
		return fault.Wrap(fault.Invalid, err, "Could not read the request body")
	}
	if strings.TrimSpace(string(body)) == "" {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) && typ.Field != "" {
			return fault.New(fault.Invalid, "Invalid value %s for parameter '%s' supplied.", typ.Value, typ.Field)
		}
		return fault.New(fault.Invalid, "Malformed request body: %v", strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

// multipartTarget is the key a multipart call addresses: MLflow's client
// sends the directory in the URL and the local file's path in the body,
// and the artifact is the file's base name inside that directory.
func multipartTarget(r *http.Request, localPath string) (key, ws string, err error) {
	if localPath == "" {
		return "", "", fault.New(fault.Invalid, "Missing value for required parameter 'path'. See the API docs for more information about request parameters.")
	}
	// The client may run on Windows: either separator ends a directory.
	name := localPath[strings.LastIndexAny(localPath, `/\`)+1:]
	if name == "" {
		return "", "", fault.New(fault.Invalid, "Invalid value '%s' for parameter 'path': it names no file", localPath)
	}
	raw := name
	if dir := r.PathValue("path"); dir != "" {
		raw = strings.TrimSuffix(dir, "/") + "/" + name
	}
	key, ws, err = artifactTarget(r, raw)
	if err == nil {
		err = inWorkspace(key, "upload to")
	}
	return key, ws, err
}

type mpuCreateMsg struct {
	Path     string   `json:"path"`
	NumParts optInt64 `json:"num_parts"`
}

type mpuCredential struct {
	URL        string            `json:"url"`
	PartNumber int64             `json:"part_number"`
	Headers    map[string]string `json:"headers"`
}

// createMultipartUpload starts an upload in parts: POST .../mpu/create/<dir>.
func (a *API) createMultipartUpload(w http.ResponseWriter, r *http.Request) {
	var m mpuCreateMsg
	err := readArtifactMessage(w, r, &m)
	var key, ws string
	if err == nil {
		key, ws, err = multipartTarget(r, m.Path)
	}
	if err == nil && (m.NumParts.Value < 0 || m.NumParts.Value > artifact.MaxParts) {
		err = fault.New(fault.Invalid, "Invalid value %d for parameter 'num_parts': must be from 1 to %d", m.NumParts.Value, artifact.MaxParts)
	}
	if err != nil {
		writeError(w, r, a.Log, err)
		return
	}
	r, ok := a.authorize(w, r, ws, auth.TrackingWrite, "artifact.upload", key)
	if !ok {
		return
	}
	var id string
	if _, err = a.scope(r.Context(), ws); err == nil {
		id, err = a.Artifacts.CreateMultipart(r.Context(), key)
	}
	if err != nil {
		a.auditArtifact(r, "artifact.upload", ws, key, err, nil)
		writeError(w, r, a.Log, err)
		return
	}
	out := struct {
		UploadID    string          `json:"upload_id"`
		Credentials []mpuCredential `json:"credentials"`
	}{UploadID: id, Credentials: []mpuCredential{}}
	base := partURLBase(r)
	for n := int64(1); n <= m.NumParts.Value; n++ {
		out.Credentials = append(out.Credentials, mpuCredential{
			URL:        base + "?upload_id=" + id + "&part_number=" + strconv.FormatInt(n, 10),
			PartNumber: n,
			Headers:    map[string]string{},
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// partURLBase is the absolute URL of the upload-part route beside the
// route r arrived on (same scheme, host, /w/{ws} prefix and API root).
func partURLBase(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := firstForwarded(r.Header.Get("X-Forwarded-Proto")); p == "http" || p == "https" {
		scheme = p
	}
	host := r.Host
	if h := firstForwarded(r.Header.Get("X-Forwarded-Host")); h != "" && !strings.ContainsAny(h, "/?#@\\ ") {
		host = h
	}
	p := r.URL.EscapedPath()
	if i := strings.Index(p, "/mpu/create/"); i >= 0 {
		p = p[:i]
	}
	return scheme + "://" + host + p + "/mpu/upload-part"
}

func firstForwarded(v string) string {
	v, _, _ = strings.Cut(v, ",")
	return strings.TrimSpace(v)
}

// uploadArtifactPart stores one part: PUT .../mpu/upload-part?upload_id=&part_number=.
// The upload id is the credential; see the comment at the top.
func (a *API) uploadArtifactPart(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id := q.Get("upload_id")
	number, err := strconv.Atoi(q.Get("part_number"))
	if err != nil {
		writeError(w, r, a.Log, fault.New(fault.Invalid, "Invalid value '%s' for parameter 'part_number': must be an integer", q.Get("part_number")))
		return
	}
	u, err := a.Artifacts.Multipart(r.Context(), id)
	if err == nil {
		ws, _, _ := strings.Cut(u.Key, "/")
		if prefix := r.PathValue("ws"); prefix != "" && prefix != ws {
			err = fault.New(fault.NotFound, "Multipart upload %s does not exist in workspace '%s'", id, prefix)
		} else if multipartClock().Sub(u.Created) > multipartTTL {
			err = fault.New(fault.PermissionDenied, "The part URLs of multipart upload %s expired %s after it was created; start a new upload", id, multipartTTL)
		}
	}
	var etag string
	if err == nil {
		etag, err = a.Artifacts.PutPart(r.Context(), id, number, r.Body)
	}
	if err != nil {
		writeError(w, r, a.Log, err)
		return
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

type mpuPartMsg struct {
	PartNumber optInt64 `json:"part_number"`
	ETag       string   `json:"etag"`
	URL        *string  `json:"url"`
}

type mpuCompleteMsg struct {
	Path     string       `json:"path"`
	UploadID string       `json:"upload_id"`
	Parts    []mpuPartMsg `json:"parts"`
}

// pendingUpload finds the upload a complete or abort call names and checks
// that it is the upload of key.
func (a *API) pendingUpload(r *http.Request, id, key string) (artifact.Upload, error) {
	if id == "" {
		return artifact.Upload{}, fault.New(fault.Invalid, "Missing value for required parameter 'upload_id'. See the API docs for more information about request parameters.")
	}
	u, err := a.Artifacts.Multipart(r.Context(), id)
	if err != nil {
		return u, err
	}
	if u.Key != key {
		return u, fault.New(fault.Invalid, "Multipart upload %s uploads '%s', not '%s'", id, u.Key, key)
	}
	return u, nil
}

// completeMultipartUpload joins the parts: POST .../mpu/complete/<dir>.
func (a *API) completeMultipartUpload(w http.ResponseWriter, r *http.Request) {
	var m mpuCompleteMsg
	err := readArtifactMessage(w, r, &m)
	var key, ws string
	if err == nil {
		key, ws, err = multipartTarget(r, m.Path)
	}
	if err != nil {
		writeError(w, r, a.Log, err)
		return
	}
	r, ok := a.authorize(w, r, ws, auth.TrackingWrite, "artifact.upload", key)
	if !ok {
		return
	}
	_, err = a.pendingUpload(r, m.UploadID, key)
	if err == nil {
		parts := make([]artifact.Part, len(m.Parts))
		for i, p := range m.Parts {
			// Out-of-range numbers stay out of range (and are refused)
			// without overflowing int.
			n := min(max(p.PartNumber.Value, 0), artifact.MaxParts+1)
			parts[i] = artifact.Part{Number: int(n), ETag: p.ETag}
		}
		err = a.Artifacts.CompleteMultipart(r.Context(), m.UploadID, parts)
	}
	a.auditArtifact(r, "artifact.upload", ws, key, err, map[string]any{"multipart": true, "parts": len(m.Parts)})
	if err != nil {
		writeError(w, r, a.Log, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

type mpuAbortMsg struct {
	Path     string `json:"path"`
	UploadID string `json:"upload_id"`
}

// abortMultipartUpload drops an upload and its parts: POST .../mpu/abort/<dir>.
// Aborting an upload that is already gone succeeds.
func (a *API) abortMultipartUpload(w http.ResponseWriter, r *http.Request) {
	var m mpuAbortMsg
	err := readArtifactMessage(w, r, &m)
	var key, ws string
	if err == nil {
		key, ws, err = multipartTarget(r, m.Path)
	}
	if err != nil {
		writeError(w, r, a.Log, err)
		return
	}
	r, ok := a.authorize(w, r, ws, auth.TrackingWrite, "", key)
	if !ok {
		return
	}
	_, err = a.pendingUpload(r, m.UploadID, key)
	if fault.Is(err, fault.NotFound) {
		writeJSON(w, http.StatusOK, struct{}{})
		return
	}
	if err == nil {
		err = a.Artifacts.AbortMultipart(r.Context(), m.UploadID)
	}
	if err != nil {
		writeError(w, r, a.Log, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}
