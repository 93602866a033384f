package mlflowapi

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/artifact"
	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/store/storetest"
	"github.com/plinth-dev/plinth/internal/workspace"
)

// artEnv is the artifact proxy on a real HTTP server, over real auth, audit
// and workspace services on SQLite and a real store on a temp directory.
type artEnv struct {
	t      *testing.T
	url    string
	admin  string // platform Owner's key
	reader string // key of a Reader in teamA
	dir    string // the store's directory
	audit  *audit.Log
}

func newArtEnv(t *testing.T) *artEnv {
	t.Helper()
	ctx := context.Background()
	db := storetest.Open(t, store.SQLite)
	alog := audit.New(db, nil)
	wss := workspace.NewService(db, alog, nil)
	authSvc := auth.NewService(db, alog, wss, nil)
	wss.SetAuth(authSvc)
	adminKey, _, err := authSvc.Bootstrap(ctx, "")
	must(t, err)
	admin, err := authSvc.Authenticate(ctx, adminKey)
	must(t, err)
	for _, ws := range []string{"teamA", "teamB"} {
		_, err = wss.Create(ctx, admin, workspace.CreateInput{Name: ws})
		must(t, err)
	}
	_, err = authSvc.CreatePrincipal(ctx, admin, auth.CreatePrincipalInput{Name: "rita"})
	must(t, err)
	_, err = authSvc.AssignRole(ctx, admin, "teamA", auth.AssignRoleInput{Principal: "rita", Role: string(auth.Reader)})
	must(t, err)
	_, readerKey, err := authSvc.CreateKey(ctx, admin, auth.CreateKeyInput{Name: "k", Principal: "rita"})
	must(t, err)

	dir := filepath.Join(t.TempDir(), "store")
	st, err := artifact.Open(ctx, dir)
	must(t, err)
	a := &API{Auth: authSvc, Workspaces: wss, Artifacts: st, Audit: alog, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	mux := http.NewServeMux()
	a.registerArtifacts(mux)
	hs := httptest.NewServer(mux)
	t.Cleanup(func() { hs.Close(); st.Close() })
	return &artEnv{t: t, url: hs.URL, admin: adminKey, reader: readerKey, dir: dir, audit: alog}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type artReply struct {
	status int
	header http.Header
	body   []byte
}

func (r artReply) code() string {
	var e struct {
		ErrorCode string `json:"error_code"`
	}
	_ = json.Unmarshal(r.body, &e)
	return e.ErrorCode
}

func (r artReply) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("answer %d %q is not JSON: %v", r.status, r.body, err)
	}
}

// send makes one request to rawURL (absolute, or a path on the server),
// sent exactly as written, without following redirects.
func (e *artEnv) send(method, rawURL, key string, body []byte, header ...string) artReply {
	e.t.Helper()
	if strings.HasPrefix(rawURL, "/") {
		rawURL = e.url + rawURL
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, rawURL, rd)
	must(e.t, err)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	must(e.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	must(e.t, err)
	return artReply{status: res.StatusCode, header: res.Header, body: b}
}

// expect checks a status and, for errors, MLflow's error code.
func (e *artEnv) expect(r artReply, status int, code string, what string) {
	e.t.Helper()
	if r.status != status || (code != "" && r.code() != code) {
		e.t.Errorf("%s: got %d %s, want %d %s", what, r.status, r.body, status, code)
	}
}

// storedFiles lists the files in the store's directory (and next to it,
// where an escape would land).
func (e *artEnv) storedFiles() []string {
	e.t.Helper()
	var out []string
	root := filepath.Dir(e.dir)
	must(e.t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return err
	}))
	return out
}

// mlflowClient does what MLflow's Python client does for an
// mlflow-artifacts:/ run: MlflowArtifactsRepository.resolve_uri keeps the
// tracking URI's path before /api/2.0/mlflow-artifacts/artifacts, and
// HttpArtifactRepository builds each request from the result.
type mlflowClient struct {
	e        *artEnv
	key      string
	resolved string // http://host[/w/ws]/api/2.0/mlflow-artifacts/artifacts/<uri path>
}

