// Package audit keeps Plinth's append-only, hash-chained record of every
// mutating call: who did what to which resource, from where, and with what
// result. Each record's hash covers the one before it, so an edited,
// deleted or reordered record is detected by Verify.
package audit

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/store"
)

// Result values for records of calls that succeeded; a failed call records
// the fault kind that refused it (for example "permission_denied").
const Success = "success"

// Record is one audit log entry.
type Record struct {
	Seq       int64          `json:"seq"`
	Time      time.Time      `json:"time"`
	Principal string         `json:"principal"`
	KeyID     string         `json:"key_id"`
	Action    string         `json:"action"`
	Resource  string         `json:"resource"`
	Workspace string         `json:"workspace"`
	Result    string         `json:"result"`
	Source    string         `json:"source"`
	RequestID string         `json:"request_id"`
	Details   map[string]any `json:"details,omitempty"`
	PrevHash  string         `json:"prev_hash"`
	Hash      string         `json:"hash"`
}

// Caller identifies who is making the current request; the API layer puts
// it in the context so services need not pass it around.
type Caller struct {
	Principal string
	KeyID     string
	Source    string
	RequestID string
}

type callerKey struct{}

// WithCaller returns a context carrying the caller of this request.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller stored by WithCaller, or the zero Caller
// (which Append records as "system").
func CallerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

// Log appends to and reads the audit log.
type Log struct {
	db  *store.DB
	now func() time.Time
}

// New returns a Log over db. now is the clock; nil means time.Now.
func New(db *store.DB, now func() time.Time) *Log {
	if now == nil {
		now = time.Now
	}
	return &Log{db: db, now: now}
}

