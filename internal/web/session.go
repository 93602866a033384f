package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/plinth-dev/plinth/internal/secret"
)

// Sessions: signing in exchanges an API key for a cookie that holds the
// key sealed under the platform secret key (AES-GCM), its expiry and a
// random CSRF token. The browser cannot read it (HttpOnly) or forge it,
// and every control plane that shares the platform key accepts it, so
// replicas need no shared session store. Each request authenticates the
// sealed key again, so revoking the key ends its sessions at once.
//
// Signing out forgets the cookie in the browser and remembers the
// session's token here until it would have expired; another replica
// would still accept a copy of the cookie until then (SessionTTL).

const (
	cookieName = "plinth_session"
	sealCtx    = "ui/session"
	csrfField  = "csrf_token"
	csrfHeader = "X-CSRF-Token"
)

// SessionTTL is how long a sign-in lasts.
const SessionTTL = 12 * time.Hour

type session struct {
	Key     string `json:"k"`
	CSRF    string `json:"c"`
	Expires int64  `json:"e"` // Unix seconds
}

type sessions struct {
	key *secret.Key
	now func() time.Time

	mu       sync.Mutex
	signedOf map[string]time.Time // CSRF token of a signed-out session -> its expiry
}

func newSessions(k *secret.Key, now func() time.Time) *sessions {
	return &sessions{key: k, now: now, signedOf: map[string]time.Time{}}
}

var errNoSession = errors.New("no session")

func (s *sessions) create(w http.ResponseWriter, r *http.Request, apiKey string) error {
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return err
	}
	exp := s.now().Add(SessionTTL)
	raw, _ := json.Marshal(session{Key: apiKey, CSRF: base64.RawURLEncoding.EncodeToString(tok), Expires: exp.Unix()})
	sealed, err := s.key.Seal(string(raw), sealCtx)
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: base64.RawURLEncoding.EncodeToString([]byte(sealed)), Path: "/ui",
		Expires: exp, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode})
	return nil
}

func (s *sessions) read(r *http.Request) (session, error) {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return session{}, errNoSession
	}
	sealed, err := base64.RawURLEncoding.DecodeString(c.Value)
	if err != nil {
		return session{}, errNoSession
	}
	plain, err := s.key.Open(string(sealed), sealCtx)
	if err != nil {
		return session{}, errNoSession
	}
	var sess session
	if json.Unmarshal([]byte(plain), &sess) != nil || sess.Key == "" || sess.CSRF == "" {
		return session{}, errNoSession
	}
	now := s.now()
	if now.Unix() >= sess.Expires {
		return session{}, errNoSession
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, out := s.signedOf[sess.CSRF]; out {
		return session{}, errNoSession
	}
	return sess, nil
}

// end forgets the session in the browser and here.
func (s *sessions) end(w http.ResponseWriter, r *http.Request, sess session) {
	now := s.now()
	s.mu.Lock()
	for tok, until := range s.signedOf {
		if now.After(until) {
			delete(s.signedOf, tok)
		}
	}
	s.signedOf[sess.CSRF] = time.Unix(sess.Expires, 0)
	s.mu.Unlock()
	s.clear(w, r)
}

func (s *sessions) clear(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/ui", MaxAge: -1, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode})
}

// checkCSRF accepts a state-changing request only with the session's
// token (form field or htmx header) and, when the browser says where the
// request comes from, only from this site.
func (s *sessions) checkCSRF(r *http.Request, sess session) bool {
	if !sameOrigin(r) {
		return false
	}
	got := r.Header.Get(csrfHeader)
	if got == "" {
		got = r.PostFormValue(csrfField)
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(sess.CSRF)) == 1
}

// sameOrigin refuses requests a browser marks as coming from another
// site; clients that send neither header (curl, tests) pass on the
// token alone.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || !strings.EqualFold(u.Host, r.Host) {
			return false
		}
	}
	return true
}

// localNext keeps a post-sign-in redirect inside the UI.
func localNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/ui/"
	}
	return next
}

func (u *UI) loginForm(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	u.render(w, r, nil, http.StatusOK, "login", map[string]any{"Next": localNext(r.URL.Query().Get("next"))})
}

func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	next := localNext(r.PostFormValue("next"))
	fail := func(status int, msg string) {
		u.render(w, r, nil, status, "login", map[string]any{"Next": next, "Error": msg})
	}
	if !sameOrigin(r) {
		fail(http.StatusForbidden, "This sign-in did not come from this site.")
		return
	}
	key := strings.TrimSpace(r.PostFormValue("key"))
	if key == "" {
		fail(http.StatusBadRequest, "Enter an API key.")
		return
	}
	id, err := u.d.Auth.Authenticate(r.Context(), key)
	if err != nil {
		fail(http.StatusUnauthorized, "That API key is not valid (unknown, revoked or expired).")
		return
	}
	if id.RunID != "" {
		fail(http.StatusForbidden, "A key limited to one run cannot sign in to the UI.")
		return
	}
	if err := u.sessions.create(w, r, key); err != nil {
		fail(http.StatusInternalServerError, "Could not start a session.")
		return
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (u *UI) logout(w http.ResponseWriter, r *http.Request) {
	sess, err := u.sessions.read(r)
	if err == nil && u.sessions.checkCSRF(r, sess) {
		u.sessions.end(w, r, sess)
	}
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}
