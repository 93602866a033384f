// Package search parses MLflow's search filter and order_by languages for
// runs, experiments, registered models and model versions and compiles
// them to SQL with bound parameters.
//
// The grammar and its semantics follow MLflow's own implementation
// (mlflow/utils/search_utils.py: SearchUtils and SearchExperimentsUtils;
// mlflow/store/tracking/sqlalchemy_store.py: _get_sqlalchemy_filter_clauses,
// _get_orderby_clauses, _get_search_experiments_filter_clauses and
// _get_search_experiments_order_by_clauses; for the model registry, see
// CompileRegisteredModels). A filter is one or more comparisons joined by
// AND:
//
//	metrics.rmse < 0.5 AND params.model = 'CNN' AND tags.`my key` LIKE 'a%'
//
// The compiled SQL refers to the runs table as r, the experiments table as
// e, the registered_models table as m and the model_versions table as v.
// It holds only fixed table and column names and ? placeholders; every
// user value travels in Args or OrderArgs.
//
// Where MLflow's behaviour depends on the database (LIKE's case sensitivity
// and escape character, NULL placement, text collation), this package picks
// one behaviour and gives it on both SQLite and PostgreSQL:
//
//   - = and != compare exactly; LIKE is case-sensitive and ILIKE is not
//     (ASCII letters), with % and _ as wildcards and a backslash making the
//     next character literal.
//   - A NaN metric satisfies only != (IEEE comparison, as MLflow's
//     SearchUtils.filter evaluates it), although it is stored as 0.
//   - Text sorts by byte order (COLLATE "C" on PostgreSQL, SQLite's BINARY).
package search

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/plinth-dev/plinth/internal/store"
)

// Compiled is a filter and an order_by list compiled to SQL fragments.
type Compiled struct {
	// Where is a SQL boolean expression over the table alias r (runs), e
	// (experiments), m (registered models) or v (model versions); ""
	// means no filter.
	Where string
	// Args are the bound values for Where's ? placeholders, in order.
	Args []any
	// OrderBy is an ORDER BY list without the keyword, always ending in a
	// unique tie-breaker (r.run_uuid, e.experiment_id, m.pk or v.pk).
	OrderBy string
	// OrderArgs are the bound values for OrderBy's ? placeholders.
	OrderArgs []any
}

// Limits beyond which a request is refused. MLflow has none; these keep
// every accepted request executable on both databases (SQLite allows an
// expression depth of 1000, 2000 ORDER BY terms and 32766 parameters).
const (
	// MaxComparisons is the most comparisons one filter may hold.
	MaxComparisons = 500
	// MaxOrderBy is the most order_by clauses one request may hold.
	MaxOrderBy = 200
	// MaxArgs is the most bound values a filter and order_by may need
	// together (IN lists count one per value).
	MaxArgs = 20000
)

// Error is a parse or validation error in a filter or an order_by clause.
type Error struct {
	// Pos is the 0-based position, counted in characters (Unicode code
	// points), in Input where the problem was found.
	Pos int
	// Msg says what is wrong.
	Msg string
	// Input is the filter, or the one order_by clause, that was rejected.
	Input string
	// kind is "filter" or "order_by"; "" reads as "filter".
	kind string
}

func (e *Error) Error() string {
	kind := e.kind
	if kind == "" {
		kind = "filter"
	}
	in := e.Input
	if utf8.RuneCountInString(in) > 200 {
		r := []rune(in)
		in = string(r[:200]) + "..."
	}
	return fmt.Sprintf("invalid %s '%s': %s at position %d", kind, in, e.Msg, e.Pos)
}

// IsOrderBy reports whether the error is in an order_by clause rather than
// in the filter.
func (e *Error) IsOrderBy() bool { return e.kind == kindOrderBy }

const (
	kindFilter  = "filter"
	kindOrderBy = "order_by"
)

// newError builds an Error at byte offset pos of input.
func newError(kind, input string, pos int, format string, args ...any) *Error {
	if pos < 0 {
		pos = 0
	}
	if pos > len(input) {
		pos = len(input)
	}
	return &Error{
		Pos:   utf8.RuneCountInString(input[:pos]),
		Msg:   fmt.Sprintf(format, args...),
		Input: input,
		kind:  kind,
	}
}

// CompileRuns compiles a runs/search filter and order_by list. The caller
// adds the experiment, lifecycle (run_view_type) and workspace conditions.
func CompileRuns(d store.Dialect, filter string, orderBy []string) (Compiled, error) {
	return compile(d, filter, orderBy, resolveRunField, (*builder).runComparison, (*builder).runOrderBy)
}

// CompileExperiments compiles an experiments/search filter and order_by
// list. The caller adds the lifecycle (view_type) and workspace conditions.
func CompileExperiments(d store.Dialect, filter string, orderBy []string) (Compiled, error) {
	return compile(d, filter, orderBy, resolveExperimentField, (*builder).experimentComparison, (*builder).experimentOrderBy)
}

// compile is the shape shared by runs and experiments: parse, resolve and
// compile each comparison, then the order_by list, checking the number of
// bound values against MaxArgs.
func compile(d store.Dialect, filter string, orderBy []string,
	resolve func(input, kind, raw string, pos int, order bool) (field, error),
	compare func(b *builder, input string, f field, c comparison) (string, error),
	order func(b *builder, list []string) (string, error),
) (Compiled, error) {
	if err := checkDialect(d); err != nil {
		return Compiled{}, err
	}
	cmps, err := parseFilter(filter)
	if err != nil {
		return Compiled{}, err
	}
	b := &builder{d: d}
	parts := make([]string, 0, len(cmps))
	for _, c := range cmps {
		f, err := resolve(filter, kindFilter, c.ident, c.identPos, false)
		if err != nil {
			return Compiled{}, err
		}
		sql, err := compare(b, filter, f, c)
		if err != nil {
			return Compiled{}, err
		}
		parts = append(parts, sql)
	}
	out := Compiled{Where: strings.Join(parts, " AND "), Args: b.take()}
	if err := checkArgs(filter, kindFilter, len(out.Args)); err != nil {
		return Compiled{}, err
	}
	ob, err := order(b, orderBy)
	if err != nil {
		return Compiled{}, err
	}
	out.OrderBy, out.OrderArgs = ob, b.take()
	if err := checkArgs(filter, kindFilter, len(out.Args)+len(out.OrderArgs)); err != nil {
		return Compiled{}, err
	}
	return out, nil
}

func checkDialect(d store.Dialect) error {
	if d != store.SQLite && d != store.Postgres {
		return errors.New("search: unsupported SQL dialect " + string(d))
	}
	return nil
}

func checkArgs(input, kind string, n int) error {
	if n > MaxArgs {
		return newError(kind, input, 0, "needs %d bound values, more than the %d allowed", n, MaxArgs)
	}
	return nil
}
