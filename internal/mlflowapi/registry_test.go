package mlflowapi_test

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
)

func TestRegisteredModels(t *testing.T) {
	eachDB(t, func(t *testing.T, m *mlflow) {
		created := m.ok("POST", "registered-models/create", map[string]any{"name": "fraud", "description": "card fraud",
			"tags": []map[string]string{{"key": "team", "value": "risk"}}})
		rm := created.body["registered_model"].(map[string]any)
		if rm["name"] != "fraud" || rm["description"] != "card fraud" || dig(rm, "tags", 0, "value") != "risk" {
			t.Fatalf("create: %s", created.raw)
		}
		if _, ok := rm["creation_timestamp"].(float64); !ok {
			t.Fatalf("creation_timestamp not a number: %s", created.raw)
		}
		m.fails(400, "RESOURCE_ALREADY_EXISTS", "Registered Model (name=fraud) already exists.", "POST", "registered-models/create", map[string]any{"name": "fraud"})
		m.fails(400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'name'", "POST", "registered-models/create", map[string]any{})
		m.fails(404, "RESOURCE_DOES_NOT_EXIST", "Registered Model with name=nope not found", "GET", "registered-models/get?name=nope", nil)

		upd := m.ok("PATCH", "registered-models/update", map[string]any{"name": "fraud", "description": "v2"})
		if dig(upd.body, "registered_model", "description") != "v2" {
			t.Fatalf("update: %s", upd.raw)
		}
		m.ok("POST", "registered-models/set-tag", map[string]any{"name": "fraud", "key": "owner", "value": "ml"})
		m.ok("DELETE", "registered-models/delete-tag", map[string]any{"name": "fraud", "key": "team"})
		got := m.ok("GET", "registered-models/get?name=fraud", nil)
		if dig(got.body, "registered_model", "tags", 0, "key") != "owner" || dig(got.body, "registered_model", "tags", 1) != nil {
			t.Fatalf("tags: %s", got.raw)
		}
		m.ok("POST", "registered-models/create", map[string]any{"name": "churn"})
		s := m.ok("GET", "registered-models/search?filter=name+LIKE+%27fr%25%27", nil)
		if n := len(s.body["registered_models"].([]any)); n != 1 {
			t.Fatalf("search: %s", s.raw)
		}
		s = m.ok("GET", "registered-models/search?max_results=1", nil)
		if dig(s.body, "registered_models", 0, "name") != "churn" || s.body["next_page_token"] == nil {
			t.Fatalf("search page: %s", s.raw)
		}
		m.fails(400, "INVALID_PARAMETER_VALUE", "", "GET", "registered-models/search?filter=name+%3D%3D", nil)
		ren := m.ok("POST", "registered-models/rename", map[string]any{"name": "churn", "new_name": "churn-v2"})
		if dig(ren.body, "registered_model", "name") != "churn-v2" {
			t.Fatalf("rename: %s", ren.raw)
		}
		m.fails(400, "RESOURCE_ALREADY_EXISTS", "", "POST", "registered-models/rename", map[string]any{"name": "churn-v2", "new_name": "fraud"})
		m.ok("DELETE", "registered-models/delete", map[string]any{"name": "churn-v2"})
		m.fails(404, "RESOURCE_DOES_NOT_EXIST", "", "GET", "registered-models/get?name=churn-v2", nil)
	})
}

func TestModelVersionsStagesAliases(t *testing.T) {
	eachDB(t, func(t *testing.T, m *mlflow) {
		runID := m.createRun("0")
		m.ok("POST", "registered-models/create", map[string]any{"name": "fraud"})
		v1 := m.ok("POST", "model-versions/create", map[string]any{"name": "fraud", "source": "runs:/" + runID + "/model",
			"tags": []map[string]string{{"key": "framework", "value": "xgboost"}}})
		mv := v1.body["model_version"].(map[string]any)
		if mv["version"] != "1" || mv["current_stage"] != "None" || mv["status"] != "READY" || mv["run_id"] != runID || mv["source"] != "runs:/"+runID+"/model" {
			t.Fatalf("version: %s", v1.raw)
		}
		// A runs:/ source resolves to the run's artifact location, copying nothing.
		uri := m.ok("GET", "model-versions/get-download-uri?name=fraud&version=1", nil)
		if uri.body["artifact_uri"] != "mlflow-artifacts:/default/0/"+runID+"/artifacts/model" {
			t.Fatalf("download uri: %s", uri.raw)
		}
		m.ok("POST", "model-versions/create", map[string]any{"name": "fraud", "source": "s3://bucket/models/fraud/2"})
		m.fails(404, "RESOURCE_DOES_NOT_EXIST", "", "POST", "model-versions/create", map[string]any{"name": "nope", "source": "s3://x"})
		m.fails(404, "RESOURCE_DOES_NOT_EXIST", "", "POST", "model-versions/create", map[string]any{"name": "fraud", "source": "runs:/no-such-run/model"})
		m.fails(400, "INVALID_PARAMETER_VALUE", "source", "POST", "model-versions/create", map[string]any{"name": "fraud"})

		// Stages.
		tr := m.ok("POST", "model-versions/transition-stage", map[string]any{"name": "fraud", "version": "1", "stage": "production"})
		if dig(tr.body, "model_version", "current_stage") != "Production" {
			t.Fatalf("transition: %s", tr.raw)
		}
		m.fails(400, "INVALID_PARAMETER_VALUE", "Invalid Model Version stage: Live", "POST", "model-versions/transition-stage", map[string]any{"name": "fraud", "version": "2", "stage": "Live"})
		m.ok("POST", "model-versions/transition-stage", map[string]any{"name": "fraud", "version": "2", "stage": "Production", "archive_existing_versions": true})
		if dig(m.ok("GET", "model-versions/get?name=fraud&version=1", nil).body, "model_version", "current_stage") != "Archived" {
			t.Fatal("archive_existing_versions did not archive version 1")
		}
		latest := m.ok("POST", "registered-models/get-latest-versions", map[string]any{"name": "fraud", "stages": []string{"Production"}})
		if dig(latest.body, "model_versions", 0, "version") != "2" || dig(latest.body, "model_versions", 1) != nil {
			t.Fatalf("latest Production: %s", latest.raw)
		}
		model := m.ok("GET", "registered-models/get?name=fraud", nil)
		if n := len(dig(model.body, "registered_model", "latest_versions").([]any)); n != 2 {
			t.Fatalf("latest_versions per stage: %s", model.raw)
		}

		// Aliases; an alias on a deleted version goes with it.
		m.ok("POST", "registered-models/alias", map[string]any{"name": "fraud", "alias": "champion", "version": "2"})
		m.ok("POST", "registered-models/alias", map[string]any{"name": "fraud", "alias": "challenger", "version": "1"})
		byAlias := m.ok("GET", "registered-models/alias?name=fraud&alias=champion", nil)
		if dig(byAlias.body, "model_version", "version") != "2" || dig(byAlias.body, "model_version", "aliases", 0) != "champion" {
			t.Fatalf("alias: %s", byAlias.raw)
		}
		m.fails(400, "INVALID_PARAMETER_VALUE", "reserved", "POST", "registered-models/alias", map[string]any{"name": "fraud", "alias": "latest", "version": "1"})
		m.fails(400, "INVALID_PARAMETER_VALUE", "reserved", "POST", "registered-models/alias", map[string]any{"name": "fraud", "alias": "v3", "version": "1"})
		m.ok("DELETE", "model-versions/delete", map[string]any{"name": "fraud", "version": "1"})
		m.fails(404, "RESOURCE_DOES_NOT_EXIST", "alias challenger not found", "GET", "registered-models/alias?name=fraud&alias=challenger", nil)
		m.fails(404, "RESOURCE_DOES_NOT_EXIST", "Model Version (name=fraud, version=1) not found", "GET", "model-versions/get?name=fraud&version=1", nil)
		m.ok("DELETE", "registered-models/alias", map[string]any{"name": "fraud", "alias": "champion"})

		// Version tags, update, search.
		m.ok("POST", "model-versions/set-tag", map[string]any{"name": "fraud", "version": "2", "key": "validated", "value": "yes"})
		m.ok("DELETE", "model-versions/delete-tag", map[string]any{"name": "fraud", "version": "2", "key": "validated"})
		m.fails(404, "RESOURCE_DOES_NOT_EXIST", "", "DELETE", "model-versions/delete-tag", map[string]any{"name": "fraud", "version": "2", "key": "validated"})
		up := m.ok("PATCH", "model-versions/update", map[string]any{"name": "fraud", "version": "2", "description": "retrained"})
		if dig(up.body, "model_version", "description") != "retrained" {
			t.Fatalf("version update: %s", up.raw)
		}
		sv := m.ok("GET", "model-versions/search?filter=name%3D%27fraud%27", nil)
		if n := len(sv.body["model_versions"].([]any)); n != 1 {
			t.Fatalf("version search (deleted excluded): %s", sv.raw)
		}
		sv = m.ok("GET", "model-versions/search?filter=run_id%3D%27"+runID+"%27", nil)
		if sv.body["model_versions"] != nil {
			t.Fatalf("search by run of the deleted version: %s", sv.raw)
		}
		// A version number is never reused.
		v3 := m.ok("POST", "model-versions/create", map[string]any{"name": "fraud", "source": "s3://bucket/3"})
		if dig(v3.body, "model_version", "version") != "3" {
			t.Fatalf("number reused: %s", v3.raw)
		}

		// A model serving in Production is kept unless forced.
		m.fails(400, "INVALID_PARAMETER_VALUE", "in Production", "DELETE", "registered-models/delete", map[string]any{"name": "fraud"})
		m.ok("DELETE", "registered-models/delete", map[string]any{"name": "fraud", "force": true})
	})
}

func TestConcurrentVersionsAreConsecutive(t *testing.T) {
	eachDB(t, func(t *testing.T, m *mlflow) {
		m.ok("POST", "registered-models/create", map[string]any{"name": "race"})
		const n = 20
		var wg sync.WaitGroup
		versions := make([]string, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := m.call("POST", "model-versions/create", map[string]any{"name": "race", "source": fmt.Sprintf("s3://b/%d", i)})
				if a.status != 200 {
					t.Errorf("create %d: %d %s", i, a.status, a.raw)
					return
				}
				versions[i] = dig(a.body, "model_version", "version").(string)
			}()
		}
		wg.Wait()
		sort.Slice(versions, func(i, j int) bool {
			return len(versions[i]) < len(versions[j]) || (len(versions[i]) == len(versions[j]) && versions[i] < versions[j])
		})
		for i, v := range versions {
			if v != fmt.Sprint(i+1) {
				t.Fatalf("versions not distinct and consecutive: %s", strings.Join(versions, ","))
			}
		}
	})
}