func (e *artEnv) client(trackingPath, artifactURI, key string) *mlflowClient {
	u, err := url.Parse(artifactURI)
	must(e.t, err)
	p := regexp.MustCompile(`//+`).ReplaceAllString(trackingPath+"/api/2.0/mlflow-artifacts/artifacts/"+u.Path, "/")
	return &mlflowClient{e: e, key: key, resolved: strings.TrimRight(e.url+p, "/")}
}

func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// logArtifact is log_artifact: PUT <resolved>/<dir>/<name>.
func (c *mlflowClient) logArtifact(dir, name string, data []byte) artReply {
	p := name
	if dir != "" {
		p = dir + "/" + name
	}
	return c.e.send("PUT", c.resolved+"/"+escapePath(p), c.key, data, "Content-Type", "application/octet-stream")
}

// download is _download_file: GET <resolved>/<path>.
func (c *mlflowClient) download(p string) artReply {
	return c.e.send("GET", c.resolved+"/"+escapePath(p), c.key, nil)
}

// list is list_artifacts: GET <host>/mlflow-artifacts/artifacts?path=<root>/<path>.
func (c *mlflowClient) list(p string) artReply {
	head, tail, _ := strings.Cut(c.resolved, "/mlflow-artifacts/artifacts")
	q := strings.TrimLeft(tail, "/")
	if p != "" {
		q += "/" + p
	}
	return c.e.send("GET", head+"/mlflow-artifacts/artifacts?"+url.Values{"path": {q}}.Encode(), c.key, nil)
}

// delete is delete_artifacts: DELETE <resolved>/<path>.
func (c *mlflowClient) delete(p string) artReply {
	return c.e.send("DELETE", c.resolved+"/"+escapePath(p), c.key, nil)
}

// mpu is _construct_mpu_uri_and_path: POST <host>/mlflow-artifacts/mpu/<verb>/<root>/<dir>.
func (c *mlflowClient) mpu(verb, dir string, msg any) artReply {
	head, tail, _ := strings.Cut(c.resolved, "/mlflow-artifacts/artifacts")
	p := strings.Trim(tail, "/")
	if dir != "" {
		p += "/" + dir
	}
	body, err := json.Marshal(msg)
	must(c.e.t, err)
	return c.e.send("POST", head+"/mlflow-artifacts/mpu/"+verb+"/"+escapePath(p), c.key, body, "Content-Type", "application/json")
}

type artFile struct {
	Path     string `json:"path"`
	IsDir    bool   `json:"is_dir"`
	FileSize *int64 `json:"file_size"`
}

