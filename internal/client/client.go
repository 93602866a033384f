// Package client is the typed Go client of Plinth's /api/v1, used by the
// CLI, by tests and by examples, plus the credentials file the CLI keeps.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/buildinfo"
	"github.com/plinth-dev/plinth/internal/workspace"
)

// Client calls one Plinth server with one API key.
type Client struct {
	BaseURL string
	Key     string
	HTTP    *http.Client
}

// New returns a client for the server at baseURL (e.g.
// http://127.0.0.1:8080) authenticating with key.
func New(baseURL, key string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Key: key, HTTP: &http.Client{Timeout: 60 * time.Second}}
}

// Error is an error answer from the server, in the API's error shape.
type Error struct {
	Status    int
	Code      string
	Message   string
	Details   map[string]any
	RequestID string
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message)
	}
	return e.Message
}

// Do sends a request with an optional JSON body and decodes a JSON answer
// into out (when out is not nil).
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body io.Reader
	contentType := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encoding request: %w", err)
		}
		body, contentType = bytes.NewReader(b), "application/json"
	}
	return c.send(ctx, c.HTTP, method, path, query, body, -1, contentType, out)
}

// send is Do with any body: size is its length (-1 when unknown).
func (c *Client) send(ctx context.Context, hc *http.Client, method, path string, query url.Values, body io.Reader, size int64, contentType string, out any) error {
	u := c.BaseURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	if size >= 0 {
		req.ContentLength = size
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	c.authorize(req)
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach Plinth at %s: %w", c.BaseURL, unwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading answer from %s: %w", c.BaseURL, err)
	}
	if resp.StatusCode >= 300 {
		return errorFrom(resp, data)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decoding answer from %s %s: %w", method, path, err)
	}
	return nil
}

// authorize sets the headers every request carries.
func (c *Client) authorize(req *http.Request) {
	req.Header.Set("User-Agent", "plinth-cli/"+buildinfo.Get().Version)
	if c.Key != "" {
		req.Header.Set("Authorization", "Bearer "+c.Key)
	}
}

