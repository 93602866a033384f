package server_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/store"
)

// runTokenEnv is a workspace ws1 with a DataScientist, sam, who owns two
// runs there, and a run token for the first one as a batch job gets it.
type runTokenEnv struct {
	*env
	sam               string // sam's own key
	run, other        string // run ids
	artifacts, otherA string // the runs' artifact roots, without mlflow-artifacts:/
	token, keyID      string
}

const runML = "/w/ws1/api/2.0/mlflow/"

func newRunTokenEnv(t *testing.T, e *env, ttl time.Duration) runTokenEnv {
	t.Helper()
	e.workspace("ws1")
	te := runTokenEnv{env: e, sam: e.principal("sam", "DataScientist", "ws1")}
	newRun := func() (string, string) {
		r := e.must(200, "POST", runML+"runs/create", te.sam, map[string]any{"experiment_id": "0"})
		info := r.body["run"].(map[string]any)["info"].(map[string]any)
		return info["run_id"].(string), strings.TrimPrefix(info["artifact_uri"].(string), "mlflow-artifacts:/")
	}
	te.run, te.artifacts = newRun()
	te.other, te.otherA = newRun()
	var err error
	te.token, te.keyID, err = e.srv.Auth.CreateRunToken(context.Background(), "sam", "ws1", te.run, ttl)
	if err != nil {
		t.Fatalf("CreateRunToken: %v", err)
	}
	return te
}

// denied checks an MLflow 403 in MLflow's error shape that names the run
// the token is limited to.
func (te runTokenEnv) denied(method, path string, body any) {
	te.t.Helper()
	r := te.call(method, path, te.token, body)
	if r.status != 403 || r.body["error_code"] != "PERMISSION_DENIED" || !strings.Contains(r.body["message"].(string), te.run) {
		te.t.Errorf("%s %s with the run token: %d %s, want 403 PERMISSION_DENIED naming run %s", method, path, r.status, r.raw, te.run)
	}
}

