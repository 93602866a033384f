package api

import (
	"net/http"

	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/llm"
)

// The foundation-model front door: backends (credentials go in, never
// out), models and their pools, teams' limits and budgets.

func (a *API) llmRoutes() []Route {
	const (
		backends = "/api/v1/llm/backends"
		models   = "/api/v1/llm/models"
		teams    = "/api/v1/llm/teams"
	)
	return []Route{
		{Method: "GET", Path: backends, Permission: auth.LLMRead, Summary: "List LLM backends (never their credentials)", Handle: a.listLLMBackends},
		{Method: "POST", Path: backends, Permission: auth.LLMWrite, Action: "llm.backend.create", Status: http.StatusCreated, Summary: "Create an LLM backend; its credential is sealed and never shown again", Handle: a.createLLMBackend},
		{Method: "GET", Path: backends + "/{name}", Permission: auth.LLMRead, Summary: "Show an LLM backend (never its credential)", Handle: a.getLLMBackend},
		{Method: "PATCH", Path: backends + "/{name}", Permission: auth.LLMWrite, Action: "llm.backend.update", Summary: "Change an LLM backend or replace its credential", Handle: a.updateLLMBackend},
		{Method: "DELETE", Path: backends + "/{name}", Permission: auth.LLMWrite, Action: "llm.backend.delete", Status: http.StatusNoContent, Summary: "Delete an LLM backend that no model uses", Handle: a.deleteLLMBackend},
		{Method: "GET", Path: models, Permission: auth.LLMRead, Summary: "List LLM models with their backend pools", Handle: a.listLLMModels},
		{Method: "POST", Path: models, Permission: auth.LLMWrite, Action: "llm.model.create", Status: http.StatusCreated, Summary: "Create an LLM model with its pool of backends", Handle: a.createLLMModel},
		{Method: "GET", Path: models + "/{name}", Permission: auth.LLMRead, Summary: "Show an LLM model with its pool", Handle: a.getLLMModel},
		{Method: "PATCH", Path: models + "/{name}", Permission: auth.LLMWrite, Action: "llm.model.update", Summary: "Change an LLM model's pool, limits, mirror or cache", Handle: a.updateLLMModel},
		{Method: "DELETE", Path: models + "/{name}", Permission: auth.LLMWrite, Action: "llm.model.delete", Status: http.StatusNoContent, Summary: "Delete an LLM model", Handle: a.deleteLLMModel},
		{Method: "GET", Path: teams, Permission: auth.LLMRead, Summary: "List teams' LLM limits and budgets", Handle: a.listLLMTeams},
		{Method: "GET", Path: teams + "/{team}/limits", Permission: auth.LLMRead, Summary: "Show a team's LLM limits and budgets", Handle: a.getLLMTeamLimits},
		{Method: "PUT", Path: teams + "/{team}/limits", Permission: auth.LLMWrite, Action: "llm.limits.put", Summary: "Set a team's LLM limits and budgets", Handle: a.putLLMTeamLimits},
		{Method: "DELETE", Path: teams + "/{team}/limits", Permission: auth.LLMWrite, Action: "llm.limits.delete", Status: http.StatusNoContent, Summary: "Remove a team's LLM limits and budgets", Handle: a.deleteLLMTeamLimits},
	}
}

func (a *API) listLLMBackends(r *http.Request, _ *auth.Identity) (any, error) {
	list, err := a.LLM.ListBackends(r.Context())
	return map[string]any{"backends": list}, err
}

func (a *API) createLLMBackend(r *http.Request, _ *auth.Identity) (any, error) {
	var in llm.BackendInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return a.LLM.CreateBackend(r.Context(), in)
}

func (a *API) getLLMBackend(r *http.Request, _ *auth.Identity) (any, error) {
	return a.LLM.GetBackend(r.Context(), r.PathValue("name"))
}

func (a *API) updateLLMBackend(r *http.Request, _ *auth.Identity) (any, error) {
	var in llm.BackendInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return a.LLM.UpdateBackend(r.Context(), r.PathValue("name"), in)
}

func (a *API) deleteLLMBackend(r *http.Request, _ *auth.Identity) (any, error) {
	return nil, a.LLM.DeleteBackend(r.Context(), r.PathValue("name"))
}

func (a *API) listLLMModels(r *http.Request, _ *auth.Identity) (any, error) {
	list, err := a.LLM.ListModels(r.Context())
	return map[string]any{"models": list}, err
}

func (a *API) createLLMModel(r *http.Request, _ *auth.Identity) (any, error) {
	var in llm.ModelInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return a.LLM.CreateModel(r.Context(), in)
}

func (a *API) getLLMModel(r *http.Request, _ *auth.Identity) (any, error) {
	return a.LLM.GetModel(r.Context(), r.PathValue("name"))
}

func (a *API) updateLLMModel(r *http.Request, _ *auth.Identity) (any, error) {
	var in llm.ModelInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return a.LLM.UpdateModel(r.Context(), r.PathValue("name"), in)
}

func (a *API) deleteLLMModel(r *http.Request, _ *auth.Identity) (any, error) {
	return nil, a.LLM.DeleteModel(r.Context(), r.PathValue("name"))
}

func (a *API) listLLMTeams(r *http.Request, _ *auth.Identity) (any, error) {
	list, err := a.LLM.ListTeamLimits(r.Context())
	return map[string]any{"teams": list}, err
}

func (a *API) getLLMTeamLimits(r *http.Request, _ *auth.Identity) (any, error) {
	return a.LLM.GetTeamLimits(r.Context(), r.PathValue("team"))
}

func (a *API) putLLMTeamLimits(r *http.Request, _ *auth.Identity) (any, error) {
	var in llm.TeamLimitsInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return a.LLM.PutTeamLimits(r.Context(), r.PathValue("team"), in)
}

func (a *API) deleteLLMTeamLimits(r *http.Request, _ *auth.Identity) (any, error) {
	return nil, a.LLM.DeleteTeamLimits(r.Context(), r.PathValue("team"))
}