// errorFrom turns an error answer into an *Error.
func errorFrom(resp *http.Response, data []byte) error {
	apiErr := &Error{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id")}
	var eb struct {
		Error struct {
			Code    string         `json:"code"`
			Message string         `json:"message"`
			Details map[string]any `json:"details"`
		} `json:"error"`
	}
	var mlflowErr struct {
		ErrorCode string `json:"error_code"`
		Message   string `json:"message"`
	}
	if json.Unmarshal(data, &eb) == nil && eb.Error.Message != "" {
		apiErr.Code, apiErr.Message, apiErr.Details = eb.Error.Code, eb.Error.Message, eb.Error.Details
	} else if json.Unmarshal(data, &mlflowErr) == nil && mlflowErr.ErrorCode != "" {
		apiErr.Code, apiErr.Message = mlflowErr.ErrorCode, mlflowErr.Message
	} else {
		apiErr.Message = strings.TrimSpace(string(data))
		if apiErr.Message == "" {
			apiErr.Message = resp.Status
		}
	}
	return apiErr
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

func esc(s string) string { return url.PathEscape(s) }

// WhoAmI describes the caller.
type WhoAmI struct {
	Principal    string `json:"principal"`
	Kind         string `json:"kind"`
	KeyID        string `json:"key_id"`
	KeyWorkspace string `json:"key_workspace,omitempty"`
	Grants       []struct {
		Role  string `json:"role"`
		Scope string `json:"scope"`
	} `json:"grants"`
}

// WhoAmI returns the principal and roles behind the client's key.
func (c *Client) WhoAmI(ctx context.Context) (WhoAmI, error) {
	var out WhoAmI
	return out, c.Do(ctx, "GET", "/api/v1/whoami", nil, nil, &out)
}

// ListWorkspaces returns one page of workspaces and the next page token.
func (c *Client) ListWorkspaces(ctx context.Context, team, pageToken string, pageSize int) ([]workspace.Workspace, string, error) {
	q := url.Values{}
	if team != "" {
		q.Set("team", team)
	}
	if pageToken != "" {
		q.Set("page_token", pageToken)
	}
	if pageSize > 0 {
		q.Set("page_size", strconv.Itoa(pageSize))
	}
	var out struct {
		Workspaces []workspace.Workspace `json:"workspaces"`
		Next       string                `json:"next_page_token"`
	}
	err := c.Do(ctx, "GET", "/api/v1/workspaces", q, nil, &out)
	return out.Workspaces, out.Next, err
}

// CreateWorkspace creates a workspace.
func (c *Client) CreateWorkspace(ctx context.Context, in workspace.CreateInput) (workspace.Workspace, error) {
	var out workspace.Workspace
	return out, c.Do(ctx, "POST", "/api/v1/workspaces", nil, in, &out)
}

// GetWorkspace returns a workspace.
func (c *Client) GetWorkspace(ctx context.Context, name string) (workspace.Workspace, error) {
	var out workspace.Workspace
	return out, c.Do(ctx, "GET", "/api/v1/workspaces/"+esc(name), nil, nil, &out)
}

// UpdateWorkspace changes the fields set in in.
func (c *Client) UpdateWorkspace(ctx context.Context, name string, in workspace.UpdateInput) (workspace.Workspace, error) {
	var out workspace.Workspace
	return out, c.Do(ctx, "PATCH", "/api/v1/workspaces/"+esc(name), nil, in, &out)
}

// DeleteWorkspace deletes a workspace; force deletes what it holds too.
func (c *Client) DeleteWorkspace(ctx context.Context, name string, force bool) error {
	q := url.Values{}
	if force {
		q.Set("force", "true")
	}
	return c.Do(ctx, "DELETE", "/api/v1/workspaces/"+esc(name), q, nil, nil)
}

// Regions lists the region names a workspace may use.
func (c *Client) Regions(ctx context.Context) ([]string, error) {
	var out struct {
		Regions []string `json:"regions"`
	}
	return out.Regions, c.Do(ctx, "GET", "/api/v1/regions", nil, nil, &out)
}

// CreatedKey is a new key with its secret, shown only this once.
type CreatedKey struct {
	Key    auth.APIKey `json:"key"`
	Secret string      `json:"secret"`
}

// KeyInput is the body of a create-key request.
type KeyInput struct {
	Name      string     `json:"name"`
	Principal string     `json:"principal,omitempty"`
	Workspace string     `json:"workspace,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	ExpiresIn string     `json:"expires_in,omitempty"`
}

// CreateKey creates an API key.
func (c *Client) CreateKey(ctx context.Context, in KeyInput) (CreatedKey, error) {
	var out CreatedKey
	return out, c.Do(ctx, "POST", "/api/v1/keys", nil, in, &out)
}

// ListKeys lists a principal's keys ("" for the caller's own).
func (c *Client) ListKeys(ctx context.Context, principal string, includeRevoked bool) ([]auth.APIKey, error) {
	q := url.Values{}
	if principal != "" {
		q.Set("principal", principal)
	}
	if includeRevoked {
		q.Set("include_revoked", "true")
	}
	var out struct {
		Keys []auth.APIKey `json:"keys"`
	}
	return out.Keys, c.Do(ctx, "GET", "/api/v1/keys", q, nil, &out)
}

// RevokeKey revokes a key by id.
func (c *Client) RevokeKey(ctx context.Context, id string) (auth.APIKey, error) {
	var out auth.APIKey
	return out, c.Do(ctx, "DELETE", "/api/v1/keys/"+esc(id), nil, nil, &out)
}

// CreatePrincipal creates a user or service principal.
func (c *Client) CreatePrincipal(ctx context.Context, in auth.CreatePrincipalInput) (auth.Principal, error) {
	var out auth.Principal
	return out, c.Do(ctx, "POST", "/api/v1/principals", nil, in, &out)
}

// ListPrincipals returns one page of principals.
func (c *Client) ListPrincipals(ctx context.Context, pageToken string, pageSize int) ([]auth.Principal, string, error) {
	q := url.Values{}
	if pageToken != "" {
		q.Set("page_token", pageToken)
	}
	if pageSize > 0 {
		q.Set("page_size", strconv.Itoa(pageSize))
	}
	var out struct {
		Principals []auth.Principal `json:"principals"`
		Next       string           `json:"next_page_token"`
	}
	err := c.Do(ctx, "GET", "/api/v1/principals", q, nil, &out)
	return out.Principals, out.Next, err
}

// GetPrincipal returns a principal.
func (c *Client) GetPrincipal(ctx context.Context, name string) (auth.Principal, error) {
	var out auth.Principal
	return out, c.Do(ctx, "GET", "/api/v1/principals/"+esc(name), nil, nil, &out)
}

// DeletePrincipal deletes a principal with its keys and roles.
func (c *Client) DeletePrincipal(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", "/api/v1/principals/"+esc(name), nil, nil, nil)
}

func rolesPath(ws string) string {
	if ws == "" {
		return "/api/v1/role-assignments"
	}
	return "/api/v1/workspaces/" + esc(ws) + "/role-assignments"
}

// AssignRole grants a role in a workspace ("" for platform scope).
func (c *Client) AssignRole(ctx context.Context, ws, principal, role string) (auth.RoleAssignment, error) {
	var out auth.RoleAssignment
	return out, c.Do(ctx, "POST", rolesPath(ws), nil, auth.AssignRoleInput{Principal: principal, Role: role}, &out)
}

// ListRoles lists role assignments at a scope, optionally for one principal.
func (c *Client) ListRoles(ctx context.Context, ws, principal string) ([]auth.RoleAssignment, error) {
	q := url.Values{}
	if principal != "" {
		q.Set("principal", principal)
	}
	var out struct {
		RoleAssignments []auth.RoleAssignment `json:"role_assignments"`
	}
	return out.RoleAssignments, c.Do(ctx, "GET", rolesPath(ws), q, nil, &out)
}

// RemoveRole deletes a role assignment at a scope.
func (c *Client) RemoveRole(ctx context.Context, ws, id string) error {
	return c.Do(ctx, "DELETE", rolesPath(ws)+"/"+esc(id), nil, nil, nil)
}

// RoleDefinition is a built-in role and its permissions.
type RoleDefinition struct {
	Name        string   `json:"name"`
	Permissions []string `json:"permissions"`
}

// RoleDefinitions lists the built-in roles.
func (c *Client) RoleDefinitions(ctx context.Context) ([]RoleDefinition, error) {
	var out struct {
		Roles []RoleDefinition `json:"roles"`
	}
	return out.Roles, c.Do(ctx, "GET", "/api/v1/roles", nil, nil, &out)
}

// AuditQuery filters an audit listing; Since and Until take RFC 3339 times
// or durations ago ("24h").
type AuditQuery struct {
	Workspace, Principal, Resource, Action, Result, Since, Until string
	PageSize                                                     int
	PageToken                                                    string
}

// ListAudit returns audit records newest first and the next page token.
func (c *Client) ListAudit(ctx context.Context, f AuditQuery) ([]audit.Record, string, error) {
	q := url.Values{}
	for k, v := range map[string]string{"principal": f.Principal, "resource": f.Resource, "action": f.Action,
		"result": f.Result, "since": f.Since, "until": f.Until, "page_token": f.PageToken} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.PageSize > 0 {
		q.Set("page_size", strconv.Itoa(f.PageSize))
	}
	path := "/api/v1/audit"
	if f.Workspace != "" {
		path = "/api/v1/workspaces/" + esc(f.Workspace) + "/audit"
	}
	var out struct {
		Records []audit.Record `json:"records"`
		Next    string         `json:"next_page_token"`
	}
	err := c.Do(ctx, "GET", path, q, nil, &out)
	return out.Records, out.Next, err
}

// VerifyAudit checks the audit log's hash chain on the server.
func (c *Client) VerifyAudit(ctx context.Context) (audit.Report, error) {
	var out audit.Report
	return out, c.Do(ctx, "GET", "/api/v1/audit/verify", nil, nil, &out)
}

// LineageNode, LineageEdge and Lineage mirror the lineage graph answer.
type LineageNode struct {
	ID         string            `json:"id"`
	Kind       string            `json:"kind"`
	Label      string            `json:"label"`
	Attributes map[string]string `json:"attributes,omitempty"`
}

// LineageEdge says From went into To.
type LineageEdge struct {
	From string `json:"from"`
	To   string `json:"to"`
	Kind string `json:"kind"`
}

// Lineage is the graph around a node.
type Lineage struct {
	Root      string        `json:"root"`
	Direction string        `json:"direction"`
	Depth     int           `json:"depth"`
	Nodes     []LineageNode `json:"nodes"`
	Edges     []LineageEdge `json:"edges"`
}

// Lineage walks the lineage graph from node.
func (c *Client) Lineage(ctx context.Context, ws, node, direction string, depth int) (Lineage, error) {
	q := url.Values{"node": {node}}
	if direction != "" {
		q.Set("direction", direction)
	}
	if depth > 0 {
		q.Set("depth", strconv.Itoa(depth))
	}
	var out Lineage
	return out, c.Do(ctx, "GET", "/api/v1/workspaces/"+esc(ws)+"/lineage", q, nil, &out)
}

// TraceVersion returns a model version's traceability record as JSON.
func (c *Client) TraceVersion(ctx context.Context, ws, name, version string) (map[string]any, error) {
	var out map[string]any
	return out, c.Do(ctx, "GET", "/api/v1/workspaces/"+esc(ws)+"/models/"+esc(name)+"/versions/"+esc(version)+"/trace", nil, nil, &out)
}
