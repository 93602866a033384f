package search

import (
	"errors"
	"strconv"
	"strings"

	"github.com/plinth-dev/plinth/internal/store"
)

// builder collects bound values while SQL text is written. The text holds
// only fixed table and column names, keywords and ? placeholders.
type builder struct {
	d    store.Dialect
	args []any
}

// arg binds v and returns its placeholder.
func (b *builder) arg(v any) string {
	b.args = append(b.args, v)
	return "?"
}

// take returns the values bound so far and starts a new list.
func (b *builder) take() []any {
	a := b.args
	b.args = nil
	return a
}

// text makes a text expression sort by byte order on PostgreSQL too (its
// database collation may be a natural-language one); SQLite's default
// BINARY collation already does.
func (b *builder) text(expr string) string {
	if b.d == store.Postgres {
		return expr + ` COLLATE "C"`
	}
	return expr
}

// Comparator sets (SearchUtils.VALID_*_COMPARATORS).
var (
	numericOps = map[string]bool{"=": true, "!=": true, "<": true, "<=": true, ">": true, ">=": true}
	stringOps  = map[string]bool{"=": true, "!=": true, "LIKE": true, "ILIKE": true}
	listOps    = map[string]bool{"=": true, "!=": true, "LIKE": true, "ILIKE": true, "IN": true, "NOT IN": true}
)

const (
	numericOpList = "=, !=, <, <=, > or >="
	stringOpList  = "=, !=, LIKE or ILIKE"
	listOpList    = "=, !=, LIKE, ILIKE, IN or NOT IN"
)

func sqlOp(op string) string {
	if op == "!=" {
		return "<>"
	}
	return op
}

// check validates a comparison's comparator and value kind for what it
// compares (named by what, as in "metric 'rmse'").
func check(input string, c comparison, what string, ops map[string]bool, opList string, want valueKind) error {
	if !ops[c.op] {
		return newError(kindFilter, input, c.opPos, "comparator %s is not supported for %s; use %s", c.op, what, opList)
	}
	if c.val.kind == valList {
		return nil // only IN and NOT IN take a list, and they need one
	}
	if c.val.kind != want {
		if want == valNumber {
			return newError(kindFilter, input, c.val.pos, "%s is compared with a number, found a string", what)
		}
		return newError(kindFilter, input, c.val.pos, "%s is compared with a string in single or double quotes, found the number %s", what, c.val.text)
	}
	return nil
}

// number binds a numeric literal for comparison with an integer column:
// as an integer when it is one, else as a double.
func (b *builder) number(text string) string {
	if !strings.ContainsAny(text, ".eE") {
		if n, err := strconv.ParseInt(text, 10, 64); err == nil {
			return b.arg(n)
		}
	}
	return "CAST(" + b.arg(parseFloat(text)) + " AS DOUBLE PRECISION)"
}

// parseFloat reads a number the scanner accepted; as in Python, one too
// large for a double is infinite.
func parseFloat(text string) float64 {
	f, err := strconv.ParseFloat(text, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		panic("search: scanner accepted unparseable number " + text)
	}
	return f
}

// stringCmp compares the text expression col with a string or list value.
func (b *builder) stringCmp(col, op string, v value) string {
	switch op {
	case "=", "!=":
		return col + " " + sqlOp(op) + " " + b.arg(v.text)
	case "LIKE", "ILIKE":
		pat := parseLike(v.text)
		switch {
		case b.d == store.Postgres:
			return col + " " + op + " " + b.arg(pat.escaped())
		case op == "LIKE":
			// SQLite's LIKE ignores ASCII case; GLOB is exact.
			return col + " GLOB " + b.arg(pat.glob())
		default:
			return "LOWER(" + col + ") LIKE LOWER(" + b.arg(pat.escaped()) + `) ESCAPE '\'`
		}
	case "IN", "NOT IN":
		// SearchUtils._parse_run_ids drops every value that is not all
		// lower case (str.islower), for run ids and dataset keys alike.
		var keep []string
		for _, s := range v.list {
			if pyIsLower(s) {
				keep = append(keep, s)
			}
		}
		if len(keep) == 0 {
			if op == "IN" {
				return "1 = 0"
			}
			return "1 = 1"
		}
		ph := make([]string, len(keep))
		for i, s := range keep {
			ph[i] = b.arg(s)
		}
		return col + " " + op + " (" + strings.Join(ph, ", ") + ")"
	}
	panic("search: unknown comparator " + op)
}

