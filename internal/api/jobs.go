package api

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/jobs"
	"github.com/plinth-dev/plinth/internal/registry"
	"github.com/plinth-dev/plinth/internal/workspace"
)

// Compute targets, quotas, the SKU catalogue, command jobs and cost.

func (a *API) jobRoutes() []Route {
	const ws = "/api/v1/workspaces/{ws}"
	return []Route{
		{Method: "GET", Path: "/api/v1/skus", Permission: auth.Authenticated, Summary: "The SKU catalogue: instance types, their size and price", Handle: a.listSKUs},
		{Method: "GET", Path: "/api/v1/cost", Permission: auth.Authenticated, Summary: "Cost of node up-time and of jobs, grouped, over the workspaces the caller may read usage of", Handle: a.cost},

		{Method: "GET", Path: ws + "/computes", Permission: auth.ComputeRead, Scoped: true, Summary: "List compute targets with their nodes", Handle: a.listComputes},
		{Method: "POST", Path: ws + "/computes", Permission: auth.ComputeWrite, Scoped: true, Action: "compute.create", Status: http.StatusCreated, Summary: "Create a compute cluster or instance", Handle: a.createCompute},
		{Method: "GET", Path: ws + "/computes/{name}", Permission: auth.ComputeRead, Scoped: true, Summary: "Show a compute target with its nodes", Handle: a.getCompute},
		{Method: "PATCH", Path: ws + "/computes/{name}", Permission: auth.ComputeWrite, Scoped: true, Action: "compute.update", Summary: "Change a cluster's scale settings, description or tags", Handle: a.updateCompute},
		{Method: "DELETE", Path: ws + "/computes/{name}", Permission: auth.ComputeWrite, Scoped: true, Action: "compute.delete", Status: http.StatusNoContent, Summary: "Delete a cluster whose nodes are idle, or an instance", Handle: a.deleteCompute},
		{Method: "POST", Path: ws + "/computes/{name}/start", Permission: auth.ComputeOperate, Scoped: true, Action: "compute.start", Summary: "Start a compute instance", Handle: a.startInstance},
		{Method: "POST", Path: ws + "/computes/{name}/stop", Permission: auth.ComputeOperate, Scoped: true, Action: "compute.stop", Summary: "Stop a compute instance (its home directory stays)", Handle: a.stopInstance},
		{Method: "POST", Path: ws + "/computes/{name}/restart", Permission: auth.ComputeOperate, Scoped: true, Action: "compute.restart", Summary: "Restart a compute instance", Handle: a.restartInstance},

		{Method: "GET", Path: ws + "/quotas", Permission: auth.ComputeRead, Scoped: true, Summary: "The workspace's quotas per SKU family and their use", Handle: a.listQuotas},
		{Method: "PUT", Path: ws + "/quotas/{family}", Permission: auth.QuotasWrite, Scoped: true, Action: "quota.set", Summary: "Set or remove the workspace's quota for a SKU family", Handle: a.setQuota},

		{Method: "POST", Path: ws + "/jobs/code", Permission: auth.JobsWrite, Scoped: true, MaxBody: jobs.MaxCodeBytes + 1, Summary: "Upload a job's code snapshot (tar.gz)", Handle: a.uploadCode},
		// Tracking readers (run tokens among them) may read the code their
		// workspace's runs ran: a job in a pod fetches its snapshot here.
		{Method: "GET", Path: ws + "/code/{digest}", Permission: auth.TrackingRead, Scoped: true, Summary: "Download a job's code snapshot (tar.gz)", Handle: a.downloadCode},
		{Method: "GET", Path: ws + "/jobs", Permission: auth.JobsRead, Scoped: true, Summary: "List jobs, newest first", Handle: a.listJobs},
		{Method: "POST", Path: ws + "/jobs", Permission: auth.JobsWrite, Scoped: true, Action: "job.create", Status: http.StatusCreated, Summary: "Submit a command job", Handle: a.submitJob},
		{Method: "GET", Path: ws + "/jobs/{id}", Permission: auth.JobsRead, Scoped: true, Summary: "Show a job", Handle: a.getJob},
		{Method: "POST", Path: ws + "/jobs/{id}/cancel", Permission: auth.JobsWrite, Scoped: true, Action: "job.cancel", Summary: "Cancel a job", Handle: a.cancelJob},
		{Method: "GET", Path: ws + "/jobs/{id}/logs", Permission: auth.JobsRead, Scoped: true, Summary: "A job's output, live with follow=true", Handle: a.jobLogs},
	}
}

