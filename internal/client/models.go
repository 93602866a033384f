package client

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"strings"
)

// The model registry is read and written through the MLflow Model Registry
// REST API, as every MLflow client does.

// RegisteredModel is an MLflow registered model.
type RegisteredModel struct {
	Name                 string         `json:"name"`
	CreationTimestamp    int64          `json:"creation_timestamp"`
	LastUpdatedTimestamp int64          `json:"last_updated_timestamp"`
	Description          string         `json:"description,omitempty"`
	LatestVersions       []ModelVersion `json:"latest_versions,omitempty"`
	Aliases              []ModelAlias   `json:"aliases,omitempty"`
	Tags                 []Tag          `json:"tags,omitempty"`
}

// ModelAlias points an alias at a version.
type ModelAlias struct {
	Alias   string `json:"alias"`
	Version string `json:"version"`
}

// ModelVersion is an MLflow model version.
type ModelVersion struct {
	Name              string   `json:"name"`
	Version           string   `json:"version"`
	CreationTimestamp int64    `json:"creation_timestamp"`
	UserID            string   `json:"user_id,omitempty"`
	CurrentStage      string   `json:"current_stage"`
	Description       string   `json:"description,omitempty"`
	Source            string   `json:"source"`
	RunID             string   `json:"run_id,omitempty"`
	Status            string   `json:"status"`
	Aliases           []string `json:"aliases,omitempty"`
	Tags              []Tag    `json:"tags,omitempty"`
}

// RegisterModelVersion adds a version to the named model, creating the
// model on its first version, as mlflow.register_model does. A runs:/
// source names its run.
func (c *Client) RegisterModelVersion(ctx context.Context, ws, name, source, description string) (ModelVersion, error) {
	base := MLflowBase(ws)
	err := c.Do(ctx, "POST", base+"/registered-models/create", nil, map[string]any{"name": name}, nil)
	var apiErr *Error
	if err != nil && !(errors.As(err, &apiErr) && apiErr.Code == "RESOURCE_ALREADY_EXISTS") {
		return ModelVersion{}, err
	}
	body := map[string]any{"name": name, "source": source}
	if rest, ok := strings.CutPrefix(source, "runs:/"); ok {
		body["run_id"], _, _ = strings.Cut(rest, "/")
	}
	if description != "" {
		body["description"] = description
	}
	var out struct {
		ModelVersion ModelVersion `json:"model_version"`
	}
	return out.ModelVersion, c.Do(ctx, "POST", base+"/model-versions/create", nil, body, &out)
}

// ListRegisteredModels returns one page of the workspace's models.
func (c *Client) ListRegisteredModels(ctx context.Context, ws, filter, pageToken string, max int) ([]RegisteredModel, string, error) {
	q := url.Values{"max_results": {strconv.Itoa(max)}}
	if filter != "" {
		q.Set("filter", filter)
	}
	if pageToken != "" {
		q.Set("page_token", pageToken)
	}
	var out struct {
		Models []RegisteredModel `json:"registered_models"`
		Next   string            `json:"next_page_token"`
	}
	err := c.Do(ctx, "GET", MLflowBase(ws)+"/registered-models/search", q, nil, &out)
	return out.Models, out.Next, err
}

// GetRegisteredModel returns a model and every version of it.
func (c *Client) GetRegisteredModel(ctx context.Context, ws, name string) (RegisteredModel, []ModelVersion, error) {
	var m struct {
		Model RegisteredModel `json:"registered_model"`
	}
	if err := c.Do(ctx, "GET", MLflowBase(ws)+"/registered-models/get", url.Values{"name": {name}}, nil, &m); err != nil {
		return RegisteredModel{}, nil, err
	}
	var all []ModelVersion
	token := ""
	for {
		q := url.Values{"filter": {"name='" + strings.ReplaceAll(name, "'", "\\'") + "'"}, "max_results": {"1000"}}
		if token != "" {
			q.Set("page_token", token)
		}
		var out struct {
			Versions []ModelVersion `json:"model_versions"`
			Next     string         `json:"next_page_token"`
		}
		if err := c.Do(ctx, "GET", MLflowBase(ws)+"/model-versions/search", q, nil, &out); err != nil {
			return m.Model, nil, err
		}
		all = append(all, out.Versions...)
		if out.Next == "" {
			return m.Model, all, nil
		}
		token = out.Next
	}
}

// SetModelAlias points alias at a version of the model.
func (c *Client) SetModelAlias(ctx context.Context, ws, name, alias, version string) error {
	return c.Do(ctx, "POST", MLflowBase(ws)+"/registered-models/alias", nil, map[string]any{"name": name, "alias": alias, "version": version}, nil)
}
