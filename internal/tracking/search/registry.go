package search

import (
	"strconv"
	"strings"

	"github.com/plinth-dev/plinth/internal/store"
)

// The model registry's search languages follow MLflow's SQL store
// (mlflow/store/model_registry/sqlalchemy_store.py:
// _get_search_registered_model_filter_query,
// _get_search_model_versions_filter_clauses,
// _parse_search_registered_models_order_by and
// _parse_search_model_versions_order_by) and its parsers
// (mlflow/utils/search_utils.py: SearchModelUtils and
// SearchModelVersionUtils). The compiled SQL refers to the
// registered_models table as m and the model_versions table as v.

// promptTag marks a registered model (and its versions) as a prompt.
// MLflow's searches leave prompts out unless the filter asks for them
// (SqlAlchemyStore._is_querying_prompt and _update_query_to_exclude_prompts).
const promptTag = "mlflow.prompt.is_prompt"

// registeredModelAttributes are the searchable registered model attributes
// (SearchModelUtils.VALID_SEARCH_ATTRIBUTE_KEYS).
var registeredModelAttributes = map[string]runAttr{
	"name": {col: "m.name"},
}

// registeredModelOrderKeys are the orderable keys: MLflow's SQL store takes
// name, timestamp and last_updated_timestamp, the last two both meaning
// last_updated_time (SearchUtils.VALID_ORDER_BY_KEYS_REGISTERED_MODELS);
// its file store adds creation_timestamp
// (SearchModelUtils.VALID_ORDER_BY_KEYS_REGISTERED_MODELS).
var registeredModelOrderKeys = map[string]runAttr{
	"name":                   {col: "m.name"},
	"timestamp":              {col: "m.last_updated_time", numeric: true},
	"last_updated_timestamp": {col: "m.last_updated_time", numeric: true},
	"creation_timestamp":     {col: "m.creation_time", numeric: true},
}

// modelVersionAttributes are the searchable model version attributes
// (SearchModelVersionUtils.VALID_SEARCH_ATTRIBUTE_KEYS), with the columns
// the SQL store maps them to.
var modelVersionAttributes = map[string]runAttr{
	"name":           {col: "v.name"},
	"run_id":         {col: "v.run_id"},
	"source_path":    {col: "v.source"},
	"version_number": {col: "v.version", numeric: true},
}

// modelVersionOrderKeys are the orderable model version keys
// (SearchModelVersionUtils.VALID_ORDER_BY_ATTRIBUTE_KEYS).
var modelVersionOrderKeys = map[string]runAttr{
	"name":                   {col: "v.name"},
	"version_number":         {col: "v.version", numeric: true},
	"creation_timestamp":     {col: "v.creation_time", numeric: true},
	"last_updated_timestamp": {col: "v.last_updated_time", numeric: true},
}

// defaultModelVersionOrder is what search_model_versions uses for an empty
// order_by.
var defaultModelVersionOrder = []string{"last_updated_timestamp DESC", "name ASC", "version_number DESC"}

// runIDOps are the comparators of a model version's run_id
// (SearchModelVersionUtils.VALID_STRING_ATTRIBUTE_COMPARATORS: NOT IN is
// not among them, and the SQL store allows IN for run_id only).
var runIDOps = map[string]bool{"=": true, "!=": true, "LIKE": true, "ILIKE": true, "IN": true}

const runIDOpList = "=, !=, LIKE, ILIKE or IN"

// registry describes one of the two registry searches.
type registry struct {
	what       string // "registered models" or "model versions"
	attrs      map[string]runAttr
	attrList   string
	orderKeys  map[string]runAttr
	orderList  string
	tagSub     string // EXISTS head over the tag table, up to "key = "
	notPrompt  string // the condition that leaves prompts out
	defaults   []string
	tieBreaker func(seen map[string]bool) []string
}

var registeredModels = &registry{
	what:      "registered models",
	attrs:     registeredModelAttributes,
	attrList:  "name",
	orderKeys: registeredModelOrderKeys,
	orderList: "name, timestamp, last_updated_timestamp and creation_timestamp",
	tagSub:    "EXISTS (SELECT 1 FROM registered_model_tags mt WHERE mt.model_pk = m.pk AND mt.key = ",
	notPrompt: "NOT EXISTS (SELECT 1 FROM registered_model_tags mt WHERE mt.model_pk = m.pk AND mt.key = '" +
		promptTag + "' AND mt.value = 'true')",
	tieBreaker: func(seen map[string]bool) []string {
		var t []string
		if !seen["m.name"] {
			t = append(t, "m.name")
		}
		return append(t, "m.pk")
	},
}

