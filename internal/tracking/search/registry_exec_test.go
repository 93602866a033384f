package search_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/store/storetest"
	"github.com/plinth-dev/plinth/internal/tracking/search"
)

// seedRegistry replaces any registry tables the migrations made with
// plain ones of the columns the compiled SQL uses (no foreign keys), and
// fills them.
//
//	model        pk created updated tags
//	churn-Model  1  100     400     team=ml
//	Churn-v2     2  200     300     team=ML owner=ada
//	fraud        3  300     300     -
//	my-prompt    4  150     500     mlflow.prompt.is_prompt=true
//	a_b          5  50      50      mlflow.prompt.is_prompt=false
//
//	version        pk source          run_id created updated tags
//	churn-Model/1  10 s3://b/churn/1  aaa111 100     200     stage=old
//	churn-Model/2  11 s3://b/churn/2  bbb222 110     600     stage=prod
//	churn-Model/3  12 file:///tmp/c3  aaa111 120     600     -
//	Churn-v2/1     13 s3://b/v2/1     ccc333 130     600     stage=prod
//	fraud/1        14 S3://B/fraud    ddd444 140     150     -
//	my-prompt/1    15 p               eee    150     700     mlflow.prompt.is_prompt=true
//	a_b/1          16 x               fff    160     160     -
func seedRegistry(t testing.TB, db *store.DB) {
	t.Helper()
	ctx := context.Background()
	err := db.Tx(ctx, func(tx store.Querier) error {
		exec := func(q string, args ...any) {
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				t.Fatalf("%s %v: %v", q, args, err)
			}
		}
		tables := []string{"model_version_tags", "model_versions", "registered_model_tags", "registered_model_aliases", "registered_models"}
		if db.Dialect() == store.Postgres {
			exec("DROP TABLE IF EXISTS " + strings.Join(tables, ", ") + " CASCADE")
		} else {
			for _, tb := range tables {
				exec("DROP TABLE IF EXISTS " + tb)
			}
		}
		exec(`CREATE TABLE registered_models (pk BIGINT PRIMARY KEY, workspace_id TEXT NOT NULL, name TEXT NOT NULL,
			description TEXT NOT NULL, creation_time BIGINT NOT NULL, last_updated_time BIGINT NOT NULL)`)
		exec(`CREATE TABLE registered_model_tags (model_pk BIGINT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (model_pk, key))`)
		exec(`CREATE TABLE model_versions (pk BIGINT PRIMARY KEY, model_pk BIGINT NOT NULL, name TEXT NOT NULL, version BIGINT NOT NULL,
			description TEXT NOT NULL, source TEXT NOT NULL, run_id TEXT NOT NULL, status TEXT NOT NULL, current_stage TEXT NOT NULL,
			creation_time BIGINT NOT NULL, last_updated_time BIGINT NOT NULL, user_id TEXT NOT NULL, deleted BOOLEAN NOT NULL)`)
		exec(`CREATE TABLE model_version_tags (version_pk BIGINT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (version_pk, key))`)
		for _, m := range []struct {
			pk               int64
			name             string
			created, updated int64
		}{
			{1, "churn-Model", 100, 400},
			{2, "Churn-v2", 200, 300},
			{3, "fraud", 300, 300},
			{4, "my-prompt", 150, 500},
			{5, "a_b", 50, 50},
		} {
			exec(`INSERT INTO registered_models (pk, workspace_id, name, description, creation_time, last_updated_time) VALUES (?, 'w1', ?, '', ?, ?)`,
				m.pk, m.name, m.created, m.updated)
		}
		for _, tg := range []struct {
			pk         int64
			key, value string
		}{
			{1, "team", "ml"}, {2, "team", "ML"}, {2, "owner", "ada"},
			{4, "mlflow.prompt.is_prompt", "true"}, {5, "mlflow.prompt.is_prompt", "false"},
		} {
			exec(`INSERT INTO registered_model_tags (model_pk, key, value) VALUES (?, ?, ?)`, tg.pk, tg.key, tg.value)
		}
		for _, v := range []struct {
			pk, model        int64
			name             string
			version          int64
			source, run      string
			created, updated int64
		}{
			{10, 1, "churn-Model", 1, "s3://b/churn/1", "aaa111", 100, 200},
			{11, 1, "churn-Model", 2, "s3://b/churn/2", "bbb222", 110, 600},
			{12, 1, "churn-Model", 3, "file:///tmp/c3", "aaa111", 120, 600},
			{13, 2, "Churn-v2", 1, "s3://b/v2/1", "ccc333", 130, 600},
			{14, 3, "fraud", 1, "S3://B/fraud", "ddd444", 140, 150},
			{15, 4, "my-prompt", 1, "p", "eee", 150, 700},
			{16, 5, "a_b", 1, "x", "fff", 160, 160},
		} {
			exec(`INSERT INTO model_versions (pk, model_pk, name, version, description, source, run_id, status, current_stage,
				creation_time, last_updated_time, user_id, deleted) VALUES (?, ?, ?, ?, '', ?, ?, 'READY', 'None', ?, ?, 'ada', ?)`,
				v.pk, v.model, v.name, v.version, v.source, v.run, v.created, v.updated, false)
		}
		for _, tg := range []struct {
			pk         int64
			key, value string
		}{
			{10, "stage", "old"}, {11, "stage", "prod"}, {13, "stage", "prod"},
			{15, "mlflow.prompt.is_prompt", "true"},
		} {
			exec(`INSERT INTO model_version_tags (version_pk, key, value) VALUES (?, ?, ?)`, tg.pk, tg.key, tg.value)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

const (
	selectModels   = "SELECT m.name FROM registered_models m"
	selectVersions = "SELECT v.name || '/' || CAST(v.version AS TEXT) FROM model_versions v"
)

func TestSearchRegistryExecutes(t *testing.T) {
	type test struct {
		filter  string
		orderBy []string
		want    string
	}
	models := []test{
		{filter: "", want: "Churn-v2 a_b churn-Model fraud"},
		{filter: "name LIKE 'churn%'", want: "churn-Model"},
		{filter: "attribute.name ILIKE 'CHURN%'", want: "Churn-v2 churn-Model"},
		{filter: "name != 'fraud'", want: "Churn-v2 a_b churn-Model"},
		{filter: `name LIKE '_\_%'`, want: "a_b"},
		{filter: "tags.team = 'ml'", want: "churn-Model"},
		{filter: "tags.team ILIKE 'ML'", want: "Churn-v2 churn-Model"},
		{filter: "tags.team != 'ml'", want: "Churn-v2"},
		{filter: "tags.team = 'ML' AND tag.owner = 'ada'", want: "Churn-v2"},
		{filter: "tags.`mlflow.prompt.is_prompt` = 'true'", want: "my-prompt"},
		{filter: "tags.`mlflow.prompt.is_prompt` = 'false'", want: "Churn-v2 a_b churn-Model fraud"},
		{orderBy: []string{"timestamp DESC"}, want: "churn-Model Churn-v2 fraud a_b"},
		{orderBy: []string{"creation_timestamp"}, want: "a_b churn-Model Churn-v2 fraud"},
		{orderBy: []string{"name DESC"}, want: "fraud churn-Model a_b Churn-v2"},
	}
	versions := []test{
		{filter: "", want: "Churn-v2/1 churn-Model/3 churn-Model/2 churn-Model/1 a_b/1 fraud/1"},
		{filter: "name = 'churn-Model'", orderBy: []string{"version_number"}, want: "churn-Model/1 churn-Model/2 churn-Model/3"},
		{filter: "run_id = 'aaa111'", want: "churn-Model/3 churn-Model/1"},
		{filter: "run_id IN ('aaa111', 'ccc333', 'DDD444')", want: "Churn-v2/1 churn-Model/3 churn-Model/1"},
		{filter: "source_path LIKE 's3://b/%'", want: "Churn-v2/1 churn-Model/2 churn-Model/1"},
		{filter: "source_path ILIKE 's3://b/%'", want: "Churn-v2/1 churn-Model/2 churn-Model/1 fraud/1"},
		{filter: "version_number > 1", want: "churn-Model/3 churn-Model/2"},
		{filter: "version_number <= 1.5 AND name ILIKE '%churn%'", want: "Churn-v2/1 churn-Model/1"},
		{filter: "version_number = '2'", want: "churn-Model/2"},
		{filter: "tags.stage = 'prod'", want: "Churn-v2/1 churn-Model/2"},
		{filter: "tags.stage != 'prod'", want: "churn-Model/1"},
		{filter: "tags.`mlflow.prompt.is_prompt` = 'true'", want: "my-prompt/1"},
		{orderBy: []string{"creation_timestamp DESC"}, want: "a_b/1 fraud/1 Churn-v2/1 churn-Model/3 churn-Model/2 churn-Model/1"},
		{orderBy: []string{"name", "version_number ASC"}, want: "Churn-v2/1 a_b/1 churn-Model/1 churn-Model/2 churn-Model/3 fraud/1"},
		{orderBy: []string{"last_updated_timestamp"}, want: "fraud/1 a_b/1 churn-Model/1 Churn-v2/1 churn-Model/3 churn-Model/2"},
	}
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		seedRegistry(t, db)
		for _, set := range []struct {
			name    string
			compile func(store.Dialect, string, []string) (search.Compiled, error)
			from    string
			tests   []test
		}{
			{"models", search.CompileRegisteredModels, selectModels, models},
			{"versions", search.CompileModelVersions, selectVersions, versions},
		} {
			for _, tc := range set.tests {
				t.Run(fmt.Sprintf("%s %s %q", set.name, tc.filter, tc.orderBy), func(t *testing.T) {
					c, err := set.compile(db.Dialect(), tc.filter, tc.orderBy)
					if err != nil {
						t.Fatal(err)
					}
					got, err := query(t.Context(), db, set.from, c)
					if err != nil {
						t.Fatal(err)
					}
					if g := strings.Join(got, " "); g != tc.want {
						t.Errorf("got [%s], want [%s]\nwhere %s\norder %s", g, tc.want, c.Where, c.OrderBy)
					}
				})
			}
		}
	})
}

// FuzzCompileModelVersions is FuzzCompileRuns for the model registry: the
// registered models compiler is given the same input.
func FuzzCompileModelVersions(f *testing.F) {
	for _, seed := range [][2]string{
		{"", ""},
		{"name = 'churn' AND run_id IN ('a', 'B')", "version_number DESC"},
		{"source_path ILIKE 's3://%' and version_number >= 2", "creation_timestamp\nname ASC"},
		{"version_number = '3' AND tags.`a b` LIKE 'x%'", "attribute.last_updated_timestamp desc"},
		{"tags.`mlflow.prompt.is_prompt` = 'TRUE'", "timestamp"},
		{"tags.`mlflow.prompt.is_prompt` != 'false' AND tags.x = \"y\"", "`name` DESC"},
		{"attribute.name != 'a\\'b' AND run_id NOT IN ('a')", "tags.x"},
		{"version_number < 1e999", "name\nname"},
	} {
		f.Add(seed[0], seed[1])
	}
	db := storetest.Open(f, store.SQLite)
	seedRegistry(f, db)
	f.Fuzz(func(t *testing.T, filter, orderBy string) {
		var order []string
		if orderBy != "" {
			order = strings.Split(orderBy, "\n")
		}
		for _, target := range []struct {
			compile func(store.Dialect, string, []string) (search.Compiled, error)
			from    string
		}{
			{search.CompileModelVersions, selectVersions},
			{search.CompileRegisteredModels, selectModels},
		} {
			c, err := target.compile(store.SQLite, filter, order)
			if err != nil {
				var se *search.Error
				if !errors.As(err, &se) {
					t.Fatalf("error %v is a %T, not a *search.Error", err, err)
				}
				if se.Pos < 0 || se.Pos > utf8.RuneCountInString(se.Input) {
					t.Fatalf("position %d is outside %q", se.Pos, se.Input)
				}
				continue
			}
			if n := strings.Count(c.Where, "?"); n != len(c.Args) {
				t.Fatalf("Where has %d placeholders for %d args: %s", n, len(c.Args), c.Where)
			}
			if n := strings.Count(c.OrderBy, "?"); n != len(c.OrderArgs) {
				t.Fatalf("OrderBy has %d placeholders for %d args: %s", n, len(c.OrderArgs), c.OrderBy)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err = query(ctx, db, target.from, c)
			cancel()
			if err != nil {
				t.Fatalf("filter %q order_by %q: %v", filter, order, err)
			}
		}
	})
}
