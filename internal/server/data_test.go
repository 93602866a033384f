package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/plinth-dev/plinth/internal/client"
	"github.com/plinth-dev/plinth/internal/registry"
	"github.com/plinth-dev/plinth/internal/server"
)

// writeTree makes files under dir from a map of relative path to content.
func writeTree(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for p, b := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestDataUploadResumeDownload uploads a folder in chunks, interrupts the
// upload part way, resumes it, and reads every file back; the same bytes
// again make no new version, changed bytes do.
// checkDownload downloads data transactions:1 and compares it with files.
func checkDownload(t *testing.T, c *client.Client, files map[string][]byte) {
	t.Helper()
	out := t.TempDir()
	if _, err := c.DownloadData(context.Background(), "default", "transactions", "1", out, nil); err != nil {
		t.Fatalf("download: %v", err)
	}
	for p, b := range files {
		got, err := os.ReadFile(filepath.Join(out, filepath.FromSlash(p)))
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("downloaded %s differs (%v)", p, err)
		}
	}
}

// rangeOfData asks for bytes from..to of a file of data transactions:1.
func rangeOfData(t *testing.T, e *env, path string, from, to int) (int, []byte, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", e.url+"/api/v1/workspaces/default/data/transactions/versions/1/download?path="+path, nil)
	req.Header.Set("Authorization", "Bearer "+e.admin)
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", from, to))
	rr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer rr.Body.Close()
	part := make([]byte, 64)
	n, _ := rr.Body.Read(part)
	return rr.StatusCode, part[:n], rr.Header
}