// runComparison compiles one comparison of runs/search
// (_get_sqlalchemy_filter_clauses). Metric, param, tag and dataset
// comparisons are EXISTS subqueries, so a run matches at most once and runs
// lacking the key never match (the inner join MLflow uses).
func (b *builder) runComparison(input string, f field, c comparison) (string, error) {
	switch f.ent {
	case entMetric:
		what := "metric '" + f.key + "'"
		if err := check(input, c, what, numericOps, numericOpList, valNumber); err != nil {
			return "", err
		}
		key, val := b.arg(f.key), b.arg(parseFloat(c.val.text))
		head := "EXISTS (SELECT 1 FROM latest_metrics m WHERE m.run_uuid = r.run_uuid AND m.key = " + key + " AND "
		// NaN is stored as 0 with is_nan set; like a Python float NaN it
		// is unequal to everything and neither less nor greater.
		if c.op == "!=" {
			return head + "(m.value <> " + val + " OR m.is_nan))", nil
		}
		return head + "m.value " + c.op + " " + val + " AND NOT m.is_nan)", nil
	case entParam, entTag:
		table, alias, what := "params", "p", "param '"+f.key+"'"
		if f.ent == entTag {
			table, alias, what = "tags", "t", "tag '"+f.key+"'"
		}
		if err := check(input, c, what, stringOps, stringOpList, valString); err != nil {
			return "", err
		}
		return "EXISTS (SELECT 1 FROM " + table + " " + alias + " WHERE " + alias + ".run_uuid = r.run_uuid AND " +
			alias + ".key = " + b.arg(f.key) + " AND " + b.stringCmp(alias+".value", c.op, c.val) + ")", nil
	case entAttribute:
		what := "attribute '" + f.key + "'"
		if f.attr.numeric {
			if err := check(input, c, what, numericOps, numericOpList, valNumber); err != nil {
				return "", err
			}
			return f.attr.col + " " + sqlOp(c.op) + " " + b.number(c.val.text), nil
		}
		if err := check(input, c, what, listOps, listOpList, valString); err != nil {
			return "", err
		}
		if c.val.kind == valList && f.key != "run_id" {
			return "", newError(kindFilter, input, c.val.pos, "only the run_id attribute can be compared with a list of values")
		}
		return b.stringCmp(f.attr.col, c.op, c.val), nil
	case entDataset:
		what := "dataset " + f.key
		if err := check(input, c, what, listOps, listOpList, valString); err != nil {
			return "", err
		}
		if f.key == "context" {
			// The context is the input tag mlflow.data.context
			// (MLFLOW_DATASET_CONTEXT), a fixed key.
			return "EXISTS (SELECT 1 FROM run_inputs ri JOIN run_input_tags rit ON rit.input_uuid = ri.input_uuid" +
				" WHERE ri.run_uuid = r.run_uuid AND rit.key = 'mlflow.data.context' AND " +
				b.stringCmp("rit.value", c.op, c.val) + ")", nil
		}
		return "EXISTS (SELECT 1 FROM run_inputs ri JOIN datasets d ON d.dataset_uuid = ri.dataset_uuid" +
			" WHERE ri.run_uuid = r.run_uuid AND " + b.stringCmp(datasetColumns[f.key], c.op, c.val) + ")", nil
	}
	panic("search: unknown entity")
}

// experimentComparison compiles one comparison of experiments/search
// (_get_search_experiments_filter_clauses).
func (b *builder) experimentComparison(input string, f field, c comparison) (string, error) {
	if f.ent == entTag {
		if err := check(input, c, "tag '"+f.key+"'", stringOps, stringOpList, valString); err != nil {
			return "", err
		}
		return "EXISTS (SELECT 1 FROM experiment_tags et WHERE et.experiment_pk = e.pk AND et.key = " +
			b.arg(f.key) + " AND " + b.stringCmp("et.value", c.op, c.val) + ")", nil
	}
	what := "attribute '" + f.key + "'"
	if f.attr.numeric {
		if err := check(input, c, what, numericOps, numericOpList, valNumber); err != nil {
			return "", err
		}
		return f.attr.col + " " + sqlOp(c.op) + " " + b.number(c.val.text), nil
	}
	if err := check(input, c, what, stringOps, stringOpList, valString); err != nil {
		return "", err
	}
	return b.stringCmp(f.attr.col, c.op, c.val), nil
}

// parseOrderClause reads one order_by clause: an identifier and an
// optional ASC or DESC in any case (SearchUtils._parse_order_by_string).
func parseOrderClause(clause string) (raw string, pos int, asc bool, err error) {
	s := &scanner{src: clause, kind: kindOrderBy}
	if err := checkText(s); err != nil {
		return "", 0, false, err
	}
	s.skipSpace()
	if s.eof() {
		return "", 0, false, s.errAt(0, "empty order_by clause")
	}
	if raw, pos, err = s.scanIdentifier(); err != nil {
		return "", 0, false, err
	}
	asc = true
	s.skipSpace()
	if s.eof() {
		return raw, pos, asc, nil
	}
	at := s.pos
	w := s.readWord()
	switch strings.ToLower(w) {
	case "asc":
	case "desc":
		asc = false
	case "":
		return "", 0, false, s.errAt(at, "unexpected %s; expected ASC or DESC", describeAt(clause, at))
	default:
		return "", 0, false, s.errAt(at, "invalid ordering '%s'; use ASC or DESC", w)
	}
	s.skipSpace()
	if !s.eof() {
		return "", 0, false, s.errAt(s.pos, "unexpected %s after %s; an order_by clause is a key and an optional ASC or DESC", s.found(), w)
	}
	return raw, pos, asc, nil
}