var modelVersions = &registry{
	what:      "model versions",
	attrs:     modelVersionAttributes,
	attrList:  "name, run_id, source_path and version_number",
	orderKeys: modelVersionOrderKeys,
	orderList: "name, version_number, creation_timestamp and last_updated_timestamp",
	tagSub:    "EXISTS (SELECT 1 FROM model_version_tags vt WHERE vt.version_pk = v.pk AND vt.key = ",
	// MLflow leaves out every version of a model one of whose versions
	// carries the prompt tag.
	notPrompt: "NOT EXISTS (SELECT 1 FROM model_versions pv JOIN model_version_tags vt ON vt.version_pk = pv.pk" +
		" WHERE pv.model_pk = v.model_pk AND vt.key = '" + promptTag + "' AND vt.value = 'true')",
	defaults: defaultModelVersionOrder,
	tieBreaker: func(seen map[string]bool) []string {
		var t []string
		if !seen["v.name"] {
			t = append(t, "v.name")
		}
		if !seen["v.version"] {
			t = append(t, "v.version DESC")
		}
		return append(t, "v.pk")
	},
}

// CompileRegisteredModels compiles a registered-models/search filter and
// order_by list over the registered_models table m. The caller adds the
// workspace condition.
//
// Filters compare name (=, !=, LIKE, ILIKE; bare or as attribute.name) and
// tags.<key> (the same comparators). As in MLflow, prompts (models tagged
// mlflow.prompt.is_prompt = 'true') are left out unless the filter asks for
// them with tags.`mlflow.prompt.is_prompt` = 'true' (or != 'false'), so
// Where is never empty. The order_by keys are name, timestamp and
// last_updated_timestamp (both last_updated_time) and creation_timestamp;
// name ASC follows unless name was named, then m.pk.
func CompileRegisteredModels(d store.Dialect, filter string, orderBy []string) (Compiled, error) {
	return registeredModels.compile(d, filter, orderBy)
}

// CompileModelVersions compiles a model-versions/search filter and
// order_by list over the model_versions table v. The caller adds the
// workspace and not-deleted conditions.
//
// Filters compare name and source_path (the source column) with =, !=,
// LIKE and ILIKE, run_id with those and IN, version_number with =, !=, <,
// <=, > and >=, and tags.<key> with =, !=, LIKE and ILIKE. Prompts are
// left out as by CompileRegisteredModels. The order_by keys are name,
// version_number, creation_timestamp and last_updated_timestamp; an empty
// list means last_updated_timestamp DESC, name ASC, version_number DESC,
// and otherwise name ASC and version_number DESC follow unless named; v.pk
// breaks the remaining ties.
func CompileModelVersions(d store.Dialect, filter string, orderBy []string) (Compiled, error) {
	return modelVersions.compile(d, filter, orderBy)
}

func (rg *registry) compile(d store.Dialect, filter string, orderBy []string) (Compiled, error) {
	if err := checkDialect(d); err != nil {
		return Compiled{}, err
	}
	cmps, err := parseFilter(filter)
	if err != nil {
		return Compiled{}, err
	}
	fields := make([]field, len(cmps))
	for i, c := range cmps {
		if fields[i], err = rg.resolveFilterField(filter, c.ident, c.identPos); err != nil {
			return Compiled{}, err
		}
	}
	prompts := queriesPrompts(fields, cmps)
	b := &builder{d: d}
	parts := make([]string, 0, len(cmps)+1)
	for i, c := range cmps {
		cb := &builder{d: d}
		sql, err := rg.comparison(cb, filter, fields[i], c)
		if err != nil {
			return Compiled{}, err
		}
		// Unless prompts are asked for, MLflow checks but then drops every
		// comparison on the prompt tag, and leaves prompts out instead.
		if !prompts && fields[i].ent == entTag && fields[i].key == promptTag {
			continue
		}
		parts = append(parts, sql)
		b.args = append(b.args, cb.args...)
	}
	if !prompts {
		parts = append(parts, rg.notPrompt)
	}
	out := Compiled{Where: strings.Join(parts, " AND "), Args: b.take()}
	if err := checkArgs(filter, kindFilter, len(out.Args)); err != nil {
		return Compiled{}, err
	}
	order, err := rg.orderBy(b, orderBy)
	if err != nil {
		return Compiled{}, err
	}
	out.OrderBy, out.OrderArgs = order, b.take()
	return out, nil
}

// queriesPrompts is SqlAlchemyStore._is_querying_prompt: the first
// comparison on the prompt tag decides.
func queriesPrompts(fields []field, cmps []comparison) bool {
	for i, f := range fields {
		if f.ent != entTag || f.key != promptTag {
			continue
		}
		v := strings.ToLower(cmps[i].val.text)
		op := cmps[i].op
		return cmps[i].val.kind == valString && ((op == "=" && v == "true") || (op == "!=" && v == "false"))
	}
	return false
}

