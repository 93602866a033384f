package search

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/plinth-dev/plinth/internal/store"
)

const (
	metricSub   = "EXISTS (SELECT 1 FROM latest_metrics m WHERE m.run_uuid = r.run_uuid AND m.key = ? AND "
	paramSub    = "EXISTS (SELECT 1 FROM params p WHERE p.run_uuid = r.run_uuid AND p.key = ? AND "
	tagSub      = "EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ? AND "
	datasetSub  = "EXISTS (SELECT 1 FROM run_inputs ri JOIN datasets d ON d.dataset_uuid = ri.dataset_uuid WHERE ri.run_uuid = r.run_uuid AND "
	contextSub  = "EXISTS (SELECT 1 FROM run_inputs ri JOIN run_input_tags rit ON rit.input_uuid = ri.input_uuid WHERE ri.run_uuid = r.run_uuid AND rit.key = 'mlflow.data.context' AND "
	sqliteILike = `) ESCAPE '\'`
)

func TestCompileRunsFilter(t *testing.T) {
	tests := []struct {
		name   string
		d      store.Dialect // SQLite when empty
		filter string
		where  string
		args   []any
	}{
		{name: "empty", filter: "", where: ""},
		{name: "blank", filter: " \t\n", where: ""},
		{name: "metric less", filter: "metrics.rmse < 0.5",
			where: metricSub + "m.value < ? AND NOT m.is_nan)", args: []any{"rmse", 0.5}},
		{name: "metric not equal is true for NaN", filter: "metrics.rmse != -1e-3",
			where: metricSub + "(m.value <> ? OR m.is_nan))", args: []any{"rmse", -0.001}},
		{name: "metric backtick key, integer literal", filter: "metric.`my metric` >= 1",
			where: metricSub + "m.value >= ? AND NOT m.is_nan)", args: []any{"my metric", 1.0}},
		{name: "metric glued comparator and negative number", filter: "metrics.a>-1",
			where: metricSub + "m.value > ? AND NOT m.is_nan)", args: []any{"a", -1.0}},
		{name: "metric leading dot number", filter: "metrics.a = .5",
			where: metricSub + "m.value = ? AND NOT m.is_nan)", args: []any{"a", 0.5}},
		{name: "metric trailing dot number", filter: "metrics.a <= 5.",
			where: metricSub + "m.value <= ? AND NOT m.is_nan)", args: []any{"a", 5.0}},
		{name: "metric exponent", filter: "metrics.a > 2.5E10",
			where: metricSub + "m.value > ? AND NOT m.is_nan)", args: []any{"a", 2.5e10}},
		{name: "param equal", filter: "params.model = 'CNN'",
			where: paramSub + "p.value = ?)", args: []any{"model", "CNN"}},
		{name: "param double quotes", filter: `param."model type" != "a b"`,
			where: paramSub + "p.value <> ?)", args: []any{"model type", "a b"}},
		{name: "parameter prefix, quotes kept raw as MLflow does", filter: `parameters.x = 'it''s'`,
			where: paramSub + "p.value = ?)", args: []any{"x", "it''s"}},
		{name: "tag LIKE sqlite", filter: "tags.team LIKE 'Vi%'",
			where: tagSub + "t.value GLOB ?)", args: []any{"team", "Vi*"}},
		{name: "tag LIKE postgres", d: store.Postgres, filter: "tags.team LIKE 'Vi%'",
			where: tagSub + "t.value LIKE ?)", args: []any{"team", "Vi%"}},
		{name: "tag ILIKE sqlite", filter: "tags.team ilike 'vi_ion'",
			where: tagSub + "LOWER(t.value) LIKE LOWER(?" + sqliteILike + ")", args: []any{"team", "vi_ion"}},
		{name: "tag ILIKE postgres", d: store.Postgres, filter: "tags.team ILIKE 'vi_ion'",
			where: tagSub + "t.value ILIKE ?)", args: []any{"team", "vi_ion"}},
		{name: "dotted tag key", filter: "tags.mlflow.user = 'ada'",
			where: tagSub + "t.value = ?)", args: []any{"mlflow.user", "ada"}},
		{name: "single-quoted tag key", filter: "tag.'my key' = 'x'",
			where: tagSub + "t.value = ?)", args: []any{"my key", "x"}},
		{name: "backticked prefix", filter: "`tags`.k = 'x'",
			where: tagSub + "t.value = ?)", args: []any{"k", "x"}},
		{name: "status", filter: `attributes.status = "FINISHED"`,
			where: "r.status = ?", args: []any{"FINISHED"}},
		{name: "user", filter: "user_id != 'ada'", where: "r.user_id <> ?", args: []any{"ada"}},
		{name: "artifact_uri", filter: "attr.artifact_uri LIKE 's3://%'", where: "r.artifact_uri GLOB ?", args: []any{"s3://*"}},
		{name: "run_id IN drops values that are not lower case", filter: "attr.run_id IN ('abc', 'DEF', 'x1', '123')",
			where: "r.run_uuid IN (?, ?)", args: []any{"abc", "x1"}},
		{name: "run_id NOT IN nothing left", filter: "run.run_id NOT IN ('ABC')", where: "1 = 1"},
		{name: "run_id IN nothing left", filter: "run_id in ('ABC')", where: "1 = 0"},
		{name: "run_id IN python escapes", filter: `run_id IN ('a\'b', 'c''d', 'e\\f', 'g\x41')`,
			where: "r.run_uuid IN (?, ?, ?)", args: []any{"a'b", "cd", `e\f`}},
		{name: "start_time integer", filter: "attribute.start_time >= 1700000000000",
			where: "r.start_time >= ?", args: []any{int64(1700000000000)}},
		{name: "created alias with float", filter: "created < 1.5e3",
			where: "r.start_time < CAST(? AS DOUBLE PRECISION)", args: []any{1500.0}},
		{name: "Created alias", filter: "Created = 7", where: "r.start_time = ?", args: []any{int64(7)}},
		{name: "end_time", filter: "end_time != 5", where: "r.end_time <> ?", args: []any{int64(5)}},
		{name: "run name alias, GLOB specials escaped", filter: "`Run Name` LIKE 'a*b[c]?%'",
			where: "r.name GLOB ?", args: []any{"a[*]b[[]c][?]*"}},
		{name: "run_name postgres LIKE escapes", d: store.Postgres, filter: `run_name LIKE 'a\_b%\%'`,
			where: "r.name LIKE ?", args: []any{`a\_b%\%`}},
		{name: "LIKE escaped backslash", filter: `params.p LIKE 'a\\b'`,
			where: paramSub + "p.value GLOB ?)", args: []any{"p", `a\b`}},
		{name: "LIKE trailing backslash is literal", d: store.Postgres, filter: `params.p LIKE 'ab\'`,
			where: paramSub + "p.value LIKE ?)", args: []any{"p", `ab\\`}},
		{name: "dataset name", filter: "datasets.name = 'train'",
			where: datasetSub + "d.name = ?)", args: []any{"train"}},
		{name: "dataset digest LIKE with literal percent", filter: `dataset.digest LIKE '%\%%'`,
			where: datasetSub + "d.digest GLOB ?)", args: []any{"*%*"}},
		{name: "dataset context IN", filter: "dataset.context IN ('train', 'eval')",
			where: contextSub + "rit.value IN (?, ?))", args: []any{"train", "eval"}},
		{name: "dataset name NOT IN", filter: "datasets.name NOT IN ('a')",
			where: datasetSub + "d.name NOT IN (?))", args: []any{"a"}},
		{name: "several", filter: "metrics.a > 1 and params.b = 'x' AND tags.c != 'y'",
			where: metricSub + "m.value > ? AND NOT m.is_nan) AND " + paramSub + "p.value = ?) AND " + tagSub + "t.value <> ?)",
			args:  []any{"a", 1.0, "b", "x", "c", "y"}},
		{name: "stray ANDs ignored as by MLflow", filter: "AND metrics.a > 1 AND AND",
			where: metricSub + "m.value > ? AND NOT m.is_nan)", args: []any{"a", 1.0}},
		{name: "string glued to AND", filter: "params.a='x'AND params.b='y'",
			where: paramSub + "p.value = ?) AND " + paramSub + "p.value = ?)", args: []any{"a", "x", "b", "y"}},
		{name: "unicode key and value", filter: "params.größe = 'ü'",
			where: paramSub + "p.value = ?)", args: []any{"größe", "ü"}},
		{name: "number forms", filter: "metrics.a > -.5 AND metrics.b < 1.e5 AND metrics.c = -7. AND metrics.d != 1e999",
			where: metricSub + "m.value > ? AND NOT m.is_nan) AND " + metricSub + "m.value < ? AND NOT m.is_nan) AND " +
				metricSub + "m.value = ? AND NOT m.is_nan) AND " + metricSub + "(m.value <> ? OR m.is_nan))",
			args: []any{"a", -0.5, "b", 1e5, "c", -7.0, "d", math.Inf(1)}},
		{name: "key starting with a digit", filter: "metrics.2019_rmse < 1",
			where: metricSub + "m.value < ? AND NOT m.is_nan)", args: []any{"2019_rmse", 1.0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.d
			if d == "" {
				d = store.SQLite
			}
			got, err := CompileRuns(d, tc.filter, nil)
			if err != nil {
				t.Fatalf("CompileRuns(%q): %v", tc.filter, err)
			}
			if got.Where != tc.where {
				t.Errorf("Where:\n got %s\nwant %s", got.Where, tc.where)
			}
			if !reflect.DeepEqual(got.Args, tc.args) {
				t.Errorf("Args: got %#v, want %#v", got.Args, tc.args)
			}
			checkPlaceholders(t, got)
		})
	}
}