func (c *mlflowClient) files(p string) []artFile {
	c.e.t.Helper()
	r := c.list(p)
	if r.status != 200 {
		c.e.t.Fatalf("list %q: %d %s", p, r.status, r.body)
	}
	var out struct {
		Files []artFile `json:"files"`
	}
	r.decode(c.e.t, &out)
	return out.Files
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sizePtr(n int64) *int64 { return &n }

const artRun = "mlflow-artifacts:/teamA/1/0123456789abcdef0123456789abcdef/artifacts"

func TestArtifactUploadDownload(t *testing.T) {
	e := newArtEnv(t)
	for _, tracking := range []string{"", "/w/teamA"} {
		c := e.client(tracking, artRun, e.admin)
		weights := randomBytes(3<<20+17, 1)
		r := c.logArtifact("model/data", "weights.bin", weights)
		e.expect(r, 200, "", "upload")
		if strings.TrimSpace(string(r.body)) != "{}" || r.header.Get("Content-Type") != "application/json" {
			t.Errorf("upload answered %q (%s), want {}", r.body, r.header.Get("Content-Type"))
		}
		e.expect(c.logArtifact("", "metrics.json", []byte(`{"auc":0.9}`)), 200, "", "upload json")
		e.expect(c.logArtifact("notes", "résumé d'essai.txt", []byte("hello")), 200, "", "upload odd name")

		r = c.download("model/data/weights.bin")
		e.expect(r, 200, "", "download")
		if !bytes.Equal(r.body, weights) {
			t.Fatalf("downloaded %d bytes differ from the %d uploaded", len(r.body), len(weights))
		}
		h := r.header
		if h.Get("Content-Type") != "application/octet-stream" || h.Get("Content-Length") != "3145745" ||
			h.Get("Content-Disposition") != "attachment; filename=weights.bin" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("download headers: %v", h)
		}
		r = c.download("metrics.json")
		if string(r.body) != `{"auc":0.9}` || r.header.Get("Content-Type") != "application/json" {
			t.Errorf("metrics.json: %q as %s", r.body, r.header.Get("Content-Type"))
		}
		if r = c.download("notes/résumé d'essai.txt"); string(r.body) != "hello" {
			t.Errorf("odd name: %d %q", r.status, r.body)
		}
		// Range requests are served, for clients that fetch in chunks.
		r = e.send("GET", c.resolved+"/model/data/weights.bin", e.admin, nil, "Range", "bytes=100-199")
		if r.status != http.StatusPartialContent || !bytes.Equal(r.body, weights[100:200]) {
			t.Errorf("range: %d, %d bytes", r.status, len(r.body))
		}
		r = e.send("HEAD", c.resolved+"/model/data/weights.bin", e.admin, nil)
		if r.status != 200 || r.header.Get("Content-Length") != "3145745" || len(r.body) != 0 {
			t.Errorf("HEAD: %d %v", r.status, r.header)
		}
		e.expect(c.download("model/data/missing.bin"), 404, "RESOURCE_DOES_NOT_EXIST", "missing file")
		e.expect(c.download("model/data"), 404, "RESOURCE_DOES_NOT_EXIST", "a directory")
	}

	recs, _, err := e.audit.List(context.Background(), audit.Filter{Action: "artifact.upload", Workspace: "teamA"})
	must(t, err)
	found := false
	for _, rec := range recs {
		if rec.Resource == "workspaces/teamA/artifacts/1/0123456789abcdef0123456789abcdef/artifacts/model/data/weights.bin" &&
			rec.Principal == auth.AdminName && rec.Result == audit.Success && rec.Details["size"] == float64(3145745) {
			found = true
		}
	}
	if !found {
		t.Errorf("no audit record of the upload among %+v", recs)
	}
}

func TestArtifactList(t *testing.T) {
	e := newArtEnv(t)
	c := e.client("", artRun, e.admin)
	for p, body := range map[string]string{"a.txt": "abc", "model/MLmodel": "flavors: {}", "model/data/w.bin": "w"} {
		dir, name := "", p
		if i := strings.LastIndex(p, "/"); i >= 0 {
			dir, name = p[:i], p[i+1:]
		}
		e.expect(c.logArtifact(dir, name, []byte(body)), 200, "", "upload "+p)
	}
	if got, want := c.files(""), []artFile{{Path: "a.txt", FileSize: sizePtr(3)}, {Path: "model", IsDir: true}}; !reflect.DeepEqual(got, want) {
		t.Errorf("root listing %+v, want %+v", got, want)
	}
	if got, want := c.files("model"), []artFile{{Path: "MLmodel", FileSize: sizePtr(11)}, {Path: "data", IsDir: true}}; !reflect.DeepEqual(got, want) {
		t.Errorf("nested listing %+v, want %+v", got, want)
	}
	// The exact bytes MLflow writes: is_dir always, file_size for files only.
	r := c.list("model/data")
	if got := strings.TrimSpace(string(r.body)); got != `{"files":[{"path":"w.bin","is_dir":false,"file_size":1}]}` {
		t.Errorf("listing body %s", got)
	}
	// An empty or missing directory, or a file, lists as {}.
	for _, p := range []string{"nothing-here", "a.txt"} {
		if r := c.list(p); r.status != 200 || strings.TrimSpace(string(r.body)) != "{}" {
			t.Errorf("list %q: %d %s", p, r.status, r.body)
		}
	}
	// Under /w/{ws} the path defaults to the workspace; at the root it is
	// needed, to say which workspace.
	r = e.send("GET", "/w/teamA/api/2.0/mlflow-artifacts/artifacts", e.admin, nil)
	if strings.TrimSpace(string(r.body)) != `{"files":[{"path":"1","is_dir":true}]}` {
		t.Errorf("workspace root listing: %d %s", r.status, r.body)
	}
	e.expect(e.send("GET", "/api/2.0/mlflow-artifacts/artifacts", e.admin, nil), 400, "INVALID_PARAMETER_VALUE", "root listing")
	e.expect(e.send("GET", "/api/2.0/mlflow-artifacts/artifacts?path=x", e.admin, nil), 400, "INVALID_PARAMETER_VALUE", "not a workspace")
}

