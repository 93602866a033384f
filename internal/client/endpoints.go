package client

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/plinth-dev/plinth/internal/endpoint"
)

func endpointPath(ws, name string) string { return wsPath(ws) + "/endpoints/" + esc(name) }

// CreatedEndpoint is a new endpoint with its keys, shown once.
type CreatedEndpoint struct {
	endpoint.Endpoint
	Keys endpoint.Keys `json:"keys"`
}

// CreateEndpoint creates an online endpoint.
func (c *Client) CreateEndpoint(ctx context.Context, ws string, in endpoint.EndpointInput) (CreatedEndpoint, error) {
	var out CreatedEndpoint
	err := c.Do(ctx, "POST", wsPath(ws)+"/endpoints", nil, in, &out)
	return out, err
}

// ListEndpoints lists a workspace's endpoints.
func (c *Client) ListEndpoints(ctx context.Context, ws string) ([]endpoint.Endpoint, error) {
	var out struct {
		Endpoints []endpoint.Endpoint `json:"endpoints"`
	}
	err := c.Do(ctx, "GET", wsPath(ws)+"/endpoints", nil, nil, &out)
	return out.Endpoints, err
}

// GetEndpoint shows an endpoint with its deployments.
func (c *Client) GetEndpoint(ctx context.Context, ws, name string) (endpoint.Endpoint, error) {
	var e endpoint.Endpoint
	err := c.Do(ctx, "GET", endpointPath(ws, name), nil, nil, &e)
	return e, err
}

// UpdateEndpoint changes traffic, mirroring, limits, description or tags.
func (c *Client) UpdateEndpoint(ctx context.Context, ws, name string, in endpoint.EndpointInput) (endpoint.Endpoint, error) {
	var e endpoint.Endpoint
	err := c.Do(ctx, "PATCH", endpointPath(ws, name), nil, in, &e)
	return e, err
}

// DeleteEndpoint deletes an endpoint and its deployments.
func (c *Client) DeleteEndpoint(ctx context.Context, ws, name string) error {
	return c.Do(ctx, "DELETE", endpointPath(ws, name), nil, nil, nil)
}

// RegenerateKey makes a new primary or secondary key.
func (c *Client) RegenerateKey(ctx context.Context, ws, name, which string) (endpoint.Keys, error) {
	var k endpoint.Keys
	err := c.Do(ctx, "POST", endpointPath(ws, name)+"/keys", nil, map[string]string{"key_type": which}, &k)
	return k, err
}

// PutDeployment creates or changes a deployment.
func (c *Client) PutDeployment(ctx context.Context, ws, ep, name string, spec endpoint.DeploymentSpec) (endpoint.Deployment, error) {
	var d endpoint.Deployment
	err := c.Do(ctx, "PUT", endpointPath(ws, ep)+"/deployments/"+esc(name), nil, spec, &d)
	return d, err
}

// GetDeployment shows a deployment with its replicas.
func (c *Client) GetDeployment(ctx context.Context, ws, ep, name string) (endpoint.Deployment, error) {
	var d endpoint.Deployment
	err := c.Do(ctx, "GET", endpointPath(ws, ep)+"/deployments/"+esc(name), nil, nil, &d)
	return d, err
}

// DeleteDeployment deletes a deployment that takes no traffic.
func (c *Client) DeleteDeployment(ctx context.Context, ws, ep, name string) error {
	return c.Do(ctx, "DELETE", endpointPath(ws, ep)+"/deployments/"+esc(name), nil, nil, nil)
}

// DeploymentHistory lists who deployed what, when.
func (c *Client) DeploymentHistory(ctx context.Context, ws, ep, name string) ([]endpoint.History, error) {
	var out struct {
		History []endpoint.History `json:"history"`
	}
	err := c.Do(ctx, "GET", endpointPath(ws, ep)+"/deployments/"+esc(name)+"/history", nil, nil, &out)
	return out.History, err
}

// Invoke scores through the gateway with the client's key (or key, when
// given) and returns the status, the response headers and body.
func (c *Client) Invoke(ctx context.Context, ws, ep, key, deployment string, body io.Reader) (int, http.Header, []byte, error) {
	u := c.BaseURL + endpoint.ScoringURI(ws, ep)
	req, err := http.NewRequestWithContext(ctx, "POST", u, body)
	if err != nil {
		return 0, nil, nil, err
	}
	if key == "" {
		key = c.Key
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	if deployment != "" {
		req.Header.Set("x-plinth-deployment", deployment)
	}
	res, err := c.transfer().Do(req)
	if err != nil {
		return 0, nil, nil, unwrapURLError(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	return res.StatusCode, res.Header, data, err
}

// Usage reports endpoint calls with replica cost and LLM calls with
// tokens and cost; model, when set, keeps only LLM calls to it.
func (c *Client) Usage(ctx context.Context, by, since, model string) (map[string]any, error) {
	var out map[string]any
	q := url.Values{"by": {by}, "since": {since}}
	if model != "" {
		q.Set("model", model)
	}
	err := c.Do(ctx, "GET", "/api/v1/usage", q, nil, &out)
	return out, err
}

// DeploymentLogs copies a replica's output to w (the newest ready one
// when replica is ""); with follow, until it ends.
func (c *Client) DeploymentLogs(ctx context.Context, ws, ep, name, replica string, follow bool, w io.Writer) error {
	q := url.Values{"follow": {strconv.FormatBool(follow)}}
	if replica != "" {
		q.Set("replica", replica)
	}
	return c.stream(ctx, endpointPath(ws, ep)+"/deployments/"+esc(name)+"/logs", q, w)
}
