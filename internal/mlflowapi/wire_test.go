package mlflowapi

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/plinth-dev/plinth/internal/tracking"
)

// TestAppendMetricsJSON checks the hand-written encoder writes exactly
// what encoding/json writes for the same values.
func TestAppendMetricsJSON(t *testing.T) {
	ms := []tracking.Metric{
		{Key: "loss", Value: 0.5, Timestamp: 1700000000000, Step: 0},
		{Key: "loss", Value: math.NaN(), Timestamp: 1, Step: -3},
		{Key: "loss", Value: math.MaxFloat64, Timestamp: 2, Step: 1},
		{Key: `we"ird/key <x>`, Value: 1e-7, Timestamp: 3, Step: 2, RunID: "abc"},
		{Key: "k", Value: -123456789.125, Timestamp: 4, Step: 3},
		{Key: "k", Value: 1e21, Timestamp: 5, Step: 4},
		{Key: "k", Value: 0, Timestamp: 6, Step: 5},
		{Key: "k", Value: math.Inf(-1), Timestamp: 7, Step: 6},
	}
	for _, next := range []string{"", "eyJhZnRlciI6e319"} {
		want, _ := json.Marshal(struct {
			Metrics       []wireMetric `json:"metrics,omitempty"`
			NextPageToken string       `json:"next_page_token,omitempty"`
		}{metricsOut(ms), next})
		got := appendMetricsJSON(nil, ms, next)
		if string(got) != string(want)+"\n" {
			t.Fatalf("hand-written:\n%s\nencoding/json:\n%s", got, want)
		}
	}
	if got := string(appendMetricsJSON(nil, nil, "")); got != "{}\n" {
		t.Fatalf("empty: %q", got)
	}
}
