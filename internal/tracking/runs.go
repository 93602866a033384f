package tracking

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/tracking/search"
)

// Tags MLflow and Plinth give meaning to.
const (
	TagRunName         = "mlflow.runName"
	TagUser            = "mlflow.user"
	TagLogModelHistory = "mlflow.log-model.history"
	// TagPrincipal and TagKeyID record who created a run and with which
	// API key, whatever user_id the client claimed (E3 reproducibility).
	TagPrincipal = "plinth.principal"
	TagKeyID     = "plinth.keyId"
)

var keyNameRE = regexp.MustCompile(`^[/\w.\- ]*$`)

// validateKeyName applies MLflow's rules for metric, param and tag names.
func validateKeyName(kind, name string) error {
	if name == "" {
		return fault.New(fault.Invalid, "Invalid %s name: ''. A key name must be provided.", kind)
	}
	if !keyNameRE.MatchString(name) {
		return fault.New(fault.Invalid, "Invalid %s name: '%s'. Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), and slashes (/).", kind, name)
	}
	norm := path.Clean(name)
	if norm != name || norm == "." || strings.HasPrefix(norm, "..") || strings.HasPrefix(norm, "/") {
		return fault.New(fault.Invalid, "Invalid %s name: '%s'. Names may be treated as files in certain cases, and must not resolve to other names when treated as such. This name would resolve to '%s'", kind, name, norm)
	}
	return nil
}

func lengthLimit(entity string, limit int, value string) error {
	if n := len([]rune(value)); n > limit {
		shown := value
		if len([]rune(shown)) > 250 {
			shown = string([]rune(shown)[:250])
		}
		return fault.New(fault.Invalid, "%s '%s' had length %d, which exceeded length limit of %d", entity, shown, n, limit)
	}
	return nil
}

var runIDRE = regexp.MustCompile(`^[a-zA-Z0-9][\w\-]{0,255}$`)

func newRunID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // a version-4 UUID, as MLflow's uuid4().hex
	b[8] = b[8]&0x3f | 0x80
	return hex.EncodeToString(b[:])
}

var (
	nameAdjectives = []string{"amazing", "bold", "brave", "bright", "calm", "clever", "crisp", "dapper", "eager", "fair", "gentle", "glamorous", "grand", "handsome", "honest", "jolly", "keen", "lively", "loud", "merciful", "nimble", "polite", "quiet", "rare", "shy", "silent", "smiling", "stately", "sunny", "tasteful", "unique", "upbeat", "valuable", "wise", "witty", "zealous"}
	nameNouns      = []string{"ant", "bass", "bat", "bear", "bee", "bird", "boar", "carp", "cat", "colt", "cow", "crab", "crane", "croc", "deer", "doe", "dove", "duck", "eel", "fawn", "finch", "fish", "foal", "fox", "frog", "goat", "gull", "hare", "hawk", "hen", "horse", "lark", "lynx", "mole", "moth", "mouse", "newt", "owl", "ox", "panda", "pig", "ram", "rat", "seal", "shark", "shrew", "slug", "snake", "sow", "squid", "stag", "swan", "toad", "trout", "whale", "wolf", "worm", "wren", "yak", "zebra"}
)

// randomRunName makes a name like MLflow's "bold-fox-123" for runs
// created without one.
func randomRunName() string {
	pick := func(n int) int {
		v, _ := rand.Int(rand.Reader, big.NewInt(int64(n)))
		return int(v.Int64())
	}
	return fmt.Sprintf("%s-%s-%d", nameAdjectives[pick(len(nameAdjectives))], nameNouns[pick(len(nameNouns))], pick(1000))
}

// CreateRunInput is what runs/create carries.
type CreateRunInput struct {
	ExperimentID string
	UserID       string
	RunName      string
	StartTime    *int64
	Tags         []Tag
}

