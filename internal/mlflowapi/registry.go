package mlflowapi

import (
	"net/http"

	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/registry"
	"github.com/plinth-dev/plinth/internal/tracking"
)

// The MLflow Model Registry REST API (model_registry.proto), on the same
// routes, auth and audit as tracking.

var (
	patch = []string{"PATCH"}
	del   = []string{"DELETE"}
)

func (a *API) registryEndpoints() []endpoint {
	read, write := auth.RegistryRead, auth.RegistryWrite
	return []endpoint{
		{post, "/registered-models/create", write, "model.create", a.createModel},
		{post, "/registered-models/rename", write, "model.rename", a.renameModel},
		{patch, "/registered-models/update", write, "model.update", a.updateModel},
		{del, "/registered-models/delete", write, "model.delete", a.deleteModel},
		{get, "/registered-models/get", read, "", a.getModel},
		{getPost, "/registered-models/search", read, "", a.searchModels},
		{getPost, "/registered-models/get-latest-versions", read, "", a.getLatestVersions},
		{post, "/registered-models/set-tag", write, "model.set-tag", a.setModelTag},
		{del, "/registered-models/delete-tag", write, "model.delete-tag", a.deleteModelTag},
		{post, "/registered-models/alias", write, "model.alias.set", a.setAlias},
		{del, "/registered-models/alias", write, "model.alias.delete", a.deleteAlias},
		{get, "/registered-models/alias", read, "", a.getByAlias},
		{post, "/model-versions/create", write, "model.version.create", a.createVersion},
		{patch, "/model-versions/update", write, "model.version.update", a.updateVersion},
		{del, "/model-versions/delete", write, "model.version.delete", a.deleteVersion},
		{get, "/model-versions/get", read, "", a.getVersion},
		{getPost, "/model-versions/search", read, "", a.searchVersions},
		{get, "/model-versions/get-download-uri", read, "", a.getDownloadURI},
		{post, "/model-versions/transition-stage", write, "model.version.transition", a.transitionStage},
		{post, "/model-versions/set-tag", write, "model.version.set-tag", a.setVersionTag},
		{del, "/model-versions/delete-tag", write, "model.version.delete-tag", a.deleteVersionTag},
	}
}

type wireModelVersion struct {
	Name                 string    `json:"name"`
	Version              string    `json:"version"`
	CreationTimestamp    int64     `json:"creation_timestamp"`
	LastUpdatedTimestamp int64     `json:"last_updated_timestamp"`
	UserID               string    `json:"user_id,omitempty"`
	CurrentStage         string    `json:"current_stage"`
	Description          string    `json:"description,omitempty"`
	Source               string    `json:"source"`
	RunID                string    `json:"run_id,omitempty"`
	Status               string    `json:"status"`
	RunLink              string    `json:"run_link,omitempty"`
	Tags                 []wireTag `json:"tags,omitempty"`
	Aliases              []string  `json:"aliases,omitempty"`
}

type wireAlias struct {
	Alias   string `json:"alias"`
	Version string `json:"version"`
}

type wireRegisteredModel struct {
	Name                 string             `json:"name"`
	CreationTimestamp    int64              `json:"creation_timestamp"`
	LastUpdatedTimestamp int64              `json:"last_updated_timestamp"`
	Description          string             `json:"description,omitempty"`
	LatestVersions       []wireModelVersion `json:"latest_versions,omitempty"`
	Tags                 []wireTag          `json:"tags,omitempty"`
	Aliases              []wireAlias        `json:"aliases,omitempty"`
}

func regTags(tags []registry.Tag) []wireTag {
	var out []wireTag
	for _, t := range tags {
		out = append(out, wireTag{t.Key, t.Value})
	}
	return out
}

func regTagsIn(in []wireTag) []registry.Tag {
	var out []registry.Tag
	for _, t := range in {
		out = append(out, registry.Tag{Key: t.Key, Value: t.Value})
	}
	return out
}

