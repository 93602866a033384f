package server_test

import (
	"bytes"
	"context"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/plinth-dev/plinth/internal/artifact"
	"github.com/plinth-dev/plinth/internal/artifact/blobtest"
	"github.com/plinth-dev/plinth/internal/client"
	"github.com/plinth-dev/plinth/internal/server"
)

// TestDataUploadObjectStores runs a data upload end to end on an artifact
// store in S3 (a throwaway MinIO) and in Azure Blob Storage (a throwaway
// Azurite), as `plinth server --artifacts s3://... / azblob://...` runs
// it: interrupted, resumed, its chunks joined into whole files in the
// store's private area, then downloaded whole and by range.
func TestDataUploadObjectStores(t *testing.T) {
	for _, c := range []struct {
		name string
		url  func(testing.TB) string
	}{{"s3", blobtest.S3}, {"azure", blobtest.Azure}} {
		t.Run(c.name, func(t *testing.T) {
			u := c.url(t)
			e := startWith(t, server.Config{DataDir: t.TempDir(), BootstrapKey: adminKey, Artifacts: u})
			cl := client.New(e.url, e.admin)
			dir := t.TempDir()
			files := map[string][]byte{
				"train/part-0.csv": pattern(3<<20+17, 1),
				"README.md":        []byte("transactions, November\n"),
				"empty.txt":        {},
			}
			writeTree(t, dir, files)
			state := t.TempDir()

			ctx, cancel := context.WithCancel(context.Background())
			opts := client.UploadOptions{StateDir: state, ChunkSize: 1 << 20, Concurrency: 1}
			opts.Progress = func(p client.UploadProgress) {
				if p.Phase == "uploading" && p.Done >= 2<<20 {
					cancel()
				}
			}
			if _, err := cl.UploadData(ctx, "default", "transactions", dir, opts); err == nil {
				t.Fatal("the interrupted upload succeeded")
			}
			opts.Progress = nil
			res, err := cl.UploadData(context.Background(), "default", "transactions", dir, opts)
			if err != nil {
				t.Fatalf("resumed upload: %v", err)
			}
			if !res.Resumed || !res.Created || !res.Version.DigestVerified || res.Version.FileCount != 3 {
				t.Fatalf("resumed upload: %+v", res)
			}

			checkDownload(t, cl, files)
			status, part, _ := rangeOfData(t, e, "train/part-0.csv", 2097150, 2097159)
			if status != http.StatusPartialContent || !bytes.Equal(part, files["train/part-0.csv"][2097150:2097160]) {
				t.Fatalf("range request: %d %q", status, part)
			}

			// What the bucket holds: one blob a file, all in the private
			// area, none of the chunks that were joined.
			st, err := artifact.Open(context.Background(), u)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if top, err := st.List(context.Background(), ""); err != nil || len(top) != 0 {
				t.Fatalf("the public artifact space lists %+v, %v", top, err)
			}
			blobs := walk(t, st.Private("data"), "default")
			if len(blobs) != 3 {
				t.Fatalf("the data area holds %d blobs, want 3 (one a file): %v", len(blobs), blobs)
			}
			for _, b := range blobs {
				if !strings.HasPrefix(b, "default/transactions/") {
					t.Errorf("blob %s is outside the asset's folder", b)
				}
			}
		})
	}
}

// walk lists every file under dir in a store, sorted.
func walk(t *testing.T, st *artifact.Store, dir string) []string {
	t.Helper()
	entries, err := st.List(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir {
			out = append(out, walk(t, st, dir+"/"+e.Path)...)
		} else {
			out = append(out, dir+"/"+e.Path)
		}
	}
	sort.Strings(out)
	return out
}