func TestArtifactDelete(t *testing.T) {
	e := newArtEnv(t)
	c := e.client("/w/teamA", artRun, e.admin)
	e.expect(c.logArtifact("model", "MLmodel", []byte("m")), 200, "", "upload")
	e.expect(c.logArtifact("model/data", "w.bin", []byte("w")), 200, "", "upload")
	e.expect(c.logArtifact("", "keep.txt", []byte("k")), 200, "", "upload")

	r := c.delete("model")
	e.expect(r, 200, "", "delete directory")
	if strings.TrimSpace(string(r.body)) != "{}" {
		t.Errorf("delete answered %s", r.body)
	}
	e.expect(c.download("model/MLmodel"), 404, "RESOURCE_DOES_NOT_EXIST", "deleted file")
	if got := c.files(""); len(got) != 1 || got[0].Path != "keep.txt" {
		t.Errorf("after delete: %+v", got)
	}
	e.expect(c.delete("keep.txt"), 200, "", "delete file")
	e.expect(c.delete("never-there"), 200, "", "delete nothing")
	e.expect(e.send("DELETE", "/api/2.0/mlflow-artifacts/artifacts/teamA", e.admin, nil), 400, "INVALID_PARAMETER_VALUE", "delete a workspace")
	if f := e.storedFiles(); len(f) != 0 {
		t.Errorf("files left: %v", f)
	}
	recs, _, err := e.audit.List(context.Background(), audit.Filter{Action: "artifact.delete"})
	must(t, err)
	if len(recs) != 3 || recs[2].Resource != "workspaces/teamA/artifacts/1/0123456789abcdef0123456789abcdef/artifacts/model" {
		t.Errorf("delete audit records: %+v", recs)
	}
}

type mpuCreated struct {
	UploadID    string `json:"upload_id"`
	Credentials []struct {
		URL        string            `json:"url"`
		PartNumber int64             `json:"part_number"`
		Headers    map[string]string `json:"headers"`
	} `json:"credentials"`
}