func TestCompileRunsOrderBy(t *testing.T) {
	const (
		metricKey = "COALESCE((SELECT CASE WHEN m.is_nan THEN 1 ELSE 0 END FROM latest_metrics m WHERE m.run_uuid = r.run_uuid AND m.key = ?), 2), " +
			"(SELECT m.value FROM latest_metrics m WHERE m.run_uuid = r.run_uuid AND m.key = ?)"
		paramHas = "CASE WHEN EXISTS (SELECT 1 FROM params p WHERE p.run_uuid = r.run_uuid AND p.key = ?) THEN 0 ELSE 1 END, "
		paramVal = "(SELECT p.value FROM params p WHERE p.run_uuid = r.run_uuid AND p.key = ?)"
		tagHas   = "CASE WHEN EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ?) THEN 0 ELSE 1 END, "
		tagVal   = "(SELECT t.value FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ?)"
	)
	tests := []struct {
		name    string
		d       store.Dialect
		orderBy []string
		want    string
		args    []any
	}{
		{name: "default", want: "r.start_time DESC, r.run_uuid"},
		{name: "metric", orderBy: []string{"metrics.rmse"}, want: metricKey + ", r.start_time DESC, r.run_uuid", args: []any{"rmse", "rmse"}},
		{name: "metric desc", orderBy: []string{"metric.`a b` desc"}, want: metricKey + " DESC, r.start_time DESC, r.run_uuid", args: []any{"a b", "a b"}},
		{name: "param postgres collates", d: store.Postgres, orderBy: []string{"params.lr DESC"},
			want: paramHas + paramVal + ` COLLATE "C" DESC, r.start_time DESC, r.run_uuid`, args: []any{"lr", "lr"}},
		{name: "tag quoted", orderBy: []string{`tags."my key" ASC`}, want: tagHas + tagVal + ", r.start_time DESC, r.run_uuid", args: []any{"my key", "my key"}},
		{name: "start_time replaces the default", orderBy: []string{"start_time asc"},
			want: "CASE WHEN r.start_time IS NULL THEN 1 ELSE 0 END, r.start_time, r.run_uuid"},
		{name: "created alias", orderBy: []string{"  created DESC "},
			want: "CASE WHEN r.start_time IS NULL THEN 1 ELSE 0 END, r.start_time DESC, r.run_uuid"},
		{name: "end_time", orderBy: []string{"attributes.end_time DESC"},
			want: "CASE WHEN r.end_time IS NULL THEN 1 ELSE 0 END, r.end_time DESC, r.start_time DESC, r.run_uuid"},
		{name: "run_name", orderBy: []string{"attributes.run_name"}, want: "r.name, r.start_time DESC, r.run_uuid"},
		{name: "run_name postgres", d: store.Postgres, orderBy: []string{"run_name"}, want: `r.name COLLATE "C", r.start_time DESC, r.run_uuid`},
		{name: "several", orderBy: []string{"metrics.a DESC", "params.b", "status"},
			want: metricKey + " DESC, " + paramHas + paramVal + ", r.status, r.start_time DESC, r.run_uuid", args: []any{"a", "a", "b", "b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.d
			if d == "" {
				d = store.SQLite
			}
			got, err := CompileRuns(d, "", tc.orderBy)
			if err != nil {
				t.Fatalf("CompileRuns(%q): %v", tc.orderBy, err)
			}
			if got.OrderBy != tc.want {
				t.Errorf("OrderBy:\n got %s\nwant %s", got.OrderBy, tc.want)
			}
			if !reflect.DeepEqual(got.OrderArgs, tc.args) {
				t.Errorf("OrderArgs: got %#v, want %#v", got.OrderArgs, tc.args)
			}
			checkPlaceholders(t, got)
		})
	}
}