// Append adds a record inside tx, the transaction that makes the change it
// describes, so the change and its record commit or vanish together. The
// caller fields come from ctx. Call it last in the transaction: on
// PostgreSQL it holds the chain head's row lock until commit.
func (l *Log) Append(ctx context.Context, tx store.Querier, r Record) error {
	c := CallerFrom(ctx)
	if r.Principal == "" {
		r.Principal = c.Principal
	}
	if r.Principal == "" {
		r.Principal = "system"
	}
	if r.KeyID == "" {
		r.KeyID = c.KeyID
	}
	if r.Source == "" {
		r.Source = c.Source
	}
	if r.RequestID == "" {
		r.RequestID = c.RequestID
	}
	if r.Result == "" {
		r.Result = Success
	}
	r.Time = l.now().UTC().Truncate(time.Microsecond)

	// Bumping seq takes the head's row lock (PostgreSQL) or rides the
	// single writer (SQLite): appenders are serialised, so the chain
	// cannot fork.
	if err := tx.QueryRowContext(ctx, `UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash`).Scan(&r.Seq, &r.PrevHash); err != nil {
		return fmt.Errorf("advancing audit chain: %w", err)
	}
	details, err := encodeDetails(r.Details)
	if err != nil {
		return err
	}
	r.Hash = chainHash(r, details)
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_log
		(seq, time_us, principal, key_id, action, resource, workspace, result, source, request_id, details, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.Seq, r.Time.UnixMicro(), r.Principal, r.KeyID, r.Action, r.Resource, r.Workspace, r.Result,
		r.Source, r.RequestID, details, r.PrevHash, r.Hash); err != nil {
		return fmt.Errorf("appending audit record: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE audit_head SET hash = ? WHERE id = 1`, r.Hash); err != nil {
		return fmt.Errorf("advancing audit chain: %w", err)
	}
	return nil
}

// Record appends a record in a transaction of its own. It is for calls
// that changed nothing (refused or failed), which still leave a trace.
func (l *Log) Record(ctx context.Context, r Record) error {
	return l.db.Tx(ctx, func(tx store.Querier) error { return l.Append(ctx, tx, r) })
}

func encodeDetails(d map[string]any) (string, error) {
	if len(d) == 0 {
		return "{}", nil
	}
	// encoding/json sorts map keys, so the text (and so the hash) is stable.
	b, err := json.Marshal(d)
	if err != nil {
		return "", fmt.Errorf("encoding audit details: %w", err)
	}
	return string(b), nil
}

// chainHash is SHA-256 over the previous hash and every stored field, each
// length-prefixed so that no two different records encode the same.
func chainHash(r Record, details string) string {
	h := sha256.New()
	for _, f := range []string{
		r.PrevHash, strconv.FormatInt(r.Seq, 10), strconv.FormatInt(r.Time.UnixMicro(), 10),
		r.Principal, r.KeyID, r.Action, r.Resource, r.Workspace, r.Result, r.Source, r.RequestID, details,
	} {
		fmt.Fprintf(h, "%d:%s;", len(f), f)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Filter selects records for List. Zero fields match everything.
type Filter struct {
	Principal string
	// Resource matches the resource itself and everything under it
	// ("workspaces/a" matches "workspaces/a/role-assignments/x").
	Resource  string
	Action    string
	Workspace string
	Result    string
	Since     time.Time
	Until     time.Time
	PageSize  int
	PageToken string
}

// List returns records newest first, and a token for the next page.
func (l *Log) List(ctx context.Context, f Filter) ([]Record, string, error) {
	var where []string
	var args []any
	add := func(cond string, v any) { where = append(where, cond); args = append(args, v) }
	if f.Principal != "" {
		add("principal = ?", f.Principal)
	}
	if f.Resource != "" {
		where = append(where, "(resource = ? OR resource LIKE ? ESCAPE '\\')")
		args = append(args, f.Resource, escapeLike(f.Resource)+"/%")
	}
	if f.Action != "" {
		add("action = ?", f.Action)
	}
	if f.Workspace != "" {
		add("workspace = ?", f.Workspace)
	}
	if f.Result != "" {
		add("result = ?", f.Result)
	}
	if !f.Since.IsZero() {
		add("time_us >= ?", f.Since.UnixMicro())
	}
	if !f.Until.IsZero() {
		add("time_us < ?", f.Until.UnixMicro())
	}
	if f.PageToken != "" {
		before, err := strconv.ParseInt(f.PageToken, 10, 64)
		if err != nil || before < 1 {
			return nil, "", fault.InvalidField("page_token", "not a token this server issued")
		}
		add("seq < ?", before)
	}
	size := f.PageSize
	if size <= 0 {
		size = 100
	}
	q := `SELECT seq, time_us, principal, key_id, action, resource, workspace, result, source, request_id, details, prev_hash, hash FROM audit_log`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY seq DESC LIMIT " + strconv.Itoa(size+1)
	rows, err := l.db.Read().QueryContext(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("listing audit records: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		r, _, err := scan(rows)
		if err != nil {
			return nil, "", err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("listing audit records: %w", err)
	}
	next := ""
	if len(out) > size {
		out = out[:size]
		next = strconv.FormatInt(out[size-1].Seq, 10)
	}
	return out, next, nil
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

func scan(rows *sql.Rows) (Record, string, error) {
	var r Record
	var us int64
	var details string
	if err := rows.Scan(&r.Seq, &us, &r.Principal, &r.KeyID, &r.Action, &r.Resource, &r.Workspace, &r.Result,
		&r.Source, &r.RequestID, &details, &r.PrevHash, &r.Hash); err != nil {
		return r, "", fmt.Errorf("reading audit record: %w", err)
	}
	r.Time = time.UnixMicro(us).UTC()
	if details != "{}" && details != "" {
		// A record whose details no longer parse was tampered with;
		// Verify reports it through the hash, so List still shows it.
		_ = json.Unmarshal([]byte(details), &r.Details)
	}
	return r, details, nil
}

// Problem is one break in the chain found by Verify.
type Problem struct {
	Seq    int64  `json:"seq"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

// Report is the outcome of Verify.
type Report struct {
	OK       bool      `json:"ok"`
	Records  int64     `json:"records"`
	HeadSeq  int64     `json:"head_seq"`
	HeadHash string    `json:"head_hash"`
	Problems []Problem `json:"problems,omitempty"`
	// Truncated is set when more problems exist than are listed.
	Truncated bool `json:"truncated,omitempty"`
}

const maxProblems = 100

// Verify walks the whole chain and reports every record that was edited
// (its hash no longer matches its fields), deleted (a gap in the sequence,
// or a tail shorter than the head says) or reordered (a record that no
// longer follows the hash before it).
func (l *Log) Verify(ctx context.Context) (Report, error) {
	var rep Report
	// One read transaction would be ideal; reading the head first and
	// only checking records up to it keeps a concurrent append from
	// looking like damage.
	if err := l.db.Read().QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&rep.HeadSeq, &rep.HeadHash); err != nil {
		return rep, fmt.Errorf("reading audit head: %w", err)
	}
	rows, err := l.db.Read().QueryContext(ctx, `SELECT seq, time_us, principal, key_id, action, resource, workspace, result, source, request_id, details, prev_hash, hash
		FROM audit_log WHERE seq <= ? ORDER BY seq`, rep.HeadSeq)
	if err != nil {
		return rep, fmt.Errorf("reading audit log: %w", err)
	}
	defer rows.Close()
	problem := func(seq int64, kind, format string, args ...any) {
		if len(rep.Problems) >= maxProblems {
			rep.Truncated = true
			return
		}
		rep.Problems = append(rep.Problems, Problem{Seq: seq, Kind: kind, Detail: fmt.Sprintf(format, args...)})
	}
	var prevSeq int64
	prevHash := ""
	for rows.Next() {
		r, details, err := scan(rows)
		if err != nil {
			return rep, err
		}
		rep.Records++
		if r.Seq != prevSeq+1 {
			problem(r.Seq, "missing", "records %d..%d are missing (deleted)", prevSeq+1, r.Seq-1)
		}
		if want := chainHash(r, details); want != r.Hash {
			problem(r.Seq, "edited", "record %d does not match its hash (its fields were changed)", r.Seq)
		}
		if r.PrevHash != prevHash {
			if r.Seq == prevSeq+1 {
				problem(r.Seq, "out_of_order", "record %d does not follow record %d's hash (reordered or replaced)", r.Seq, prevSeq)
			}
		}
		prevSeq, prevHash = r.Seq, r.Hash
	}
	if err := rows.Err(); err != nil {
		return rep, fmt.Errorf("reading audit log: %w", err)
	}
	if prevSeq != rep.HeadSeq {
		problem(prevSeq+1, "missing", "the log ends at record %d but the chain head is at %d (records at the end were deleted)", prevSeq, rep.HeadSeq)
	} else if prevHash != rep.HeadHash {
		problem(prevSeq, "edited", "the last record's hash does not match the chain head")
	}
	rep.OK = len(rep.Problems) == 0
	return rep, nil
}