// CreateRun starts a run in an active experiment.
func (s *Service) CreateRun(ctx context.Context, sc Scope, in CreateRunInput) (Run, error) {
	if in.ExperimentID == "" {
		in.ExperimentID = DefaultExperimentID
	}
	for _, t := range in.Tags {
		if err := validateTag(t); err != nil {
			return Run{}, err
		}
	}
	tagName := ""
	for _, t := range in.Tags {
		if t.Key == TagRunName {
			tagName = t.Value
		}
	}
	if in.RunName != "" && tagName != "" && in.RunName != tagName {
		return Run{}, fault.New(fault.Invalid, "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different values (run_name='%s', mlflow.runName='%s').", in.RunName, tagName)
	}
	if in.RunName == "" {
		in.RunName = tagName
	}
	if in.RunName == "" {
		in.RunName = randomRunName()
	}
	caller := audit.CallerFrom(ctx)
	if in.UserID == "" {
		in.UserID = caller.Principal
	}
	runID := newRunID()
	var run Run
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		e, err := s.experiment(ctx, tx, sc, in.ExperimentID, false)
		if err != nil {
			return err
		}
		if e.LifecycleStage != StageActive {
			return fault.New(fault.Invalid, "The experiment %s must be in the 'active' state. Current state is %s.", in.ExperimentID, e.LifecycleStage)
		}
		start := in.StartTime
		if start == nil {
			now := s.nowMillis()
			start = &now
		}
		info := RunInfo{RunID: runID, RunName: in.RunName, ExperimentID: in.ExperimentID, UserID: in.UserID, Status: "RUNNING",
			StartTime: start, ArtifactURI: strings.TrimRight(e.ArtifactLocation, "/") + "/" + runID + "/artifacts", LifecycleStage: StageActive}
		if _, err := tx.ExecContext(ctx, `INSERT INTO runs (run_uuid, experiment_pk, name, user_id, status, start_time, lifecycle_stage, artifact_uri, created_by, created_key)
			VALUES (?, ?, ?, ?, 'RUNNING', ?, 'active', ?, ?, ?)`, runID, e.pk, info.RunName, info.UserID, *start, info.ArtifactURI, caller.Principal, caller.KeyID); err != nil {
			return fmt.Errorf("creating run: %w", err)
		}
		tags := map[string]string{}
		for _, t := range in.Tags {
			tags[t.Key] = t.Value
		}
		tags[TagRunName] = info.RunName
		if _, ok := tags[TagUser]; !ok && in.UserID != "" {
			tags[TagUser] = in.UserID
		}
		if caller.Principal != "" {
			tags[TagPrincipal] = caller.Principal
		}
		if caller.KeyID != "" {
			tags[TagKeyID] = caller.KeyID
		}
		for k, v := range tags {
			if _, err := tx.ExecContext(ctx, `INSERT INTO tags (run_uuid, key, value) VALUES (?, ?, ?)`, runID, k, v); err != nil {
				return fmt.Errorf("tagging run: %w", err)
			}
		}
		run = Run{Info: info}
		for k, v := range tags {
			run.Tags = append(run.Tags, Tag{Key: k, Value: v})
		}
		sort.Slice(run.Tags, func(i, j int) bool { return run.Tags[i].Key < run.Tags[j].Key })
		return s.audit.Append(ctx, tx, audit.Record{Action: "run.create", Resource: resource(sc, "runs", runID), Workspace: sc.Workspace,
			Details: map[string]any{"experiment_id": in.ExperimentID, "run_name": info.RunName}})
	})
	return run, err
}

const runColumns = `r.run_uuid, r.name, e.experiment_id, r.user_id, r.status, r.start_time, r.end_time, r.artifact_uri, r.lifecycle_stage`

func scanRunInfo(row interface{ Scan(...any) error }) (RunInfo, error) {
	var ri RunInfo
	var exp int64
	var start, end sql.NullInt64
	err := row.Scan(&ri.RunID, &ri.RunName, &exp, &ri.UserID, &ri.Status, &start, &end, &ri.ArtifactURI, &ri.LifecycleStage)
	ri.ExperimentID = strconv.FormatInt(exp, 10)
	if start.Valid {
		ri.StartTime = &start.Int64
	}
	if end.Valid {
		ri.EndTime = &end.Int64
	}
	return ri, err
}

// runInfo reads one run of the workspace; a run of another workspace does
// not exist from here.
func (s *Service) runInfo(ctx context.Context, q store.Querier, sc Scope, runID string, lock bool) (RunInfo, error) {
	if runID == "" {
		return RunInfo{}, fault.New(fault.Invalid, "Missing value for required parameter 'run_id'. See the API docs for more information about request parameters.")
	}
	suffix := ""
	if lock {
		suffix = store.ForUpdate(q)
		if suffix != "" {
			suffix += " OF r"
		}
	}
	ri, err := scanRunInfo(q.QueryRowContext(ctx, `SELECT `+runColumns+` FROM runs r JOIN experiments e ON e.pk = r.experiment_pk
		WHERE r.run_uuid = ? AND e.workspace_id = ?`+suffix, runID, sc.WorkspaceID))
	if errors.Is(err, sql.ErrNoRows) {
		return ri, fault.New(fault.NotFound, "Run with id=%s not found", runID)
	}
	if err != nil {
		return ri, fmt.Errorf("reading run %s: %w", runID, err)
	}
	return ri, nil
}

func activeRun(ri RunInfo) error {
	if ri.LifecycleStage != StageActive {
		return fault.New(fault.Invalid, "The run %s must be in the 'active' state. Current state is %s.", ri.RunID, ri.LifecycleStage)
	}
	return nil
}

// GetRunInfo returns a run's info without its metrics, params, tags and
// inputs.
func (s *Service) GetRunInfo(ctx context.Context, sc Scope, runID string) (RunInfo, error) {
	return s.runInfo(ctx, s.db.Read(), sc, runID, false)
}

// GetRun returns a run with its latest metrics, params, tags and inputs.
func (s *Service) GetRun(ctx context.Context, sc Scope, runID string) (Run, error) {
	q := s.db.Read()
	ri, err := s.runInfo(ctx, q, sc, runID, false)
	if err != nil {
		return Run{}, err
	}
	runs, err := s.loadRunData(ctx, q, []RunInfo{ri})
	if err != nil {
		return Run{}, err
	}
	return runs[0], nil
}