func TestRunTokenWritesOnlyItsRun(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		te := newRunTokenEnv(t, e, time.Hour)
		tok, run, other := te.token, te.run, te.other
		art := "/w/ws1/api/2.0/mlflow-artifacts/"

		// What an unmodified MLflow script does with MLFLOW_RUN_ID set.
		e.must(200, "GET", runML+"experiments/get?experiment_id=0", tok, nil)
		e.must(200, "GET", runML+"runs/get?run_id="+run, tok, nil)
		e.must(200, "POST", runML+"runs/update", tok, map[string]any{"run_id": run, "status": "RUNNING"})
		e.must(200, "POST", runML+"runs/log-metric", tok, map[string]any{"run_id": run, "key": "loss", "value": 0.5, "timestamp": 1, "step": 1})
		e.must(200, "POST", runML+"runs/log-metric", tok, map[string]any{"run_uuid": run, "key": "loss", "value": 0.25, "timestamp": 2, "step": 2})
		e.must(200, "POST", runML+"runs/log-parameter", tok, map[string]any{"run_id": run, "key": "lr", "value": "0.01"})
		e.must(200, "POST", runML+"runs/set-tag", tok, map[string]any{"run_id": run, "key": "stage", "value": "train"})
		e.must(200, "POST", runML+"runs/set-tag", tok, map[string]any{"run_id": run, "key": "scratch", "value": "x"})
		e.must(200, "POST", runML+"runs/delete-tag", tok, map[string]any{"run_id": run, "key": "scratch"})
		e.must(200, "POST", runML+"runs/log-batch", tok, map[string]any{"run_id": run,
			"metrics": []map[string]any{{"key": "acc", "value": 0.9, "timestamp": 3, "step": 3}},
			"params":  []map[string]any{{"key": "epochs", "value": "3"}}})
		e.must(200, "POST", runML+"runs/log-inputs", tok, map[string]any{"run_id": run, "datasets": []map[string]any{{
			"dataset": map[string]string{"name": "train", "digest": "5e1a0c2b", "source_type": "code", "source": `{}`}}}})
		e.must(200, "POST", runML+"runs/log-model", tok, map[string]any{"run_id": run,
			"model_json": `{"artifact_path":"model","flavors":{"python_function":{}},"utc_time_created":"2026-01-01 00:00:00","run_id":"` + run + `"}`})
		e.must(200, "PUT", art+"artifacts/"+te.artifacts+"/model/MLmodel", tok, "flavors: {}\n")
		e.must(200, "PUT", art+"artifacts/"+te.artifacts+"/scratch.txt", tok, "x")
		e.must(200, "DELETE", art+"artifacts/"+te.artifacts+"/scratch.txt", tok, nil)
		mpu := e.must(200, "POST", art+"mpu/create/"+te.artifacts+"/model", tok, map[string]any{"path": "/tmp/out/weights.bin", "num_parts": 1})
		e.must(200, "POST", art+"mpu/abort/"+te.artifacts+"/model", tok, map[string]any{"path": "/tmp/out/weights.bin", "upload_id": mpu.body["upload_id"]})
		e.must(200, "POST", runML+"runs/update", tok, map[string]any{"run_id": run, "status": "FINISHED", "end_time": 4})

		// Reads of everything tracking.read and registry.read allow.
		e.must(200, "GET", runML+"runs/get?run_id="+other, tok, nil)
		e.must(200, "POST", runML+"runs/search", tok, map[string]any{"experiment_ids": []string{"0"}})
		e.must(200, "GET", art+"artifacts/"+te.artifacts+"/model/MLmodel", tok, nil)
		e.must(200, "GET", runML+"registered-models/search", tok, nil)

		// What the script logged is there, as the owner sees it.
		got := e.must(200, "GET", runML+"runs/get?run_id="+run, te.sam, nil).body["run"].(map[string]any)
		data, info := got["data"].(map[string]any), got["info"].(map[string]any)
		if info["status"] != "FINISHED" || len(data["metrics"].([]any)) != 2 || len(data["params"].([]any)) != 2 {
			t.Fatalf("run after logging with its token: %v", got)
		}

		// Writes anywhere else are refused, naming the run.
		te.denied("POST", runML+"runs/log-metric", map[string]any{"run_id": other, "key": "loss", "value": 1, "timestamp": 1})
		te.denied("POST", runML+"runs/log-metric", map[string]any{"run_uuid": other, "key": "loss", "value": 1, "timestamp": 1})
		te.denied("POST", runML+"runs/log-parameter", map[string]any{"run_id": other, "key": "lr", "value": "1"})
		te.denied("POST", runML+"runs/log-batch", map[string]any{"run_id": other, "metrics": []map[string]any{{"key": "m", "value": 1, "timestamp": 1}}})
		te.denied("POST", runML+"runs/set-tag", map[string]any{"run_id": other, "key": "k", "value": "v"})
		te.denied("POST", runML+"runs/delete-tag", map[string]any{"run_id": other, "key": "k"})
		te.denied("POST", runML+"runs/update", map[string]any{"run_id": other, "status": "KILLED"})
		te.denied("POST", runML+"runs/log-model", map[string]any{"run_id": other, "model_json": "{}"})
		te.denied("POST", runML+"runs/log-inputs", map[string]any{"run_id": other, "datasets": []any{}})
		te.denied("POST", runML+"runs/delete", map[string]any{"run_id": run})
		te.denied("POST", runML+"runs/restore", map[string]any{"run_id": run})
		te.denied("POST", runML+"runs/create", map[string]any{"experiment_id": "0"})
		te.denied("POST", runML+"experiments/create", map[string]any{"name": "mine"})
		te.denied("POST", runML+"experiments/set-experiment-tag", map[string]any{"experiment_id": "0", "key": "k", "value": "v"})
		te.denied("POST", runML+"registered-models/create", map[string]any{"name": "fraud"})
		te.denied("POST", runML+"model-versions/create", map[string]any{"name": "fraud", "source": "runs:/" + run + "/model", "run_id": run})
		te.denied("PUT", art+"artifacts/"+te.otherA+"/model/MLmodel", "x")
		te.denied("DELETE", art+"artifacts/"+te.otherA, nil)
		te.denied("PUT", art+"artifacts/"+strings.TrimSuffix(te.artifacts, "/artifacts")+"/meta.yaml", "x")
		te.denied("POST", art+"mpu/create/"+te.otherA, map[string]any{"path": "weights.bin", "num_parts": 1})
		// Its body was decoded the same way for the check and the write.
		e.must(400, "POST", runML+"runs/log-metric", tok, map[string]any{"key": "loss", "value": 1, "timestamp": 1})
		te.denied("POST", runML+"runs/log-metric", map[string]any{"run_id": other, "run_uuid": run, "key": "loss", "value": 1, "timestamp": 1})

		// Other workspaces, the root (default) workspace included: nothing.
		e.workspace("ws2")
		for _, p := range []string{"/w/ws2/api/2.0/mlflow/experiments/search", "/api/2.0/mlflow/experiments/search"} {
			te.denied("GET", p, nil)
		}
		if got := e.must(200, "GET", runML+"runs/get?run_id="+other, te.sam, nil).body["run"].(map[string]any)["data"].(map[string]any); got["metrics"] != nil || got["params"] != nil || strings.Contains(fmt.Sprint(got["tags"]), "key:k ") {
			t.Fatalf("the other run was written: %v", got)
		}

		// The audit log names the submitter and the token's key for what it
		// wrote and for what it was refused.
		recs := e.must(200, "GET", "/api/v1/audit?principal=sam&page_size=500", e.admin, nil).body["records"].([]any)
		seen := map[string]bool{}
		for _, v := range recs {
			m := v.(map[string]any)
			if m["key_id"] == te.keyID {
				seen[m["action"].(string)+" "+m["result"].(string)] = true
			}
		}
		for _, want := range []string{"run.log-metric success", "run.log-batch success", "run.update success", "artifact.upload success",
			"artifact.delete success", "run.log-metric permission_denied", "run.create permission_denied", "experiment.create permission_denied",
			"model.create permission_denied", "run.delete permission_denied", "artifact.upload permission_denied", "artifact.delete permission_denied"} {
			if !seen[want] {
				t.Errorf("no audit record %q by sam with key %s; have %v", want, te.keyID, seen)
			}
		}
		created := e.must(200, "GET", "/api/v1/audit?resource=keys/"+te.keyID, e.admin, nil).body["records"].([]any)
		if len(created) != 1 || created[0].(map[string]any)["action"] != "key.create" ||
			created[0].(map[string]any)["details"].(map[string]any)["run_id"] != run {
			t.Fatalf("key creation audit: %v", created)
		}
	})
}

