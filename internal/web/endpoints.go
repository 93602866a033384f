package web

import (
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/endpoint"
	"github.com/plinth-dev/plinth/internal/fault"
)

// Endpoints (I7, I9): deployments with their replicas, the traffic and
// mirror split (editable), the gateway's request rate, latency and
// errors, keys, and who deployed what when.

func (u *UI) endpointsPage(w http.ResponseWriter, r *http.Request, q *req) error {
	list, err := u.d.Endpoints.ListEndpoints(r.Context(), q.compute())
	if err != nil {
		return err
	}
	u.render(w, r, q, http.StatusOK, "endpoints", map[string]any{"Endpoints": list})
	return nil
}

// deploymentView is a deployment as the endpoint page shows it.
type deploymentView struct {
	endpoint.Deployment
	Ready   int
	Traffic int
	Mirror  int
	History []endpoint.History
}

func (u *UI) endpointView(r *http.Request, q *req, name string) (map[string]any, error) {
	e, err := u.d.Endpoints.GetEndpoint(r.Context(), q.compute(), name)
	if err != nil {
		return nil, err
	}
	deps := make([]deploymentView, 0, len(e.Deployments))
	for _, d := range e.Deployments {
		v := deploymentView{Deployment: d, Traffic: e.Traffic[d.Name], Mirror: e.MirrorTraffic[d.Name]}
		for _, rep := range d.Replicas {
			if rep.State == endpoint.ReplicaReady && rep.Generation == d.Generation {
				v.Ready++
			}
		}
		h, err := u.d.Endpoints.DeploymentHistory(r.Context(), q.compute(), name, d.Name)
		if err != nil {
			return nil, err
		}
		if len(h) > 10 {
			h = h[:10]
		}
		v.History = h
		deps = append(deps, v)
	}
	sort.Slice(deps, func(i, j int) bool { return deps[i].Name < deps[j].Name })
	return map[string]any{"Endpoint": e, "Deployments": deps, "CanWrite": q.Can(auth.EndpointsWrite), "KeyAuth": e.AuthMode == endpoint.AuthKey}, nil
}

func (u *UI) endpointPage(w http.ResponseWriter, r *http.Request, q *req) error {
	data, err := u.endpointView(r, q, r.PathValue("name"))
	if err != nil {
		return err
	}
	if r.URL.Query().Get("saved") == "traffic" {
		data["Flash"] = "Traffic saved; the gateway routes by it within a second."
	}
	u.render(w, r, q, http.StatusOK, "endpoint", data)
	return nil
}

func (u *UI) endpointTraffic(w http.ResponseWriter, r *http.Request, q *req) error {
	name := r.PathValue("name")
	if err := r.ParseForm(); err != nil {
		return fault.New(fault.Invalid, "unreadable form")
	}
	traffic, mirror := map[string]int{}, map[string]int{}
	for field, vals := range r.PostForm {
		kind, dep, ok := strings.Cut(field, ".")
		if !ok || (kind != "traffic" && kind != "mirror") || len(vals) == 0 {
			continue
		}
		v := strings.TrimSpace(vals[0])
		if v == "" {
			v = "0"
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return u.endpointFormError(w, r, q, name, fault.InvalidField(field, "%q is not a whole percentage", v))
		}
		if n == 0 {
			continue
		}
		if kind == "traffic" {
			traffic[dep] = n
		} else {
			mirror[dep] = n
		}
	}
	if _, err := u.d.Endpoints.UpdateEndpoint(r.Context(), q.compute(), name, endpoint.EndpointInput{Traffic: traffic, MirrorTraffic: mirror}); err != nil {
		return u.endpointFormError(w, r, q, name, err)
	}
	http.Redirect(w, r, q.wsURL("endpoints", name)+"?saved=traffic", http.StatusSeeOther)
	return nil
}

// endpointFormError shows a refused change next to the form, with the
// page around it; other errors go to the error page.
func (u *UI) endpointFormError(w http.ResponseWriter, r *http.Request, q *req, name string, err error) error {
	fe, ok := fault.As(err)
	if !ok || fe.Kind != fault.Invalid {
		return err
	}
	data, verr := u.endpointView(r, q, name)
	if verr != nil {
		return verr
	}
	data["Error"] = fe.Message
	u.render(w, r, q, http.StatusBadRequest, "endpoint", data)
	return nil
}

func (u *UI) endpointKeys(w http.ResponseWriter, r *http.Request, q *req) error {
	name := r.PathValue("name")
	which := r.PostFormValue("key_type")
	keys, err := u.d.Endpoints.RegenerateKey(r.Context(), q.compute(), name, which)
	if err != nil {
		return err
	}
	data, err := u.endpointView(r, q, name)
	if err != nil {
		return err
	}
	// Shown in this answer only: it is never stored where a page could
	// show it again.
	data["NewKey"] = keys.PrimaryKey + keys.SecondaryKey
	data["NewKeyType"] = which
	u.render(w, r, q, http.StatusOK, "endpoint", data)
	return nil
}