func TestDataUploadResumeDownload(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		c := client.New(e.url, e.admin)
		dir := t.TempDir()
		files := map[string][]byte{
			"train/part-0.csv": pattern(3<<20+17, 1),
			"train/part-1.csv": pattern(2<<20, 2),
			"README.md":        []byte("transactions, November\n"),
			"empty.txt":        {},
		}
		writeTree(t, dir, files)
		state := t.TempDir()

		ctx, cancel := context.WithCancel(context.Background())
		opts := client.UploadOptions{StateDir: state, ChunkSize: 1 << 20, Concurrency: 1, Description: "card transactions",
			Tags: map[string]string{"source": "core-banking"}}
		opts.Progress = func(p client.UploadProgress) {
			if p.Phase == "uploading" && p.Done >= 2<<20 {
				cancel()
			}
		}
		_, err := c.UploadData(ctx, "default", "transactions", dir, opts)
		if err == nil || !strings.Contains(err.Error(), "run the same command again to resume") {
			t.Fatalf("interrupted upload: %v", err)
		}
		states, _ := os.ReadDir(state)
		if len(states) != 1 {
			t.Fatalf("no resumption state kept: %v", states)
		}

		opts.Progress = nil
		res, err := c.UploadData(context.Background(), "default", "transactions", dir, opts)
		if err != nil {
			t.Fatalf("resumed upload: %v", err)
		}
		var total int64
		local := make([]registry.DataFile, 0, len(files))
		for p, b := range files {
			total += int64(len(b))
			local = append(local, registry.DataFile{Path: p, Size: int64(len(b)), SHA256: sum(b)})
		}
		if !res.Resumed || res.SentBytes <= 0 || res.SentBytes >= total {
			t.Fatalf("resume sent %d of %d bytes (resumed %v): it should send only the rest", res.SentBytes, total, res.Resumed)
		}
		v := res.Version
		if !res.Created || v.Version != "1" || v.URI != "data:transactions:1" || v.Type != registry.TypeFolder || v.Storage != registry.StorageUpload ||
			!v.DigestVerified || v.Digest != registry.DataDigest(registry.TypeFolder, local) || v.SizeBytes != total || v.FileCount != 4 ||
			v.Region != "local" || v.CreatedBy != "admin" || v.Tags["source"] != "core-banking" || v.LocalOnly {
			t.Fatalf("created version: %+v", v)
		}
		if states, _ := os.ReadDir(state); len(states) != 0 {
			t.Fatalf("resumption state left after completion: %v", states)
		}

		list, err := c.ListDataFiles(context.Background(), "default", "transactions", "latest")
		if err != nil || len(list.Files) != 4 {
			t.Fatalf("files: %v %+v", err, list)
		}
		for _, f := range list.Files {
			if f.SHA256 != sum(files[f.Path]) || f.Size != int64(len(files[f.Path])) {
				t.Errorf("file %s recorded as %d bytes, %s", f.Path, f.Size, f.SHA256)
			}
		}
		checkDownload(t, c, files)
		// Range requests work, so downloads can resume.
		status, part, hdr := rangeOfData(t, e, "train/part-1.csv", 10, 19)
		if status != http.StatusPartialContent || !bytes.Equal(part, files["train/part-1.csv"][10:20]) || hdr.Get("ETag") != `"`+sum(files["train/part-1.csv"])+`"` {
			t.Fatalf("range request: %d %q %v", status, part, hdr)
		}

		// The same bytes again: recognised before anything is sent.
		again, err := c.UploadData(context.Background(), "default", "transactions", dir, client.UploadOptions{StateDir: state})
		if err != nil || again.Created || again.Version.Version != "1" || again.SentBytes != 0 {
			t.Fatalf("re-upload of the same bytes: %v %+v", err, again)
		}
		// Changed bytes: a new version.
		writeTree(t, dir, map[string][]byte{"README.md": []byte("transactions, November (fixed)\n")})
		changed, err := c.UploadData(context.Background(), "default", "transactions", dir, client.UploadOptions{StateDir: state})
		if err != nil || !changed.Created || changed.Version.Version != "2" || changed.Version.Digest == v.Digest {
			t.Fatalf("upload of changed bytes: %v %+v", err, changed)
		}
		// A single file is a uri_file whose digest is its SHA-256.
		one, err := c.UploadData(context.Background(), "default", "readme", filepath.Join(dir, "README.md"), client.UploadOptions{})
		if err != nil || one.Version.Type != registry.TypeFile || one.Version.Digest != "sha256:"+sum([]byte("transactions, November (fixed)\n")) {
			t.Fatalf("uri_file upload: %v %+v", err, one)
		}

		assets := e.must(200, "GET", "/api/v1/workspaces/default/data", e.admin, nil)
		if got := fmt.Sprint(assets.body["data_assets"]); !strings.Contains(got, "latest_version:2") || !strings.Contains(got, "name:transactions") {
			t.Fatalf("asset list: %s", assets.raw)
		}
		audit := e.must(200, "GET", "/api/v1/audit?action=data.version.create", e.admin, nil)
		if !strings.Contains(string(audit.raw), "workspaces/default/data/transactions/versions/2") {
			t.Fatalf("no audit record of the new version: %s", audit.raw)
		}
	})
}