func TestRegistryPermissions(t *testing.T) {
	eachDB(t, func(t *testing.T, m *mlflow) {
		m.ok("POST", "registered-models/create", map[string]any{"name": "guarded"})
		m.ok("POST", "model-versions/create", map[string]any{"name": "guarded", "source": "s3://b/1"})
		ds := *m
		ds.key = principalKey(t, m, "dana", "DataScientist", "default")
		ds.ok("POST", "model-versions/create", map[string]any{"name": "guarded", "source": "s3://b/2"})
		ds.ok("POST", "model-versions/transition-stage", map[string]any{"name": "guarded", "version": "2", "stage": "Staging"})
		ds.fails(403, "PERMISSION_DENIED", "registry.promote", "POST", "model-versions/transition-stage", map[string]any{"name": "guarded", "version": "2", "stage": "Production"})
		m.ok("POST", "model-versions/transition-stage", map[string]any{"name": "guarded", "version": "2", "stage": "Production"})
		ds.fails(403, "PERMISSION_DENIED", "registry.promote", "POST", "model-versions/transition-stage", map[string]any{"name": "guarded", "version": "2", "stage": "Archived"})
		reader := *m
		reader.key = principalKey(t, m, "rita", "Reader", "default")
		reader.ok("GET", "registered-models/get?name=guarded", nil)
		reader.fails(403, "PERMISSION_DENIED", "", "POST", "registered-models/create", map[string]any{"name": "mine"})
	})
}
