package search_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/store/storetest"
	"github.com/plinth-dev/plinth/internal/tracking/search"
)

// fixture runs, all in experiment 1 of workspace w1. Without an order_by
// they sort by start_time DESC, run_uuid: r2 r3 r4 r1 r5.
//
//	run  name     user  status    start  end   params                    tags                                 metrics                  datasets (context)
//	r1   alpha    ada   FINISHED  1000   2000  model=CNN lr=0.01         team=Vision mlflow.user=ada "my key"=x  rmse=0.5 acc=0.9        train-set/d1 (training)
//	r2   Alpha-2  bob   FAILED    3000   -     model=cnn lr=0.1          team=vision                          rmse=NaN acc=0.95        eval_set/d2 (eval)
//	r3   beta     ada   RUNNING   2000   5000  model=RNN lr=0.01         mlflow.user=ada                      rmse=1.5                 train-set/d1 (training), Test%Set/d3 (testing)
//	r4   gamma    carl  FINISHED  2000   4000  pattern=a*b[c]?           team=Vision                          rmse=-0.002              -
//	r5   delta_1  ada   KILLED    500    600   pattern=aXb[c]!           -                                    -                        -
//
// Experiments (id name creation last_update tags): 0 Default 100 100;
// 1 churn-Model 300 400 team=ml; 2 Churn-model-v2 200 250 team=ML;
// 3 fraud 300 300.
func seed(t testing.TB, db *store.DB) {
	t.Helper()
	ctx := context.Background()
	err := db.Tx(ctx, func(tx store.Querier) error {
		exec := func(q string, args ...any) {
			if err := ctx.Err(); err != nil {
				return
			}
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				t.Fatalf("%s %v: %v", q, args, err)
			}
		}
		exec(`INSERT INTO workspaces (id, name, display_name, description, region, allowed_regions, team, tags, created_by, created_at, updated_at)
			VALUES ('w1', 'w1', 'W1', '', 'local', '["local"]', '', '{}', 'test', 1, 1)`)
		pks := map[int]int64{}
		for _, e := range []struct {
			id       int
			name     string
			created  int64
			updated  int64
			tagValue string
		}{
			{0, "Default", 100, 100, ""},
			{1, "churn-Model", 300, 400, "ml"},
			{2, "Churn-model-v2", 200, 250, "ML"},
			{3, "fraud", 300, 300, ""},
		} {
			exec(`INSERT INTO experiments (workspace_id, experiment_id, name, artifact_location, creation_time, last_update_time)
				VALUES ('w1', ?, ?, '', ?, ?)`, e.id, e.name, e.created, e.updated)
			var pk int64
			if err := tx.QueryRowContext(ctx, `SELECT pk FROM experiments WHERE experiment_id = ?`, e.id).Scan(&pk); err != nil {
				t.Fatal(err)
			}
			pks[e.id] = pk
			if e.tagValue != "" {
				exec(`INSERT INTO experiment_tags (experiment_pk, key, value) VALUES (?, 'team', ?)`, pk, e.tagValue)
			}
		}
		exp := pks[1]
		for _, r := range []struct {
			id, name, user, status string
			start                  any
			end                    any
		}{
			{"r1", "alpha", "ada", "FINISHED", 1000, 2000},
			{"r2", "Alpha-2", "bob", "FAILED", 3000, nil},
			{"r3", "beta", "ada", "RUNNING", 2000, 5000},
			{"r4", "gamma", "carl", "FINISHED", 2000, 4000},
			{"r5", "delta_1", "ada", "KILLED", 500, 600},
		} {
			exec(`INSERT INTO runs (run_uuid, experiment_pk, name, user_id, status, start_time, end_time) VALUES (?, ?, ?, ?, ?, ?, ?)`,
				r.id, exp, r.name, r.user, r.status, r.start, r.end)
		}
		for _, p := range [][3]string{
			{"r1", "model", "CNN"}, {"r1", "lr", "0.01"},
			{"r2", "model", "cnn"}, {"r2", "lr", "0.1"},
			{"r3", "model", "RNN"}, {"r3", "lr", "0.01"},
			{"r4", "pattern", "a*b[c]?"},
			{"r5", "pattern", "aXb[c]!"},
		} {
			exec(`INSERT INTO params (run_uuid, key, value) VALUES (?, ?, ?)`, p[0], p[1], p[2])
		}
		for _, tg := range [][3]string{
			{"r1", "team", "Vision"}, {"r1", "mlflow.user", "ada"}, {"r1", "my key", "x"},
			{"r2", "team", "vision"},
			{"r3", "mlflow.user", "ada"},
			{"r4", "team", "Vision"},
		} {
			exec(`INSERT INTO tags (run_uuid, key, value) VALUES (?, ?, ?)`, tg[0], tg[1], tg[2])
		}
		for _, m := range []struct {
			run, key string
			value    float64
			nan      bool
		}{
			{"r1", "rmse", 0.5, false}, {"r1", "acc", 0.9, false},
			{"r2", "rmse", 0, true}, {"r2", "acc", 0.95, false},
			{"r3", "rmse", 1.5, false},
			{"r4", "rmse", -0.002, false},
		} {
			exec(`INSERT INTO latest_metrics (run_uuid, key, step, timestamp, value, is_nan) VALUES (?, ?, 0, 0, ?, ?)`,
				m.run, m.key, m.value, m.nan)
		}
		for _, d := range [][3]string{{"ds1", "train-set", "d1"}, {"ds2", "eval_set", "d2"}, {"ds3", "Test%Set", "d3"}} {
			exec(`INSERT INTO datasets (dataset_uuid, experiment_pk, name, digest, source_type, source) VALUES (?, ?, ?, ?, 'local', 'x')`,
				d[0], exp, d[1], d[2])
		}
		for _, in := range [][4]string{
			{"i1", "ds1", "r1", "training"},
			{"i2", "ds2", "r2", "eval"},
			{"i3", "ds1", "r3", "training"},
			{"i4", "ds3", "r3", "testing"},
		} {
			exec(`INSERT INTO run_inputs (input_uuid, dataset_uuid, run_uuid) VALUES (?, ?, ?)`, in[0], in[1], in[2])
			exec(`INSERT INTO run_input_tags (input_uuid, key, value) VALUES (?, 'mlflow.data.context', ?)`, in[0], in[3])
			exec(`INSERT INTO run_input_tags (input_uuid, key, value) VALUES (?, 'other', 'eval')`, in[0])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// query runs the compiled filter and order against a table and returns
// the first column of each row.
func query(ctx context.Context, db *store.DB, selectFrom string, c search.Compiled) ([]string, error) {
	q := selectFrom
	args := slices.Clone(c.Args)
	if c.Where != "" {
		q += " WHERE " + c.Where
	}
	q += " ORDER BY " + c.OrderBy
	args = append(args, c.OrderArgs...)
	rows, err := db.Read().QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s %v: %w", q, args, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

const (
	selectRuns        = "SELECT r.run_uuid FROM runs r"
	selectExperiments = "SELECT CAST(e.experiment_id AS TEXT) FROM experiments e"
)

func TestSearchRunsExecutes(t *testing.T) {
	tests := []struct {
		filter  string
		orderBy []string
		want    string
	}{
		{filter: "", want: "r2 r3 r4 r1 r5"},
		{filter: "params.model LIKE 'C%'", want: "r1"},
		{filter: "params.model ILIKE 'c%'", want: "r2 r1"},
		{filter: "params.model = 'cnn'", want: "r2"},
		{filter: "tags.team = 'Vision'", want: "r4 r1"},
		{filter: "tags.team != 'Vision'", want: "r2"},
		{filter: "metrics.rmse < 1", want: "r4 r1"},
		{filter: "metrics.rmse != 0.5", want: "r2 r3 r4"},
		{filter: "metrics.rmse = 0", want: ""},
		{filter: "metrics.rmse >= -1e-2", want: "r3 r4 r1"},
		{filter: "metrics.acc > 0.92", want: "r2"},
		{filter: "metrics.rmse < 1e999", want: "r3 r4 r1"},
		{filter: "metrics.missing > 0", want: ""},
		{filter: "attributes.status = 'FINISHED'", want: "r4 r1"},
		{filter: "attributes.run_id IN ('r1', 'r3', 'R2')", want: "r3 r1"},
		{filter: "run_id NOT IN ('r1')", want: "r2 r3 r4 r5"},
		{filter: "datasets.name = 'train-set'", want: "r3 r1"},
		{filter: `datasets.name LIKE '%\%%'`, want: "r3"},
		{filter: "datasets.context = 'eval'", want: "r2"},
		{filter: "dataset.context IN ('testing')", want: "r3"},
		{filter: "datasets.digest IN ('d1', 'd2')", want: "r2 r3 r1"},
		{filter: "attributes.run_name LIKE 'alpha%'", want: "r1"},
		{filter: "run_name ILIKE 'ALPHA%'", want: "r2 r1"},
		{filter: "run_name LIKE 'delta_1'", want: "r5"},
		{filter: `run_name LIKE 'delta\__'`, want: "r5"},
		{filter: "run_name LIKE 'Delta%'", want: ""},
		{filter: "start_time >= 2000 AND start_time < 3000", want: "r3 r4"},
		{filter: "created > 1000", want: "r2 r3 r4"},
		{filter: "end_time > 0", want: "r3 r4 r1 r5"},
		{filter: "end_time < 2500.5", want: "r1 r5"},
		{filter: "tags.`my key` = \"x\"", want: "r1"},
		{filter: "tags.mlflow.user = 'ada'", want: "r3 r1"},
		{filter: "params.lr = '0.01' and metrics.rmse > 1", want: "r3"},
		{filter: "params.pattern LIKE 'a*b[c]?'", want: "r4"},
		{filter: "params.pattern LIKE 'a_b[c]_'", want: "r4 r5"},
		{filter: "params.pattern ILIKE 'A*B%'", want: "r4"},
		{filter: "user_id = 'ada' AND status != 'RUNNING'", want: "r1 r5"},
		{orderBy: []string{"metrics.rmse"}, want: "r4 r1 r3 r2 r5"},
		{orderBy: []string{"metrics.rmse DESC"}, want: "r3 r1 r4 r2 r5"},
		{orderBy: []string{"params.lr DESC"}, want: "r2 r3 r1 r4 r5"},
		{orderBy: []string{"tags.team"}, want: "r4 r1 r2 r3 r5"},
		{orderBy: []string{"start_time ASC"}, want: "r5 r1 r3 r4 r2"},
		{orderBy: []string{"created DESC"}, want: "r2 r3 r4 r1 r5"},
		{orderBy: []string{"attributes.end_time DESC"}, want: "r3 r4 r1 r5 r2"},
		{orderBy: []string{"end_time"}, want: "r5 r1 r4 r3 r2"},
		{orderBy: []string{"run_name"}, want: "r2 r1 r3 r5 r4"},
		{orderBy: []string{"status DESC", "metrics.acc"}, want: "r3 r5 r1 r4 r2"},
		{filter: "tags.team ILIKE 'VISION'", orderBy: []string{"metrics.acc DESC"}, want: "r2 r1 r4"},
	}
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		seed(t, db)
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s %q", tc.filter, tc.orderBy), func(t *testing.T) {
				c, err := search.CompileRuns(db.Dialect(), tc.filter, tc.orderBy)
				if err != nil {
					t.Fatal(err)
				}
				got, err := query(t.Context(), db, selectRuns, c)
				if err != nil {
					t.Fatal(err)
				}
				if g := strings.Join(got, " "); g != tc.want {
					t.Errorf("got [%s], want [%s]\nwhere %s\norder %s", g, tc.want, c.Where, c.OrderBy)
				}
			})
		}
	})
}

