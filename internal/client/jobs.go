package client

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/jobs"
	"github.com/plinth-dev/plinth/internal/registry"
)

func wsPath(ws string) string { return "/api/v1/workspaces/" + esc(ws) }

// SKUs lists the SKU catalogue.
func (c *Client) SKUs(ctx context.Context) ([]compute.SKU, error) {
	var out struct {
		SKUs []compute.SKU `json:"skus"`
	}
	err := c.Do(ctx, "GET", "/api/v1/skus", nil, nil, &out)
	return out.SKUs, err
}

// ListComputes lists a workspace's compute targets.
func (c *Client) ListComputes(ctx context.Context, ws string) ([]compute.Target, error) {
	var out struct {
		Computes []compute.Target `json:"computes"`
	}
	err := c.Do(ctx, "GET", wsPath(ws)+"/computes", nil, nil, &out)
	return out.Computes, err
}

// GetCompute shows one compute target.
func (c *Client) GetCompute(ctx context.Context, ws, name string) (compute.Target, error) {
	var t compute.Target
	err := c.Do(ctx, "GET", wsPath(ws)+"/computes/"+esc(name), nil, nil, &t)
	return t, err
}

// CreateCompute creates a cluster.
func (c *Client) CreateCompute(ctx context.Context, ws string, in compute.TargetInput) (compute.Target, error) {
	var t compute.Target
	err := c.Do(ctx, "POST", wsPath(ws)+"/computes", nil, in, &t)
	return t, err
}

// UpdateCompute changes a cluster.
func (c *Client) UpdateCompute(ctx context.Context, ws, name string, in compute.TargetInput) (compute.Target, error) {
	var t compute.Target
	err := c.Do(ctx, "PATCH", wsPath(ws)+"/computes/"+esc(name), nil, in, &t)
	return t, err
}

// OperateCompute starts, stops or restarts an instance.
func (c *Client) OperateCompute(ctx context.Context, ws, name, verb string) (compute.Target, error) {
	var t compute.Target
	err := c.Do(ctx, "POST", wsPath(ws)+"/computes/"+esc(name)+"/"+verb, nil, nil, &t)
	return t, err
}

// DeleteCompute deletes a cluster.
func (c *Client) DeleteCompute(ctx context.Context, ws, name string) error {
	return c.Do(ctx, "DELETE", wsPath(ws)+"/computes/"+esc(name), nil, nil, nil)
}

// Quotas lists a workspace's quotas with their use.
func (c *Client) Quotas(ctx context.Context, ws string) ([]compute.QuotaView, error) {
	var out struct {
		Quotas []compute.QuotaView `json:"quotas"`
	}
	err := c.Do(ctx, "GET", wsPath(ws)+"/quotas", nil, nil, &out)
	return out.Quotas, err
}

// SetQuota sets a family's quota; nil for both removes it.
func (c *Client) SetQuota(ctx context.Context, ws, family string, vcpus, gpus *int) ([]compute.QuotaView, error) {
	var out struct {
		Quotas []compute.QuotaView `json:"quotas"`
	}
	err := c.Do(ctx, "PUT", wsPath(ws)+"/quotas/"+esc(family), nil, map[string]*int{"vcpus": vcpus, "gpus": gpus}, &out)
	return out.Quotas, err
}

// SubmitOptions tune SubmitJob.
type SubmitOptions struct {
	// Name replaces the job file's name.
	Name string
	// StateDir keeps upload state for local inputs (see UploadOptions).
	StateDir string
	// Progress reports uploads of the code folder and local inputs.
	Progress func(what string, p UploadProgress)
}