func TestArtifactMultipart(t *testing.T) {
	e := newArtEnv(t)
	c := e.client("/w/teamA", artRun, e.admin)
	data := randomBytes(5<<20+123, 2)
	const chunk = 2 << 20
	local := "/home/me/checkpoints/big.bin"

	r := c.mpu("create", "ckpt", map[string]any{"path": local, "num_parts": 3})
	e.expect(r, 200, "", "create")
	var created mpuCreated
	r.decode(t, &created)
	if created.UploadID == "" || len(created.Credentials) != 3 {
		t.Fatalf("create answered %s", r.body)
	}
	etags := make([]string, 3)
	for i, cred := range created.Credentials {
		wantURL := e.url + "/w/teamA/api/2.0/mlflow-artifacts/mpu/upload-part?upload_id=" + created.UploadID + "&part_number="
		if cred.PartNumber != int64(i+1) || !strings.HasPrefix(cred.URL, wantURL) || cred.Headers == nil {
			t.Fatalf("credential %d: %+v", i, cred)
		}
		part := data[i*chunk : min((i+1)*chunk, len(data))]
		// The client PUTs parts with requests.put: no credentials.
		pr := e.send("PUT", cred.URL, "", part)
		e.expect(pr, 200, "", "part upload")
		sum := md5.Sum(part)
		if etags[i] = pr.header.Get("ETag"); etags[i] != `"`+hex.EncodeToString(sum[:])+`"` {
			t.Fatalf("part %d etag %q", i+1, etags[i])
		}
	}
	e.expect(c.download("ckpt/big.bin"), 404, "RESOURCE_DOES_NOT_EXIST", "before completion")

	parts := []map[string]any{}
	for i, cred := range created.Credentials {
		parts = append(parts, map[string]any{"part_number": i + 1, "etag": etags[i], "url": cred.URL})
	}
	bad := append([]map[string]any{}, parts...)
	bad[1] = map[string]any{"part_number": 2, "etag": etags[0]}
	e.expect(c.mpu("complete", "ckpt", map[string]any{"path": local, "upload_id": created.UploadID, "parts": bad}), 400, "INVALID_PARAMETER_VALUE", "wrong etag")
	e.expect(c.mpu("complete", "other", map[string]any{"path": local, "upload_id": created.UploadID, "parts": parts}), 400, "INVALID_PARAMETER_VALUE", "other path")
	e.expect(c.download("ckpt/big.bin"), 404, "RESOURCE_DOES_NOT_EXIST", "after failed completions")

	r = c.mpu("complete", "ckpt", map[string]any{"path": local, "upload_id": created.UploadID, "parts": parts})
	e.expect(r, 200, "", "complete")
	if strings.TrimSpace(string(r.body)) != "{}" {
		t.Errorf("complete answered %s", r.body)
	}
	if r = e.client("", artRun, e.reader).download("ckpt/big.bin"); !bytes.Equal(r.body, data) {
		t.Fatalf("multipart artifact: %d, %d bytes differ from the %d uploaded", r.status, len(r.body), len(data))
	}
	e.expect(e.send("PUT", created.Credentials[0].URL, "", []byte("late")), 404, "RESOURCE_DOES_NOT_EXIST", "part after completion")
	// Abort after success (the client aborts on any failure) is harmless.
	e.expect(c.mpu("abort", "ckpt", map[string]any{"path": local, "upload_id": created.UploadID}), 200, "", "abort after completion")

	recs, _, err := e.audit.List(context.Background(), audit.Filter{Action: "artifact.upload", Result: audit.Success})
	must(t, err)
	if len(recs) != 1 || !strings.HasSuffix(recs[0].Resource, "/artifacts/ckpt/big.bin") || recs[0].Details["multipart"] != true {
		t.Errorf("upload audit: %+v", recs)
	}
}