func TestSearchExperimentsExecutes(t *testing.T) {
	tests := []struct {
		filter  string
		orderBy []string
		want    string
	}{
		{filter: "", want: "1 3 2 0"},
		{filter: "name LIKE 'churn%'", want: "1"},
		{filter: "name ILIKE 'churn%'", want: "1 2"},
		{filter: "attribute.name = 'Default'", want: "0"},
		{filter: "tags.team = 'ml'", want: "1"},
		{filter: "tag.team ILIKE 'ML'", want: "1 2"},
		{filter: "tags.team != 'ml'", want: "2"},
		{filter: "creation_time > 150", want: "1 3 2"},
		{filter: "last_update_time <= 300 AND name != 'fraud'", want: "2 0"},
		{orderBy: []string{"name"}, want: "2 0 1 3"},
		{orderBy: []string{"creation_time ASC"}, want: "0 2 3 1"},
		{orderBy: []string{"last_update_time DESC"}, want: "1 3 2 0"},
		{orderBy: []string{"experiment_id DESC"}, want: "3 2 1 0"},
	}
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		seed(t, db)
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s %q", tc.filter, tc.orderBy), func(t *testing.T) {
				c, err := search.CompileExperiments(db.Dialect(), tc.filter, tc.orderBy)
				if err != nil {
					t.Fatal(err)
				}
				got, err := query(t.Context(), db, selectExperiments, c)
				if err != nil {
					t.Fatal(err)
				}
				if g := strings.Join(got, " "); g != tc.want {
					t.Errorf("got [%s], want [%s]\nwhere %s\norder %s", g, tc.want, c.Where, c.OrderBy)
				}
			})
		}
	})
}

