package gateway

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Record is one metered call: what chargeback (I3) and audit (I7) need.
type Record struct {
	Time          time.Time // when the call arrived
	Workspace     string
	Team          string // the endpoint's team, charged for the call
	Endpoint      string
	Deployment    string // "" when refused before a deployment was chosen
	Replica       string // the replica that answered, or last failed; "" when none was tried
	Principal     string // the platform principal, or EndpointKeyPrincipal
	KeyID         string // the platform key id, or "primary"/"secondary" for endpoint keys
	Status        int    // as returned to the caller (499: the caller went away)
	Latency       time.Duration
	RequestBytes  int64
	ResponseBytes int64
	RequestID     string
	Mirrored      bool // a mirror copy, not a caller's call

	// LLM calls (Endpoint is empty) also carry these.
	Model            string  // the model name the caller asked for
	Backend          string  // the backend that answered, or last failed
	PromptTokens     int64   // as the backend reported them (estimated when it did not)
	CompletionTokens int64   // likewise
	Cost             float64 // prompt and completion tokens at the backend's prices
	Spillover        bool    // served by a backend outside the first priority group
	Cached           bool    // answered from the response cache
}

// Sink persists records in batches (the control plane's database writer).
// It is called from one goroutine; the batch is reused after it returns.
type Sink func(ctx context.Context, batch []Record) error

// Meter is an asynchronous batched writer: Add never blocks the request
// path; when its buffer is full records are dropped and counted (Dropped and
// plinth_gateway_meter_dropped_total), never silently. Batches the sink
// refuses are kept and retried at the next flush while they fit in the
// buffer; records given up on are counted as dropped too.
type Meter struct {
	sink    Sink
	ch      chan Record
	batch   int
	every   time.Duration
	log     *slog.Logger
	dropped atomic.Int64
	drops   *prometheus.CounterVec
	written prometheus.Counter
}

// Meter defaults for zero arguments.
const (
	DefaultMeterBuffer = 10000
	DefaultMeterBatch  = 500
	DefaultMeterFlush  = time.Second
)

// NewMeter returns a meter writing to sink in batches of up to batchSize,
// at least every flushEvery, buffering up to bufferSize records. Zero
// values take the defaults above; reg and log may be nil.
func NewMeter(sink Sink, bufferSize, batchSize int, flushEvery time.Duration, reg prometheus.Registerer, log *slog.Logger) *Meter {
	if bufferSize <= 0 {
		bufferSize = DefaultMeterBuffer
	}
	if batchSize <= 0 {
		batchSize = DefaultMeterBatch
	}
	batchSize = min(batchSize, bufferSize)
	if flushEvery <= 0 {
		flushEvery = DefaultMeterFlush
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := &Meter{
		sink: sink, ch: make(chan Record, bufferSize), batch: batchSize, every: flushEvery, log: log,
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plinth_gateway_meter_dropped_total",
			Help: "Metering records dropped: buffer_full (the writer fell behind) or sink_error (the sink kept failing).",
		}, []string{"reason"}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "plinth_gateway_meter_written_total",
			Help: "Metering records the sink accepted.",
		}),
	}
	// Both series exist from the start, so alerts can rate() them.
	m.drops.WithLabelValues("buffer_full")
	m.drops.WithLabelValues("sink_error")
	if reg != nil {
		m.drops = registerOrReuse(reg, m.drops)
		m.written = registerOrReuse(reg, m.written)
	}
	return m
}

// Add queues r without ever blocking; a full buffer drops it, counted.
func (m *Meter) Add(r Record) {
	select {
	case m.ch <- r:
	default:
		m.drop("buffer_full", 1)
	}
}

// Dropped returns how many records were dropped so far.
func (m *Meter) Dropped() int64 { return m.dropped.Load() }

func (m *Meter) drop(reason string, n int) {
	m.dropped.Add(int64(n))
	m.drops.WithLabelValues(reason).Add(float64(n))
}

// Run writes batches until ctx ends, then drains and writes what is left
// (with up to ten seconds more).
func (m *Meter) Run(ctx context.Context) {
	tick := time.NewTicker(m.every)
	defer tick.Stop()
	pending := make([]Record, 0, m.batch)
	var retryAt time.Time
	for {
		select {
		case r := <-m.ch:
			pending = append(pending, r)
			if len(pending) >= m.batch && !time.Now().Before(retryAt) {
				if !m.flush(ctx, &pending) {
					retryAt = time.Now().Add(m.every)
				}
			}
		case <-tick.C:
			if len(pending) > 0 {
				if !m.flush(ctx, &pending) {
					retryAt = time.Now().Add(m.every)
				}
			}
		case <-ctx.Done():
			for {
				select {
				case r := <-m.ch:
					pending = append(pending, r)
					continue
				default:
				}
				break
			}
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if !m.flush(fctx, &pending) && len(pending) > 0 {
				m.log.Error("metering records lost at shutdown: the sink failed", "records", len(pending))
				m.drop("sink_error", len(pending))
			}
			return
		}
	}
}

// flush hands pending to the sink in batches; what the sink refuses stays
// pending, bounded by the buffer size. It reports whether all was written.
func (m *Meter) flush(ctx context.Context, pending *[]Record) bool {
	p := *pending
	done := 0
	ok := true
	for done < len(p) {
		n := min(m.batch, len(p)-done)
		if err := m.sink(ctx, p[done:done+n]); err != nil {
			m.log.Warn("writing metering records failed; will retry", "records", len(p)-done, "error", err)
			ok = false
			break
		}
		m.written.Add(float64(n))
		done += n
	}
	rest := copy(p, p[done:])
	p = p[:rest]
	if over := len(p) - cap(m.ch); over > 0 {
		m.drop("sink_error", over)
		p = p[:copy(p, p[over:])]
	}
	*pending = p
	return ok
}