// loadRunData fills metrics, params, tags and inputs for runs, with one
// query per kind rather than per run.
func (s *Service) loadRunData(ctx context.Context, q store.Querier, infos []RunInfo) ([]Run, error) {
	runs := make([]Run, len(infos))
	index := map[string]int{}
	args := make([]any, len(infos))
	for i, ri := range infos {
		runs[i].Info = ri
		index[ri.RunID] = i
		args[i] = ri.RunID
	}
	if len(infos) == 0 {
		return runs, nil
	}
	in := `(?` + strings.Repeat(",?", len(infos)-1) + `)`
	rows, err := q.QueryContext(ctx, `SELECT run_uuid, key, value, timestamp, step, is_nan FROM latest_metrics WHERE run_uuid IN `+in+` ORDER BY key`, args...)
	if err != nil {
		return nil, fmt.Errorf("reading metrics: %w", err)
	}
	for rows.Next() {
		var id string
		var m Metric
		var isNaN bool
		if err := rows.Scan(&id, &m.Key, &m.Value, &m.Timestamp, &m.Step, &isNaN); err != nil {
			rows.Close()
			return nil, err
		}
		m.Value = loadedValue(m.Value, isNaN)
		runs[index[id]].Metrics = append(runs[index[id]].Metrics, m)
	}
	rows.Close()
	for _, kind := range []string{"params", "tags"} {
		rows, err := q.QueryContext(ctx, `SELECT run_uuid, key, value FROM `+kind+` WHERE run_uuid IN `+in+` ORDER BY key`, args...)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", kind, err)
		}
		for rows.Next() {
			var id, k, v string
			if err := rows.Scan(&id, &k, &v); err != nil {
				rows.Close()
				return nil, err
			}
			r := &runs[index[id]]
			if kind == "params" {
				r.Params = append(r.Params, Param{Key: k, Value: v})
			} else {
				r.Tags = append(r.Tags, Tag{Key: k, Value: v})
			}
		}
		rows.Close()
	}
	rows, err = q.QueryContext(ctx, `SELECT ri.run_uuid, ri.input_uuid, d.name, d.digest, d.source_type, d.source, d.schema, d.profile
		FROM run_inputs ri JOIN datasets d ON d.dataset_uuid = ri.dataset_uuid WHERE ri.run_uuid IN `+in+` ORDER BY ri.input_uuid`, args...)
	if err != nil {
		return nil, fmt.Errorf("reading inputs: %w", err)
	}
	inputIndex := map[string][2]int{}
	for rows.Next() {
		var id, inputID string
		var d Dataset
		if err := rows.Scan(&id, &inputID, &d.Name, &d.Digest, &d.SourceType, &d.Source, &d.Schema, &d.Profile); err != nil {
			rows.Close()
			return nil, err
		}
		r := &runs[index[id]]
		r.Inputs = append(r.Inputs, DatasetInput{Dataset: d})
		inputIndex[inputID] = [2]int{index[id], len(r.Inputs) - 1}
	}
	rows.Close()
	if len(inputIndex) > 0 {
		rows, err := q.QueryContext(ctx, `SELECT t.input_uuid, t.key, t.value FROM run_input_tags t JOIN run_inputs ri ON ri.input_uuid = t.input_uuid
			WHERE ri.run_uuid IN `+in+` ORDER BY t.key`, args...)
		if err != nil {
			return nil, fmt.Errorf("reading input tags: %w", err)
		}
		for rows.Next() {
			var inputID string
			var t Tag
			if err := rows.Scan(&inputID, &t.Key, &t.Value); err != nil {
				rows.Close()
				return nil, err
			}
			at := inputIndex[inputID]
			runs[at[0]].Inputs[at[1]].Tags = append(runs[at[0]].Inputs[at[1]].Tags, t)
		}
		rows.Close()
	}
	return runs, nil
}

// UpdateRunInput is what runs/update carries; nil fields stay as they are.
type UpdateRunInput struct {
	Status  string
	EndTime *int64
	RunName string
}

// UpdateRun changes a run's status, end time or name.
func (s *Service) UpdateRun(ctx context.Context, sc Scope, runID string, in UpdateRunInput) (RunInfo, error) {
	if in.Status != "" && !runStatuses[in.Status] {
		return RunInfo{}, fault.New(fault.Invalid, "Invalid value %s for parameter 'status' supplied.", in.Status)
	}
	var ri RunInfo
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		var err error
		ri, err = s.runInfo(ctx, tx, sc, runID, true)
		if err != nil {
			return err
		}
		if err := activeRun(ri); err != nil {
			return err
		}
		if in.Status != "" {
			ri.Status = in.Status
		}
		if in.EndTime != nil {
			ri.EndTime = in.EndTime
		}
		if in.RunName != "" {
			ri.RunName = in.RunName
			if _, err := tx.ExecContext(ctx, `INSERT INTO tags (run_uuid, key, value) VALUES (?, ?, ?) ON CONFLICT (run_uuid, key) DO UPDATE SET value = excluded.value`,
				runID, TagRunName, in.RunName); err != nil {
				return err
			}
		}
		var end any
		if ri.EndTime != nil {
			end = *ri.EndTime
		}
		if _, err := tx.ExecContext(ctx, `UPDATE runs SET status = ?, end_time = ?, name = ? WHERE run_uuid = ?`, ri.Status, end, ri.RunName, runID); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "run.update", Resource: resource(sc, "runs", runID), Workspace: sc.Workspace,
			Details: map[string]any{"status": ri.Status}})
	})
	return ri, err
}

// DeleteRun marks a run deleted; RestoreRun brings it back.
func (s *Service) DeleteRun(ctx context.Context, sc Scope, runID string) error {
	return s.setRunStage(ctx, sc, runID, StageDeleted)
}