// FuzzCompileRuns checks that any filter and order_by either fails with a
// positioned *search.Error or compiles to SQL whose placeholders match its
// values and that SQLite executes. orderBy holds the clauses one per line.
// The experiments compiler is given the same input.
func FuzzCompileRuns(f *testing.F) {
	for _, seed := range [][2]string{
		{"", ""},
		{"metrics.rmse < 0.5 AND params.model = 'CNN'", "metrics.rmse DESC"},
		{"metrics.rmse != -1e-3", "params.lr\ntags.team ASC"},
		{"tags.`my key` LIKE 'a%' and tags.mlflow.user = \"ada\"", "start_time"},
		{"attributes.run_id IN ('r1', 'r2') AND run_id NOT IN ('R3')", "attributes.end_time DESC"},
		{"datasets.name ILIKE '%set' AND dataset.context = 'training'", "run_name"},
		{"datasets.digest IN ('d1', 'it''s', 'a\\'b')", "created DESC"},
		{"attributes.status = 'FINISHED' and created >= 1000 and end_time < 2.5e3", "status DESC\nmetrics.acc"},
		{"`Run Name` LIKE 'a*b[c]?%\\_'", "`tags`.`team`"},
		{"params.pattern LIKE 'a\\'", "metrics.`a b` desc"},
		{"name LIKE 'churn%' AND tags.team = 'ml'", "name"},
		{"creation_time > 150 AND last_update_time <= 300", "last_update_time DESC\nexperiment_id"},
		{"metrics.rmse >> 1", "metrics.rmse DESCENDING"},
		{"params.a = 'x' OR (metrics.b > 1)", ""},
	} {
		f.Add(seed[0], seed[1])
	}
	db := storetest.Open(f, store.SQLite)
	seed(f, db)
	f.Fuzz(func(t *testing.T, filter, orderBy string) {
		var order []string
		if orderBy != "" {
			order = strings.Split(orderBy, "\n")
		}
		for _, target := range []struct {
			compile func(store.Dialect, string, []string) (search.Compiled, error)
			from    string
		}{
			{search.CompileRuns, selectRuns},
			{search.CompileExperiments, selectExperiments},
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