func TestRunTokenOnAPIv1(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		te := newRunTokenEnv(t, e, time.Hour)
		who := e.must(200, "GET", "/api/v1/whoami", te.token, nil).body
		if who["principal"] != "sam" || who["key_id"] != te.keyID || who["key_workspace"] != "ws1" || who["key_run_id"] != te.run {
			t.Fatalf("whoami with the run token: %v", who)
		}
		// Every route: whoami, and the reads a run token's permissions give
		// in its workspace (data, lineage, trace), and nothing else.
		for _, rt := range e.srv.API.Routes() {
			path, body := requestFor(rt)
			r := e.call(rt.Method, path, te.token, body)
			allowed := rt.Permission == auth.Public || rt.RunToken ||
				(rt.Scoped && slices.Contains(auth.RunTokenPermissions, rt.Permission) && rt.Method == "GET")
			switch {
			case allowed && (r.status == 401 || r.status == 403 || r.status >= 500):
				t.Errorf("%s %s with a run token: %d %s, want allowed", rt.Method, path, r.status, r.raw)
			case !allowed && r.status != 403:
				t.Errorf("%s %s with a run token: %d %s, want 403", rt.Method, path, r.status, r.raw)
			}
		}
		// It cannot mint a key that outlives or outreaches it.
		r := e.must(403, "POST", "/api/v1/keys", te.token, map[string]any{"name": "escape", "workspace": "ws1"})
		if !strings.Contains(r.errMessage(), te.run) {
			t.Fatalf("refusal does not name the run: %s", r.raw)
		}
		// Its owner sees it among their keys, with its run.
		var found bool
		for _, k := range e.must(200, "GET", "/api/v1/keys", te.sam, nil).body["keys"].([]any) {
			m := k.(map[string]any)
			if m["id"] == te.keyID {
				found = m["run_id"] == te.run && m["workspace"] == "ws1" && m["expires_at"] != nil && strings.HasPrefix(m["name"].(string), "run-"+te.run[:8])
				if !found {
					t.Fatalf("run token as listed: %v", m)
				}
			}
		}
		if !found {
			t.Fatal("the run token is not among its owner's keys")
		}
	})
}