func (u *UI) endpointMetricsJSON(w http.ResponseWriter, r *http.Request, q *req) error {
	name := r.PathValue("name")
	if _, err := u.d.Endpoints.GetEndpoint(r.Context(), q.compute(), name); err != nil {
		return err
	}
	u.samples.take()
	writeJSON(w, http.StatusOK, u.samples.chart(q.WS.Name, name, r.URL.Query().Get("chart")))
	return nil
}

// sampler keeps a short history of the gateway's own counters (requests,
// 5xx answers, latency) per endpoint, read from its Prometheus registry.
// Samples are taken when an endpoint chart asks and the last one is older
// than sampleEvery, so the history covers the time someone watched.
type sampler struct {
	g   prometheus.Gatherer
	now func() time.Time

	mu   sync.Mutex
	ring []sample
}

const (
	sampleEvery = 2 * time.Second
	maxSamples  = 900 // 30 minutes at the charts' 2-second refresh
)

type sample struct {
	at time.Time
	by map[string]counters // workspace/endpoint -> counters
}

type counters struct {
	requests, errors, durSum, durCount float64
}

func newSampler(g prometheus.Gatherer, now func() time.Time) *sampler {
	return &sampler{g: g, now: now}
}

func (s *sampler) take() {
	if s.g == nil {
		return
	}
	now := s.now()
	s.mu.Lock()
	if n := len(s.ring); n > 0 && now.Sub(s.ring[n-1].at) < sampleEvery {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	fams, err := s.g.Gather()
	if err != nil && len(fams) == 0 {
		return
	}
	by := map[string]counters{}
	label := func(m *dto.Metric, name string) string {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	key := func(m *dto.Metric) string { return label(m, "workspace") + "/" + label(m, "endpoint") }
	for _, f := range fams {
		switch f.GetName() {
		case "plinth_gateway_requests_total":
			for _, m := range f.GetMetric() {
				c := by[key(m)]
				v := m.GetCounter().GetValue()
				c.requests += v
				if label(m, "code") == "5xx" {
					c.errors += v
				}
				by[key(m)] = c
			}
		case "plinth_gateway_request_duration_seconds":
			for _, m := range f.GetMetric() {
				c := by[key(m)]
				c.durSum += m.GetHistogram().GetSampleSum()
				c.durCount += float64(m.GetHistogram().GetSampleCount())
				by[key(m)] = c
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.ring); n > 0 && now.Sub(s.ring[n-1].at) < sampleEvery {
		return // another request sampled meanwhile
	}
	s.ring = append(s.ring, sample{at: now, by: by})
	if len(s.ring) > maxSamples {
		s.ring = append(s.ring[:0], s.ring[len(s.ring)-maxSamples:]...)
	}
}

// chart is the rate ("rate": requests and 5xx per second) or latency
// ("latency": mean milliseconds) of one endpoint between samples.
func (s *sampler) chart(ws, ep, which string) chartDoc {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := ws + "/" + ep
	var t []float64
	var a, b []any
	for i := 1; i < len(s.ring); i++ {
		prev, cur := s.ring[i-1], s.ring[i]
		dt := cur.at.Sub(prev.at).Seconds()
		p, c := prev.by[k], cur.by[k]
		if dt <= 0 {
			continue
		}
		t = append(t, float64(cur.at.UnixMilli())/1000)
		// A counter that went down was reset (a gateway restart): count
		// from zero.
		dReq, dErr := c.requests-p.requests, c.errors-p.errors
		if dReq < 0 {
			dReq, dErr = c.requests, c.errors
		}
		switch which {
		case "latency":
			dn := c.durCount - p.durCount
			if dn > 0 {
				a = append(a, (c.durSum-p.durSum)/dn*1000)
			} else {
				a = append(a, nil)
			}
		default:
			a = append(a, dReq/dt)
			b = append(b, dErr/dt)
		}
	}
	doc := chartDoc{XLabel: "time", Empty: "Collecting samples of the gateway's counters…"}
	if len(t) == 0 {
		return doc
	}
	if which == "latency" {
		doc.YLabel = "mean latency (ms)"
		doc.Series = []series{{Label: "latency ms", X: t, T: t, Y: a}}
		return doc
	}
	doc.YLabel = "per second"
	doc.Series = []series{{Label: "requests/s", X: t, T: t, Y: a}, {Label: "5xx/s", X: t, T: t, Y: b}}
	return doc
}
