package api

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"path"
	"strconv"

	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/registry"
)

// Data assets: versions that reference data, and resumable uploads.

// maxManifestBody bounds the body that starts an upload: it lists up to
// registry.MaxDataFiles files.
const maxManifestBody = 32 << 20

func (a *API) dataRoutes() []Route {
	const base = "/api/v1/workspaces/{ws}/data"
	return []Route{
		{Method: "GET", Path: base, Permission: auth.DataRead, Scoped: true, Summary: "List the workspace's data assets", Handle: a.listData},
		{Method: "GET", Path: base + "/{name}/versions", Permission: auth.DataRead, Scoped: true, Summary: "List a data asset's versions, newest first", Handle: a.listDataVersions},
		{Method: "POST", Path: base + "/{name}/versions", Permission: auth.DataWrite, Scoped: true, Action: "data.version.create", Status: http.StatusCreated,
			Summary: "Record a data version whose files are elsewhere (blob URL, artifacts, local path)", Handle: a.createDataReference},
		{Method: "GET", Path: base + "/{name}/versions/{version}", Permission: auth.DataRead, Scoped: true, Summary: "Show a data version", Handle: a.getDataVersion},
		{Method: "PATCH", Path: base + "/{name}/versions/{version}", Permission: auth.DataWrite, Scoped: true, Action: "data.version.update",
			Summary: "Change a data version's description, tags or archived flag", Handle: a.updateDataVersion},
		{Method: "GET", Path: base + "/{name}/versions/{version}/files", Permission: auth.DataRead, Scoped: true, Summary: "List a data version's files", Handle: a.listDataFiles},
		{Method: "GET", Path: base + "/{name}/versions/{version}/download", Permission: auth.DataRead, Scoped: true, Summary: "Download one file of a data version", Handle: a.downloadDataFile},
		{Method: "POST", Path: base + "/{name}/uploads", Permission: auth.DataWrite, Scoped: true, Action: "data.upload.start", Status: http.StatusCreated, MaxBody: maxManifestBody,
			Summary: "Start uploading a new data version", Handle: a.startDataUpload},
		{Method: "GET", Path: base + "/{name}/uploads/{id}", Permission: auth.DataRead, Scoped: true, Summary: "Show an upload's progress", Handle: a.getDataUpload},
		{Method: "PUT", Path: base + "/{name}/uploads/{id}/files/{index}", Permission: auth.DataWrite, Scoped: true, MaxBody: registry.MaxDataChunk,
			Summary: "Send a chunk of one file of an upload", Handle: a.putDataChunk},
		{Method: "POST", Path: base + "/{name}/uploads/{id}/complete", Permission: auth.DataWrite, Scoped: true, Action: "data.version.create", Status: http.StatusCreated,
			Summary: "Finish an upload, creating the data version", Handle: a.completeDataUpload},
		{Method: "DELETE", Path: base + "/{name}/uploads/{id}", Permission: auth.DataWrite, Scoped: true, Action: "data.upload.abort", Status: http.StatusNoContent,
			Summary: "Abandon an upload and delete what it stored", Handle: a.abortDataUpload},
	}
}

// dataScope is the workspace of the request with its region policy.
func (a *API) dataScope(r *http.Request) (registry.DataScope, error) {
	w, err := a.Workspaces.Lookup(r.Context(), r.PathValue("ws"))
	if err != nil {
		return registry.DataScope{}, err
	}
	ds := registry.DataScope{Region: w.Region, AllowedRegions: w.AllowedRegions}
	ds.WorkspaceID, ds.Workspace = w.ID, w.Name
	return ds, nil
}

func (a *API) listData(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.scope(r)
	if err != nil {
		return nil, err
	}
	if digest := r.URL.Query().Get("digest"); digest != "" {
		vs, err := a.Registry.FindDataByDigest(r.Context(), sc, digest)
		return map[string]any{"versions": vs}, err
	}
	list, err := a.Registry.ListDataAssets(r.Context(), sc)
	return map[string]any{"data_assets": list}, err
}

func (a *API) listDataVersions(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.scope(r)
	if err != nil {
		return nil, err
	}
	archived := false
	if v := r.URL.Query().Get("archived"); v != "" {
		if archived, err = strconv.ParseBool(v); err != nil {
			return nil, fault.InvalidField("archived", "must be true or false, not %q", clip(v))
		}
	}
	vs, err := a.Registry.ListDataVersions(r.Context(), sc, r.PathValue("name"), archived)
	return map[string]any{"versions": vs}, err
}

