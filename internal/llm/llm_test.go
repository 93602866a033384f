package llm_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/gateway"
	"github.com/plinth-dev/plinth/internal/llm"
	"github.com/plinth-dev/plinth/internal/secret"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/store/storetest"
)

const cred = "sk-test-TOPSECRET-0123456789abcd"

func ptr[T any](v T) *T { return &v }

type fixture struct {
	svc     *llm.Service
	db      *store.DB
	log     *audit.Log
	changes int
}

func newFixture(t *testing.T, db *store.DB) *fixture {
	key, _, err := secret.Generate()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{db: db, log: audit.New(db, nil)}
	f.svc = llm.NewService(db, f.log, key, func() { f.changes++ })
	return f
}

func ctxAs(principal string) context.Context {
	return audit.WithCaller(context.Background(), audit.Caller{Principal: principal, KeyID: "k1"})
}

// wantInvalid checks err is invalid_argument naming field, with a
// message containing want.
func wantInvalid(t *testing.T, what string, err error, field, want string) {
	t.Helper()
	fe, ok := fault.As(err)
	if !ok || fe.Kind != fault.Invalid || fe.Field != field || !strings.Contains(fe.Message, want) {
		t.Errorf("%s: err = %v (field %q), want invalid %s containing %q", what, err, func() string {
			if ok {
				return fe.Field
			}
			return ""
		}(), field, want)
	}
}

func TestBackendValidation(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		ctx := ctxAs("admin")
		base := func(mod func(*llm.BackendInput)) llm.BackendInput {
			in := llm.BackendInput{Name: "east", Style: ptr("openai"), BaseURL: ptr("https://api.openai.com/v1")}
			mod(&in)
			return in
		}
		for _, c := range []struct {
			name        string
			in          llm.BackendInput
			field, want string
		}{
			{"bad name", base(func(in *llm.BackendInput) { in.Name = "-x" }), "name", "must be 1 to 63"},
			{"no style", base(func(in *llm.BackendInput) { in.Style = nil }), "style", "required"},
			{"unknown style", base(func(in *llm.BackendInput) { in.Style = ptr("bedrock") }), "style", `"bedrock" is not one of openai, azure-openai, endpoint`},
			{"no url", base(func(in *llm.BackendInput) { in.BaseURL = nil }), "base_url", "required"},
			{"relative url", base(func(in *llm.BackendInput) { in.BaseURL = ptr("api.openai.com/v1") }), "base_url", "absolute http or https URL"},
			{"ftp url", base(func(in *llm.BackendInput) { in.BaseURL = ptr("ftp://x/v1") }), "base_url", "absolute http or https URL"},
			{"user in url", base(func(in *llm.BackendInput) { in.BaseURL = ptr("https://u:p@x/v1") }), "base_url", "must not hold a user or password"},
			{"query in url", base(func(in *llm.BackendInput) { in.BaseURL = ptr("https://x/v1?api-key=1") }), "base_url", "must not have a query"},
			{"endpoint ref", base(func(in *llm.BackendInput) { in.Style = ptr("endpoint"); in.BaseURL = ptr("http://x") }), "base_url", "workspace/endpoint"},
			{"azure without version", base(func(in *llm.BackendInput) { in.Style = ptr("azure-openai") }), "api_version", "needs the api-version"},
			{"version on openai", base(func(in *llm.BackendInput) { in.APIVersion = ptr("2024-06-01") }), "api_version", "only azure-openai"},
			{"negative cost", base(func(in *llm.BackendInput) { in.InputCostPer1K = ptr(-0.5) }), "input_cost_per_1k", "not a cost of 0 or more"},
			{"negative output cost", base(func(in *llm.BackendInput) { in.OutputCostPer1K = ptr(-1.0) }), "output_cost_per_1k", "not a cost"},
			{"negative rpm", base(func(in *llm.BackendInput) { in.RequestsPerMinute = ptr(int64(-1)) }), "requests_per_minute", "negative"},
			{"negative tpm", base(func(in *llm.BackendInput) { in.TokensPerMinute = ptr(int64(-1)) }), "tokens_per_minute", "negative"},
			{"negative timeout", base(func(in *llm.BackendInput) { in.TimeoutMS = ptr(int64(-1)) }), "timeout_ms", "negative"},
			{"unknown region", base(func(in *llm.BackendInput) { in.Region = ptr("mars-1") }), "region", "not a known region"},
			{"credential with newline", base(func(in *llm.BackendInput) { in.Credential = ptr("sk-abc\n") }), "credential", "line break"},
		} {
			_, err := f.svc.CreateBackend(ctx, c.in)
			wantInvalid(t, c.name, err, c.field, c.want)
			if err != nil && strings.Contains(err.Error(), "sk-abc") {
				t.Errorf("%s: the error shows the credential: %v", c.name, err)
			}
		}
		if f.changes != 0 {
			t.Fatalf("refused changes told the publisher %d times", f.changes)
		}
		// The valid forms of each style.
		for _, in := range []llm.BackendInput{
			{Name: "openai", Style: ptr("openai"), BaseURL: ptr("https://api.openai.com/v1"), Credential: ptr(cred), InputCostPer1K: ptr(0.0025), OutputCostPer1K: ptr(0.01)},
			{Name: "aoai-east", Style: ptr("azure-openai"), BaseURL: ptr("https://east.openai.azure.com"), APIVersion: ptr("2024-06-01"), Credential: ptr("short"),
				TokensPerMinute: ptr(int64(300000)), Region: ptr("eastus"), TimeoutMS: ptr(int64(60000))},
			{Name: "llama", Style: ptr("endpoint"), BaseURL: ptr("default/llama")},
			{Name: "vllm", Style: ptr("openai"), BaseURL: ptr("http://10.0.0.7:8000/v1")},
		} {
			if _, err := f.svc.CreateBackend(ctx, in); err != nil {
				t.Fatalf("creating %s: %v", in.Name, err)
			}
		}
		if _, err := f.svc.CreateBackend(ctx, llm.BackendInput{Name: "openai", Style: ptr("openai"), BaseURL: ptr("https://x/v1")}); !fault.Is(err, fault.AlreadyExists) {
			t.Fatalf("a taken name: %v", err)
		}
	})
}