// computeScope is the workspace of the request as the compute and job
// services need it.
func (a *API) computeScope(r *http.Request) (compute.Scope, error) {
	w, err := a.Workspaces.Lookup(r.Context(), r.PathValue("ws"))
	if err != nil {
		return compute.Scope{}, err
	}
	return compute.Scope{WorkspaceID: w.ID, Workspace: w.Name, Team: w.Team, Region: w.Region, AllowedRegions: w.AllowedRegions}, nil
}

func (a *API) listSKUs(r *http.Request, _ *auth.Identity) (any, error) {
	return map[string]any{"skus": a.Compute.SKUs().List()}, nil
}

func (a *API) listComputes(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	list, err := a.Compute.Targets(r.Context(), sc)
	return map[string]any{"computes": list}, err
}

func (a *API) createCompute(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	var in compute.TargetInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	t, err := a.Compute.CreateTarget(r.Context(), sc, in)
	if err != nil || t.Kind != compute.KindInstance {
		return t, err
	}
	// An instance starts when it is created, as Azure ML's do.
	return a.Instances.Start(r.Context(), sc, t.Name)
}

func (a *API) startInstance(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	return a.Instances.Start(r.Context(), sc, r.PathValue("name"))
}

func (a *API) stopInstance(r *http.Request, c *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	return a.Instances.Stop(r.Context(), sc, r.PathValue("name"), "stopped by "+c.Principal)
}

func (a *API) restartInstance(r *http.Request, c *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	if _, err := a.Instances.Stop(r.Context(), sc, r.PathValue("name"), "restarted by "+c.Principal); err != nil {
		return nil, err
	}
	return a.Instances.Start(r.Context(), sc, r.PathValue("name"))
}

func (a *API) getCompute(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	return a.Compute.Target(r.Context(), sc, r.PathValue("name"))
}

func (a *API) updateCompute(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	var in compute.TargetInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return a.Compute.UpdateTarget(r.Context(), sc, r.PathValue("name"), in)
}

func (a *API) deleteCompute(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	if t, err := a.Compute.Target(r.Context(), sc, r.PathValue("name")); err == nil && t.Kind == compute.KindInstance && t.State == compute.StateRunning {
		if _, err := a.Instances.Stop(r.Context(), sc, t.Name, "deleted"); err != nil {
			return nil, err
		}
	}
	return nil, a.Compute.DeleteTarget(r.Context(), sc, r.PathValue("name"))
}

func (a *API) listQuotas(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	list, err := a.Compute.Quotas(r.Context(), sc)
	return map[string]any{"quotas": list}, err
}

// QuotaInput sets a quota; both fields null removes it.
type QuotaInput struct {
	VCPUs *int `json:"vcpus"`
	GPUs  *int `json:"gpus"`
}

func (a *API) setQuota(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	var in QuotaInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	vcpus, gpus := -1, -1
	if in.VCPUs != nil || in.GPUs != nil {
		vcpus, gpus = 0, 0
		if in.VCPUs != nil {
			vcpus = *in.VCPUs
		}
		if in.GPUs != nil {
			gpus = *in.GPUs
		}
	}
	if err := a.Compute.SetQuota(r.Context(), sc, r.PathValue("family"), vcpus, gpus); err != nil {
		return nil, err
	}
	list, err := a.Compute.Quotas(r.Context(), sc)
	return map[string]any{"quotas": list}, err
}

func (a *API) uploadCode(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	digest, files, err := a.Jobs.UploadCode(r.Context(), sc, r.Body)
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return nil, fault.New(fault.TooLarge, "a code snapshot may be at most %d bytes compressed", jobs.MaxCodeBytes)
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"digest": digest, "files": files}, nil
}

func (a *API) downloadCode(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	digest := r.PathValue("digest")
	body, err := a.Jobs.OpenCode(r.Context(), sc, digest)
	if err != nil {
		return nil, err
	}
	name := strings.TrimPrefix(digest, "sha256:") + ".tar.gz"
	return fileResponse{file: registry.DataFile{Path: name, Size: -1}, body: body}, nil
}