func (a *API) createDataReference(r *http.Request, _ *auth.Identity) (any, error) {
	ds, err := a.dataScope(r)
	if err != nil {
		return nil, err
	}
	var in registry.DataReference
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return a.Registry.CreateDataReference(r.Context(), ds, r.PathValue("name"), in)
}

func (a *API) getDataVersion(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.scope(r)
	if err != nil {
		return nil, err
	}
	return a.Registry.GetDataVersion(r.Context(), sc, r.PathValue("name"), r.PathValue("version"))
}

func (a *API) updateDataVersion(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.scope(r)
	if err != nil {
		return nil, err
	}
	var in registry.DataUpdate
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return a.Registry.UpdateDataVersion(r.Context(), sc, r.PathValue("name"), r.PathValue("version"), in)
}

func (a *API) listDataFiles(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.scope(r)
	if err != nil {
		return nil, err
	}
	v, files, err := a.Registry.DataFiles(r.Context(), sc, r.PathValue("name"), r.PathValue("version"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"name": v.Name, "version": v.Version, "type": v.Type, "storage": v.Storage, "digest": v.Digest, "files": files}, nil
}

func (a *API) downloadDataFile(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.scope(r)
	if err != nil {
		return nil, err
	}
	p := r.URL.Query().Get("path")
	if p == "" {
		return nil, fault.InvalidField("path", "required: the file's path within the version (see its files)")
	}
	f, body, err := a.Registry.OpenDataFile(r.Context(), sc, r.PathValue("name"), r.PathValue("version"), p)
	if err != nil {
		return nil, err
	}
	return fileResponse{file: f, body: body}, nil
}

// fileResponse streams a file instead of a JSON value, with range
// requests when the store can seek (so downloads can resume).
type fileResponse struct {
	file registry.DataFile
	body io.ReadCloser
}

func (f fileResponse) respond(w http.ResponseWriter, r *http.Request) {
	defer f.body.Close()
	ct := mime.TypeByExtension(path.Ext(f.file.Path))
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(f.file.Path)}))
	if f.file.SHA256 != "" {
		w.Header().Set("ETag", `"`+f.file.SHA256+`"`)
		w.Header().Set("X-Plinth-Sha256", f.file.SHA256)
	}
	if rs, ok := f.body.(io.ReadSeeker); ok {
		http.ServeContent(w, r, "", timeZero, rs)
		return
	}
	if f.file.Size >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(f.file.Size, 10))
	}
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, f.body)
}

func (a *API) startDataUpload(r *http.Request, _ *auth.Identity) (any, error) {
	ds, err := a.dataScope(r)
	if err != nil {
		return nil, err
	}
	var in registry.DataUploadInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return a.Registry.StartDataUpload(r.Context(), ds, r.PathValue("name"), in)
}

func (a *API) getDataUpload(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.scope(r)
	if err != nil {
		return nil, err
	}
	return a.Registry.GetDataUpload(r.Context(), sc, r.PathValue("name"), r.PathValue("id"))
}

func (a *API) putDataChunk(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.scope(r)
	if err != nil {
		return nil, err
	}
	index, err := strconv.Atoi(r.PathValue("index"))
	if err != nil || index < 0 {
		return nil, fault.InvalidField("index", "must be a file's number in the upload (0, 1, ...), not %q", clip(r.PathValue("index")))
	}
	raw := r.URL.Query().Get("offset")
	if raw == "" {
		return nil, fault.InvalidField("offset", "required: the byte of the file this chunk starts at")
	}
	offset, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || offset < 0 {
		return nil, fault.InvalidField("offset", "must be a byte offset (0 or more), not %q", clip(raw))
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, _ := mime.ParseMediaType(ct); mt != "application/octet-stream" {
			return nil, fault.New(fault.Invalid, "Content-Type must be application/octet-stream, not %q", clip(ct))
		}
	}
	f, err := a.Registry.PutDataChunk(r.Context(), sc, r.PathValue("name"), r.PathValue("id"), index, offset, r.Body)
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return nil, fault.New(fault.TooLarge, "a chunk may hold at most %d bytes; nothing of this one was stored", maxErr.Limit)
	}
	return f, err
}

func (a *API) completeDataUpload(r *http.Request, _ *auth.Identity) (any, error) {
	ds, err := a.dataScope(r)
	if err != nil {
		return nil, err
	}
	return a.Registry.CompleteDataUpload(r.Context(), ds, r.PathValue("name"), r.PathValue("id"))
}

func (a *API) abortDataUpload(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.scope(r)
	if err != nil {
		return nil, err
	}
	return nil, a.Registry.AbortDataUpload(r.Context(), sc, r.PathValue("name"), r.PathValue("id"))
}