// RestoreRun makes a deleted run active again.
func (s *Service) RestoreRun(ctx context.Context, sc Scope, runID string) error {
	return s.setRunStage(ctx, sc, runID, StageActive)
}

func (s *Service) setRunStage(ctx context.Context, sc Scope, runID, stage string) error {
	return s.db.Tx(ctx, func(tx store.Querier) error {
		if _, err := s.runInfo(ctx, tx, sc, runID, true); err != nil {
			return err
		}
		var deleted any
		if stage == StageDeleted {
			deleted = s.nowMillis()
		}
		if _, err := tx.ExecContext(ctx, `UPDATE runs SET lifecycle_stage = ?, deleted_time = ? WHERE run_uuid = ?`, stage, deleted, runID); err != nil {
			return err
		}
		action := "run.delete"
		if stage == StageActive {
			action = "run.restore"
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: action, Resource: resource(sc, "runs", runID), Workspace: sc.Workspace})
	})
}

// reservedTagPrefix marks the tags Plinth itself writes (who created a
// run, with which key); clients may read them but never set or delete
// them, or traceability could be forged.
const reservedTagPrefix = "plinth."

func reservedTag(key string) error {
	if strings.HasPrefix(key, reservedTagPrefix) {
		return fault.New(fault.Invalid, "Tag '%s' is reserved: tags starting with '%s' are set by Plinth", key, reservedTagPrefix)
	}
	return nil
}

func validateTag(t Tag) error {
	if err := reservedTag(t.Key); err != nil {
		return err
	}
	if err := validateKeyName("tag", t.Key); err != nil {
		return err
	}
	if err := lengthLimit("Tag key", MaxEntityKeyLength, t.Key); err != nil {
		return err
	}
	return lengthLimit("Tag value", MaxTagValueLength, t.Value)
}

func validateParam(p Param) error {
	if err := validateKeyName("parameter", p.Key); err != nil {
		return err
	}
	if err := lengthLimit("Param key", MaxEntityKeyLength, p.Key); err != nil {
		return err
	}
	return lengthLimit("Param value", MaxParamValueLength, p.Value)
}

func validateMetric(m Metric) error {
	if err := validateKeyName("metric", m.Key); err != nil {
		return err
	}
	if m.Timestamp < 0 {
		return fault.New(fault.Invalid, "Got invalid timestamp %d for metric '%s' (value=%v). Timestamp must be a nonnegative long (64-bit integer) ", m.Timestamp, m.Key, m.Value)
	}
	return lengthLimit("Metric name", MaxEntityKeyLength, m.Key)
}

// Batch is what runs/log-batch (and the single-value calls) log.
type Batch struct {
	Metrics []Metric
	Params  []Param
	Tags    []Tag
}

// LogBatch logs metrics, params and tags to an active run in one
// transaction: all of it or none of it. Exact duplicate metric points are
// dropped; a param logged again with another value is refused.
func (s *Service) LogBatch(ctx context.Context, sc Scope, runID string, b Batch, action string) error {
	if err := checkBatchLimits(b); err != nil {
		return err
	}
	for _, m := range b.Metrics {
		if err := validateMetric(m); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	var dupes []string
	for _, p := range b.Params {
		if err := validateParam(p); err != nil {
			return err
		}
		if seen[p.Key] {
			dupes = append(dupes, p.Key)
		}
		seen[p.Key] = true
	}
	if len(dupes) > 0 {
		return fault.New(fault.Invalid, "Duplicate parameter keys have been submitted: %s. Please ensure the request contains only one param value per param key.", pyList(dupes))
	}
	for _, t := range b.Tags {
		if err := validateTag(t); err != nil {
			return err
		}
	}
	// Many clients log small batches at once: they share transactions.
	return s.db.TxGrouped(ctx, func(ctx context.Context, tx store.Querier) error {
		ri, err := s.runInfo(ctx, tx, sc, runID, false)
		if err != nil {
			return err
		}
		if err := activeRun(ri); err != nil {
			return err
		}
		if err := s.insertParams(ctx, tx, runID, b.Params); err != nil {
			return err
		}
		if err := insertMetrics(ctx, tx, runID, b.Metrics); err != nil {
			return err
		}
		for _, t := range b.Tags {
			if _, err := tx.ExecContext(ctx, `INSERT INTO tags (run_uuid, key, value) VALUES (?, ?, ?) ON CONFLICT (run_uuid, key) DO UPDATE SET value = excluded.value`, runID, t.Key, t.Value); err != nil {
				return fmt.Errorf("setting tag: %w", err)
			}
			if t.Key == TagRunName {
				if _, err := tx.ExecContext(ctx, `UPDATE runs SET name = ? WHERE run_uuid = ?`, t.Value, runID); err != nil {
					return err
				}
			}
		}
		details := map[string]any{}
		if len(b.Metrics) > 0 {
			details["metrics"] = len(b.Metrics)
		}
		if len(b.Params) > 0 {
			details["params"] = len(b.Params)
		}
		if len(b.Tags) > 0 {
			details["tags"] = len(b.Tags)
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: action, Resource: resource(sc, "runs", runID), Workspace: sc.Workspace, Details: details})
	})
}

func pyList(items []string) string {
	quoted := make([]string, len(items))
	for i, s := range items {
		quoted[i] = "'" + s + "'"
	}
	return "[" + strings.Join(quoted, ", ") + "]"
}