func TestCompileExperiments(t *testing.T) {
	const tagSub = "EXISTS (SELECT 1 FROM experiment_tags et WHERE et.experiment_pk = e.pk AND et.key = ? AND "
	tests := []struct {
		name    string
		d       store.Dialect
		filter  string
		orderBy []string
		where   string
		args    []any
		order   string
	}{
		{name: "default order", order: "e.creation_time DESC, e.experiment_id"},
		{name: "name LIKE", filter: "name LIKE 'churn%'", where: "e.name GLOB ?", args: []any{"churn*"},
			order: "e.creation_time DESC, e.experiment_id"},
		{name: "attribute prefix and ILIKE postgres", d: store.Postgres, filter: "attribute.name ILIKE '%Model%'",
			where: "e.name ILIKE ?", args: []any{"%Model%"}, orderBy: []string{"name"}, order: `e.name COLLATE "C", e.experiment_id DESC`},
		{name: "times", filter: "creation_time > 100 AND last_update_time <= 2.5",
			where: "e.creation_time > ? AND e.last_update_time <= CAST(? AS DOUBLE PRECISION)", args: []any{int64(100), 2.5},
			orderBy: []string{"last_update_time DESC", "experiment_id"}, order: "e.last_update_time DESC, e.experiment_id"},
		{name: "tags", filter: "tags.team = 'ml' and tag.`k k` != \"v\"",
			where: tagSub + "et.value = ?) AND " + tagSub + "et.value <> ?)", args: []any{"team", "ml", "k k", "v"},
			orderBy: []string{"creation_time"}, order: "e.creation_time, e.experiment_id DESC"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.d
			if d == "" {
				d = store.SQLite
			}
			got, err := CompileExperiments(d, tc.filter, tc.orderBy)
			if err != nil {
				t.Fatalf("CompileExperiments(%q, %q): %v", tc.filter, tc.orderBy, err)
			}
			if got.Where != tc.where || got.OrderBy != tc.order {
				t.Errorf("got\n  where %s\n  order %s\nwant\n  where %s\n  order %s", got.Where, got.OrderBy, tc.where, tc.order)
			}
			if !reflect.DeepEqual(got.Args, tc.args) {
				t.Errorf("Args: got %#v, want %#v", got.Args, tc.args)
			}
			checkPlaceholders(t, got)
		})
	}
}