func versionOut(v registry.Version) wireModelVersion {
	return wireModelVersion{Name: v.Name, Version: v.Version, CreationTimestamp: v.CreationTime, LastUpdatedTimestamp: v.LastUpdatedTime,
		UserID: v.UserID, CurrentStage: v.CurrentStage, Description: v.Description, Source: v.Source, RunID: v.RunID,
		Status: v.Status, RunLink: v.RunLink, Tags: regTags(v.Tags), Aliases: v.Aliases}
}

func versionsOut(vs []registry.Version) []wireModelVersion {
	var out []wireModelVersion
	for _, v := range vs {
		out = append(out, versionOut(v))
	}
	return out
}

func modelOut(m registry.Model) wireRegisteredModel {
	out := wireRegisteredModel{Name: m.Name, CreationTimestamp: m.CreationTime, LastUpdatedTimestamp: m.LastUpdatedTime,
		Description: m.Description, LatestVersions: versionsOut(m.LatestVersions), Tags: regTags(m.Tags)}
	for _, al := range m.Aliases {
		out.Aliases = append(out.Aliases, wireAlias{al.Alias, al.Version})
	}
	return out
}

type nameMsg struct {
	Name string `json:"name"`
}

func modelName(r *http.Request, body []byte) (string, error) {
	var m nameMsg
	if err := decode(r, body, &m); err != nil {
		return "", err
	}
	return m.Name, required("name", m.Name != "")
}

func (a *API) createModel(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		Name        string    `json:"name"`
		Tags        []wireTag `json:"tags"`
		Description string    `json:"description"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("name", m.Name != ""); err != nil {
		return nil, err
	}
	return modelAnswer(a.Registry.CreateModel(r.Context(), sc, m.Name, m.Description, regTagsIn(m.Tags)))
}

func (a *API) renameModel(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		Name    string `json:"name"`
		NewName string `json:"new_name"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("name", m.Name != ""); err != nil {
		return nil, err
	}
	if err := required("new_name", m.NewName != ""); err != nil {
		return nil, err
	}
	return modelAnswer(a.Registry.RenameModel(r.Context(), sc, m.Name, m.NewName))
}

func (a *API) updateModel(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		Name        string `json:"name"`
		Description string `json:"description"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("name", m.Name != ""); err != nil {
		return nil, err
	}
	return modelAnswer(a.Registry.UpdateModel(r.Context(), sc, m.Name, m.Description))
}

// deleteModel follows MLflow, plus Plinth's guard: a model with a version
// in Production needs "force": true (in the body or the query).
func (a *API) deleteModel(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		Name  string `json:"name"`
		Force bool   `json:"force"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("name", m.Name != ""); err != nil {
		return nil, err
	}
	if r.URL.Query().Get("force") == "true" {
		m.Force = true
	}
	if m.Force && !identityOf(r).Can(auth.RegistryPromote, sc.Workspace) {
		return nil, fault.New(fault.PermissionDenied, "Deleting a model that serves in Production needs %s", auth.RegistryPromote)
	}
	return empty{}, a.Registry.DeleteModel(r.Context(), sc, m.Name, m.Force)
}

func (a *API) getModel(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	name, err := modelName(r, body)
	if err != nil {
		return nil, err
	}
	return modelAnswer(a.Registry.GetModel(r.Context(), sc, name))
}

type registrySearchMsg struct {
	Filter     string   `json:"filter"`
	MaxResults optInt64 `json:"max_results"`
	OrderBy    []string `json:"order_by"`
	PageToken  string   `json:"page_token"`
}

func (a *API) searchModels(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m registrySearchMsg
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	models, next, err := a.Registry.SearchModels(r.Context(), sc, m.Filter, m.OrderBy, m.MaxResults.Value, m.PageToken)
	if err != nil {
		return nil, err
	}
	out := struct {
		RegisteredModels []wireRegisteredModel `json:"registered_models,omitempty"`
		NextPageToken    string                `json:"next_page_token,omitempty"`
	}{NextPageToken: next}
	for _, model := range models {
		out.RegisteredModels = append(out.RegisteredModels, modelOut(model))
	}
	return out, nil
}