// TestDataUploadProtocolErrors sends what a broken or malicious client
// would, chunk by chunk, and checks that each gets a clear error and
// loses nothing.
func TestDataUploadProtocolErrors(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		content := []byte("0123456789abcdefghij")
		base := "/api/v1/workspaces/default/data/events"
		start := e.must(201, "POST", base+"/uploads", e.admin, map[string]any{"type": "uri_folder",
			"files": []map[string]any{{"path": "a.txt", "size": len(content), "sha256": sum(content)}, {"path": "b/c.txt", "size": 3}}})
		up := start.body["upload"].(map[string]any)
		id := up["id"].(string)
		chunk := func(index, offset int, body string) resp {
			req, _ := http.NewRequest("PUT", fmt.Sprintf("%s%s/uploads/%s/files/%d?offset=%d", e.url, base, id, index, offset), strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+e.admin)
			req.Header.Set("Content-Type", "application/octet-stream")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var buf bytes.Buffer
			buf.ReadFrom(res.Body)
			r := resp{status: res.StatusCode, raw: buf.Bytes()}
			_ = json.Unmarshal(buf.Bytes(), &r.body)
			return r
		}
		if r := chunk(0, 0, "0123456789"); r.status != 200 || r.body["received"] != float64(10) {
			t.Fatalf("first chunk: %d %s", r.status, r.raw)
		}
		r := chunk(0, 5, "56789")
		if r.status != 409 || !strings.Contains(r.errMessage(), "resume from byte 10") || r.body["error"].(map[string]any)["details"].(map[string]any)["received"] != float64(10) {
			t.Fatalf("chunk at the wrong offset: %d %s", r.status, r.raw)
		}
		if r := chunk(0, 10, "abcdefghijEXTRA"); r.status != 400 || !strings.Contains(r.errMessage(), "goes past its end") {
			t.Fatalf("chunk past the declared size: %d %s", r.status, r.raw)
		}
		if r := chunk(0, 10, "ABCDEFGHIJ"); r.status != 400 || !strings.Contains(r.errMessage(), "progress was reset") {
			t.Fatalf("bytes that do not match the listed SHA-256: %d %s", r.status, r.raw)
		}
		if st := e.must(200, "GET", base+"/uploads/"+id, e.admin, nil); st.body["received_bytes"] != float64(0) {
			t.Fatalf("after a digest mismatch the file should start again: %s", st.raw)
		}
		if r := chunk(0, 0, string(content)); r.status != 200 || r.body["done"] != true || r.body["sha256"] != sum(content) {
			t.Fatalf("whole file: %d %s", r.status, r.raw)
		}
		if r := chunk(0, 0, string(content)); r.status != 409 || r.body["error"].(map[string]any)["details"].(map[string]any)["received"] != float64(20) {
			t.Fatalf("a retried last chunk is told where the file stands: %d %s", r.status, r.raw)
		}
		if r := chunk(7, 0, "x"); r.status != 400 || !strings.Contains(r.errMessage(), "no file number 7") {
			t.Fatalf("unknown file index: %d %s", r.status, r.raw)
		}
		if r := chunk(1, 0, ""); r.status != 400 || !strings.Contains(r.errMessage(), "is empty") {
			t.Fatalf("empty chunk: %d %s", r.status, r.raw)
		}
		if r := e.call("PUT", fmt.Sprintf("%s/uploads/%s/files/1?offset=0", base, id), e.admin, `{"json": true}`); r.status != 400 || !strings.Contains(r.errMessage(), "application/octet-stream") {
			t.Fatalf("JSON chunk: %d %s", r.status, r.raw)
		}
		if r := e.call("POST", base+"/uploads/"+id+"/complete", e.admin, nil); r.status != 409 || !strings.Contains(r.errMessage(), "b/c.txt (0 of 3 bytes)") {
			t.Fatalf("completing an unfinished upload: %d %s", r.status, r.raw)
		}
		if r := chunk(1, 0, "xyz"); r.status != 200 {
			t.Fatalf("second file: %d %s", r.status, r.raw)
		}
		done := e.must(201, "POST", base+"/uploads/"+id+"/complete", e.admin, nil)
		if v := done.body["version"].(map[string]any); v["version"] != "1" || v["file_count"] != float64(2) {
			t.Fatalf("completed: %s", done.raw)
		}
		if r := e.call("POST", base+"/uploads/"+id+"/complete", e.admin, nil); r.status != 404 {
			t.Fatalf("completing twice: %d %s", r.status, r.raw)
		}

		for _, c := range []struct {
			body map[string]any
			want string
		}{
			{map[string]any{"type": "uri_file", "files": []map[string]any{{"path": "a", "size": 1}, {"path": "b", "size": 1}}}, "a uri_file version is one file"},
			{map[string]any{"type": "table", "files": []map[string]any{{"path": "a", "size": 1}}}, `"table" is not a data type`},
			{map[string]any{"type": "uri_folder", "files": []map[string]any{{"path": "../etc/passwd", "size": 1}}}, "not a clean relative path"},
			{map[string]any{"type": "uri_folder", "files": []map[string]any{{"path": "a", "size": 1}, {"path": "a/b", "size": 1}}}, "is a file and also a folder"},
			{map[string]any{"type": "uri_folder", "files": []map[string]any{{"path": "a", "size": 1, "sha256": "XYZ"}}}, "64 lower-case hex digits"},
			{map[string]any{"type": "uri_folder", "files": []map[string]any{}}, "list at least one file"},
			{map[string]any{"type": "uri_folder", "version": "latest", "files": []map[string]any{{"path": "a", "size": 1}}}, `"latest" names the newest version`},
			{map[string]any{"type": "uri_folder", "region": "westeurope", "files": []map[string]any{{"path": "a", "size": 1}}}, "outside workspace default's allowed regions"},
		} {
			if r := e.call("POST", base+"/uploads", e.admin, c.body); r.status != 400 || !strings.Contains(r.errMessage(), c.want) {
				t.Errorf("start %v: %d %s (want 400 %q)", c.body, r.status, r.raw, c.want)
			}
		}
		if r := e.call("POST", "/api/v1/workspaces/default/data/bad name/uploads", e.admin, map[string]any{"type": "uri_file", "files": []map[string]any{{"path": "a", "size": 1}}}); r.status != 400 {
			t.Errorf("bad asset name: %d %s", r.status, r.raw)
		}
		if r := e.call("POST", base+"/uploads", e.admin, map[string]any{"type": "uri_folder", "version": "1", "files": []map[string]any{{"path": "a", "size": 1}}}); r.status != 409 || !strings.Contains(r.errMessage(), "already has a version 1") {
			t.Errorf("taken version: %d %s", r.status, r.raw)
		}

		// Abandoning an upload deletes what it stored.
		ab := e.must(201, "POST", base+"/uploads", e.admin, map[string]any{"type": "uri_file", "files": []map[string]any{{"path": "x.bin", "size": 4}}})
		abID := ab.body["upload"].(map[string]any)["id"].(string)
		id = abID
		if r := chunk(0, 0, "ab"); r.status != 200 {
			t.Fatalf("chunk: %d %s", r.status, r.raw)
		}
		e.must(204, "DELETE", base+"/uploads/"+abID, e.admin, nil)
		if r := e.call("GET", base+"/uploads/"+abID, e.admin, nil); r.status != 404 {
			t.Fatalf("aborted upload still there: %d", r.status)
		}
		leftovers := 0
		_ = filepath.WalkDir(filepath.Join(e.dataDir, "artifacts", ".plinth-data", "default", "events", abID), func(string, os.DirEntry, error) error {
			leftovers++
			return nil
		})
		if leftovers > 1 {
			t.Fatalf("aborted upload left %d files", leftovers)
		}
	})
}