func TestRejected(t *testing.T) {
	type entity int
	const (
		runs entity = iota
		experiments
	)
	tests := []struct {
		on      entity
		filter  string
		orderBy []string
		pos     int
		msg     string // a fragment of the message
	}{
		{filter: "metrics.rmse >> 1", pos: 14, msg: "unexpected '>'"},
		{filter: "metrics.rmse == 1", pos: 14, msg: "use = "},
		{filter: "metrics.rmse <> 1", pos: 14, msg: "use !="},
		{filter: "metrics.rmse ~ 1", pos: 13, msg: "unexpected '~'"},
		{filter: "metrics.rmse LIKE 1", pos: 13, msg: "comparator LIKE is not supported for metric 'rmse'"},
		{filter: "metrics.rmse IN ('a')", pos: 13, msg: "comparator IN is not supported"},
		{filter: "metrics.rmse > 'x'", pos: 15, msg: "compared with a number"},
		{filter: "metrics.rmse > abc", pos: 15, msg: "expected a value"},
		{filter: "metrics.rmse > 0x1F", pos: 15, msg: "hexadecimal"},
		{filter: "metrics.rmse > 1.2.3", pos: 15, msg: "invalid number"},
		{filter: "metrics.rmse > 1e", pos: 15, msg: "exponent"},
		{filter: "metrics.rmse > 1e+5", pos: 15, msg: "exponent"},
		{filter: "metrics.rmse > 12abc", pos: 15, msg: "invalid number '12abc'"},
		{filter: "metrics.rmse > +1", pos: 15, msg: "unexpected '+'"},
		{filter: "metrics.rmse > - 1", pos: 15, msg: "invalid number"},
		{filter: "metrics.rmse > 1 OR metrics.a < 2", pos: 17, msg: "OR is not supported"},
		{filter: "(metrics.rmse > 1)", pos: 0, msg: "parentheses"},
		{filter: "metrics.rmse > 1 metrics.a < 2", pos: 17, msg: "expected AND"},
		{filter: "metrics.rmse > 1 )", pos: 17, msg: "unexpected ')'"},
		{filter: "NOT metrics.a > 1", pos: 0, msg: "NOT"},
		{filter: "foo.bar = 'x'", pos: 0, msg: "invalid entity type 'foo'"},
		{filter: "Metrics.rmse > 1", pos: 0, msg: "invalid entity type 'Metrics'"},
		{filter: "`metrics.rmse` > 1", pos: 0, msg: "invalid entity type '`metrics'"},
		{filter: "attributes.foo = 'x'", pos: 11, msg: "invalid attribute key 'foo'"},
		{filter: "lifecycle_stage = 'active'", pos: 0, msg: "invalid attribute key"},
		{filter: "datasets.size = 'x'", pos: 9, msg: "invalid dataset key 'size'"},
		{filter: "params.lr > '1'", pos: 10, msg: "comparator > is not supported for param 'lr'"},
		{filter: "params.lr = 1", pos: 12, msg: "compared with a string"},
		{filter: "params.lr = abc", pos: 12, msg: "expected a value"},
		{filter: "params.lr IN ('a')", pos: 10, msg: "comparator IN is not supported"},
		{filter: "tags.t = `x`", pos: 9, msg: "backtick"},
		{filter: "attributes.status IN ('a')", pos: 21, msg: "only the run_id attribute"},
		{filter: "attributes.run_id IN 'a'", pos: 21, msg: "parenthesised list"},
		{filter: "attributes.run_id = ('a')", pos: 18, msg: "needs IN or NOT IN"},
		{filter: "attributes.run_id IN ()", pos: 21, msg: "empty list"},
		{filter: "attributes.run_id IN ('a',)", pos: 26, msg: "expected a single-quoted string"},
		{filter: `attributes.run_id IN ("a")`, pos: 22, msg: "single quotes only"},
		{filter: "attributes.run_id IN ('a' 'b')", pos: 26, msg: "expected ',' or ')'"},
		{filter: `attributes.run_id IN ('a\x4')`, pos: 24, msg: `truncated \x escape`},
		{filter: `attributes.run_id IN ('a\xzz')`, pos: 24, msg: `invalid \x escape`},
		{filter: "start_time > '1'", pos: 13, msg: "compared with a number"},
		{filter: "start_time LIKE 1", pos: 11, msg: "comparator LIKE"},
		{filter: "status > 'x'", pos: 7, msg: "comparator >"},
		{filter: "params.lr = 'abc", pos: 12, msg: "unterminated string"},
		{filter: "params.`lr = 'x'", pos: 7, msg: "unterminated quoted name"},
		{filter: "metrics. > 1", pos: 8, msg: "expected a name after '.'"},
		{filter: "metrics.rmse", pos: 12, msg: "found end of input"},
		{filter: "metrics.rmse >", pos: 14, msg: "found end of input"},
		{filter: "metrics.rmse NOT LIKE 'x'", pos: 17, msg: "expected IN after NOT"},
		{filter: "metrics.rmse BETWEEN 1", pos: 13, msg: "expected a comparator"},
		{filter: "tags.x IS NULL", pos: 7, msg: "expected a comparator"},
		{filter: "params.a = 'x'; DROP TABLE runs", pos: 14, msg: "unexpected ';'"},
		{filter: "params.a = 'x' -- comment", pos: 15, msg: "unexpected '-'"},
		{filter: "'x' = 'y'", pos: 0, msg: "expected an identifier"},
		{filter: "params.x = 'é' AND y", pos: 20, msg: "found end of input"},
		{filter: "params.a = '\xff'", pos: 12, msg: "invalid UTF-8"},
		{filter: "params.a = 'a\x00'", pos: 13, msg: "NUL"},
		{filter: strings.Repeat("metrics.a > 1 AND ", MaxComparisons+1), pos: 18 * MaxComparisons, msg: "at most"},
		{orderBy: []string{"metrics.rmse DESCENDING"}, pos: 13, msg: "invalid ordering 'DESCENDING'"},
		{orderBy: []string{"metrics.rmse ASC DESC"}, pos: 17, msg: "unexpected 'DESC'"},
		{orderBy: []string{"metrics.rmse, params.lr"}, pos: 12, msg: "unexpected ','"},
		{orderBy: []string{""}, pos: 0, msg: "empty order_by"},
		{orderBy: []string{"foo.bar"}, pos: 0, msg: "invalid entity type"},
		{orderBy: []string{"attributes.`run name`"}, pos: 11, msg: "invalid attribute key 'run name'"},
		{orderBy: []string{"datasets.name"}, pos: 0, msg: "cannot be ordered by dataset"},
		{orderBy: []string{"metrics.a", "metric.a DESC"}, pos: 0, msg: "duplicate"},
		{orderBy: []string{"created", "start_time"}, pos: 0, msg: "duplicate"},
		{on: experiments, filter: "attributes.name = 'x'", pos: 0, msg: "invalid entity type 'attributes'"},
		{on: experiments, filter: "metrics.a > 1", pos: 0, msg: "invalid entity type 'metrics'"},
		{on: experiments, filter: "name IN ('a')", pos: 5, msg: "comparator IN"},
		{on: experiments, filter: "experiment_id = 1", pos: 0, msg: "invalid attribute key 'experiment_id'"},
		{on: experiments, filter: "tags.x > 'a'", pos: 7, msg: "comparator >"},
		{on: experiments, filter: "creation_time > 'x'", pos: 16, msg: "compared with a number"},
		{on: experiments, filter: "name = 1", pos: 7, msg: "compared with a string"},
		{on: experiments, orderBy: []string{"tags.x"}, pos: 0, msg: "cannot be ordered by tag"},
		{on: experiments, orderBy: []string{"lifecycle_stage"}, pos: 0, msg: "invalid attribute key"},
		{on: experiments, orderBy: []string{"name", "creation_time sideways"}, pos: 14, msg: "invalid ordering"},
	}
	for _, tc := range tests {
		name := tc.filter
		if tc.orderBy != nil {
			name = fmt.Sprintf("order_by %q", tc.orderBy)
		}
		if len(name) > 60 {
			name = name[:60]
		}
		t.Run(name, func(t *testing.T) {
			var err error
			if tc.on == experiments {
				_, err = CompileExperiments(store.SQLite, tc.filter, tc.orderBy)
			} else {
				_, err = CompileRuns(store.Postgres, tc.filter, tc.orderBy)
			}
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("got error %v (%T), want *search.Error", err, err)
			}
			if se.Pos != tc.pos {
				t.Errorf("Pos = %d, want %d (%v)", se.Pos, tc.pos, se)
			}
			if !strings.Contains(se.Msg, tc.msg) {
				t.Errorf("Msg %q does not mention %q", se.Msg, tc.msg)
			}
			if want := fmt.Sprintf("at position %d", tc.pos); !strings.HasSuffix(se.Error(), want) {
				t.Errorf("Error() = %q, want it to end with %q", se.Error(), want)
			}
			if se.IsOrderBy() != (tc.orderBy != nil) {
				t.Errorf("IsOrderBy() = %v", se.IsOrderBy())
			}
		})
	}
}

