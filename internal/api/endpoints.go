package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/endpoint"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/gateway"
	"github.com/plinth-dev/plinth/internal/llm"
)

// Online endpoints and their deployments; route snapshots for standalone
// gateways; usage.

func (a *API) endpointRoutes() []Route {
	const ep = "/api/v1/workspaces/{ws}/endpoints"
	return []Route{
		{Method: "GET", Path: ep, Permission: auth.EndpointsRead, Scoped: true, Summary: "List online endpoints", Handle: a.listEndpoints},
		{Method: "POST", Path: ep, Permission: auth.EndpointsWrite, Scoped: true, Action: "endpoint.create", Status: http.StatusCreated, Summary: "Create an online endpoint; its keys are returned once", Handle: a.createEndpoint},
		{Method: "GET", Path: ep + "/{name}", Permission: auth.EndpointsRead, Scoped: true, Summary: "Show an online endpoint with its deployments", Handle: a.getEndpoint},
		{Method: "PATCH", Path: ep + "/{name}", Permission: auth.EndpointsWrite, Scoped: true, Action: "endpoint.update", Summary: "Change an endpoint's traffic, mirroring, limits, description or tags", Handle: a.updateEndpoint},
		{Method: "DELETE", Path: ep + "/{name}", Permission: auth.EndpointsWrite, Scoped: true, Action: "endpoint.delete", Status: http.StatusNoContent, Summary: "Delete an endpoint and its deployments", Handle: a.deleteEndpoint},
		{Method: "POST", Path: ep + "/{name}/keys", Permission: auth.EndpointsWrite, Scoped: true, Action: "endpoint.keys.regenerate", Summary: "Regenerate an endpoint key; the new key is returned once", Handle: a.regenerateKey},
		{Method: "GET", Path: ep + "/{name}/deployments", Permission: auth.EndpointsRead, Scoped: true, Summary: "List an endpoint's deployments", Handle: a.listDeployments},
		{Method: "PUT", Path: ep + "/{name}/deployments/{deployment}", Permission: auth.EndpointsWrite, Scoped: true, Action: "deployment.put", Summary: "Create or change a deployment (a change rolls out with surge)", Handle: a.putDeployment},
		{Method: "GET", Path: ep + "/{name}/deployments/{deployment}", Permission: auth.EndpointsRead, Scoped: true, Summary: "Show a deployment with its replicas", Handle: a.getDeployment},
		{Method: "DELETE", Path: ep + "/{name}/deployments/{deployment}", Permission: auth.EndpointsWrite, Scoped: true, Action: "deployment.delete", Status: http.StatusNoContent, Summary: "Delete a deployment that takes no traffic", Handle: a.deleteDeployment},
		{Method: "GET", Path: ep + "/{name}/deployments/{deployment}/logs", Permission: auth.EndpointsRead, Scoped: true, Summary: "A replica's output, live with follow=true", Handle: a.deploymentLogs},
		{Method: "GET", Path: ep + "/{name}/deployments/{deployment}/history", Permission: auth.EndpointsRead, Scoped: true, Summary: "Who deployed which model version, when", Handle: a.deploymentHistory},
		{Method: "GET", Path: "/api/v1/gateway/snapshot", Permission: auth.EndpointsRead, Summary: "The gateway's route snapshot, long-polled by standalone gateways", Handle: a.gatewaySnapshot},
		{Method: "POST", Path: "/api/v1/gateway/calls", Permission: auth.EndpointsWrite, MaxBody: 16 << 20, Summary: "Record calls metered by a standalone gateway", Handle: a.recordCalls},
		{Method: "GET", Path: "/api/v1/usage", Permission: auth.Authenticated, Summary: "Endpoint and LLM calls with their cost, grouped, over the workspaces the caller may read usage of", Handle: a.usage},
	}
}

func (a *API) listEndpoints(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	list, err := a.Endpoints.ListEndpoints(r.Context(), sc)
	return map[string]any{"endpoints": list}, err
}

// CreatedEndpoint is an endpoint with its keys, shown once.
type CreatedEndpoint struct {
	endpoint.Endpoint
	Keys endpoint.Keys `json:"keys"`
}

func (a *API) createEndpoint(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	var in endpoint.EndpointInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	e, keys, err := a.Endpoints.CreateEndpoint(r.Context(), sc, in)
	return CreatedEndpoint{Endpoint: e, Keys: keys}, err
}

func (a *API) getEndpoint(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	return a.Endpoints.GetEndpoint(r.Context(), sc, r.PathValue("name"))
}

func (a *API) updateEndpoint(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	var in endpoint.EndpointInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return a.Endpoints.UpdateEndpoint(r.Context(), sc, r.PathValue("name"), in)
}