func TestBackendCRUDKeepsCredentialSecret(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		ctx := ctxAs("admin")
		b, err := f.svc.CreateBackend(ctx, llm.BackendInput{Name: "openai", Style: ptr("openai"), BaseURL: ptr("https://api.openai.com/v1"),
			Credential: ptr(cred), RequestsPerMinute: ptr(int64(600)), InputCostPer1K: ptr(0.0025), OutputCostPer1K: ptr(0.01)})
		if err != nil {
			t.Fatal(err)
		}
		if !b.CredentialSet || b.CredentialHint != "...abcd" || b.CreatedBy != "admin" || b.RequestsPerMinute != 600 {
			t.Fatalf("created: %+v", b)
		}
		short, err := f.svc.CreateBackend(ctx, llm.BackendInput{Name: "other", Style: ptr("openai"), BaseURL: ptr("https://x/v1"), Credential: ptr("short-key")})
		if err != nil || !short.CredentialSet || short.CredentialHint != "" {
			t.Fatalf("a short credential shows no hint: %+v %v", short, err)
		}
		// At rest the credential is sealed.
		var stored string
		if err := db.Read().QueryRowContext(context.Background(), `SELECT credential FROM llm_backends WHERE name = 'openai'`).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if stored == "" || strings.Contains(stored, "TOPSECRET") || !strings.HasPrefix(stored, "v1:") {
			t.Fatalf("stored credential %q is not sealed", stored)
		}

		got, err := f.svc.GetBackend(ctx, "openai")
		if err != nil || got.BaseURL != "https://api.openai.com/v1" || !got.CredentialSet || len(got.Models) != 0 {
			t.Fatalf("GetBackend: %+v %v", got, err)
		}
		up, err := f.svc.UpdateBackend(ctxAs("ops"), "openai", llm.BackendInput{TokensPerMinute: ptr(int64(90000)), Credential: ptr("sk-rotated-ROTATED-99999999wxyz")})
		if err != nil || up.TokensPerMinute != 90000 || up.RequestsPerMinute != 600 || up.CredentialHint != "...wxyz" || up.UpdatedBy != "ops" || up.CreatedBy != "admin" {
			t.Fatalf("UpdateBackend: %+v %v", up, err)
		}
		if _, err := f.svc.UpdateBackend(ctx, "openai", llm.BackendInput{Style: ptr("azure-openai")}); err == nil {
			t.Fatal("changing to azure-openai without an api_version was accepted")
		}
		if _, err := f.svc.UpdateBackend(ctx, "openai", llm.BackendInput{Name: "renamed"}); err == nil {
			t.Fatal("a rename was accepted")
		}
		snap, err := f.svc.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if c := snap.Backends["openai"].Credential; c != "sk-rotated-ROTATED-99999999wxyz" {
			t.Fatalf("snapshot credential %q", c)
		}
		if c := llm.WithoutCredentials(snap).Backends["openai"].Credential; c != "" {
			t.Fatalf("WithoutCredentials kept %q", c)
		}
		if snap.Backends["openai"].Credential == "" {
			t.Fatal("WithoutCredentials changed its argument")
		}
		cleared, err := f.svc.UpdateBackend(ctx, "openai", llm.BackendInput{Credential: ptr("")})
		if err != nil || cleared.CredentialSet || cleared.CredentialHint != "" {
			t.Fatalf("removing the credential: %+v %v", cleared, err)
		}
		list, err := f.svc.ListBackends(ctx)
		if err != nil || len(list) != 2 || list[0].Name != "openai" || list[1].Name != "other" {
			t.Fatalf("ListBackends: %+v %v", list, err)
		}
		if err := f.svc.DeleteBackend(ctx, "other"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.GetBackend(ctx, "other"); !fault.Is(err, fault.NotFound) {
			t.Fatalf("deleted backend: %v", err)
		}
		if err := f.svc.DeleteBackend(ctx, "other"); !fault.Is(err, fault.NotFound) {
			t.Fatalf("deleting twice: %v", err)
		}
		if f.changes != 5 {
			t.Errorf("the publisher was told %d times, want 5 (two creates, two updates, a delete)", f.changes)
		}

		// Every write is audited, and no audit record holds a credential.
		recs, _, err := f.log.List(context.Background(), audit.Filter{PageSize: 100})
		if err != nil {
			t.Fatal(err)
		}
		actions := map[string]int{}
		for _, r := range recs {
			actions[r.Action]++
			raw, _ := json.Marshal(r)
			for _, secretPart := range []string{"TOPSECRET", "ROTATED", "short-key"} {
				if strings.Contains(string(raw), secretPart) {
					t.Errorf("audit record %s holds a credential: %s", r.Action, raw)
				}
			}
		}
		if actions["llm.backend.create"] != 2 || actions["llm.backend.update"] != 2 || actions["llm.backend.delete"] != 1 {
			t.Errorf("audit actions %v", actions)
		}
	})
}

