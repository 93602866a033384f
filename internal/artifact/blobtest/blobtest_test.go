package blobtest

import (
	"context"
	"io"
	"strings"
	"testing"

	"gocloud.dev/blob"
)

// Each server starts, gives out buckets that are empty and apart, and
// stores what gocloud writes to them.
func TestServers(t *testing.T) {
	for _, c := range []struct {
		name  string
		start func(testing.TB) *Server
	}{{"s3", StartS3}, {"azure", StartAzure}} {
		t.Run(c.name, func(t *testing.T) {
			srv := c.start(t)
			ctx := context.Background()
			var buckets []*blob.Bucket
			for range 2 {
				u := srv.NewBucket(t)
				if !strings.HasPrefix(u, srv.Kind+"://") {
					t.Fatalf("bucket URL %q", u)
				}
				b, err := blob.OpenBucket(ctx, u)
				if err != nil {
					t.Fatal(err)
				}
				defer b.Close()
				buckets = append(buckets, b)
			}
			if err := buckets[0].WriteAll(ctx, "a/b.txt", []byte("hello"), nil); err != nil {
				t.Fatal(err)
			}
			got, err := buckets[0].ReadAll(ctx, "a/b.txt")
			if err != nil || string(got) != "hello" {
				t.Fatalf("read back %q, %v", got, err)
			}
			if ok, err := buckets[1].Exists(ctx, "a/b.txt"); ok || err != nil {
				t.Fatalf("the second bucket sees the first one's blob: %v, %v", ok, err)
			}
			if _, err := buckets[1].List(nil).Next(ctx); err != io.EOF {
				t.Fatalf("a new bucket is not empty: %v", err)
			}
		})
	}
}
