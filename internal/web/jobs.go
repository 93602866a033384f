package web

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/jobs"
)

// Jobs (T2) and compute (E1, E4): the queue and its history with cost
// and resource use, live log tails, cancelling; compute targets with
// their nodes, idle timers and cost, started and stopped from here.

func (u *UI) jobsPage(w http.ResponseWriter, r *http.Request, q *req) error {
	status := r.URL.Query().Get("status")
	list, err := u.d.Jobs.List(r.Context(), q.compute(), jobs.ListOptions{Status: status, Limit: 200})
	if err != nil {
		return err
	}
	u.render(w, r, q, http.StatusOK, "jobs", map[string]any{"Jobs": list, "Status": status, "CanCancel": q.Can(auth.JobsWrite),
		"Statuses": []string{jobs.StatusQueued, jobs.StatusPreparing, jobs.StatusRunning, jobs.StatusFinalizing, jobs.StatusCompleted, jobs.StatusFailed, jobs.StatusCanceled}})
	return nil
}

func (u *UI) jobPage(w http.ResponseWriter, r *http.Request, q *req) error {
	j, err := u.d.Jobs.Get(r.Context(), q.compute(), r.PathValue("id"))
	if err != nil {
		return err
	}
	u.render(w, r, q, http.StatusOK, "job", map[string]any{"Job": j, "Ended": jobs.Terminal(j.Status), "CanCancel": q.Can(auth.JobsWrite) && !jobs.Terminal(j.Status),
		"Flash": map[bool]string{true: "Cancel requested."}[r.URL.Query().Get("canceled") != ""]})
	return nil
}

// logTail is how much of a log the page shows: its end.
const logTail = 64 << 10

// jobLogs is the log tail fragment; while the job runs it asks htmx to
// fetch it again.
func (u *UI) jobLogs(w http.ResponseWriter, r *http.Request, q *req) error {
	j, err := u.d.Jobs.Get(r.Context(), q.compute(), r.PathValue("id"))
	if err != nil {
		return err
	}
	rc, err := u.d.Jobs.Logs(r.Context(), q.compute(), j.ID, false)
	if err != nil {
		return err
	}
	defer rc.Close()
	tail, cut, err := readTail(rc, logTail)
	if err != nil {
		return err
	}
	return u.fragment(w, q, "joblogs", map[string]any{"Job": j, "Text": tail, "Cut": cut, "Live": !jobs.Terminal(j.Status)})
}

// readTail returns the last n bytes of r, and whether it dropped any.
func readTail(r io.Reader, n int) (string, bool, error) {
	buf := make([]byte, 0, n*2)
	chunk := make([]byte, 32<<10)
	cut := false
	for {
		k, err := r.Read(chunk)
		buf = append(buf, chunk[:k]...)
		if len(buf) > n {
			buf, cut = append(buf[:0], buf[len(buf)-n:]...), true
		}
		if err == io.EOF {
			return strings.ToValidUTF8(string(buf), "\uFFFD"), cut, nil
		}
		if err != nil {
			return "", false, err
		}
	}
}

func (u *UI) jobCancel(w http.ResponseWriter, r *http.Request, q *req) error {
	j, err := u.d.Jobs.Cancel(r.Context(), q.compute(), r.PathValue("id"))
	if err != nil {
		return err
	}
	http.Redirect(w, r, q.wsURL("jobs", j.Name)+"?canceled=1", http.StatusSeeOther)
	return nil
}

// targetView is a compute target as the compute page shows it.
type targetView struct {
	compute.Target
	Cost        float64
	NodeSeconds float64
	// IdleFor is how long the target has had no use; StopsIn how long
	// until its idle timer stops it (0: no timer, or not running).
	IdleFor, StopsIn time.Duration
	Instance         bool
}

func (u *UI) computePage(w http.ResponseWriter, r *http.Request, q *req) error {
	ctx := r.Context()
	list, err := u.d.Compute.Targets(ctx, q.compute())
	if err != nil {
		return err
	}
	costs, err := u.d.Compute.NodeCost(ctx, "compute", time.Time{}, []string{q.WS.ID})
	if err != nil {
		return err
	}
	costOf := map[string]compute.CostRow{}
	for _, c := range costs {
		costOf[c.Key] = c
	}
	now := u.d.Now()
	views := make([]targetView, 0, len(list))
	for _, t := range list {
		v := targetView{Target: t, Instance: t.Kind == compute.KindInstance}
		c := costOf[q.WS.Name+"/"+t.Name]
		v.Cost, v.NodeSeconds = c.Cost, c.NodeSeconds
		var last time.Time
		for _, n := range t.Nodes {
			if n.LastUsedAt.After(last) {
				last = n.LastUsedAt
			}
		}
		if !last.IsZero() {
			v.IdleFor = now.Sub(last).Truncate(time.Second)
			idle := t.IdleSeconds
			if v.Instance {
				idle = t.IdleShutdown
			}
			if idle > 0 {
				v.StopsIn = max(time.Duration(idle)*time.Second-v.IdleFor, 0)
			}
		}
		views = append(views, v)
	}
	// The flash names only a target that exists: a link cannot make the
	// page say something else.
	flash := ""
	for _, verb := range []string{"started", "stopped"} {
		if n := r.URL.Query().Get(verb); n != "" {
			for _, v := range views {
				if v.Name == n {
					flash = n + " " + verb + "."
				}
			}
		}
	}
	u.render(w, r, q, http.StatusOK, "compute", map[string]any{"Targets": views, "CanOperate": q.Can(auth.ComputeOperate), "Flash": flash})
	return nil
}

func (u *UI) computeStart(w http.ResponseWriter, r *http.Request, q *req) error {
	t, err := u.d.Instances.Start(r.Context(), q.compute(), r.PathValue("name"))
	if err != nil {
		return err
	}
	http.Redirect(w, r, q.wsURL("compute")+"?started="+url.QueryEscape(t.Name), http.StatusSeeOther)
	return nil
}

func (u *UI) computeStop(w http.ResponseWriter, r *http.Request, q *req) error {
	t, err := u.d.Instances.Stop(r.Context(), q.compute(), r.PathValue("name"), "stopped by "+q.ID.Principal+" in the UI")
	if err != nil {
		return err
	}
	http.Redirect(w, r, q.wsURL("compute")+"?stopped="+url.QueryEscape(t.Name), http.StatusSeeOther)
	return nil
}