func TestArtifactMultipartAbortAndRefusals(t *testing.T) {
	e := newArtEnv(t)
	c := e.client("", artRun, e.admin)
	// num_parts may come as a string, as protobuf JSON writes int64.
	r := c.mpu("create", "", map[string]any{"path": `C:\Users\me\model.pt`, "num_parts": "2"})
	e.expect(r, 200, "", "create")
	var created mpuCreated
	r.decode(t, &created)
	if len(created.Credentials) != 2 || !strings.HasPrefix(created.Credentials[0].URL, e.url+"/api/2.0/mlflow-artifacts/mpu/upload-part?") {
		t.Fatalf("create answered %s", r.body)
	}
	u := created.Credentials[0].URL
	// A part URL only works in its own workspace.
	e.expect(e.send("PUT", strings.Replace(u, "/api/2.0/", "/w/teamB/api/2.0/", 1), "", []byte("x")), 404, "RESOURCE_DOES_NOT_EXIST", "part in another workspace")
	e.expect(e.send("PUT", strings.Replace(u, "part_number=1", "part_number=x", 1), "", []byte("x")), 400, "INVALID_PARAMETER_VALUE", "bad part number")
	e.expect(e.send("PUT", strings.Replace(u, created.UploadID, strings.Repeat("0", 32), 1), "", []byte("x")), 404, "RESOURCE_DOES_NOT_EXIST", "unknown upload")
	// Part URLs expire.
	multipartClock = func() time.Time { return time.Now().Add(multipartTTL + time.Minute) }
	e.expect(e.send("PUT", u, "", []byte("x")), 403, "PERMISSION_DENIED", "expired part URL")
	multipartClock = time.Now
	e.expect(e.send("PUT", u, "", []byte("x")), 200, "", "part")

	// A Reader may not upload in parts.
	rc := e.client("", artRun, e.reader)
	e.expect(rc.mpu("create", "", map[string]any{"path": "m.pt", "num_parts": 1}), 403, "PERMISSION_DENIED", "reader create")
	e.expect(rc.mpu("abort", "", map[string]any{"path": "model.pt", "upload_id": created.UploadID}), 403, "PERMISSION_DENIED", "reader abort")
	e.expect(e.client("", artRun, "").mpu("create", "", map[string]any{"path": "m.pt", "num_parts": 1}), 401, "", "anonymous create")
	e.expect(c.mpu("create", "", map[string]any{"num_parts": 1}), 400, "INVALID_PARAMETER_VALUE", "no path")
	e.expect(c.mpu("create", "", map[string]any{"path": "x/..", "num_parts": 1}), 400, "INVALID_PARAMETER_VALUE", "path ..")
	e.expect(c.mpu("create", "", map[string]any{"path": "m.pt", "num_parts": 10001}), 400, "INVALID_PARAMETER_VALUE", "too many parts")

	e.expect(c.mpu("abort", "", map[string]any{"path": "model.pt", "upload_id": created.UploadID}), 200, "", "abort")
	e.expect(e.send("PUT", created.Credentials[1].URL, "", []byte("y")), 404, "RESOURCE_DOES_NOT_EXIST", "part after abort")
	e.expect(c.mpu("complete", "", map[string]any{"path": "model.pt", "upload_id": created.UploadID, "parts": []any{}}), 404, "RESOURCE_DOES_NOT_EXIST", "complete after abort")
	if f := e.storedFiles(); len(f) != 0 {
		t.Errorf("files left after abort: %v", f)
	}
}

func TestArtifactPathSafety(t *testing.T) {
	e := newArtEnv(t)
	const base = "/api/2.0/mlflow-artifacts/artifacts/"
	// Paths that reach the handler only to be refused, as MLflow's
	// validate_path_is_safe refuses them.
	refused := []string{
		base + "teamA/1/%252e%252e/%252e%252e/teamB/x",
		base + "teamA/%252e%252e%252f%252e%252e%252fteamB/x",
		base + "%252Fetc/passwd",
		base + "%252F%252Fserver/share/x",
		base + "teamA/x%5C..%5C..%5Cy",
		base + "teamA/a%2500b",
		base + "teamA/a%0Ab",
		base + "C:%2Fwindows/x",
	}
	for _, p := range refused {
		for _, m := range []string{"PUT", "GET", "DELETE"} {
			e.expect(e.send(m, p, e.admin, []byte("x")), 400, "INVALID_PARAMETER_VALUE", m+" "+p)
		}
	}
	for _, q := range []string{"teamA/../teamB", "../teamB", "%2e%2e/teamB", "teamA%2F..%2F..%2Fx", "/etc", `teamA\..\teamB`, "teamA//x"} {
		p := "/api/2.0/mlflow-artifacts/artifacts?path=" + url.QueryEscape(q)
		e.expect(e.send("GET", p, e.admin, nil), 400, "INVALID_PARAMETER_VALUE", "list "+q)
	}
	// Literal dot segments and "//" in the URL path never reach the
	// handler: net/http's mux redirects (307) to the cleaned path, whose
	// own workspace is then checked. Singly-encoded ones reach it and are
	// refused. Either way nothing is written.
	for _, p := range []string{base + "teamA/../../../../x", base + "teamA/%2e%2e/%2e%2e/%2e%2e/x", base + "teamA//x"} {
		r := e.send("PUT", p, e.admin, []byte("x"))
		if r.status < 300 {
			t.Errorf("PUT %s: %d %s", p, r.status, r.body)
		}
		t.Logf("PUT %s: %d %s", p, r.status, r.header.Get("Location"))
	}
	if f := e.storedFiles(); len(f) != 0 {
		t.Fatalf("files written: %v", f)
	}
}