func checkBatchLimits(b Batch) error {
	check := func(entity string, limit, n int) error {
		if n > limit {
			return fault.New(fault.Invalid, "A batch logging request can contain at most %d %s. Got %d %s. Please split up %s across multiple requests and try again.", limit, entity, n, entity, entity)
		}
		return nil
	}
	if err := check("metrics", MaxMetricsPerBatch, len(b.Metrics)); err != nil {
		return err
	}
	if err := check("params", MaxParamsTagsPerBatch, len(b.Params)); err != nil {
		return err
	}
	if err := check("tags", MaxParamsTagsPerBatch, len(b.Tags)); err != nil {
		return err
	}
	return check("metrics, params, and tags", MaxEntitiesPerBatch, len(b.Metrics)+len(b.Params)+len(b.Tags))
}

func (s *Service) insertParams(ctx context.Context, tx store.Querier, runID string, params []Param) error {
	if len(params) == 0 {
		return nil
	}
	args := []any{runID}
	keys := make([]string, len(params))
	for i, p := range params {
		keys[i] = p.Key
		args = append(args, p.Key)
	}
	rows, err := tx.QueryContext(ctx, `SELECT key, value FROM params WHERE run_uuid = ? AND key IN (?`+strings.Repeat(",?", len(params)-1)+`)`, args...)
	if err != nil {
		return err
	}
	existing := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			rows.Close()
			return err
		}
		existing[k] = v
	}
	rows.Close()
	var fresh []Param
	for _, p := range params {
		old, ok := existing[p.Key]
		if !ok {
			fresh = append(fresh, p)
			continue
		}
		if old != p.Value {
			return fault.New(fault.Invalid, "Changing param values is not allowed. Param with key='%s' was already logged with value='%s' for run ID='%s'. Attempted logging new value '%s'.", p.Key, old, runID, p.Value)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	q := `INSERT INTO params (run_uuid, key, value) VALUES ` + strings.TrimSuffix(strings.Repeat("(?, ?, ?),", len(fresh)), ",")
	args = args[:0]
	for _, p := range fresh {
		args = append(args, runID, p.Key, p.Value)
	}
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("logging params: %w", err)
	}
	return nil
}

// metricChunk bounds the rows of one multi-row INSERT (6 values each),
// well under both databases' bound-parameter limits.
const metricChunk = 500

// insertMetrics writes the points with multi-row INSERTs (duplicates are
// dropped by the primary key) and moves each key's latest point forward
// where a new point is later by (step, timestamp, value).
func insertMetrics(ctx context.Context, tx store.Querier, runID string, metrics []Metric) error {
	if len(metrics) == 0 {
		return nil
	}
	latest := map[string]Metric{}
	for start := 0; start < len(metrics); start += metricChunk {
		part := metrics[start:min(start+metricChunk, len(metrics))]
		args := make([]any, 0, len(part)*6)
		for _, m := range part {
			v, isNaN := storedValue(m.Value)
			args = append(args, runID, m.Key, m.Step, m.Timestamp, v, isNaN)
			cur, ok := latest[m.Key]
			if !ok || later(m, cur) {
				latest[m.Key] = m
			}
		}
		q := `INSERT INTO metrics (run_uuid, key, step, timestamp, value, is_nan) VALUES ` +
			strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?),", len(part)), ",") + ` ON CONFLICT DO NOTHING`
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("logging metrics: %w", err)
		}
	}
	keys := make([]string, 0, len(latest))
	for k := range latest {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for start := 0; start < len(keys); start += metricChunk {
		part := keys[start:min(start+metricChunk, len(keys))]
		args := make([]any, 0, len(part)*6)
		for _, k := range part {
			m := latest[k]
			v, isNaN := storedValue(m.Value)
			args = append(args, runID, k, m.Step, m.Timestamp, v, isNaN)
		}
		q := `INSERT INTO latest_metrics (run_uuid, key, step, timestamp, value, is_nan) VALUES ` +
			strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?),", len(part)), ",") +
			` ON CONFLICT (run_uuid, key) DO UPDATE SET step = excluded.step, timestamp = excluded.timestamp, value = excluded.value, is_nan = excluded.is_nan
			WHERE (excluded.step, excluded.timestamp, excluded.value) > (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)`
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("updating latest metrics: %w", err)
		}
	}
	return nil
}

// later orders points as MLflow picks a metric's latest value: by step,
// then timestamp, then value.
func later(a, b Metric) bool {
	av, _ := storedValue(a.Value)
	bv, _ := storedValue(b.Value)
	if a.Step != b.Step {
		return a.Step > b.Step
	}
	if a.Timestamp != b.Timestamp {
		return a.Timestamp > b.Timestamp
	}
	return av > bv
}