// SubmitJob submits a job file: it snapshots and uploads the code folder
// (only its digest travels again when unchanged), uploads each local
// input folder or file as a data asset named <job name or file>-<input>,
// and submits the file with those references.
func (c *Client) SubmitJob(ctx context.Context, ws, file string, o SubmitOptions) (jobs.Job, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return jobs.Job{}, err
	}
	spec, err := jobs.Parse(data, file)
	if err != nil {
		return jobs.Job{}, err
	}
	in := jobs.SubmitInput{JobFile: string(data), FileName: filepath.Base(file), Name: o.Name, Inputs: map[string]string{}}
	if o.Name != "" {
		spec.Name = o.Name
	}
	if spec.Code != "" {
		snap, err := jobs.SnapshotCode(spec.CodeDir())
		if err != nil {
			return jobs.Job{}, fmt.Errorf("code folder: %w", err)
		}
		var buf bytes.Buffer
		if err := snap.WriteTarGz(&buf); err != nil {
			return jobs.Job{}, fmt.Errorf("packing the code folder: %w", err)
		}
		var out struct {
			Digest string `json:"digest"`
		}
		if err := c.send(ctx, c.transfer(), "POST", wsPath(ws)+"/jobs/code", nil, bytes.NewReader(buf.Bytes()), int64(buf.Len()), "application/gzip", &out); err != nil {
			return jobs.Job{}, fmt.Errorf("uploading the code folder: %w", err)
		}
		in.CodeDigest = out.Digest
	}
	base := spec.Name
	if base == "" {
		base = strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	}
	for name, inp := range spec.Inputs {
		if inp.IsLiteral() || inp.Path == "" {
			continue
		}
		src, err := jobs.ParseSource(inp.Path)
		if err != nil || src.Kind != jobs.SourceLocal {
			continue
		}
		local := spec.Resolve(strings.TrimPrefix(inp.Path, "file://"))
		asset := sanitizeAsset(base + "-" + name)
		opts := UploadOptions{StateDir: o.StateDir, Description: "input " + name + " of " + filepath.Base(file)}
		if inp.Type == registry.TypeFile || inp.Type == registry.TypeFolder {
			opts.Type = inp.Type
		}
		if o.Progress != nil {
			opts.Progress = func(p UploadProgress) { o.Progress(name, p) }
		}
		res, err := c.UploadData(ctx, ws, asset, local, opts)
		if err != nil {
			return jobs.Job{}, fmt.Errorf("uploading input %s (%s): %w", name, local, err)
		}
		in.Inputs[name] = res.Version.URI
	}
	var j jobs.Job
	err = c.Do(ctx, "POST", wsPath(ws)+"/jobs", nil, in, &j)
	return j, err
}

func sanitizeAsset(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	out := strings.TrimLeft(b.String(), "._-")
	if out == "" {
		out = "job-input"
	}
	return out
}

// ListJobs lists a workspace's jobs, newest first.
func (c *Client) ListJobs(ctx context.Context, ws, status string, limit int) ([]jobs.Job, error) {
	q := url.Values{}
	if status != "" {
		q.Set("status", status)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Jobs []jobs.Job `json:"jobs"`
	}
	err := c.Do(ctx, "GET", wsPath(ws)+"/jobs", q, nil, &out)
	return out.Jobs, err
}

// GetJob shows a job by id or name.
func (c *Client) GetJob(ctx context.Context, ws, id string) (jobs.Job, error) {
	var j jobs.Job
	err := c.Do(ctx, "GET", wsPath(ws)+"/jobs/"+esc(id), nil, nil, &j)
	return j, err
}

// CancelJob cancels a job.
func (c *Client) CancelJob(ctx context.Context, ws, id string) (jobs.Job, error) {
	var j jobs.Job
	err := c.Do(ctx, "POST", wsPath(ws)+"/jobs/"+esc(id)+"/cancel", nil, nil, &j)
	return j, err
}

// JobLogs copies a job's output to w; with follow, until the job ends.
func (c *Client) JobLogs(ctx context.Context, ws, id string, follow bool, w io.Writer) error {
	return c.stream(ctx, wsPath(ws)+"/jobs/"+esc(id)+"/logs", url.Values{"follow": {strconv.FormatBool(follow)}}, w)
}

// stream copies a plain-text answer to w as it arrives (logs).
func (c *Client) stream(ctx context.Context, path string, q url.Values, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, "GET", c.BaseURL+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	c.authorize(req)
	resp, err := c.transfer().Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach Plinth at %s: %w", c.BaseURL, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return errorFrom(resp, data)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// WaitJob polls a job until it ends or ctx ends.
func (c *Client) WaitJob(ctx context.Context, ws, id string) (jobs.Job, error) {
	for {
		j, err := c.GetJob(ctx, ws, id)
		if err != nil || jobs.Terminal(j.Status) {
			return j, err
		}
		select {
		case <-ctx.Done():
			return j, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// CostReport is a cost report.
type CostReport struct {
	By    string    `json:"by"`
	Since time.Time `json:"since"`
	Basis string    `json:"basis"`
	Total float64   `json:"total"`
	Rows  []struct {
		Key         string  `json:"key"`
		Jobs        int     `json:"jobs,omitempty"`
		NodeSeconds float64 `json:"node_seconds"`
		Cost        float64 `json:"cost"`
	} `json:"rows"`
}

// Cost reports cost grouped by team, workspace, compute, sku, user,
// experiment or job since a duration ago ("7d", "24h").
func (c *Client) Cost(ctx context.Context, by, since string) (CostReport, error) {
	var r CostReport
	err := c.Do(ctx, "GET", "/api/v1/cost", url.Values{"by": {by}, "since": {since}}, nil, &r)
	return r, err
}