func TestArtifactAccess(t *testing.T) {
	e := newArtEnv(t)
	admin := e.client("", artRun, e.admin)
	e.expect(admin.logArtifact("", "model.pkl", []byte("weights")), 200, "", "admin upload")

	anon := e.client("", artRun, "")
	for what, r := range map[string]artReply{
		"download": anon.download("model.pkl"),
		"upload":   anon.logArtifact("", "x.txt", []byte("x")),
		"list":     anon.list(""),
		"delete":   anon.delete("model.pkl"),
	} {
		e.expect(r, 401, "", "anonymous "+what)
		if r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("anonymous %s: no WWW-Authenticate", what)
		}
	}
	e.expect(e.send("GET", "/api/2.0/mlflow-artifacts/artifacts/teamA/1/x", "not-a-key-at-all", nil), 401, "", "bad key")

	reader := e.client("", artRun, e.reader)
	if r := reader.download("model.pkl"); r.status != 200 || string(r.body) != "weights" {
		t.Errorf("reader download: %d %s", r.status, r.body)
	}
	e.expect(reader.list(""), 200, "", "reader list")
	e.expect(reader.logArtifact("", "x.txt", []byte("x")), 403, "PERMISSION_DENIED", "reader upload")
	e.expect(reader.delete("model.pkl"), 403, "PERMISSION_DENIED", "reader delete")
	other := e.client("", "mlflow-artifacts:/teamB/1/r/artifacts", e.reader)
	e.expect(other.download("x"), 403, "PERMISSION_DENIED", "reader in another workspace")

	// Under /w/{ws} the path must be in {ws}.
	e.expect(e.send("GET", "/w/teamB/api/2.0/mlflow-artifacts/artifacts/teamA/1/0123456789abcdef0123456789abcdef/artifacts/model.pkl", e.admin, nil),
		404, "RESOURCE_DOES_NOT_EXIST", "path outside the prefix workspace")
	e.expect(e.client("/w/teamB", artRun, e.admin).list(""), 404, "RESOURCE_DOES_NOT_EXIST", "list outside the prefix workspace")
	// Writes need the workspace to exist.
	e.expect(e.client("", "mlflow-artifacts:/ghost/1/r/artifacts", e.admin).logArtifact("", "x", []byte("x")), 404, "RESOURCE_DOES_NOT_EXIST", "upload to a missing workspace")

	if f := e.storedFiles(); len(f) != 1 || !strings.HasSuffix(f[0], "/model.pkl") {
		t.Errorf("files: %v", f)
	}
	recs, _, err := e.audit.List(context.Background(), audit.Filter{Action: "artifact.upload", Result: "permission_denied"})
	must(t, err)
	if len(recs) != 1 || recs[0].Principal != "rita" {
		t.Errorf("refused upload audit: %+v", recs)
	}
}