func (a *API) getLatestVersions(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		Name   string   `json:"name"`
		Stages []string `json:"stages"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("name", m.Name != ""); err != nil {
		return nil, err
	}
	vs, err := a.Registry.LatestVersions(r.Context(), sc, m.Name, m.Stages)
	if err != nil {
		return nil, err
	}
	return struct {
		ModelVersions []wireModelVersion `json:"model_versions,omitempty"`
	}{versionsOut(vs)}, nil
}

type modelTagMsg struct {
	Name  string  `json:"name"`
	Key   *string `json:"key"`
	Value *string `json:"value"`
}

func (a *API) setModelTag(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m modelTagMsg
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	for _, req := range []struct {
		n  string
		ok bool
	}{{"name", m.Name != ""}, {"key", m.Key != nil}, {"value", m.Value != nil}} {
		if err := required(req.n, req.ok); err != nil {
			return nil, err
		}
	}
	return empty{}, a.Registry.SetModelTag(r.Context(), sc, m.Name, *m.Key, *m.Value)
}

func (a *API) deleteModelTag(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m modelTagMsg
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("name", m.Name != ""); err != nil {
		return nil, err
	}
	if err := required("key", m.Key != nil); err != nil {
		return nil, err
	}
	return empty{}, a.Registry.DeleteModelTag(r.Context(), sc, m.Name, *m.Key)
}

type aliasMsg struct {
	Name    string `json:"name"`
	Alias   string `json:"alias"`
	Version string `json:"version"`
}

func (a *API) aliasMsg(r *http.Request, body []byte) (aliasMsg, error) {
	var m aliasMsg
	if err := decode(r, body, &m); err != nil {
		return m, err
	}
	if err := required("name", m.Name != ""); err != nil {
		return m, err
	}
	return m, required("alias", m.Alias != "")
}

func (a *API) setAlias(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	m, err := a.aliasMsg(r, body)
	if err != nil {
		return nil, err
	}
	if err := required("version", m.Version != ""); err != nil {
		return nil, err
	}
	return empty{}, a.Registry.SetAlias(r.Context(), sc, m.Name, m.Alias, m.Version)
}

func (a *API) deleteAlias(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	m, err := a.aliasMsg(r, body)
	if err != nil {
		return nil, err
	}
	return empty{}, a.Registry.DeleteAlias(r.Context(), sc, m.Name, m.Alias)
}

func (a *API) getByAlias(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	m, err := a.aliasMsg(r, body)
	if err != nil {
		return nil, err
	}
	return versionAnswer(a.Registry.VersionByAlias(r.Context(), sc, m.Name, m.Alias))
}

func (a *API) createVersion(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m struct {
		Name        string    `json:"name"`
		Source      string    `json:"source"`
		RunID       string    `json:"run_id"`
		Tags        []wireTag `json:"tags"`
		RunLink     string    `json:"run_link"`
		Description string    `json:"description"`
	}
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	if err := required("name", m.Name != ""); err != nil {
		return nil, err
	}
	if err := required("source", m.Source != ""); err != nil {
		return nil, err
	}
	v, err := a.Registry.CreateVersion(r.Context(), sc, registry.CreateVersionInput{Name: m.Name, Source: m.Source, RunID: m.RunID,
		RunLink: m.RunLink, Description: m.Description, Tags: regTagsIn(m.Tags)})
	if err != nil {
		return nil, err
	}
	return map[string]any{"model_version": versionOut(v)}, nil
}

type versionMsg struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

func versionOf(r *http.Request, body []byte, extra any) (versionMsg, error) {
	var m versionMsg
	if err := decode(r, body, &m); err != nil {
		return m, err
	}
	if extra != nil {
		if err := decode(r, body, extra); err != nil {
			return m, err
		}
	}
	if err := required("name", m.Name != ""); err != nil {
		return m, err
	}
	return m, required("version", m.Version != "")
}

func (a *API) updateVersion(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var d struct {
		Description string `json:"description"`
	}
	m, err := versionOf(r, body, &d)
	if err != nil {
		return nil, err
	}
	return versionAnswer(a.Registry.UpdateVersion(r.Context(), sc, m.Name, m.Version, d.Description))
}

func (a *API) deleteVersion(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	m, err := versionOf(r, body, nil)
	if err != nil {
		return nil, err
	}
	return empty{}, a.Registry.DeleteVersion(r.Context(), sc, m.Name, m.Version)
}

func (a *API) getVersion(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	m, err := versionOf(r, body, nil)
	if err != nil {
		return nil, err
	}
	return versionAnswer(a.Registry.GetVersion(r.Context(), sc, m.Name, m.Version))
}

func (a *API) searchVersions(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var m registrySearchMsg
	if err := decode(r, body, &m); err != nil {
		return nil, err
	}
	vs, next, err := a.Registry.SearchVersions(r.Context(), sc, m.Filter, m.OrderBy, m.MaxResults.Value, m.PageToken)
	if err != nil {
		return nil, err
	}
	return struct {
		ModelVersions []wireModelVersion `json:"model_versions,omitempty"`
		NextPageToken string             `json:"next_page_token,omitempty"`
	}{versionsOut(vs), next}, nil
}

func (a *API) getDownloadURI(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	m, err := versionOf(r, body, nil)
	if err != nil {
		return nil, err
	}
	uri, err := a.Registry.DownloadURI(r.Context(), sc, m.Name, m.Version)
	if err != nil {
		return nil, err
	}
	return map[string]string{"artifact_uri": uri}, nil
}

// transitionStage needs registry.promote (not just registry.write) to move
// a version into or out of Production.
func (a *API) transitionStage(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var d struct {
		Stage                   string `json:"stage"`
		ArchiveExistingVersions bool   `json:"archive_existing_versions"`
	}
	m, err := versionOf(r, body, &d)
	if err != nil {
		return nil, err
	}
	if err := required("stage", d.Stage != ""); err != nil {
		return nil, err
	}
	stage, err := registry.ParseStage(d.Stage)
	if err != nil {
		return nil, err
	}
	current, err := a.Registry.GetVersion(r.Context(), sc, m.Name, m.Version)
	if err != nil {
		return nil, err
	}
	if (stage == "Production" || current.CurrentStage == "Production") && !identityOf(r).Can(auth.RegistryPromote, sc.Workspace) {
		return nil, fault.New(fault.PermissionDenied, "Moving a model version into or out of Production needs %s", auth.RegistryPromote)
	}
	return versionAnswer(a.Registry.TransitionStage(r.Context(), sc, m.Name, m.Version, stage, d.ArchiveExistingVersions))
}

type versionTagMsg struct {
	Key   *string `json:"key"`
	Value *string `json:"value"`
}

func (a *API) setVersionTag(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var t versionTagMsg
	m, err := versionOf(r, body, &t)
	if err != nil {
		return nil, err
	}
	if err := required("key", t.Key != nil); err != nil {
		return nil, err
	}
	if err := required("value", t.Value != nil); err != nil {
		return nil, err
	}
	return empty{}, a.Registry.SetVersionTag(r.Context(), sc, m.Name, m.Version, *t.Key, *t.Value)
}

func (a *API) deleteVersionTag(r *http.Request, body []byte, sc tracking.Scope) (any, error) {
	var t versionTagMsg
	m, err := versionOf(r, body, &t)
	if err != nil {
		return nil, err
	}
	if err := required("key", t.Key != nil); err != nil {
		return nil, err
	}
	return empty{}, a.Registry.DeleteVersionTag(r.Context(), sc, m.Name, m.Version, *t.Key)
}

// modelAnswer and versionAnswer wrap a registry result the way MLflow
// answers with one model or one version.
func modelAnswer(m registry.Model, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return map[string]any{"registered_model": modelOut(m)}, nil
}

func versionAnswer(v registry.Version, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return map[string]any{"model_version": versionOut(v)}, nil
}
