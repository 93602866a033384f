// Package appproxy serves the web applications of compute instances
// (Jupyter, VS Code, any HTTP app) through Plinth, authenticated, at
// /compute/<instance>/apps/<app>/ (workspace default) and
// /w/<ws>/compute/<instance>/apps/<app>/, WebSockets included, and counts
// the traffic as use of the instance for its idle shutdown.
package appproxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"time"

	"github.com/plinth-dev/plinth/internal/api"
	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/workspace"
)

// Cookie carries the API key of a browser session with an application;
// it is set, for the application's path only, when a request brings
// ?plinth_token=<key>.
const Cookie = "plinth_app_token"

// Proxy is the HTTP handler.
type Proxy struct {
	Auth       *auth.Service
	Workspaces *workspace.Service
	Instances  *compute.Instances
}

// Register adds the proxy's routes.
func (p *Proxy) Register(mux *http.ServeMux) {
	mux.HandleFunc("/compute/{name}/apps/{app}/{rest...}", p.serve)
	mux.HandleFunc("/w/{ws}/compute/{name}/apps/{app}/{rest...}", p.serve)
	// Without the trailing slash, relative links of the app would
	// resolve one level too high.
	mux.HandleFunc("/compute/{name}/apps/{app}", p.slash)
	mux.HandleFunc("/w/{ws}/compute/{name}/apps/{app}", p.slash)
}

func (p *Proxy) slash(w http.ResponseWriter, r *http.Request) {
	u := *r.URL
	u.Path += "/"
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func fail(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	ws := r.PathValue("ws")
	if ws == "" {
		ws = "default"
	}
	name, app := r.PathValue("name"), r.PathValue("app")
	base := compute.AppBase(ws, name, app)

	// A link with ?plinth_token= opens a browser session: the key moves
	// into a cookie for this application's path and out of the URL.
	if tok := r.URL.Query().Get("plinth_token"); tok != "" {
		if _, err := p.Auth.Authenticate(r.Context(), tok); err != nil {
			fail(w, http.StatusUnauthorized, "plinth: that token is not valid")
			return
		}
		http.SetCookie(w, &http.Cookie{Name: Cookie, Value: tok, Path: base, HttpOnly: true, SameSite: http.SameSiteLaxMode,
			Secure: r.TLS != nil, Expires: time.Now().Add(12 * time.Hour)})
		q := r.URL.Query()
		q.Del("plinth_token")
		u := *r.URL
		u.RawQuery = q.Encode()
		http.Redirect(w, r, u.String(), http.StatusFound)
		return
	}
	caller, err := api.Authenticate(r.Context(), p.Auth, r)
	if caller == nil && err == nil {
		if c, cerr := r.Cookie(Cookie); cerr == nil {
			caller, err = p.Auth.Authenticate(r.Context(), c.Value)
		}
	}
	if err != nil || caller == nil {
		w.Header().Set("WWW-Authenticate", `Basic realm="plinth", charset="UTF-8"`)
		fail(w, http.StatusUnauthorized, "plinth: authentication required: open "+base+"?plinth_token=<your API key>, or send it as a Bearer token or basic-auth password")
		return
	}
	wsv, err := p.Workspaces.Lookup(r.Context(), ws)
	if err != nil {
		fail(w, http.StatusNotFound, "plinth: no such application")
		return
	}
	sc := compute.Scope{WorkspaceID: wsv.ID, Workspace: wsv.Name, Team: wsv.Team}
	port, owner, pk, err := p.Instances.App(r.Context(), sc, name, app)
	if err != nil && owner == "" {
		fail(w, http.StatusNotFound, "plinth: no such application")
		return
	}
	// An instance is its owner's: others (but the workspace's Owners)
	// may not see its notebooks.
	if caller.Principal != owner && !caller.Can(auth.RolesWrite, ws) {
		fail(w, http.StatusForbidden, "plinth: instance "+name+" belongs to "+owner)
		return
	}
	if err != nil {
		status := http.StatusServiceUnavailable
		if fault.Is(err, fault.NotFound) {
			status = http.StatusNotFound
		}
		fe, _ := fault.As(err)
		msg := err.Error()
		if fe != nil {
			msg = fe.Message
		}
		fail(w, status, "plinth: "+msg)
		return
	}
	p.Instances.Touch(r.Context(), pk)
	target := &url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(port)}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			// Apps check that Origin matches Host (Jupyter's WebSockets
			// do): they see the host the browser used.
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
			// The app never sees Plinth's credentials.
			pr.Out.Header.Del("Authorization")
			removeCookie(pr.Out, Cookie)
		},
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			// Traffic on an upgraded connection (a notebook's kernel) is
			// use too.
			if rwc, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
				resp.Body = &activity{ReadWriteCloser: rwc, touch: func() { p.Instances.Touch(context.WithoutCancel(r.Context()), pk) }}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			fail(w, http.StatusBadGateway, "plinth: application "+app+" of instance "+name+" is not answering (it may still be starting)")
		},
	}
	rp.ServeHTTP(w, r)
}

// removeCookie drops one cookie from a request's Cookie header.
func removeCookie(r *http.Request, name string) {
	cookies := r.Cookies()
	r.Header.Del("Cookie")
	for _, c := range cookies {
		if c.Name != name {
			r.AddCookie(c)
		}
	}
}

// activity marks use on every read or write of an upgraded connection.
type activity struct {
	io.ReadWriteCloser
	touch func()
}

func (a *activity) Read(p []byte) (int, error) {
	n, err := a.ReadWriteCloser.Read(p)
	if n > 0 {
		a.touch()
	}
	return n, err
}

func (a *activity) Write(p []byte) (int, error) {
	a.touch()
	return a.ReadWriteCloser.Write(p)
}