// TestDataReferences records versions that live elsewhere: a blob URL, a
// local path, a run's artifacts; and refuses what cannot be one.
func TestDataReferences(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		e.must(201, "POST", "/api/v1/workspaces", e.admin, map[string]any{"name": "eu-team", "region": "westeurope", "allowed_regions": []string{"westeurope", "northeurope"}})
		base := "/api/v1/workspaces/eu-team/data"
		blob := e.must(201, "POST", base+"/cards/versions", e.admin, map[string]any{"path": "abfss://lake@acct.dfs.core.windows.net/cards/2026-11/", "description": "lake copy"})
		if v := blob.body["version"].(map[string]any); v["storage"] != "blob" || v["region"] != "westeurope" || v["digest"] != nil || v["type"] != "uri_folder" {
			t.Fatalf("blob reference: %s", blob.raw)
		}
		if r := e.call("POST", base+"/cards/versions", e.admin, map[string]any{"path": "s3://bucket.s3.us-east-1.amazonaws.com/cards/"}); r.status != 400 {
			t.Fatalf("a URL in a region the workspace does not allow: %d %s", r.status, r.raw)
		}
		if r := e.call("POST", base+"/cards/versions", e.admin, map[string]any{"path": "https://bucket.s3.us-east-1.amazonaws.com/cards/"}); r.status != 400 || !strings.Contains(r.errMessage(), `"us-east-1" is outside workspace eu-team's allowed regions`) {
			t.Fatalf("S3 URL in us-east-1: %d %s", r.status, r.raw)
		}
		local := e.must(201, "POST", base+"/scratch/versions", e.admin, map[string]any{"path": "/mnt/nvme/scratch/", "host": "gpu-box-1",
			"files": []map[string]any{{"path": "x.parquet", "size": 10, "sha256": sum([]byte("0123456789"))}}})
		if v := local.body["version"].(map[string]any); v["storage"] != "local" || v["local_only"] != true || v["host"] != "gpu-box-1" ||
			v["path"] != "/mnt/nvme/scratch" || v["digest_verified"] != false || v["digest"] == nil {
			t.Fatalf("local reference: %s", local.raw)
		}
		for path, want := range map[string]string{
			"data/cards":          "relative paths are uploaded",
			"data:cards:1":        "names a data asset",
			"azureml:cards:1":     "names a data asset",
			"ftp://host/x":        "neither a blob URL",
			"s3://":               "not a URL with a host",
			"mlflow-artifacts:/x": "not in eu-team",
		} {
			if r := e.call("POST", base+"/cards/versions", e.admin, map[string]any{"path": path}); r.status != 400 && r.status != 404 || !strings.Contains(r.errMessage(), want) {
				t.Errorf("path %q: %d %s (want %q)", path, r.status, r.raw, want)
			}
		}

		// A run's output, referenced in place.
		run := e.must(200, "POST", "/w/eu-team/api/2.0/mlflow/runs/create", e.admin, map[string]any{"experiment_id": "0"})
		info := run.body["run"].(map[string]any)["info"].(map[string]any)
		runID := info["run_id"].(string)
		art := strings.TrimPrefix(info["artifact_uri"].(string), "mlflow-artifacts:/")
		for name, body := range map[string]string{"features/a.parquet": "AAAA", "features/b.parquet": "BBBBBB"} {
			e.must(200, "PUT", "/w/eu-team/api/2.0/mlflow-artifacts/artifacts/"+art+"/"+name, e.admin, body)
		}
		ref := e.must(201, "POST", base+"/features/versions", e.admin, map[string]any{"path": "runs:/" + runID + "/features"})
		v := ref.body["version"].(map[string]any)
		want := registry.DataDigest(registry.TypeFolder, []registry.DataFile{{Path: "a.parquet", SHA256: sum([]byte("AAAA"))}, {Path: "b.parquet", SHA256: sum([]byte("BBBBBB"))}})
		if v["storage"] != "artifact" || v["digest"] != want || v["digest_verified"] != true || v["source_run_id"] != runID || v["file_count"] != float64(2) {
			t.Fatalf("artifact reference: %s", ref.raw)
		}
		dl := e.must(200, "GET", base+"/features/versions/1/download?path=b.parquet", e.admin, nil)
		if string(dl.raw) != "BBBBBB" {
			t.Fatalf("download of a referenced artifact: %q", dl.raw)
		}
		if r := e.call("GET", base+"/cards/versions/1/download?path=x", e.admin, nil); r.status != 409 || !strings.Contains(r.errMessage(), "does not hold its bytes") {
			t.Fatalf("download of a blob reference: %d %s", r.status, r.raw)
		}
		lin := e.must(200, "GET", "/api/v1/workspaces/eu-team/lineage?node=run:"+runID+"&direction=down", e.admin, nil)
		if !edgeIn(lin.body, "run:"+runID, "data:features:1", "output") {
			t.Fatalf("run -> data output edge missing: %s", lin.raw)
		}

		// Description, tags and archiving change; content does not.
		upd := e.must(200, "PATCH", base+"/cards/versions/1", e.admin, map[string]any{"description": "lake copy, Nov", "tags": map[string]string{"pii": "no"}, "archived": true})
		if upd.body["archived"] != true || upd.body["description"] != "lake copy, Nov" {
			t.Fatalf("update: %s", upd.raw)
		}
		if r := e.call("GET", base+"/cards/versions/latest", e.admin, nil); r.status != 404 {
			t.Fatalf("latest should skip the archived version: %d %s", r.status, r.raw)
		}
		if r := e.call("PATCH", base+"/cards/versions/1", e.admin, map[string]any{"path": "s3://elsewhere/"}); r.status != 400 {
			t.Fatalf("changing a version's path: %d %s", r.status, r.raw)
		}

		// Readers read; only data.write creates.
		reader := e.principal("rita", "Reader", "eu-team")
		e.must(200, "GET", base+"/features/versions", reader, nil)
		if r := e.call("POST", base+"/cards/versions", reader, map[string]any{"path": "s3://bucket/x"}); r.status != 403 {
			t.Fatalf("reader creating a version: %d", r.status)
		}
	})
}

