package client

import (
	"context"

	"github.com/plinth-dev/plinth/internal/llm"
)

func llmBackendPath(name string) string { return "/api/v1/llm/backends/" + esc(name) }
func llmModelPath(name string) string   { return "/api/v1/llm/models/" + esc(name) }
func llmLimitsPath(team string) string  { return "/api/v1/llm/teams/" + esc(team) + "/limits" }

// CreateLLMBackend creates a backend of the foundation-model front door.
func (c *Client) CreateLLMBackend(ctx context.Context, in llm.BackendInput) (llm.Backend, error) {
	var b llm.Backend
	err := c.Do(ctx, "POST", "/api/v1/llm/backends", nil, in, &b)
	return b, err
}

// ListLLMBackends lists the backends (never their credentials).
func (c *Client) ListLLMBackends(ctx context.Context) ([]llm.Backend, error) {
	var out struct {
		Backends []llm.Backend `json:"backends"`
	}
	err := c.Do(ctx, "GET", "/api/v1/llm/backends", nil, nil, &out)
	return out.Backends, err
}

// GetLLMBackend shows a backend.
func (c *Client) GetLLMBackend(ctx context.Context, name string) (llm.Backend, error) {
	var b llm.Backend
	err := c.Do(ctx, "GET", llmBackendPath(name), nil, nil, &b)
	return b, err
}

// UpdateLLMBackend changes a backend.
func (c *Client) UpdateLLMBackend(ctx context.Context, name string, in llm.BackendInput) (llm.Backend, error) {
	var b llm.Backend
	err := c.Do(ctx, "PATCH", llmBackendPath(name), nil, in, &b)
	return b, err
}

// DeleteLLMBackend deletes a backend no model uses.
func (c *Client) DeleteLLMBackend(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", llmBackendPath(name), nil, nil, nil)
}

// CreateLLMModel creates a model with its pool.
func (c *Client) CreateLLMModel(ctx context.Context, in llm.ModelInput) (llm.Model, error) {
	var m llm.Model
	err := c.Do(ctx, "POST", "/api/v1/llm/models", nil, in, &m)
	return m, err
}

// ListLLMModels lists the models with their pools.
func (c *Client) ListLLMModels(ctx context.Context) ([]llm.Model, error) {
	var out struct {
		Models []llm.Model `json:"models"`
	}
	err := c.Do(ctx, "GET", "/api/v1/llm/models", nil, nil, &out)
	return out.Models, err
}

// GetLLMModel shows a model.
func (c *Client) GetLLMModel(ctx context.Context, name string) (llm.Model, error) {
	var m llm.Model
	err := c.Do(ctx, "GET", llmModelPath(name), nil, nil, &m)
	return m, err
}

// UpdateLLMModel changes a model.
func (c *Client) UpdateLLMModel(ctx context.Context, name string, in llm.ModelInput) (llm.Model, error) {
	var m llm.Model
	err := c.Do(ctx, "PATCH", llmModelPath(name), nil, in, &m)
	return m, err
}

// DeleteLLMModel deletes a model.
func (c *Client) DeleteLLMModel(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", llmModelPath(name), nil, nil, nil)
}

// ListLLMTeamLimits lists every team's limits.
func (c *Client) ListLLMTeamLimits(ctx context.Context) ([]llm.TeamLimits, error) {
	var out struct {
		Teams []llm.TeamLimits `json:"teams"`
	}
	err := c.Do(ctx, "GET", "/api/v1/llm/teams", nil, nil, &out)
	return out.Teams, err
}

// GetLLMTeamLimits shows a team's limits.
func (c *Client) GetLLMTeamLimits(ctx context.Context, team string) (llm.TeamLimits, error) {
	var l llm.TeamLimits
	err := c.Do(ctx, "GET", llmLimitsPath(team), nil, nil, &l)
	return l, err
}

// PutLLMTeamLimits sets all of a team's limits.
func (c *Client) PutLLMTeamLimits(ctx context.Context, team string, in llm.TeamLimitsInput) (llm.TeamLimits, error) {
	var l llm.TeamLimits
	err := c.Do(ctx, "PUT", llmLimitsPath(team), nil, in, &l)
	return l, err
}

// DeleteLLMTeamLimits removes a team's limits.
func (c *Client) DeleteLLMTeamLimits(ctx context.Context, team string) error {
	return c.Do(ctx, "DELETE", llmLimitsPath(team), nil, nil, nil)
}
