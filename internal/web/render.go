package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/auth"
)

//go:embed templates static
var files embed.FS

// Static files are served at /ui/static/<hash>/<name>: the hash of their
// content makes the URL change with the file, so browsers may keep them
// for a year.
type staticFile struct {
	data  []byte
	hash  string
	ctype string
}

var statics = func() map[string]staticFile {
	out := map[string]staticFile{}
	err := fs.WalkDir(files, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" || strings.HasSuffix(p, "LICENSE") {
			ct = "text/plain; charset=utf-8"
		}
		out[strings.TrimPrefix(p, "static/")] = staticFile{data: b, hash: hex.EncodeToString(sum[:6]), ctype: ct}
		return nil
	})
	if err != nil {
		panic(err)
	}
	return out
}()

// staticURL is the versioned URL of a static file.
func staticURL(name string) string {
	f, ok := statics[name]
	if !ok {
		panic("web: no static file " + name)
	}
	return "/ui/static/" + f.hash + "/" + name
}

func serveStatic(w http.ResponseWriter, r *http.Request) {
	hash, name, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/ui/static/"), "/")
	f, ok := statics[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if hash == f.hash {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		// An old or made-up version: serve what there is, uncached.
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Header().Set("Content-Type", f.ctype)
	w.Header().Set("ETag", `"`+f.hash+`"`)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.data))
}

type pages struct {
	full map[string]*template.Template
	// frag holds the fragments htmx swaps into pages.
	frag *template.Template
}

var funcs = template.FuncMap{
	"static": staticURL,
	"ms": func(v any) string {
		var ms int64
		switch x := v.(type) {
		case int64:
			ms = x
		case *int64:
			if x == nil {
				return ""
			}
			ms = *x
		}
		if ms == 0 {
			return ""
		}
		return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05")
	},
	"time": func(t any) string {
		switch x := t.(type) {
		case time.Time:
			if x.IsZero() {
				return ""
			}
			return x.UTC().Format("2006-01-02 15:04:05")
		case *time.Time:
			if x == nil || x.IsZero() {
				return ""
			}
			return x.UTC().Format("2006-01-02 15:04:05")
		}
		return ""
	},
	"since": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return time.Since(t).Truncate(time.Second).String()
	},
	"num":   formatNum,
	"money": func(v float64) string { return fmt.Sprintf("%.4f", v) },
	"hours": func(sec float64) string { return fmt.Sprintf("%.2f", sec/3600) },
	"bytes": func(n int64) string {
		switch {
		case n >= 1<<30:
			return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
		case n >= 1<<20:
			return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
		case n >= 1<<10:
			return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
		}
		return fmt.Sprintf("%d B", n)
	},
	"q":    url.QueryEscape,
	"path": url.PathEscape,
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"add":  func(a, b int) int { return a + b },
	"list": func(v ...string) []string { return v },
	"dict": func(kv ...any) (map[string]any, error) {
		if len(kv)%2 != 0 {
			return nil, fmt.Errorf("dict needs key/value pairs")
		}
		m := make(map[string]any, len(kv)/2)
		for i := 0; i < len(kv); i += 2 {
			k, ok := kv[i].(string)
			if !ok {
				return nil, fmt.Errorf("dict keys are strings")
			}
			m[k] = kv[i+1]
		}
		return m, nil
	},
}

func formatNum(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

func mustParsePages() *pages {
	base := template.Must(template.New("").Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/fragments/*.html"))
	names, err := fs.Glob(files, "templates/pages/*.html")
	if err != nil {
		panic(err)
	}
	p := &pages{full: map[string]*template.Template{}, frag: base}
	for _, n := range names {
		t := template.Must(template.Must(base.Clone()).ParseFS(files, n))
		p.full[strings.TrimSuffix(path.Base(n), ".html")] = t
	}
	return p
}

// view is what every page template gets.
type view struct {
	Q    *req
	Data any
	Path string
}

// CSRF is the token forms and htmx requests send back.
func (v view) CSRF() string {
	if v.Q == nil {
		return ""
	}
	return v.Q.Session.CSRF
}

// WSName is the workspace the nav links to: the page's, or on pages
// outside a workspace the first one the caller may read.
func (v view) WSName() string {
	if v.Q == nil {
		return ""
	}
	if v.Q.WS.Name != "" {
		return v.Q.WS.Name
	}
	for _, w := range v.Q.Workspaces {
		if w.Name == "default" {
			return w.Name
		}
	}
	if len(v.Q.Workspaces) > 0 {
		return v.Q.Workspaces[0].Name
	}
	return "default"
}

// Can reports whether the caller may do p in the nav's workspace.
func (v view) Can(p auth.Permission) bool {
	return v.Q != nil && v.Q.ID.Can(p, v.WSName())
}

// Active reports whether the page is in one of the nav's sections.
func (v view) Active(sections ...string) bool {
	rest := strings.TrimPrefix(v.Path, "/ui/")
	if strings.HasPrefix(rest, "w/") {
		parts := strings.SplitN(rest, "/", 4)
		if len(parts) < 3 {
			return false
		}
		rest = parts[2]
	}
	for _, s := range sections {
		if rest == s || strings.HasPrefix(rest, s+"/") || strings.HasPrefix(rest, s+".") {
			return true
		}
	}
	return false
}

// render writes a whole page.
func (u *UI) render(w http.ResponseWriter, r *http.Request, q *req, status int, name string, data any) {
	t, ok := u.pages.full[name]
	if !ok {
		panic("web: no page template " + name)
	}
	if q != nil && q.Workspaces == nil {
		q.Workspaces, _ = u.readable(r.Context(), q.ID)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", view{Q: q, Data: data, Path: r.URL.Path}); err != nil {
		u.d.Log.Error("rendering a UI page", "page", name, "error", err)
		http.Error(w, "rendering failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// fragment writes a piece of a page for htmx to swap in.
func (u *UI) fragment(w http.ResponseWriter, q *req, name string, data any) error {
	var buf bytes.Buffer
	if err := u.pages.frag.ExecuteTemplate(&buf, name, view{Q: q, Data: data}); err != nil {
		return fmt.Errorf("rendering fragment %s: %w", name, err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, err := w.Write(buf.Bytes())
	return err
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