// TestDataLineageChain is the chain the registry exists for: data is
// uploaded, a run logs it as an input, a model version is registered from
// the run; lineage walks it both ways and the trace names the data.
func TestDataLineageChain(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		c := client.New(e.url, e.admin)
		dir := t.TempDir()
		writeTree(t, dir, map[string][]byte{"train.csv": []byte("amount,fraud\n10,0\n9000,1\n"), "test.csv": []byte("amount,fraud\n20,0\n")})
		up, err := c.UploadData(context.Background(), "default", "transactions", dir, client.UploadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ml := "/api/2.0/mlflow/"
		run := e.must(200, "POST", ml+"runs/create", e.admin, map[string]any{"experiment_id": "0",
			"tags": []map[string]string{{"key": "mlflow.source.git.commit", "value": "4be1f00"}}})
		runID := run.body["run"].(map[string]any)["info"].(map[string]any)["run_id"].(string)
		// As mlflow.log_input(mlflow.data.from_pandas(df, source="data:transactions:1")) sends it.
		e.must(200, "POST", ml+"runs/log-inputs", e.admin, map[string]any{"run_id": runID, "datasets": []map[string]any{{
			"tags":    []map[string]string{{"key": "mlflow.data.context", "value": "training"}},
			"dataset": map[string]string{"name": "transactions", "digest": "5e1a0c2b", "source_type": "code", "source": `{"uri": "data:transactions:1"}`}}}})
		e.must(200, "POST", ml+"registered-models/create", e.admin, map[string]any{"name": "fraud"})
		e.must(200, "POST", ml+"model-versions/create", e.admin, map[string]any{"name": "fraud", "source": "runs:/" + runID + "/model", "run_id": runID})

		upGraph := e.must(200, "GET", "/api/v1/workspaces/default/lineage?node=model:fraud:1&direction=up", e.admin, nil)
		if !edgeIn(upGraph.body, "data:transactions:1", "run:"+runID, "input") || !edgeIn(upGraph.body, "run:"+runID, "model:fraud:1", "produced") {
			t.Fatalf("lineage up from the model: %s", upGraph.raw)
		}
		if strings.Contains(string(upGraph.raw), "dataset:transactions") {
			t.Fatalf("the logged dataset names a data asset and should appear as it: %s", upGraph.raw)
		}
		down := e.must(200, "GET", "/api/v1/workspaces/default/lineage?node=data:transactions:1&direction=down", e.admin, nil)
		if !edgeIn(down.body, "data:transactions:1", "run:"+runID, "input") || !edgeIn(down.body, "run:"+runID, "model:fraud:1", "produced") {
			t.Fatalf("lineage down from the data: %s", down.raw)
		}
		trace := e.must(200, "GET", "/api/v1/workspaces/default/models/fraud/versions/1/trace", e.admin, nil)
		for _, want := range []string{`"uri":"data:transactions:1"`, `"digest":"` + up.Version.Digest + `"`, `"git_commit":"4be1f00"`, `"context":"training"`} {
			if !strings.Contains(string(trace.raw), want) {
				t.Errorf("trace lacks %s: %s", want, trace.raw)
			}
		}
		// A dataset that names the data by its digest (a prefix, as
		// MLflow's 36-character digests allow) is recognised too.
		run2 := e.must(200, "POST", ml+"runs/create", e.admin, map[string]any{"experiment_id": "0"})
		run2ID := run2.body["run"].(map[string]any)["info"].(map[string]any)["run_id"].(string)
		prefix := strings.TrimPrefix(up.Version.Digest, "sha256:")[:16]
		e.must(200, "POST", ml+"runs/log-inputs", e.admin, map[string]any{"run_id": run2ID, "datasets": []map[string]any{{
			"dataset": map[string]string{"name": "transactions", "digest": prefix, "source_type": "local", "source": `{"uri": "/home/me/transactions"}`}}}})
		// As mlflow.data.from_pandas(df, source="<Plinth URL of the
		// version>") logs it (MLflow's HTTP dataset source).
		run3 := e.must(200, "POST", ml+"runs/create", e.admin, map[string]any{"experiment_id": "0"})
		run3ID := run3.body["run"].(map[string]any)["info"].(map[string]any)["run_id"].(string)
		e.must(200, "POST", ml+"runs/log-inputs", e.admin, map[string]any{"run_id": run3ID, "datasets": []map[string]any{{
			"dataset": map[string]string{"name": "dataset", "digest": "77aa", "source_type": "http",
				"source": `{"url": "` + e.url + `/api/v1/workspaces/default/data/transactions/versions/1/download?path=train.csv"}`}}}})
		down = e.must(200, "GET", "/api/v1/workspaces/default/lineage?node=data:transactions:1&direction=down&depth=1", e.admin, nil)
		if !edgeIn(down.body, "data:transactions:1", "run:"+run2ID, "input") {
			t.Fatalf("digest-named dataset not linked: %s", down.raw)
		}
		if !edgeIn(down.body, "data:transactions:1", "run:"+run3ID, "input") {
			t.Fatalf("dataset named by the version's URL not linked: %s", down.raw)
		}
	})
}

