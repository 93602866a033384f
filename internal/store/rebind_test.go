package store

import (
	"strconv"
	"strings"
	"testing"
)

func TestRebind(t *testing.T) {
	tests := []struct {
		name, in, postgres string
	}{
		{"no placeholders", `SELECT 1`, `SELECT 1`},
		{"one", `SELECT * FROM t WHERE id = ?`, `SELECT * FROM t WHERE id = $1`},
		{"several", `INSERT INTO t (a, b, c) VALUES (?, ?, ?)`, `INSERT INTO t (a, b, c) VALUES ($1, $2, $3)`},
		{"adjacent", `SELECT ?||?`, `SELECT $1||$2`},
		{"more than nine", `VALUES (?,?,?,?,?,?,?,?,?,?,?)`, `VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)`},
		{"inside a string", `SELECT 'who?' WHERE a = ?`, `SELECT 'who?' WHERE a = $1`},
		{"escaped quote in a string", `SELECT 'it''s ?' WHERE a = ? AND b = '?'`, `SELECT 'it''s ?' WHERE a = $1 AND b = '?'`},
		{"empty string", `SELECT '' WHERE a = ?`, `SELECT '' WHERE a = $1`},
		{"only in a string", `SELECT '?'`, `SELECT '?'`},
		{"quoted identifier", `SELECT "who?" FROM t WHERE a = ?`, `SELECT "who?" FROM t WHERE a = $1`},
		{"comment with apostrophe", "SELECT 1 -- don't ask?\nWHERE a = ?", "SELECT 1 -- don't ask?\nWHERE a = $1"},
		{"comment at the end", `SELECT ? -- why?`, `SELECT $1 -- why?`},
		{"minus is not a comment", `SELECT ? - ?`, `SELECT $1 - $2`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := rebind(Postgres, tc.in); got != tc.postgres {
				t.Errorf("rebind(postgres, %q) = %q, want %q", tc.in, got, tc.postgres)
			}
			if got := rebind(SQLite, tc.in); got != tc.in {
				t.Errorf("rebind(sqlite, %q) = %q, want it unchanged", tc.in, got)
			}
		})
	}
}

// FuzzRebind checks that rebind only ever replaces ? with $1, $2, ... in
// order, and leaves SQLite queries alone.
func FuzzRebind(f *testing.F) {
	for _, s := range []string{`SELECT ?`, `'?' ?`, `'it''s' ? '?'`, `?,?,?,?,?,?,?,?,?,?,?`, `?000000000`, `'`, ``} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if got := rebind(SQLite, in); got != in {
			t.Fatalf("sqlite query changed: %q -> %q", in, got)
		}
		if strings.Contains(in, "$") {
			return
		}
		out := rebind(Postgres, in)
		// Every $ in the output is a placeholder; put ? back in its place.
		var back strings.Builder
		n := 0
		for i := 0; i < len(out); i++ {
			if out[i] != '$' {
				back.WriteByte(out[i])
				continue
			}
			n++
			num := strconv.Itoa(n)
			if !strings.HasPrefix(out[i+1:], num) {
				t.Fatalf("placeholder %d is not $%s in %q", n, num, out)
			}
			back.WriteByte('?')
			i += len(num)
		}
		if back.String() != in {
			t.Fatalf("rebind changed more than placeholders: %q -> %q", in, out)
		}
	})
}
