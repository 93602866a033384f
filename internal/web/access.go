package web

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/fault"
)

// Access: principals and their role assignments, a workspace's roles, and
// API keys. Keys are self-service as in the API (anyone manages their own;
// another principal's need keys.manage, which the auth service checks), and
// a new key's secret is shown in the answer that made it, never again.

// CanPlatform reports whether the caller may do p at platform scope, for
// the nav links of platform-wide sections (Can asks in a workspace, where
// platform-only permissions are never granted).
func (v view) CanPlatform(p auth.Permission) bool {
	return v.Q != nil && v.Q.ID.Can(p, "")
}

// keyExpiries are the lifetimes the create form offers.
var keyExpiries = []struct{ Value, Label string }{{"30d", "30 days"}, {"90d", "90 days"}, {"365d", "a year"}, {"1d", "a day"}, {"never", "never"}}

// keyForm is the create form as sent back after a refusal.
type keyForm struct {
	Name, Principal, Workspace, Expires string
}

func (u *UI) keysData(r *http.Request, q *req, principal string) (map[string]any, error) {
	if principal == "" {
		principal = q.ID.Principal
	}
	keys, err := u.d.Auth.ListKeys(r.Context(), q.ID, principal, true)
	if err != nil {
		return nil, err
	}
	if q.Workspaces == nil {
		if q.Workspaces, err = u.readable(r.Context(), q.ID); err != nil {
			return nil, err
		}
	}
	// A workspace-limited key can only make keys limited the same way.
	limits := []string{}
	if q.ID.KeyWorkspace != "" {
		limits = append(limits, q.ID.KeyWorkspace)
	} else {
		for _, w := range q.Workspaces {
			limits = append(limits, w.Name)
		}
	}
	return map[string]any{"Principal": principal, "Keys": keys, "Own": principal == q.ID.Principal,
		"CanManage": q.ID.Can(auth.KeysManage, ""), "SessionKey": q.ID.KeyID, "Limits": limits, "AnyWorkspace": q.ID.KeyWorkspace == "",
		"Expiries": keyExpiries, "Form": keyForm{Principal: principal, Workspace: q.ID.KeyWorkspace, Expires: "90d"}}, nil
}

func (u *UI) keysPage(w http.ResponseWriter, r *http.Request, q *req) error {
	qs := r.URL.Query()
	data, err := u.keysData(r, q, strings.TrimSpace(qs.Get("principal")))
	if err != nil {
		return err
	}
	if s := qs.Get("revoked"); s != "" {
		data["Flash"] = "Key " + s + " revoked; it stops working within seconds."
	}
	u.render(w, r, q, http.StatusOK, "access_keys", data)
	return nil
}

func (u *UI) keyCreate(w http.ResponseWriter, r *http.Request, q *req) error {
	if err := r.ParseForm(); err != nil {
		return fault.New(fault.Invalid, "unreadable form")
	}
	f := r.PostForm
	form := keyForm{Name: strings.TrimSpace(f.Get("name")), Principal: strings.TrimSpace(f.Get("principal")),
		Workspace: strings.TrimSpace(f.Get("workspace")), Expires: f.Get("expires")}
	if form.Principal == "" {
		form.Principal = q.ID.Principal
	}
	refuse := func(err error) error {
		fe, ok := formRefusal(err)
		if !ok {
			return err
		}
		u.recordRefusal(r, "key.create", err)
		data, derr := u.keysData(r, q, form.Principal)
		if derr != nil {
			// Another principal's keys the caller may not list: refused
			// the same way a listing would be.
			return derr
		}
		data["Error"], data["Form"] = fe.Message, form
		u.render(w, r, q, http.StatusBadRequest, "access_keys", data)
		return nil
	}
	in := auth.CreateKeyInput{Name: form.Name, Principal: form.Principal, Workspace: form.Workspace}
	if form.Expires != "" && form.Expires != "never" {
		d, err := parsePeriod(form.Expires)
		if err != nil {
			return refuse(fault.InvalidField("expires", "%v", err))
		}
		t := u.d.Now().Add(d)
		in.ExpiresAt = &t
	}
	key, secret, err := u.d.Auth.CreateKey(r.Context(), q.ID, in)
	if err != nil {
		return refuse(err)
	}
	data, err := u.keysData(r, q, key.Principal)
	if err != nil {
		return err
	}
	// The only time the secret is in a page: this answer, which no cache
	// keeps (Cache-Control: no-store). It is not stored anywhere a later
	// page could read it.
	data["NewKey"], data["NewSecret"] = key, secret
	u.render(w, r, q, http.StatusCreated, "access_keys", data)
	return nil
}