// resolveFilterField resolves a filter identifier as
// SearchModelUtils._get_model_search_identifier and
// SearchModelVersionUtils._get_model_version_search_identifier do: the
// prefix, if any, is attribute, tag or tags exactly so spelled, and an
// attribute key is checked before any quotes are removed (so it cannot be
// quoted); a tag key may be quoted.
func (rg *registry) resolveFilterField(input, raw string, pos int) (field, error) {
	f := field{ent: entAttribute, pos: pos}
	key, keyOff := raw, 0
	if dot := strings.IndexByte(raw, '.'); dot >= 0 {
		prefix := raw[:dot]
		key, keyOff = raw[dot+1:], dot+1
		switch prefix {
		case "attribute":
		case "tag", "tags":
			f.ent = entTag
		default:
			return f, newError(kindFilter, input, pos, "invalid entity type '%s'; valid types are attribute, tag and tags", prefix)
		}
	}
	if f.ent == entTag {
		f.key = trimBackticks(stripQuotes(key))
		return f, nil
	}
	a, ok := rg.attrs[key]
	if !ok {
		hint := ""
		if _, quoted := rg.attrs[trimBackticks(stripQuotes(key))]; quoted {
			hint = " (attribute keys are not quoted)"
		}
		return f, newError(kindFilter, input, pos+keyOff, "invalid attribute key '%s'%s; valid keys for %s are %s", key, hint, rg.what, rg.attrList)
	}
	f.key, f.attr = key, a
	return f, nil
}

// comparison compiles one comparison. Tag comparisons are EXISTS
// subqueries: a model or version lacking the tag never matches, as with
// the inner join MLflow uses.
func (rg *registry) comparison(b *builder, input string, f field, c comparison) (string, error) {
	if f.ent == entTag {
		if err := check(input, c, "tag '"+f.key+"'", stringOps, stringOpList, valString); err != nil {
			return "", err
		}
		alias := "mt"
		if rg == modelVersions {
			alias = "vt"
		}
		return rg.tagSub + b.arg(f.key) + " AND " + b.stringCmp(alias+".value", c.op, c.val) + ")", nil
	}
	what := "attribute '" + f.key + "'"
	if f.attr.numeric {
		if !numericOps[c.op] {
			return "", newError(kindFilter, input, c.opPos, "comparator %s is not supported for %s; use %s", c.op, what, numericOpList)
		}
		if c.val.kind == valString {
			// MLflow hands a quoted value to the database, which reads
			// it as an integer if it can.
			n, err := strconv.ParseInt(strings.TrimSpace(c.val.text), 10, 64)
			if err != nil {
				return "", newError(kindFilter, input, c.val.pos, "%s is compared with an integer, found the string '%s'", what, c.val.text)
			}
			return f.attr.col + " " + sqlOp(c.op) + " " + b.arg(n), nil
		}
		if err := check(input, c, what, numericOps, numericOpList, valNumber); err != nil {
			return "", err
		}
		return f.attr.col + " " + sqlOp(c.op) + " " + b.number(c.val.text), nil
	}
	ops, opList := stringOps, stringOpList
	if f.key == "run_id" {
		ops, opList = runIDOps, runIDOpList
	}
	if err := check(input, c, what, ops, opList, valString); err != nil {
		return "", err
	}
	return b.stringCmp(f.attr.col, c.op, c.val), nil
}

// resolveOrderField resolves an order_by key as
// SearchExperimentsUtils._get_identifier does for model versions: an
// optional attribute prefix, and a key that may be quoted.
func (rg *registry) resolveOrderField(input, raw string, pos int) (field, error) {
	prefix, key, keyOff, dotted := splitIdentifier(raw)
	f := field{ent: entAttribute, key: key, pos: pos}
	if dotted {
		switch prefix {
		case "attribute":
		case "tag", "tags":
			return f, newError(kindOrderBy, input, pos, "%s cannot be ordered by tag; order by %s", rg.what, rg.orderList)
		default:
			return f, newError(kindOrderBy, input, pos, "invalid entity type '%s'; valid types are attribute, tag and tags", prefix)
		}
	}
	a, ok := rg.orderKeys[key]
	if !ok {
		return f, newError(kindOrderBy, input, pos+keyOff, "invalid order_by key '%s'; valid keys for %s are %s", key, rg.what, rg.orderList)
	}
	f.attr = a
	return f, nil
}

// orderBy compiles an order_by list: each key once (two keys naming the
// same column are duplicates, as in MLflow), then the defaults MLflow
// appends, then the primary key.
func (rg *registry) orderBy(b *builder, list []string) (string, error) {
	if len(list) == 0 {
		list = rg.defaults
	}
	if len(list) > MaxOrderBy {
		return "", newError(kindOrderBy, list[MaxOrderBy], 0, "order_by holds at most %d clauses", MaxOrderBy)
	}
	var terms []string
	seen := map[string]bool{}
	first := map[string]int{}
	for i, clause := range list {
		raw, pos, asc, err := parseOrderClause(clause)
		if err != nil {
			return "", err
		}
		f, err := rg.resolveOrderField(clause, raw, pos)
		if err != nil {
			return "", err
		}
		col := f.attr.col
		if seen[col] {
			return "", newError(kindOrderBy, clause, pos, "duplicate order_by key: order_by[%d] already orders by %s", first[col], col[2:])
		}
		seen[col], first[col] = true, i
		if !f.attr.numeric {
			col = b.text(col)
		}
		if !asc {
			col += " DESC"
		}
		terms = append(terms, col)
	}
	for _, t := range rg.tieBreaker(seen) {
		if strings.HasSuffix(t, ".name") {
			t = b.text(t)
		}
		terms = append(terms, t)
	}
	return strings.Join(terms, ", "), nil
}