// DeleteTag removes a tag from an active run.
func (s *Service) DeleteTag(ctx context.Context, sc Scope, runID, key string) error {
	if err := reservedTag(key); err != nil {
		return err
	}
	return s.db.Tx(ctx, func(tx store.Querier) error {
		ri, err := s.runInfo(ctx, tx, sc, runID, false)
		if err != nil {
			return err
		}
		if err := activeRun(ri); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM tags WHERE run_uuid = ? AND key = ?`, runID, key)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fault.New(fault.NotFound, "No tag with name: %s in run with id %s", key, runID)
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "run.delete-tag", Resource: resource(sc, "runs", runID), Workspace: sc.Workspace,
			Details: map[string]any{"key": key}})
	})
}

// LogModel appends a model's MLmodel description to the run's
// mlflow.log-model.history tag, as MLflow's server does.
func (s *Service) LogModel(ctx context.Context, sc Scope, runID, modelJSON string) error {
	var model map[string]any
	if err := json.Unmarshal([]byte(modelJSON), &model); err != nil {
		return fault.New(fault.Invalid, "Malformed model info. \n %s \n is not a valid JSON.", modelJSON)
	}
	for _, k := range []string{"artifact_path", "flavors", "utc_time_created", "run_id"} {
		if _, ok := model[k]; !ok {
			return fault.New(fault.Invalid, "Model json is missing mandatory fields: ['%s']", k)
		}
	}
	return s.db.Tx(ctx, func(tx store.Querier) error {
		ri, err := s.runInfo(ctx, tx, sc, runID, true)
		if err != nil {
			return err
		}
		if err := activeRun(ri); err != nil {
			return err
		}
		var history []any
		var cur string
		err = tx.QueryRowContext(ctx, `SELECT value FROM tags WHERE run_uuid = ? AND key = ?`, runID, TagLogModelHistory).Scan(&cur)
		if err == nil {
			_ = json.Unmarshal([]byte(cur), &history)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		history = append(history, model)
		b, _ := json.Marshal(history)
		if _, err := tx.ExecContext(ctx, `INSERT INTO tags (run_uuid, key, value) VALUES (?, ?, ?) ON CONFLICT (run_uuid, key) DO UPDATE SET value = excluded.value`, runID, TagLogModelHistory, string(b)); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "run.log-model", Resource: resource(sc, "runs", runID), Workspace: sc.Workspace,
			Details: map[string]any{"artifact_path": model["artifact_path"]}})
	})
}

// LogInputs records the datasets a run used.
func (s *Service) LogInputs(ctx context.Context, sc Scope, runID string, inputs []DatasetInput) error {
	if len(inputs) > MaxEntitiesPerBatch {
		return fault.New(fault.Invalid, "A batch logging request can contain at most %d datasets. Got %d datasets. Please split up datasets across multiple requests and try again.", MaxEntitiesPerBatch, len(inputs))
	}
	for _, in := range inputs {
		d := in.Dataset
		for _, c := range []struct {
			what  string
			limit int
			value string
		}{{"Dataset name", MaxDatasetNameSize, d.Name}, {"Dataset digest", MaxDatasetDigestSize, d.Digest},
			{"Dataset source", MaxDatasetSourceSize, d.Source}, {"Dataset schema", MaxDatasetSchemaSize, d.Schema},
			{"Dataset profile", MaxDatasetProfileSize, d.Profile}} {
			if err := lengthLimit(c.what, c.limit, c.value); err != nil {
				return err
			}
		}
		if d.Name == "" || d.Digest == "" || d.SourceType == "" || d.Source == "" {
			return fault.New(fault.Invalid, "Dataset name, digest, source_type and source are required")
		}
		for _, t := range in.Tags {
			if err := lengthLimit("Input tag key", MaxInputTagKeySize, t.Key); err != nil {
				return err
			}
			if err := lengthLimit("Input tag value", MaxInputTagValueSize, t.Value); err != nil {
				return err
			}
		}
	}
	return s.db.Tx(ctx, func(tx store.Querier) error {
		ri, err := s.runInfo(ctx, tx, sc, runID, false)
		if err != nil {
			return err
		}
		if err := activeRun(ri); err != nil {
			return err
		}
		var expPK int64
		if err := tx.QueryRowContext(ctx, `SELECT experiment_pk FROM runs WHERE run_uuid = ?`, runID).Scan(&expPK); err != nil {
			return err
		}
		for _, in := range inputs {
			d := in.Dataset
			if _, err := tx.ExecContext(ctx, `INSERT INTO datasets (dataset_uuid, experiment_pk, name, digest, source_type, source, schema, profile)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (experiment_pk, name, digest) DO NOTHING`,
				newRunID(), expPK, d.Name, d.Digest, d.SourceType, d.Source, d.Schema, d.Profile); err != nil {
				return fmt.Errorf("logging dataset: %w", err)
			}
			var datasetID string
			if err := tx.QueryRowContext(ctx, `SELECT dataset_uuid FROM datasets WHERE experiment_pk = ? AND name = ? AND digest = ?`, expPK, d.Name, d.Digest).Scan(&datasetID); err != nil {
				return err
			}
			inputID := newRunID()
			res, err := tx.ExecContext(ctx, `INSERT INTO run_inputs (input_uuid, dataset_uuid, run_uuid) VALUES (?, ?, ?) ON CONFLICT (dataset_uuid, run_uuid) DO NOTHING`, inputID, datasetID, runID)
			if err != nil {
				return fmt.Errorf("logging input: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				continue // MLflow keeps the first logging of a dataset for a run
			}
			for _, t := range in.Tags {
				if _, err := tx.ExecContext(ctx, `INSERT INTO run_input_tags (input_uuid, key, value) VALUES (?, ?, ?) ON CONFLICT (input_uuid, key) DO UPDATE SET value = excluded.value`, inputID, t.Key, t.Value); err != nil {
					return err
				}
			}
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "run.log-inputs", Resource: resource(sc, "runs", runID), Workspace: sc.Workspace,
			Details: map[string]any{"datasets": len(inputs)}})
	})
}

// SearchRuns finds runs in the given experiments by MLflow's filter language.
func (s *Service) SearchRuns(ctx context.Context, sc Scope, in SearchInput) ([]Run, string, error) {
	limit, err := maxResults(in.MaxResults)
	if err != nil {
		return nil, "", err
	}
	offset, err := parseOffsetToken(in.PageToken)
	if err != nil {
		return nil, "", err
	}
	if len(in.ExperimentIDs) == 0 {
		return nil, "", nil
	}
	q := s.db.Read()
	c, err := search.CompileRuns(q.Dialect(), in.Filter, in.OrderBy)
	if err != nil {
		return nil, "", fault.Wrap(fault.Invalid, err, "%s", err.Error())
	}
	args := []any{sc.WorkspaceID}
	var ids []string
	for _, id := range in.ExperimentIDs {
		n, err := strconv.ParseInt(id, 10, 64)
		if err != nil {
			continue // an id Plinth never issued matches no run
		}
		ids = append(ids, "?")
		args = append(args, n)
	}
	if len(ids) == 0 {
		return nil, "", nil
	}
	where := `e.workspace_id = ? AND e.experiment_id IN (` + strings.Join(ids, ",") + `) AND ` + in.ViewType.condition("r")
	if c.Where != "" {
		where += " AND (" + c.Where + ")"
		args = append(args, c.Args...)
	}
	args = append(args, c.OrderArgs...)
	args = append(args, limit+1, offset)
	rows, err := q.QueryContext(ctx, `SELECT `+runColumns+` FROM runs r JOIN experiments e ON e.pk = r.experiment_pk WHERE `+where+
		` ORDER BY `+c.OrderBy+` LIMIT ? OFFSET ?`, args...)
	if err != nil {
		return nil, "", fmt.Errorf("searching runs: %w", err)
	}
	var infos []RunInfo
	for rows.Next() {
		ri, err := scanRunInfo(rows)
		if err != nil {
			rows.Close()
			return nil, "", err
		}
		infos = append(infos, ri)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	next := ""
	if len(infos) > limit {
		infos = infos[:limit]
		next = offsetToken(offset + limit)
	}
	runs, err := s.loadRunData(ctx, q, infos)
	return runs, next, err
}

// GetMetricHistory returns every point of one metric of a run, by step
// then timestamp, a page at a time. Pages continue from the last point of
// the previous page (keyset), so reading a long history costs the same
// per page at its end as at its start.
func (s *Service) GetMetricHistory(ctx context.Context, sc Scope, runID, key, pageToken string, max int64) ([]Metric, string, error) {
	if max < 0 || max > MaxHistoryResults {
		return nil, "", fault.New(fault.Invalid, "max_results must be between 1 and %d", MaxHistoryResults)
	}
	limit := int(max)
	if limit == 0 {
		limit = MaxHistoryResults
	}
	after, err := parseHistoryToken(pageToken)
	if err != nil {
		return nil, "", err
	}
	q := s.db.Read()
	if _, err := s.runInfo(ctx, q, sc, runID, false); err != nil {
		return nil, "", err
	}
	query := `SELECT step, timestamp, value, is_nan FROM metrics WHERE run_uuid = ? AND key = ?`
	args := []any{runID, key}
	if after != nil {
		query += ` AND (step, timestamp, value, is_nan) > (?, ?, ?, ?)`
		args = append(args, after.Step, after.Timestamp, after.Value, after.IsNaN)
	}
	args = append(args, limit+1)
	rows, err := q.QueryContext(ctx, query+` ORDER BY step, timestamp, value, is_nan LIMIT ?`, args...)
	if err != nil {
		return nil, "", fmt.Errorf("reading metric history: %w", err)
	}
	defer rows.Close()
	out := make([]Metric, 0, min(limit+1, 1024))
	var last historyPosition
	for rows.Next() {
		m := Metric{Key: key}
		var isNaN bool
		if err := rows.Scan(&m.Step, &m.Timestamp, &m.Value, &isNaN); err != nil {
			return nil, "", err
		}
		if len(out) < limit {
			last = historyPosition{Step: m.Step, Timestamp: m.Timestamp, Value: m.Value, IsNaN: isNaN}
		}
		m.Value = loadedValue(m.Value, isNaN)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = historyToken(last)
	}
	return out, next, nil
}

// historyPosition is where a history page ended, as stored.
type historyPosition struct {
	Step      int64   `json:"step"`
	Timestamp int64   `json:"timestamp"`
	Value     float64 `json:"value"`
	IsNaN     bool    `json:"is_nan"`
}

func historyToken(p historyPosition) string {
	b, _ := json.Marshal(map[string]historyPosition{"after": p})
	return base64.StdEncoding.EncodeToString(b)
}

func parseHistoryToken(tok string) (*historyPosition, error) {
	if tok == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(tok)
	var v struct {
		After *historyPosition `json:"after"`
	}
	if err != nil || json.Unmarshal(b, &v) != nil || v.After == nil {
		return nil, fault.New(fault.Invalid, "Invalid page token, could not base64-decode")
	}
	return v.After, nil
}

// BulkIntervalInput selects sampled history for several runs, as the
// MLflow UI's charts ask for it.
type BulkIntervalInput struct {
	RunIDs     []string
	Key        string
	StartStep  *int64
	EndStep    *int64
	MaxResults int64
}

// GetMetricHistoryBulkInterval returns, for each run, the points at up to
// MaxResults steps sampled evenly across the steps logged by any of the
// runs (always keeping each run's first and last step).
func (s *Service) GetMetricHistoryBulkInterval(ctx context.Context, sc Scope, in BulkIntervalInput) ([]Metric, error) {
	if len(in.RunIDs) == 0 {
		return nil, fault.New(fault.Invalid, "Missing value for required parameter 'run_ids'.")
	}
	if len(in.RunIDs) > MaxBulkRuns {
		return nil, fault.New(fault.Invalid, "GetMetricHistoryBulkInterval request must specify at most %d run_ids. Received %d run_ids.", MaxBulkRuns, len(in.RunIDs))
	}
	if in.Key == "" {
		return nil, fault.New(fault.Invalid, "Missing value for required parameter 'metric_key'.")
	}
	max := int(in.MaxResults)
	if in.MaxResults == 0 {
		max = MaxBulkResultsPerRun
	}
	if max < 1 || max > MaxBulkResultsPerRun {
		return nil, fault.New(fault.Invalid, "max_results must be between 1 and %d.", MaxBulkResultsPerRun)
	}
	if (in.StartStep == nil) != (in.EndStep == nil) {
		return nil, fault.New(fault.Invalid, "If either start step or end step are specified, both must be specified.")
	}
	if in.StartStep != nil && *in.StartStep > *in.EndStep {
		return nil, fault.New(fault.Invalid, "end_step must be greater than start_step. Found start_step=%d and end_step=%d.", *in.StartStep, *in.EndStep)
	}
	q := s.db.Read()
	stepsByRun := map[string][]int64{}
	stepSet := map[int64]bool{}
	for _, id := range in.RunIDs {
		if _, err := s.runInfo(ctx, q, sc, id, false); err != nil {
			return nil, err
		}
		rows, err := q.QueryContext(ctx, `SELECT DISTINCT step FROM metrics WHERE run_uuid = ? AND key = ? ORDER BY step`, id, in.Key)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var st int64
			if err := rows.Scan(&st); err != nil {
				rows.Close()
				return nil, err
			}
			stepsByRun[id] = append(stepsByRun[id], st)
			stepSet[st] = true
		}
		rows.Close()
	}
	all := make([]int64, 0, len(stepSet))
	for st := range stepSet {
		all = append(all, st)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	start, end := int64(0), int64(0)
	if len(all) > 0 {
		end = all[len(all)-1]
	}
	if in.StartStep != nil {
		start, end = *in.StartStep, *in.EndStep
	}
	chosen := sampleSteps(start, end, max, all)
	for _, steps := range stepsByRun {
		for _, st := range []int64{steps[0], steps[len(steps)-1]} {
			if st >= start && st <= end {
				chosen[st] = true
			}
		}
	}
	var out []Metric
	for _, id := range in.RunIDs {
		rows, err := q.QueryContext(ctx, `SELECT key, value, timestamp, step, is_nan FROM metrics WHERE run_uuid = ? AND key = ? AND step >= ? AND step <= ?
			ORDER BY step, timestamp, value`, id, in.Key, start, end)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			m := Metric{RunID: id}
			var isNaN bool
			if err := rows.Scan(&m.Key, &m.Value, &m.Timestamp, &m.Step, &isNaN); err != nil {
				rows.Close()
				return nil, err
			}
			if chosen[m.Step] {
				m.Value = loadedValue(m.Value, isNaN)
				out = append(out, m)
			}
		}
		rows.Close()
	}
	return out, nil
}

// sampleSteps picks up to max steps of the sorted steps within
// [start, end], evenly spaced, always including the last one.
func sampleSteps(start, end int64, max int, steps []int64) map[int64]bool {
	lo := sort.Search(len(steps), func(i int) bool { return steps[i] >= start })
	hi := sort.Search(len(steps), func(i int) bool { return steps[i] > end })
	out := map[int64]bool{}
	if hi-lo <= max {
		for _, st := range steps[lo:hi] {
			out[st] = true
		}
		return out
	}
	n := hi - lo
	interval := float64(n) / float64(max)
	for i := 0; i < max; i++ {
		idx := lo + int(float64(i)*interval)
		if idx < n {
			out[steps[idx]] = true
		}
	}
	out[steps[hi-1]] = true
	return out
}

// SetSystemTags sets tags Plinth itself writes on a run (the reserved
// plinth.* tags clients may not set), such as a job's usage and cost.
func (s *Service) SetSystemTags(ctx context.Context, sc Scope, runID string, tags map[string]string) error {
	return s.db.Tx(ctx, func(tx store.Querier) error {
		if _, err := s.runInfo(ctx, tx, sc, runID, true); err != nil {
			return err
		}
		for k, v := range tags {
			if _, err := tx.ExecContext(ctx, `INSERT INTO tags (run_uuid, key, value) VALUES (?, ?, ?) ON CONFLICT (run_uuid, key) DO UPDATE SET value = excluded.value`,
				runID, k, v); err != nil {
				return fmt.Errorf("tagging run: %w", err)
			}
		}
		return nil
	})
}