func (u *UI) keyRevoke(w http.ResponseWriter, r *http.Request, q *req) error {
	key, err := u.d.Auth.RevokeKey(r.Context(), q.ID, r.PathValue("id"))
	if err != nil {
		return err
	}
	v := url.Values{"revoked": {key.Name}}
	if key.Principal != q.ID.Principal {
		v.Set("principal", key.Principal)
	}
	http.Redirect(w, r, "/ui/access/keys?"+v.Encode(), http.StatusSeeOther)
	return nil
}

// principalView is a principal with the role assignments the caller may
// see (roles.read at their scope).
type principalView struct {
	Name, Kind, DisplayName, CreatedBy string
	CreatedAt                          time.Time
	Roles                              []auth.RoleAssignment
}

const principalsPerPage = 100

func (u *UI) principalsPage(w http.ResponseWriter, r *http.Request, q *req) error {
	after := r.URL.Query().Get("after")
	list, next, err := u.d.Auth.ListPrincipals(r.Context(), after, principalsPerPage)
	if err != nil {
		return err
	}
	views := make([]principalView, 0, len(list))
	idx := map[string]int{}
	for i, p := range list {
		views = append(views, principalView{Name: p.Name, Kind: p.Kind, DisplayName: p.DisplayName, CreatedBy: p.CreatedBy, CreatedAt: p.CreatedAt})
		idx[p.Name] = i
	}
	if len(list) > 0 {
		ras, err := u.d.Auth.RoleAssignmentsOfRange(r.Context(), after, list[len(list)-1].Name)
		if err != nil {
			return err
		}
		for _, ra := range ras {
			i, ok := idx[ra.Principal]
			if ok && q.ID.Can(auth.RolesRead, ra.Workspace) {
				views[i].Roles = append(views[i].Roles, ra)
			}
		}
	}
	u.render(w, r, q, http.StatusOK, "access_principals", map[string]any{"Principals": views, "Next": next,
		"CanManageKeys": q.ID.Can(auth.KeysManage, "")})
	return nil
}

func (u *UI) workspaceRolesData(r *http.Request, q *req) (map[string]any, error) {
	list, err := u.d.Auth.ListRoleAssignments(r.Context(), q.WS.Name, "")
	if err != nil {
		return nil, err
	}
	return map[string]any{"Assignments": list, "CanWrite": q.Can(auth.RolesWrite), "Roles": auth.Roles}, nil
}

func (u *UI) workspaceRolesPage(w http.ResponseWriter, r *http.Request, q *req) error {
	data, err := u.workspaceRolesData(r, q)
	if err != nil {
		return err
	}
	switch qs := r.URL.Query(); {
	case qs.Get("assigned") != "":
		data["Flash"] = "Role assigned to " + qs.Get("assigned") + "."
	case qs.Get("removed") != "":
		data["Flash"] = "Role assignment removed."
	}
	u.render(w, r, q, http.StatusOK, "access_roles", data)
	return nil
}

func (u *UI) workspaceRoleAssign(w http.ResponseWriter, r *http.Request, q *req) error {
	in := auth.AssignRoleInput{Principal: strings.TrimSpace(r.PostFormValue("principal")), Role: r.PostFormValue("role")}
	if _, err := u.d.Auth.AssignRole(r.Context(), q.ID, q.WS.Name, in); err != nil {
		fe, ok := formRefusal(err)
		if !ok {
			return err
		}
		u.recordRefusal(r, "role.assign", err)
		data, derr := u.workspaceRolesData(r, q)
		if derr != nil {
			return derr
		}
		data["Error"] = fe.Message
		u.render(w, r, q, http.StatusBadRequest, "access_roles", data)
		return nil
	}
	http.Redirect(w, r, q.wsURL("access")+"?assigned="+url.QueryEscape(in.Principal), http.StatusSeeOther)
	return nil
}

func (u *UI) workspaceRoleRemove(w http.ResponseWriter, r *http.Request, q *req) error {
	if err := u.d.Auth.RemoveRoleAssignment(r.Context(), q.WS.Name, r.PathValue("id")); err != nil {
		return err
	}
	http.Redirect(w, r, q.wsURL("access")+"?removed=1", http.StatusSeeOther)
	return nil
}