func TestErrorText(t *testing.T) {
	_, err := CompileRuns(store.SQLite, "metrics.rmse >> 1", nil)
	const want = "invalid filter 'metrics.rmse >> 1': unexpected '>' at position 14"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	_, err = CompileRuns(store.SQLite, "", []string{"metrics.rmse up"})
	const wantOrder = "invalid order_by 'metrics.rmse up': invalid ordering 'up'; use ASC or DESC at position 13"
	if err == nil || err.Error() != wantOrder {
		t.Errorf("got %v, want %s", err, wantOrder)
	}
	if _, err := CompileRuns("mysql", "", nil); err == nil {
		t.Error("an unknown dialect compiled")
	}
}

func TestTooManyArgs(t *testing.T) {
	ids := make([]string, MaxArgs+1)
	for i := range ids {
		ids[i] = fmt.Sprintf("'r%d'", i)
	}
	_, err := CompileRuns(store.SQLite, "run_id IN ("+strings.Join(ids, ",")+")", nil)
	var se *Error
	if !errors.As(err, &se) || !strings.Contains(se.Msg, "bound values") {
		t.Fatalf("got %v, want a too-many-values error", err)
	}
}

func TestPyIsLower(t *testing.T) {
	for s, want := range map[string]bool{"abc": true, "a1-b": true, "123": false, "": false, "aBc": false, "ß": true, "Σ": false} {
		if got := pyIsLower(s); got != want {
			t.Errorf("pyIsLower(%q) = %v, want %v", s, got, want)
		}
	}
}

// checkPlaceholders checks that Where and OrderBy have one ? per bound
// value. Compiled SQL never holds a user value, so no ? hides in a literal.
func checkPlaceholders(t testing.TB, c Compiled) {
	t.Helper()
	if n := strings.Count(c.Where, "?"); n != len(c.Args) {
		t.Errorf("Where has %d placeholders and %d args: %s", n, len(c.Args), c.Where)
	}
	if n := strings.Count(c.OrderBy, "?"); n != len(c.OrderArgs) {
		t.Errorf("OrderBy has %d placeholders and %d args: %s", n, len(c.OrderArgs), c.OrderBy)
	}
}