func TestRunTokenIntersectsOwnerRoles(t *testing.T) {
	e := start(t, store.SQLite)
	te := newRunTokenEnv(t, e, time.Hour)
	e.principal("rita", "Reader", "ws1")
	tok, _, err := e.srv.Auth.CreateRunToken(context.Background(), "rita", "ws1", te.run, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// A Reader's run token reads but cannot write, even to its run.
	e.must(200, "GET", runML+"runs/get?run_id="+te.run, tok, nil)
	e.must(403, "POST", runML+"runs/log-metric", tok, map[string]any{"run_id": te.run, "key": "loss", "value": 1, "timestamp": 1})

	ctx := context.Background()
	for name, call := range map[string]func() error{
		"empty run id": func() error { _, _, err := e.srv.Auth.CreateRunToken(ctx, "sam", "ws1", "", time.Hour); return err },
		"no workspace": func() error { _, _, err := e.srv.Auth.CreateRunToken(ctx, "sam", "", te.run, time.Hour); return err },
		"zero ttl":     func() error { _, _, err := e.srv.Auth.CreateRunToken(ctx, "sam", "ws1", te.run, 0); return err },
		"unknown principal": func() error {
			_, _, err := e.srv.Auth.CreateRunToken(ctx, "nobody", "ws1", te.run, time.Hour)
			return err
		},
		"unknown workspace": func() error {
			_, _, err := e.srv.Auth.CreateRunToken(ctx, "sam", "nope", te.run, time.Hour)
			return err
		},
		"revoke empty run": func() error { return e.srv.Auth.RevokeRunTokens(ctx, "") },
	} {
		if call() == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// A second token for the same run (a retried job) gets a name of its own.
	if _, _, err := e.srv.Auth.CreateRunToken(ctx, "sam", "ws1", te.run, time.Hour); err != nil {
		t.Fatalf("second token for one run: %v", err)
	}
}

func TestRunTokenRevokedAndExpired(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		te := newRunTokenEnv(t, e, time.Hour)
		ctx := context.Background()
		log := map[string]any{"run_id": te.run, "key": "loss", "value": 1, "timestamp": 1}
		e.must(200, "POST", runML+"runs/log-metric", te.token, log)
		// A second token for the same run, and sam's own key, which must
		// survive the revocation.
		second, _, err := e.srv.Auth.CreateRunToken(ctx, "sam", "ws1", te.run, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		// A token of another run, which must survive too.
		otherTok, _, err := e.srv.Auth.CreateRunToken(ctx, "sam", "ws1", te.other, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.srv.Auth.RevokeRunTokens(ctx, te.run); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{te.token, second} {
			r := e.must(401, "POST", runML+"runs/log-metric", k, log)
			if r.body["error_code"] != "UNAUTHENTICATED" || !strings.Contains(r.body["message"].(string), "revoked") {
				t.Fatalf("revoked run token: %s", r.raw)
			}
		}
		e.must(200, "GET", runML+"runs/get?run_id="+te.run, te.sam, nil)
		e.must(200, "GET", runML+"runs/get?run_id="+te.other, otherTok, nil)
		if err := e.srv.Auth.RevokeRunTokens(ctx, te.run); err != nil {
			t.Fatalf("revoking again: %v", err)
		}
		recs := e.must(200, "GET", "/api/v1/audit?resource=keys/"+te.keyID, e.admin, nil).body["records"].([]any)
		if len(recs) != 2 || recs[0].(map[string]any)["action"] != "key.revoke" {
			t.Fatalf("audit of the token's key: %v", recs)
		}

		// Expiry: a token with a short TTL works, then stops, even while
		// its identity is cached.
		short, _, err := e.srv.Auth.CreateRunToken(ctx, "sam", "ws1", te.other, 1500*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		e.must(200, "POST", runML+"runs/log-metric", short, map[string]any{"run_id": te.other, "key": "loss", "value": 1, "timestamp": 1})
		time.Sleep(1600 * time.Millisecond)
		r := e.must(401, "POST", runML+"runs/log-metric", short, map[string]any{"run_id": te.other, "key": "loss", "value": 1, "timestamp": 2})
		if !strings.Contains(r.body["message"].(string), "expired") {
			t.Fatalf("expired run token: %s", r.raw)
		}
	})
}