func TestCredentialUnderAnotherKey(t *testing.T) {
	db := storetest.Open(t, store.SQLite)
	f := newFixture(t, db)
	ctx := ctxAs("admin")
	if _, err := f.svc.CreateBackend(ctx, llm.BackendInput{Name: "openai", Style: ptr("openai"), BaseURL: ptr("https://api.openai.com/v1"), Credential: ptr(cred)}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.CheckCredentials(ctx); err != nil {
		t.Fatalf("CheckCredentials with the sealing key: %v", err)
	}
	other, _, _ := secret.Generate()
	svc := llm.NewService(db, f.log, other, nil)
	err := svc.CheckCredentials(ctx)
	if !errors.Is(err, secret.ErrWrongKey) || !strings.Contains(err.Error(), "openai") || strings.Contains(err.Error(), "TOPSECRET") {
		t.Fatalf("CheckCredentials with another key: %v", err)
	}
	if _, err := f.svc.CreateBackend(ctx, llm.BackendInput{Name: "vllm", Style: ptr("openai"), BaseURL: ptr("http://10.0.0.7:8000/v1")}); err != nil {
		t.Fatal(err)
	}
	snap, err := svc.Snapshot(ctx)
	if !errors.Is(err, secret.ErrWrongKey) || snap == nil || snap.Backends["openai"] != nil || snap.Backends["vllm"] == nil {
		t.Fatalf("Snapshot with another key: %v, %+v (want the table without openai)", err, snap)
	}
	// A sealed credential copied to another backend's row does not open.
	if _, err := f.svc.CreateBackend(ctx, llm.BackendInput{Name: "victim", Style: ptr("openai"), BaseURL: ptr("https://evil.example/v1")}); err != nil {
		t.Fatal(err)
	}
	if err := db.Tx(ctx, func(tx store.Querier) error {
		_, err := tx.ExecContext(ctx, `UPDATE llm_backends SET credential = (SELECT credential FROM llm_backends WHERE name = 'openai') WHERE name = 'victim'`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.CheckCredentials(ctx); !errors.Is(err, secret.ErrDamaged) || !strings.Contains(err.Error(), "victim") {
		t.Fatalf("a credential moved to another row: %v", err)
	}
}

func TestModelsPoolsAndLimits(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		ctx := ctxAs("admin")
		for _, in := range []llm.BackendInput{
			{Name: "aoai-east", Style: ptr("azure-openai"), BaseURL: ptr("https://east.openai.azure.com"), APIVersion: ptr("2024-06-01"), Credential: ptr(cred),
				InputCostPer1K: ptr(0.002), OutputCostPer1K: ptr(0.008), TimeoutMS: ptr(int64(30000))},
			{Name: "aoai-west", Style: ptr("azure-openai"), BaseURL: ptr("https://west.openai.azure.com"), APIVersion: ptr("2024-06-01")},
			{Name: "openai", Style: ptr("openai"), BaseURL: ptr("https://api.openai.com/v1")},
		} {
			if _, err := f.svc.CreateBackend(ctx, in); err != nil {
				t.Fatal(err)
			}
		}
		pool := []llm.Target{{Backend: "aoai-east", Model: "gpt-4o-ptu", Priority: 0, Weight: 3}, {Backend: "aoai-west", Model: "gpt-4o-ptu"}, {Backend: "openai", Priority: 1}}
		for _, c := range []struct {
			name        string
			in          llm.ModelInput
			field, want string
		}{
			{"bad name", llm.ModelInput{Name: " x", Pool: pool}, "name", "must be 1 to 128"},
			{"empty pool", llm.ModelInput{Name: "gpt-4o"}, "pool", "at least one backend"},
			{"unknown backend", llm.ModelInput{Name: "gpt-4o", Pool: []llm.Target{{Backend: "nope"}}}, "pool[0].backend", `"nope" does not exist`},
			{"twice", llm.ModelInput{Name: "gpt-4o", Pool: []llm.Target{{Backend: "openai"}, {Backend: "openai", Priority: 1}}}, "pool[1].backend", "twice"},
			{"negative priority", llm.ModelInput{Name: "gpt-4o", Pool: []llm.Target{{Backend: "openai", Priority: -1}}}, "pool[0].priority", "not from 0"},
			{"negative weight", llm.ModelInput{Name: "gpt-4o", Pool: []llm.Target{{Backend: "openai", Weight: -2}}}, "pool[0].weight", "not from 0"},
			{"azure deployment", llm.ModelInput{Name: "meta/llama", Pool: []llm.Target{{Backend: "aoai-east"}}}, "pool[0].model", "not an Azure OpenAI deployment name"},
			{"mirror self", llm.ModelInput{Name: "gpt-4o", Pool: pool, MirrorModel: ptr("gpt-4o"), MirrorPercent: ptr(10)}, "mirror_model", "itself"},
			{"mirror missing", llm.ModelInput{Name: "gpt-4o", Pool: pool, MirrorModel: ptr("gpt-5"), MirrorPercent: ptr(10)}, "mirror_model", `"gpt-5" does not exist`},
			{"mirror over 50", llm.ModelInput{Name: "gpt-4o", Pool: pool, MirrorModel: ptr("gpt-5"), MirrorPercent: ptr(60)}, "mirror_percent", "not from 0 to 50"},
			{"mirror percent alone", llm.ModelInput{Name: "gpt-4o", Pool: pool, MirrorPercent: ptr(10)}, "mirror_percent", "names no model"},
			{"negative tpm", llm.ModelInput{Name: "gpt-4o", Pool: pool, TokensPerMinutePerKey: ptr(int64(-5))}, "tokens_per_minute_per_key", "negative"},
			{"negative ttl", llm.ModelInput{Name: "gpt-4o", Pool: pool, CacheTTLMS: ptr(int64(-5))}, "cache_ttl_ms", "negative"},
		} {
			_, err := f.svc.CreateModel(ctx, c.in)
			wantInvalid(t, c.name, err, c.field, c.want)
		}
		next, err := f.svc.CreateModel(ctx, llm.ModelInput{Name: "gpt-4o-next", Pool: []llm.Target{{Backend: "openai", Model: "gpt-4.1"}}})
		if err != nil {
			t.Fatal(err)
		}
		if next.Pool[0].Weight != 1 {
			t.Errorf("weight 0 is stored as %d, want 1", next.Pool[0].Weight)
		}
		m, err := f.svc.CreateModel(ctx, llm.ModelInput{Name: "gpt-4o", Pool: pool, TokensPerMinutePerKey: ptr(int64(50000)),
			MirrorModel: ptr("gpt-4o-next"), MirrorPercent: ptr(10), CacheTTLMS: ptr(int64(300000))})
		if err != nil {
			t.Fatal(err)
		}
		got, err := f.svc.GetModel(ctx, "gpt-4o")
		if err != nil || len(got.Pool) != 3 || got.Pool[0].Backend != "aoai-east" || got.Pool[0].Weight != 3 || got.Pool[1].Backend != "aoai-west" ||
			got.Pool[2].Backend != "openai" || got.Pool[2].Priority != 1 || got.MirrorModel != "gpt-4o-next" || got.CacheTTLMS != 300000 || got.CreatedAt != m.CreatedAt {
			t.Fatalf("GetModel: %+v %v", got, err)
		}
		if _, err := f.svc.CreateModel(ctx, llm.ModelInput{Name: "gpt-4o", Pool: pool}); !fault.Is(err, fault.AlreadyExists) {
			t.Fatalf("a taken model name: %v", err)
		}
		b, _ := f.svc.GetBackend(ctx, "openai")
		if len(b.Models) != 2 || b.Models[0] != "gpt-4o" || b.Models[1] != "gpt-4o-next" {
			t.Fatalf("backend's models: %v", b.Models)
		}
		err = f.svc.DeleteBackend(ctx, "openai")
		if !fault.Is(err, fault.FailedPrecondition) || !strings.Contains(err.Error(), "gpt-4o, gpt-4o-next") {
			t.Fatalf("deleting a backend in use: %v", err)
		}
		err = f.svc.DeleteModel(ctx, "gpt-4o-next")
		if !fault.Is(err, fault.FailedPrecondition) || !strings.Contains(err.Error(), "mirror of model(s) gpt-4o") {
			t.Fatalf("deleting a model mirrored to: %v", err)
		}
		if _, err := f.svc.UpdateBackend(ctx, "openai", llm.BackendInput{Style: ptr("azure-openai"), BaseURL: ptr("https://x.openai.azure.com"), APIVersion: ptr("2024-06-01")}); err != nil {
			t.Fatalf("a style change whose models fit: %v", err)
		}
		if b, err := f.svc.UpdateBackend(ctx, "openai", llm.BackendInput{Style: ptr("openai"), BaseURL: ptr("https://api.openai.com/v1")}); err != nil || b.APIVersion != "" {
			t.Fatalf("back to style openai: %+v %v", b, err)
		}

		// Updates: fields not given stay; a pool replaces the pool.
		up, err := f.svc.UpdateModel(ctx, "gpt-4o", llm.ModelInput{RequestsPerMinutePerKey: ptr(int64(60))})
		if err != nil || len(up.Pool) != 3 || up.RequestsPerMinutePerKey != 60 || up.TokensPerMinutePerKey != 50000 || up.MirrorPercent != 10 {
			t.Fatalf("UpdateModel: %+v %v", up, err)
		}
		up, err = f.svc.UpdateModel(ctx, "gpt-4o", llm.ModelInput{Pool: []llm.Target{{Backend: "openai"}}, MirrorModel: ptr("")})
		if err != nil || len(up.Pool) != 1 || up.MirrorModel != "" || up.MirrorPercent != 0 {
			t.Fatalf("UpdateModel pool and mirror: %+v %v", up, err)
		}
		if _, err := f.svc.UpdateModel(ctx, "gpt-4o", llm.ModelInput{Pool: []llm.Target{}}); err == nil {
			t.Fatal("an empty pool was accepted")
		}
		if _, err := f.svc.UpdateModel(ctx, "nope", llm.ModelInput{}); !fault.Is(err, fault.NotFound) {
			t.Fatalf("updating a missing model: %v", err)
		}
		if err := f.svc.DeleteModel(ctx, "gpt-4o-next"); err != nil {
			t.Fatalf("deleting a model no longer mirrored to: %v", err)
		}

		// Team limits.
		for _, c := range []struct {
			team        string
			in          llm.TeamLimitsInput
			field, want string
		}{
			{"bad team!", llm.TeamLimitsInput{}, "team", "not a valid team name"},
			{"research", llm.TeamLimitsInput{TokensPerDay: -1}, "tokens_per_day", "negative"},
			{"research", llm.TeamLimitsInput{BudgetPerMonth: -3}, "budget_per_month", "not a cost"},
		} {
			_, err := f.svc.PutTeamLimits(ctx, c.team, c.in)
			wantInvalid(t, "limits "+c.field, err, c.field, c.want)
		}
		if _, err := f.svc.PutTeamLimits(ctx, "research", llm.TeamLimitsInput{TokensPerMinute: 1000, BudgetPerDay: 5}); err != nil {
			t.Fatal(err)
		}
		l, err := f.svc.PutTeamLimits(ctx, "research", llm.TeamLimitsInput{TokensPerMonth: 5_000_000, BudgetPerMonth: 100.5})
		if err != nil || l.TokensPerMinute != 0 || l.TokensPerMonth != 5_000_000 {
			t.Fatalf("PutTeamLimits replaces: %+v %v", l, err)
		}
		if _, err := f.svc.PutTeamLimits(ctx, "sales", llm.TeamLimitsInput{RequestsPerMinute: 100}); err != nil {
			t.Fatal(err)
		}
		list, err := f.svc.ListTeamLimits(ctx)
		if err != nil || len(list) != 2 || list[0].Team != "research" || list[0].BudgetPerMonth != 100.5 || list[1].RequestsPerMinute != 100 {
			t.Fatalf("ListTeamLimits: %+v %v", list, err)
		}

		// The routing table.
		f.svc.UseWorkspaceTeams(func(context.Context) (map[string]string, error) {
			return map[string]string{"default": "", "ml": "research"}, nil
		})
		if _, err := f.svc.UpdateModel(ctx, "gpt-4o", llm.ModelInput{Pool: pool}); err != nil {
			t.Fatal(err)
		}
		snap, err := f.svc.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		east := snap.Backends["aoai-east"]
		if east == nil || east.Credential != cred || east.Style != gateway.StyleAzureOpenAI || east.APIVersion != "2024-06-01" || east.Timeout != 30*time.Second ||
			east.InputCostPer1K != 0.002 || snap.Backends["aoai-west"].Credential != "" {
			t.Fatalf("snapshot backends: %+v", snap.Backends)
		}
		gm := snap.Models["gpt-4o"]
		if gm == nil || len(gm.Pool) != 3 || gm.Pool[0] != (gateway.LLMTarget{Backend: "aoai-east", Model: "gpt-4o-ptu", Priority: 0, Weight: 3}) ||
			gm.Pool[2].Priority != 1 || gm.TokensPerMinutePerKey != 50000 || gm.CacheTTL != 5*time.Minute {
			t.Fatalf("snapshot model: %+v", gm)
		}
		if lim := snap.Teams["research"]; lim == nil || lim.TokensPerMonth != 5_000_000 || lim.BudgetPerMonth != 100.5 {
			t.Fatalf("snapshot teams: %+v", snap.Teams)
		}
		if len(snap.WorkspaceTeams) != 1 || snap.WorkspaceTeams["ml"] != "research" {
			t.Fatalf("snapshot workspace teams: %v", snap.WorkspaceTeams)
		}

		if err := f.svc.DeleteTeamLimits(ctx, "sales"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.GetTeamLimits(ctx, "sales"); !fault.Is(err, fault.NotFound) {
			t.Fatalf("deleted limits: %v", err)
		}
		if err := f.svc.DeleteTeamLimits(ctx, "sales"); !fault.Is(err, fault.NotFound) {
			t.Fatalf("deleting limits twice: %v", err)
		}
		if err := f.svc.DeleteModel(ctx, "gpt-4o"); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.DeleteBackend(ctx, "openai"); err != nil {
			t.Fatalf("deleting a backend no model uses any more: %v", err)
		}
		recs, _, err := f.log.List(context.Background(), audit.Filter{PageSize: 1000, Action: "llm.limits.put"})
		if err != nil || len(recs) != 3 {
			t.Fatalf("limits audit records: %d %v", len(recs), err)
		}
	})
}