func (a *API) listJobs(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	o := jobs.ListOptions{Status: r.URL.Query().Get("status")}
	if l := r.URL.Query().Get("limit"); l != "" {
		if o.Limit, err = strconv.Atoi(l); err != nil || o.Limit < 1 {
			return nil, fault.InvalidField("limit", "must be a positive number, not %q", clip(l))
		}
	}
	list, err := a.Jobs.List(r.Context(), sc, o)
	return map[string]any{"jobs": list}, err
}

func (a *API) submitJob(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	var in jobs.SubmitInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return a.Jobs.Submit(r.Context(), sc, in)
}

func (a *API) getJob(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	return a.Jobs.Get(r.Context(), sc, r.PathValue("id"))
}

func (a *API) cancelJob(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	return a.Jobs.Cancel(r.Context(), sc, r.PathValue("id"))
}

func (a *API) jobLogs(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	follow := false
	if f := r.URL.Query().Get("follow"); f != "" {
		if follow, err = strconv.ParseBool(f); err != nil {
			return nil, fault.InvalidField("follow", "must be true or false, not %q", clip(f))
		}
	}
	body, err := a.Jobs.Logs(r.Context(), sc, r.PathValue("id"), follow)
	if err != nil {
		return nil, err
	}
	return streamResponse{body: body}, nil
}

// streamResponse copies a text stream to the client as it comes,
// flushing each piece, so `plinth job logs -f` shows lines as they are
// written.
type streamResponse struct{ body io.ReadCloser }

func (s streamResponse) respond(w http.ResponseWriter, r *http.Request) {
	defer s.body.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	buf := make([]byte, 32<<10)
	for {
		n, err := s.body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

// CostReport is the answer of /api/v1/cost.
type CostReport struct {
	By    string    `json:"by"`
	Since time.Time `json:"since"`
	Rows  any       `json:"rows"`
	Total float64   `json:"total"`
	// Basis says what was summed: node up-time (idle time included) or
	// the time jobs held their nodes.
	Basis string `json:"basis"`
}

func (a *API) cost(r *http.Request, c *auth.Identity) (any, error) {
	q := r.URL.Query()
	by := q.Get("by")
	if by == "" {
		by = "team"
	}
	since := time.Now().Add(-7 * 24 * time.Hour)
	if s := q.Get("since"); s != "" {
		d, err := parseSince(s)
		if err != nil {
			return nil, fault.InvalidField("since", "%v", err)
		}
		since = time.Now().Add(-d)
	}
	ws, err := a.usageWorkspaces(r, c)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(ws))
	for _, w := range ws {
		ids = append(ids, w.ID)
	}
	rep := CostReport{By: by, Since: since.UTC().Truncate(time.Second)}
	switch by {
	case "user", "experiment", "job":
		rows, err := a.Jobs.Cost(r.Context(), by, since, ids)
		if err != nil {
			return nil, err
		}
		for _, row := range rows {
			rep.Total += row.Cost
		}
		rep.Rows, rep.Basis = rows, "the time jobs held their nodes, times the SKU's price"
	default:
		rows, err := a.Compute.NodeCost(r.Context(), by, since, ids)
		if err != nil {
			return nil, fault.InvalidField("by", "%q: group by team, workspace, compute, sku, user, experiment or job", clip(by))
		}
		for _, row := range rows {
			rep.Total += row.Cost
		}
		rep.Rows, rep.Basis = rows, "node up-time, idle time included, times the SKU's price"
	}
	return rep, nil
}

// parseSince reads 7d, 24h, 90m or a Go duration.
func parseSince(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return 0, errors.New("want a duration such as 7d, 24h or 90m")
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, errors.New("want a duration such as 7d, 24h or 90m")
	}
	return d, nil
}

// usageWorkspaces lists the workspaces whose usage and cost the caller
// may read (usage.read): reports cover those and no others.
func (a *API) usageWorkspaces(r *http.Request, c *auth.Identity) ([]workspace.Workspace, error) {
	var out []workspace.Workspace
	after := ""
	for {
		page, next, err := a.Workspaces.List(r.Context(), workspace.ListOptions{After: after, Limit: 1000})
		if err != nil {
			return nil, err
		}
		for _, w := range page {
			if c.Can(auth.UsageRead, w.Name) {
				out = append(out, w)
			}
		}
		if next == "" {
			return out, nil
		}
		after = next
	}
}
