package search

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/plinth-dev/plinth/internal/store"
)

const (
	modelTagSub   = "EXISTS (SELECT 1 FROM registered_model_tags mt WHERE mt.model_pk = m.pk AND mt.key = ? AND "
	versionTagSub = "EXISTS (SELECT 1 FROM model_version_tags vt WHERE vt.version_pk = v.pk AND vt.key = ? AND "
	modelNoPrompt = "NOT EXISTS (SELECT 1 FROM registered_model_tags mt WHERE mt.model_pk = m.pk AND mt.key = 'mlflow.prompt.is_prompt' AND mt.value = 'true')"
	versionNoPrmp = "NOT EXISTS (SELECT 1 FROM model_versions pv JOIN model_version_tags vt ON vt.version_pk = pv.pk WHERE pv.model_pk = v.model_pk AND vt.key = 'mlflow.prompt.is_prompt' AND vt.value = 'true')"
)

func TestCompileRegisteredModels(t *testing.T) {
	const defOrder = "m.name, m.pk"
	const pgDefOrder = `m.name COLLATE "C", m.pk`
	tests := []struct {
		name    string
		d       store.Dialect // SQLite when empty
		filter  string
		orderBy []string
		where   string
		args    []any
		order   string
		oargs   []any
	}{
		{name: "empty leaves prompts out", where: modelNoPrompt, order: defOrder},
		{name: "empty postgres", d: store.Postgres, where: modelNoPrompt, order: pgDefOrder},
		{name: "name equal", filter: "name = 'churn'", where: "m.name = ? AND " + modelNoPrompt, args: []any{"churn"}, order: defOrder},
		{name: "attribute prefix, not equal", filter: `attribute.name != "churn"`, where: "m.name <> ? AND " + modelNoPrompt, args: []any{"churn"}, order: defOrder},
		{name: "name LIKE sqlite", filter: "name LIKE 'ch%'", where: "m.name GLOB ? AND " + modelNoPrompt, args: []any{"ch*"}, order: defOrder},
		{name: "name LIKE postgres", d: store.Postgres, filter: "name like 'ch%'", where: "m.name LIKE ? AND " + modelNoPrompt, args: []any{"ch%"}, order: pgDefOrder},
		{name: "name ILIKE sqlite", filter: "name ILIKE '%Model'", where: "LOWER(m.name) LIKE LOWER(?" + sqliteILike + " AND " + modelNoPrompt, args: []any{"%Model"}, order: defOrder},
		{name: "name ILIKE postgres", d: store.Postgres, filter: "name ILIKE '%Model'", where: "m.name ILIKE ? AND " + modelNoPrompt, args: []any{"%Model"}, order: pgDefOrder},
		{name: "tags", filter: "tags.team = 'ml' AND tag.`k k` LIKE 'v%'",
			where: modelTagSub + "mt.value = ?) AND " + modelTagSub + "mt.value GLOB ?) AND " + modelNoPrompt,
			args:  []any{"team", "ml", "k k", "v*"}, order: defOrder},
		{name: "dotted tag key", filter: "tags.mlflow.owner ILIKE 'ADA'", d: store.Postgres,
			where: modelTagSub + "mt.value ILIKE ?) AND " + modelNoPrompt, args: []any{"mlflow.owner", "ADA"}, order: pgDefOrder},
		{name: "asking for prompts keeps the prompt tag and drops the exclusion", filter: "tags.`mlflow.prompt.is_prompt` = 'TRUE' AND name = 'p'",
			where: modelTagSub + "mt.value = ?) AND m.name = ?", args: []any{"mlflow.prompt.is_prompt", "TRUE", "p"}, order: defOrder},
		{name: "!= 'false' asks for prompts", filter: "tags.`mlflow.prompt.is_prompt` != 'false'",
			where: modelTagSub + "mt.value <> ?)", args: []any{"mlflow.prompt.is_prompt", "false"}, order: defOrder},
		{name: "other prompt-tag comparisons are dropped", filter: "name = 'a' AND tags.`mlflow.prompt.is_prompt` = 'false' AND tags.x = 'y'",
			where: "m.name = ? AND " + modelTagSub + "mt.value = ?) AND " + modelNoPrompt, args: []any{"a", "x", "y"}, order: defOrder},
		{name: "order by name desc", orderBy: []string{"name DESC"}, where: modelNoPrompt, order: "m.name DESC, m.pk"},
		{name: "order by timestamp", orderBy: []string{"timestamp"}, where: modelNoPrompt, order: "m.last_updated_time, m.name, m.pk"},
		{name: "order by last_updated_timestamp then name postgres", d: store.Postgres, orderBy: []string{"last_updated_timestamp DESC", "`name` asc"},
			where: modelNoPrompt, order: `m.last_updated_time DESC, m.name COLLATE "C", m.pk`},
		{name: "order by creation_timestamp with prefix", orderBy: []string{"attribute.creation_timestamp DESC"}, where: modelNoPrompt,
			order: "m.creation_time DESC, m.name, m.pk"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.d
			if d == "" {
				d = store.SQLite
			}
			got, err := CompileRegisteredModels(d, tc.filter, tc.orderBy)
			if err != nil {
				t.Fatalf("CompileRegisteredModels(%q, %q): %v", tc.filter, tc.orderBy, err)
			}
			if got.Where != tc.where || got.OrderBy != tc.order {
				t.Errorf("got\n  where %s\n  order %s\nwant\n  where %s\n  order %s", got.Where, got.OrderBy, tc.where, tc.order)
			}
			if !reflect.DeepEqual(got.Args, tc.args) || !reflect.DeepEqual(got.OrderArgs, tc.oargs) {
				t.Errorf("args: got %#v %#v, want %#v %#v", got.Args, got.OrderArgs, tc.args, tc.oargs)
			}
			checkPlaceholders(t, got)
		})
	}
}