func (a *API) deleteEndpoint(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	return nil, a.Endpoints.DeleteEndpoint(r.Context(), sc, r.PathValue("name"))
}

func (a *API) regenerateKey(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	var in struct {
		KeyType string `json:"key_type"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return a.Endpoints.RegenerateKey(r.Context(), sc, r.PathValue("name"), in.KeyType)
}

func (a *API) listDeployments(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	e, err := a.Endpoints.GetEndpoint(r.Context(), sc, r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	if e.Deployments == nil {
		e.Deployments = []endpoint.Deployment{}
	}
	return map[string]any{"deployments": e.Deployments}, nil
}

func (a *API) putDeployment(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	var in endpoint.DeploymentSpec
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return a.Endpoints.PutDeployment(r.Context(), sc, r.PathValue("name"), r.PathValue("deployment"), in, a.Models)
}

func (a *API) getDeployment(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	return a.Endpoints.GetDeployment(r.Context(), sc, r.PathValue("name"), r.PathValue("deployment"))
}

func (a *API) deleteDeployment(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	return nil, a.Endpoints.DeleteDeployment(r.Context(), sc, r.PathValue("name"), r.PathValue("deployment"))
}

func (a *API) deploymentHistory(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.computeScope(r)
	if err != nil {
		return nil, err
	}
	h, err := a.Endpoints.DeploymentHistory(r.Context(), sc, r.PathValue("name"), r.PathValue("deployment"))
	return map[string]any{"history": h}, err
}

func (a *API) gatewaySnapshot(r *http.Request, c *auth.Identity) (any, error) {
	var after int64
	v := r.URL.Query().Get("after")
	if v == "" {
		return snapshotFor(c, a.Snapshots.Current()), nil
	}
	{
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fault.InvalidField("after", "must be a snapshot version, not %q", clip(v))
		}
		after = n
	}
	ctx, cancel := context.WithTimeout(r.Context(), 25*time.Second)
	defer cancel()
	return snapshotFor(c, a.Snapshots.Wait(ctx, after)), nil
}

// snapshotFor is the snapshot as c may see it: LLM backend credentials
// only with llm.credentials.read at platform scope (a standalone
// gateway's key), stripped otherwise.
func snapshotFor(c *auth.Identity, s *gateway.Snapshot) *gateway.Snapshot {
	if s == nil || s.LLM == nil || c.Can(auth.LLMCredentialsRead, "") {
		return s
	}
	out := *s
	out.LLM = llm.WithoutCredentials(s.LLM)
	return &out
}

func (a *API) usage(r *http.Request, c *auth.Identity) (any, error) {
	q := r.URL.Query()
	uq := endpoint.UsageQuery{By: q.Get("by"), Model: q.Get("model")}
	if uq.By == "" {
		uq.By = "endpoint"
		if uq.Model != "" {
			uq.By = "model"
		}
	}
	uq.Since = time.Now().Add(-24 * time.Hour)
	if s := q.Get("since"); s != "" {
		d, err := parseSince(s)
		if err != nil {
			return nil, fault.InvalidField("since", "%v", err)
		}
		uq.Since = time.Now().Add(-d)
	}
	// A platform-wide reader sees all usage, LLM calls through no
	// workspace and deleted workspaces' included; others only their
	// workspaces'.
	if !c.Can(auth.UsageRead, "") {
		ws, err := a.usageWorkspaces(r, c)
		if err != nil {
			return nil, err
		}
		uq.Workspaces = make([]string, 0, len(ws))
		for _, w := range ws {
			uq.Workspaces = append(uq.Workspaces, w.Name)
		}
	}
	rows, err := a.Endpoints.Usage(r.Context(), uq)
	out := map[string]any{"by": uq.By, "since": uq.Since.UTC().Truncate(time.Second), "rows": rows}
	if uq.Model != "" {
		out["model"] = uq.Model
	}
	return out, err
}

func (a *API) recordCalls(r *http.Request, _ *auth.Identity) (any, error) {
	var in struct {
		Calls []gateway.Record `json:"calls"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	if len(in.Calls) > 10000 {
		return nil, fault.InvalidField("calls", "at most 10000 calls per batch, not %d", len(in.Calls))
	}
	return map[string]any{"recorded": len(in.Calls)}, a.Endpoints.WriteCalls(r.Context(), in.Calls)
}

func (a *API) deploymentLogs(r *http.Request, _ *auth.Identity) (any, error) {
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
	body, err := a.Controller.Logs(r.Context(), sc, r.PathValue("name"), r.PathValue("deployment"), r.URL.Query().Get("replica"), follow)
	if err != nil {
		return nil, err
	}
	return streamResponse{body: body}, nil
}