// runOrderBy compiles the order_by list of runs/search (_get_orderby_clauses):
// each key sorts with runs lacking it last, whatever the direction (and,
// for a metric, NaN values after the others and before the missing), then
// start_time DESC unless start_time was named, then run_uuid.
func (b *builder) runOrderBy(list []string) (string, error) {
	if len(list) > MaxOrderBy {
		return "", newError(kindOrderBy, list[MaxOrderBy], 0, "order_by holds at most %d clauses", MaxOrderBy)
	}
	var terms []string
	seen := map[string]int{}
	sawStart := false
	for i, clause := range list {
		raw, pos, asc, err := parseOrderClause(clause)
		if err != nil {
			return "", err
		}
		f, err := resolveRunField(clause, kindOrderBy, raw, pos, true)
		if err != nil {
			return "", err
		}
		if f.ent == entDataset {
			return "", newError(kindOrderBy, clause, pos, "runs cannot be ordered by dataset; order by attributes, metrics, params or tags")
		}
		id := f.ent.String() + "." + f.key
		if j, dup := seen[id]; dup {
			return "", newError(kindOrderBy, clause, pos, "duplicate order_by key: order_by[%d] already orders by %s", j, id)
		}
		seen[id] = i
		dir := ""
		if !asc {
			dir = " DESC"
		}
		switch f.ent {
		case entAttribute:
			col := f.attr.col
			if f.key == "start_time" {
				sawStart = true
			}
			if f.attr.nullable {
				terms = append(terms, "CASE WHEN "+col+" IS NULL THEN 1 ELSE 0 END")
			}
			if !f.attr.numeric {
				col = b.text(col)
			}
			terms = append(terms, col+dir)
		case entMetric:
			sub := " FROM latest_metrics m WHERE m.run_uuid = r.run_uuid AND m.key = "
			terms = append(terms,
				"COALESCE((SELECT CASE WHEN m.is_nan THEN 1 ELSE 0 END"+sub+b.arg(f.key)+"), 2)",
				"(SELECT m.value"+sub+b.arg(f.key)+")"+dir)
		case entParam, entTag:
			table, a := "params", "p"
			if f.ent == entTag {
				table, a = "tags", "t"
			}
			sub := " FROM " + table + " " + a + " WHERE " + a + ".run_uuid = r.run_uuid AND " + a + ".key = "
			terms = append(terms,
				"CASE WHEN EXISTS (SELECT 1"+sub+b.arg(f.key)+") THEN 0 ELSE 1 END",
				b.text("(SELECT "+a+".value"+sub+b.arg(f.key)+")")+dir)
		}
	}
	// MLflow's defaults, left bare so the runs (experiment_pk, start_time
	// DESC, run_uuid) index serves them: every run has a start_time (MLflow
	// requires one), and run ids are lower-case hex, which every collation
	// orders alike.
	if !sawStart {
		terms = append(terms, "r.start_time DESC")
	}
	terms = append(terms, "r.run_uuid")
	return strings.Join(terms, ", "), nil
}

// defaultExperimentOrder is what _get_search_experiments_order_by_clauses
// uses for an empty order_by.
var defaultExperimentOrder = []string{"creation_time DESC", "experiment_id ASC"}

// experimentOrderBy compiles the order_by list of experiments/search:
// attributes only, then experiment_id DESC as the tie-breaker unless
// experiment_id was named.
func (b *builder) experimentOrderBy(list []string) (string, error) {
	if len(list) == 0 {
		list = defaultExperimentOrder
	}
	if len(list) > MaxOrderBy {
		return "", newError(kindOrderBy, list[MaxOrderBy], 0, "order_by holds at most %d clauses", MaxOrderBy)
	}
	var terms []string
	sawID := false
	for _, clause := range list {
		raw, pos, asc, err := parseOrderClause(clause)
		if err != nil {
			return "", err
		}
		f, err := resolveExperimentField(clause, kindOrderBy, raw, pos, true)
		if err != nil {
			return "", err
		}
		if f.ent != entAttribute {
			return "", newError(kindOrderBy, clause, pos, "experiments cannot be ordered by tag; order by name, experiment_id, creation_time or last_update_time")
		}
		col := f.attr.col
		if !f.attr.numeric {
			col = b.text(col)
		}
		if f.key == "experiment_id" {
			sawID = true
		}
		if !asc {
			col += " DESC"
		}
		terms = append(terms, col)
	}
	if !sawID {
		terms = append(terms, "e.experiment_id DESC")
	}
	return strings.Join(terms, ", "), nil
}
