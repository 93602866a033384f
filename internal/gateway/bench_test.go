package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkGateway compares a trivial model called directly with the same
// model called through the gateway (key auth, rate limit, metering, access
// log and metrics all on), one caller at a time (serial: ns/op is the
// latency) and from many goroutines (parallel: ns/op is 1/throughput).
//
//	go test -run '^$' -bench Gateway -benchtime 3s ./internal/gateway/
func BenchmarkGateway(b *testing.B) {
	body := `{"input_data":{"columns":["a","b"],"data":[[1,2]]}}`
	m := newModel(b, "r0", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `[0.5]`)
	})
	meter := NewMeter(func(context.Context, []Record) error { return nil }, 0, 0, 0, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go meter.Run(ctx)
	e := newEnv(b, Options{
		Meter:    meter,
		Registry: prometheus.NewRegistry(),
		Log:      slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	ep := keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m), MaxConcurrentPerInstance: 1000})
	ep.RateLimitPerMinute = 1 << 30
	e.g.Update(snap(1, ep))

	targets := []struct{ name, url, token string }{
		{"direct", m.srv.URL + "/score", ""},
		{"gateway", e.srv.URL + "/endpoints/ep/score", "primary-key"},
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, DisableCompression: true}}
	defer client.CloseIdleConnections()
	do := func(b *testing.B, url, token string) {
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			b.Fatalf("status %d", res.StatusCode)
		}
	}
	for _, tg := range targets {
		b.Run(tg.name+"/serial", func(b *testing.B) {
			do(b, tg.url, tg.token)
			lat := make([]time.Duration, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				began := time.Now()
				do(b, tg.url, tg.token)
				lat[i] = time.Since(began)
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
	for _, tg := range targets {
		b.Run(tg.name+"/parallel", func(b *testing.B) {
			b.SetParallelism(32) // 32 × GOMAXPROCS callers
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					do(b, tg.url, tg.token)
				}
			})
		})
	}
}