// TestDataConcurrentVersions creates versions of one asset from several
// clients at once: each gets its own consecutive number.
func TestDataConcurrentVersions(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		c := client.New(e.url, e.admin)
		const n = 6
		var wg sync.WaitGroup
		versions := make(chan string, n)
		errs := make(chan error, n)
		for i := range n {
			dir := t.TempDir()
			writeTree(t, dir, map[string][]byte{"part.csv": pattern(1000+i, byte(i))})
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := c.UploadData(context.Background(), "default", "shards", dir, client.UploadOptions{})
				if err != nil {
					errs <- err
					return
				}
				versions <- res.Version.Version
			}()
		}
		wg.Wait()
		close(versions)
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for v := range versions {
			seen[v] = true
		}
		for i := 1; i <= n; i++ {
			if !seen[fmt.Sprint(i)] {
				t.Fatalf("versions %v: want 1..%d each once", seen, n)
			}
		}
	})
}

func edgeIn(graph map[string]any, from, to, kind string) bool {
	edges, _ := graph["edges"].([]any)
	for _, e := range edges {
		m, _ := e.(map[string]any)
		if m["from"] == from && m["to"] == to && m["kind"] == kind {
			return true
		}
	}
	return false
}

// TestDataUploadRegion: an artifact store in a known region takes uploads
// only for workspaces that allow that region (G2).
func TestDataUploadRegion(t *testing.T) {
	if _, err := server.New(context.Background(), server.Config{DataDir: t.TempDir(), ArtifactsRegion: "atlantis"}, discardLog()); err == nil ||
		!strings.Contains(err.Error(), `artifacts region "atlantis" is not a known region`) {
		t.Fatalf("unknown artifacts region: %v", err)
	}
	e := startWith(t, server.Config{DataDir: t.TempDir(), BootstrapKey: adminKey, ArtifactsRegion: "westeurope"})
	e.must(201, "POST", "/api/v1/workspaces", e.admin, map[string]any{"name": "us-team", "region": "eastus"})
	e.must(201, "POST", "/api/v1/workspaces", e.admin, map[string]any{"name": "eu-team", "region": "northeurope", "allowed_regions": []string{"northeurope", "westeurope"}})
	files := []map[string]any{{"path": "a.csv", "size": 1}}
	if r := e.call("POST", "/api/v1/workspaces/us-team/data/x/uploads", e.admin, map[string]any{"type": "uri_folder", "files": files}); r.status != 400 ||
		!strings.Contains(r.errMessage(), `"westeurope" is outside workspace us-team's allowed regions`) {
		t.Fatalf("upload into a store outside the workspace's regions: %d %s", r.status, r.raw)
	}
	ok := e.must(201, "POST", "/api/v1/workspaces/eu-team/data/x/uploads", e.admin, map[string]any{"type": "uri_folder", "files": files})
	if ok.body["upload"] == nil {
		t.Fatalf("upload in an allowed region: %s", ok.raw)
	}
}
