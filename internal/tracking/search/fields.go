package search

import (
	"strings"
)

// entity is what an identifier names.
type entity int

const (
	entAttribute entity = iota
	entMetric
	entParam
	entTag
	entDataset
)

func (e entity) String() string {
	return [...]string{"attribute", "metric", "param", "tag", "dataset"}[e]
}

// runEntities maps MLflow's entity prefixes (SearchUtils._IDENTIFIERS and
// the _ALTERNATE_*_IDENTIFIERS) to entities. They are case-sensitive.
var runEntities = map[string]entity{
	"attribute": entAttribute, "attr": entAttribute, "attributes": entAttribute, "run": entAttribute,
	"metric": entMetric, "metrics": entMetric,
	"parameter": entParam, "parameters": entParam, "param": entParam, "params": entParam,
	"tag": entTag, "tags": entTag,
	"dataset": entDataset, "datasets": entDataset,
}

// runAttr is a run attribute: its column, and whether it is numeric.
type runAttr struct {
	col      string
	numeric  bool
	nullable bool
}

// runAttributes are the searchable RunInfo attributes
// (RunInfo.get_searchable_attributes; all are also orderable), keyed by the
// name SearchUtils.translate_key_alias gives them.
var runAttributes = map[string]runAttr{
	"run_id":       {col: "r.run_uuid"},
	"run_name":     {col: "r.name"},
	"user_id":      {col: "r.user_id"},
	"status":       {col: "r.status"},
	"artifact_uri": {col: "r.artifact_uri"},
	"start_time":   {col: "r.start_time", numeric: true, nullable: true},
	"end_time":     {col: "r.end_time", numeric: true, nullable: true},
}

// translateRunKey applies SearchUtils.translate_key_alias. The "run name"
// spellings are searchable but not orderable (VALID_ORDER_BY_ATTRIBUTE_KEYS
// leaves them out).
func translateRunKey(key string, order bool) (string, bool) {
	switch key {
	case "created", "Created":
		return "start_time", true
	case "run name", "Run name", "Run Name":
		return "run_name", !order
	}
	_, ok := runAttributes[key]
	return key, ok
}

// datasetColumns are the dataset keys (SearchUtils.DATASET_ATTRIBUTES).
var datasetColumns = map[string]string{"name": "d.name", "digest": "d.digest", "context": ""}

// field is a resolved identifier.
type field struct {
	ent  entity
	key  string // the metric, param, tag or dataset key, or the attribute name
	attr runAttr
	pos  int // byte offset of the identifier
}

// splitIdentifier splits an identifier's text at its first dot, as
// SearchUtils._get_identifier does, and unquotes the key.
func splitIdentifier(raw string) (prefix string, key string, keyOff int, dotted bool) {
	dot := strings.IndexByte(raw, '.')
	if dot < 0 {
		return "", trimBackticks(stripQuotes(raw)), 0, false
	}
	return raw[:dot], trimBackticks(stripQuotes(raw[dot+1:])), dot + 1, true
}

// resolveRunField resolves an identifier of runs/search.
func resolveRunField(input, kind, raw string, pos int, order bool) (field, error) {
	prefix, key, keyOff, dotted := splitIdentifier(raw)
	f := field{ent: entAttribute, key: key, pos: pos}
	if dotted {
		e, ok := runEntities[trimBackticks(prefix)]
		if !ok {
			return f, newError(kind, input, pos, "invalid entity type '%s'; valid types are metrics, params, tags, attributes and datasets (also metric, param, parameter(s), tag, attribute, attr, run, dataset)", trimBackticks(prefix))
		}
		f.ent = e
	}
	switch f.ent {
	case entAttribute:
		name, ok := translateRunKey(key, order)
		if !ok {
			valid := "artifact_uri, end_time, run_id, run_name, start_time, status, user_id, created, Created"
			if !order {
				valid += ", `run name`, `Run name`, `Run Name`"
			}
			return f, newError(kind, input, pos+keyOff, "invalid attribute key '%s'; valid keys are %s", key, valid)
		}
		f.key, f.attr = name, runAttributes[name]
	case entDataset:
		if _, ok := datasetColumns[key]; !ok {
			return f, newError(kind, input, pos+keyOff, "invalid dataset key '%s'; valid keys are name, digest and context", key)
		}
	}
	return f, nil
}

// experimentAttributes are the experiment attributes: searchable
// (SearchExperimentsUtils.VALID_SEARCH_ATTRIBUTE_KEYS) and orderable
// (VALID_ORDER_BY_ATTRIBUTE_KEYS, which adds experiment_id).
var experimentAttributes = map[string]runAttr{
	"name":             {col: "e.name"},
	"creation_time":    {col: "e.creation_time", numeric: true},
	"last_update_time": {col: "e.last_update_time", numeric: true},
	"experiment_id":    {col: "e.experiment_id", numeric: true},
}

// resolveExperimentField resolves an identifier of experiments/search.
// SearchExperimentsUtils._get_identifier accepts only the prefixes
// attribute, tag and tags, exactly so spelled.
func resolveExperimentField(input, kind, raw string, pos int, order bool) (field, error) {
	prefix, key, keyOff, dotted := splitIdentifier(raw)
	f := field{ent: entAttribute, key: key, pos: pos}
	if dotted {
		switch prefix {
		case "attribute":
		case "tag", "tags":
			f.ent = entTag
		default:
			return f, newError(kind, input, pos, "invalid entity type '%s'; valid types are attribute, tag and tags", prefix)
		}
	}
	if f.ent == entAttribute {
		a, ok := experimentAttributes[key]
		if !ok || (key == "experiment_id" && !order) {
			valid := "name, creation_time, last_update_time"
			if order {
				valid = "name, experiment_id, creation_time, last_update_time"
			}
			return f, newError(kind, input, pos+keyOff, "invalid attribute key '%s'; valid keys are %s", key, valid)
		}
		f.attr = a
	}
	return f, nil
}