func TestCompileModelVersions(t *testing.T) {
	const defOrder = "v.last_updated_time DESC, v.name, v.version DESC, v.pk"
	const pgDefOrder = `v.last_updated_time DESC, v.name COLLATE "C", v.version DESC, v.pk`
	tests := []struct {
		name    string
		d       store.Dialect
		filter  string
		orderBy []string
		where   string
		args    []any
		order   string
	}{
		{name: "empty", where: versionNoPrmp, order: defOrder},
		{name: "empty postgres", d: store.Postgres, where: versionNoPrmp, order: pgDefOrder},
		{name: "name", filter: "name = 'churn'", where: "v.name = ? AND " + versionNoPrmp, args: []any{"churn"}, order: defOrder},
		{name: "name ILIKE postgres", d: store.Postgres, filter: "attribute.name ILIKE 'CH%'", where: "v.name ILIKE ? AND " + versionNoPrmp, args: []any{"CH%"}, order: pgDefOrder},
		{name: "run_id equal", filter: "run_id = 'abc123'", where: "v.run_id = ? AND " + versionNoPrmp, args: []any{"abc123"}, order: defOrder},
		{name: "run_id IN drops values that are not lower case", filter: "run_id IN ('abc', 'DEF', '123', 'x1')",
			where: "v.run_id IN (?, ?) AND " + versionNoPrmp, args: []any{"abc", "x1"}, order: defOrder},
		{name: "run_id IN nothing left", filter: "run_id IN ('ABC')", where: "1 = 0 AND " + versionNoPrmp, order: defOrder},
		{name: "run_id LIKE", filter: "run_id LIKE 'ab%'", where: "v.run_id GLOB ? AND " + versionNoPrmp, args: []any{"ab*"}, order: defOrder},
		{name: "source_path", filter: "source_path LIKE 's3://b/%'", d: store.Postgres,
			where: "v.source LIKE ? AND " + versionNoPrmp, args: []any{"s3://b/%"}, order: pgDefOrder},
		{name: "source_path not equal", filter: "attribute.source_path != 'x'", where: "v.source <> ? AND " + versionNoPrmp, args: []any{"x"}, order: defOrder},
		{name: "version_number integer", filter: "version_number >= 2", where: "v.version >= ? AND " + versionNoPrmp, args: []any{int64(2)}, order: defOrder},
		{name: "version_number float", filter: "version_number < 2.5", where: "v.version < CAST(? AS DOUBLE PRECISION) AND " + versionNoPrmp, args: []any{2.5}, order: defOrder},
		{name: "version_number quoted integer", filter: "version_number != '3'", where: "v.version <> ? AND " + versionNoPrmp, args: []any{int64(3)}, order: defOrder},
		{name: "tags", filter: "tags.stage = 'prod' and tags.`a b` != \"c\"",
			where: versionTagSub + "vt.value = ?) AND " + versionTagSub + "vt.value <> ?) AND " + versionNoPrmp,
			args:  []any{"stage", "prod", "a b", "c"}, order: defOrder},
		{name: "prompts", filter: "tags.`mlflow.prompt.is_prompt` = 'true'", where: versionTagSub + "vt.value = ?)",
			args: []any{"mlflow.prompt.is_prompt", "true"}, order: defOrder},
		{name: "order by version_number", orderBy: []string{"version_number"}, where: versionNoPrmp, order: "v.version, v.name, v.pk"},
		{name: "order by name desc", orderBy: []string{"name DESC"}, where: versionNoPrmp, order: "v.name DESC, v.version DESC, v.pk"},
		{name: "order by creation_timestamp", d: store.Postgres, orderBy: []string{"attribute.creation_timestamp asc"}, where: versionNoPrmp,
			order: `v.creation_time, v.name COLLATE "C", v.version DESC, v.pk`},
		{name: "order by all", orderBy: []string{"last_updated_timestamp", "version_number DESC", "`name`"}, where: versionNoPrmp,
			order: "v.last_updated_time, v.version DESC, v.name, v.pk"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.d
			if d == "" {
				d = store.SQLite
			}
			got, err := CompileModelVersions(d, tc.filter, tc.orderBy)
			if err != nil {
				t.Fatalf("CompileModelVersions(%q, %q): %v", tc.filter, tc.orderBy, err)
			}
			if got.Where != tc.where || got.OrderBy != tc.order {
				t.Errorf("got\n  where %s\n  order %s\nwant\n  where %s\n  order %s", got.Where, got.OrderBy, tc.where, tc.order)
			}
			if !reflect.DeepEqual(got.Args, tc.args) || len(got.OrderArgs) != 0 {
				t.Errorf("args: got %#v %#v, want %#v", got.Args, got.OrderArgs, tc.args)
			}
			checkPlaceholders(t, got)
		})
	}
}

func TestRegistryRejected(t *testing.T) {
	const (
		models   = "models"
		versions = "versions"
	)
	tests := []struct {
		on      string
		filter  string
		orderBy []string
		pos     int
		msg     string
	}{
		{on: models, filter: "run_id = 'a'", pos: 0, msg: "invalid attribute key 'run_id'; valid keys for registered models are name"},
		{on: models, filter: "attributes.name = 'a'", pos: 0, msg: "invalid entity type 'attributes'"},
		{on: models, filter: "`tags`.x = 'a'", pos: 0, msg: "invalid entity type '`tags`'"},
		{on: models, filter: "params.x = 'a'", pos: 0, msg: "invalid entity type 'params'"},
		{on: models, filter: "attribute.`name` = 'a'", pos: 10, msg: "attribute keys are not quoted"},
		{on: models, filter: "name IN ('a')", pos: 5, msg: "comparator IN is not supported for attribute 'name'"},
		{on: models, filter: "name > 'a'", pos: 5, msg: "comparator > is not supported"},
		{on: models, filter: "name = 1", pos: 7, msg: "compared with a string"},
		{on: models, filter: "tags.t >= 'a'", pos: 7, msg: "comparator >= is not supported for tag 't'"},
		{on: models, filter: "tags.t = 5", pos: 9, msg: "compared with a string"},
		{on: models, filter: "tags.`mlflow.prompt.is_prompt` > 'true'", pos: 31, msg: "comparator >"},
		{on: models, filter: "name = 'a' OR name = 'b'", pos: 11, msg: "OR is not supported"},
		{on: models, filter: "name = 'a", pos: 7, msg: "unterminated string"},
		{on: models, orderBy: []string{"version_number"}, pos: 0, msg: "invalid order_by key 'version_number'; valid keys for registered models"},
		{on: models, orderBy: []string{"tags.x"}, pos: 0, msg: "registered models cannot be ordered by tag"},
		{on: models, orderBy: []string{"timestamp", "last_updated_timestamp DESC"}, pos: 0, msg: "duplicate order_by key: order_by[0] already orders by last_updated_time"},
		{on: models, orderBy: []string{"name sideways"}, pos: 5, msg: "invalid ordering"},
		{on: models, orderBy: []string{"name", ""}, pos: 0, msg: "empty order_by"},
		{on: versions, filter: "version = 1", pos: 0, msg: "invalid attribute key 'version'"},
		{on: versions, filter: "source = 'x'", pos: 0, msg: "invalid attribute key 'source'"},
		{on: versions, filter: "current_stage = 'Production'", pos: 0, msg: "invalid attribute key 'current_stage'"},
		{on: versions, filter: "run_id NOT IN ('a')", pos: 7, msg: "comparator NOT IN is not supported for attribute 'run_id'; use =, !=, LIKE, ILIKE or IN"},
		{on: versions, filter: "name IN ('a')", pos: 5, msg: "comparator IN is not supported for attribute 'name'"},
		{on: versions, filter: "source_path IN ('a')", pos: 12, msg: "comparator IN"},
		{on: versions, filter: "run_id > 'a'", pos: 7, msg: "comparator >"},
		{on: versions, filter: "run_id = 1", pos: 9, msg: "compared with a string"},
		{on: versions, filter: "version_number LIKE '1'", pos: 15, msg: "comparator LIKE is not supported for attribute 'version_number'"},
		{on: versions, filter: "version_number IN ('1')", pos: 15, msg: "comparator IN"},
		{on: versions, filter: "version_number = 'one'", pos: 17, msg: "compared with an integer, found the string 'one'"},
		{on: versions, filter: "version_number = '1.5'", pos: 17, msg: "compared with an integer"},
		{on: versions, filter: "version_number = abc", pos: 17, msg: "expected a value"},
		{on: versions, filter: "metrics.a > 1", pos: 0, msg: "invalid entity type 'metrics'"},
		{on: versions, orderBy: []string{"timestamp"}, pos: 0, msg: "invalid order_by key 'timestamp'; valid keys for model versions are name, version_number"},
		{on: versions, orderBy: []string{"attribute.run_id"}, pos: 10, msg: "invalid order_by key 'run_id'"},
		{on: versions, orderBy: []string{"tag.x DESC"}, pos: 0, msg: "model versions cannot be ordered by tag"},
		{on: versions, orderBy: []string{"foo.name"}, pos: 0, msg: "invalid entity type 'foo'"},
		{on: versions, orderBy: []string{"name", "`name` DESC"}, pos: 0, msg: "duplicate order_by key: order_by[0] already orders by name"},
		{on: versions, orderBy: []string{"version_number ASC DESC"}, pos: 19, msg: "unexpected 'DESC'"},
	}
	for _, tc := range tests {
		name := tc.on + " " + tc.filter
		if tc.orderBy != nil {
			name = fmt.Sprintf("%s order_by %q", tc.on, tc.orderBy)
		}
		t.Run(name, func(t *testing.T) {
			compile := CompileRegisteredModels
			if tc.on == versions {
				compile = CompileModelVersions
			}
			_, err := compile(store.Postgres, tc.filter, tc.orderBy)
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
			if se.IsOrderBy() != (tc.orderBy != nil) {
				t.Errorf("IsOrderBy() = %v", se.IsOrderBy())
			}
		})
	}
	if _, err := CompileModelVersions("mysql", "", nil); err == nil {
		t.Error("an unknown dialect compiled")
	}
	if _, err := CompileRegisteredModels("mysql", "", nil); err == nil {
		t.Error("an unknown dialect compiled")
	}
}
