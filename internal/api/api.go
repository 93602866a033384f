// Package api serves Plinth's own REST API under /api/v1: thin handlers
// over the domain services, one route table that declares each route's
// permission, one error shape, and the OpenAPI document that describes it.
package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/endpoint"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/jobs"
	"github.com/plinth-dev/plinth/internal/llm"
	"github.com/plinth-dev/plinth/internal/observe"
	"github.com/plinth-dev/plinth/internal/registry"
	"github.com/plinth-dev/plinth/internal/workspace"
)

// MaxBodyBytes bounds a JSON request body; the API has no large uploads
// (artifacts go through their own routes).
const MaxBodyBytes = 1 << 20

// Handler serves one route for an authenticated (or, on public routes,
// anonymous) caller and returns the value to encode or an error.
type Handler func(r *http.Request, caller *auth.Identity) (any, error)

// Route is one entry of the API: its pattern, the permission it needs and
// where that permission is checked. The table is the single place where
// access to the API is decided; the RBAC matrix test walks it.
type Route struct {
	Method string
	// Path is a net/http pattern, e.g. /api/v1/workspaces/{ws}.
	Path       string
	Permission auth.Permission
	// Scoped means the permission is checked in the workspace named by
	// the {ws} path value; otherwise at platform scope.
	Scoped bool
	// Action names the change for the audit log; empty for reads.
	Action string
	// RunToken lets a key limited to one MLflow run (auth.CreateRunToken)
	// call a route that needs only authentication. Such keys are refused
	// every other self-service route (they must not list or mint keys);
	// on the rest they get what Identity.Can allows them.
	RunToken bool
	// Status is the success status; 0 means 200.
	Status int
	// MaxBody bounds the request body; 0 means MaxBodyBytes.
	MaxBody int64
	Summary string
	Handle  Handler
}

// API is the /api/v1 handler set.
type API struct {
	Auth       *auth.Service
	Workspaces *workspace.Service
	Registry   *registry.Service
	Compute    *compute.Service
	Instances  *compute.Instances
	Jobs       *jobs.Service
	Endpoints  *endpoint.Service
	Models     endpoint.ModelResolver
	Snapshots  *endpoint.Publisher
	Controller *endpoint.Controller
	LLM        *llm.Service
	Audit      *audit.Log
	Log        *slog.Logger
	// OpenAPI is the served document, already encoded as JSON.
	OpenAPI []byte
}

// Register adds every route to mux.
func (a *API) Register(mux *http.ServeMux) {
	// byPath knows which methods each path pattern has, so a wrong method
	// gets 405 with Allow rather than 404.
	byPath := http.NewServeMux()
	allowed := map[string][]string{}
	for _, rt := range a.Routes() {
		mux.Handle(rt.Method+" "+rt.Path, a.wrap(rt))
		if allowed[rt.Path] == nil {
			byPath.Handle(rt.Path, http.NotFoundHandler())
		}
		allowed[rt.Path] = append(allowed[rt.Path], rt.Method)
	}
	// Anything else under /api/v1 answers in the API's error shape, not
	// the mux's plain text.
	mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := byPath.Handler(r); pattern != "" {
			methods := strings.Join(allowed[pattern], ", ")
			w.Header().Set("Allow", methods)
			writeStatusError(w, r, http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, methods))
			return
		}
		writeError(w, r, a.Log, fault.New(fault.NotFound, "no API route %s %s", r.Method, r.URL.Path))
	})
}

// Authenticate resolves the credentials on a request: "Authorization:
// Bearer <key>", or HTTP basic auth with the key as password (how MLflow
// clients send MLFLOW_TRACKING_TOKEN and MLFLOW_TRACKING_PASSWORD).
// It returns nil, nil when no credentials were presented.
func Authenticate(ctx context.Context, svc *auth.Service, r *http.Request) (*auth.Identity, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, nil
	}
	scheme, value, _ := strings.Cut(h, " ")
	value = strings.TrimSpace(value)
	switch strings.ToLower(scheme) {
	case "bearer":
		return svc.Authenticate(ctx, value)
	case "basic":
		_, password, ok := r.BasicAuth()
		if !ok {
			return nil, fault.New(fault.Unauthenticated, "malformed basic credentials")
		}
		return svc.Authenticate(ctx, password)
	default:
		return nil, fault.New(fault.Unauthenticated, "unsupported authorization scheme %q (use Bearer or Basic)", clip(scheme))
	}
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}

// SourceAddr is the caller's address as recorded in the audit log.
func SourceAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (a *API) wrap(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := rt.MaxBody
		if limit == 0 {
			limit = MaxBodyBytes
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		ctx := r.Context()
		var caller *auth.Identity
		if rt.Permission != auth.Public {
			var err error
			caller, err = Authenticate(ctx, a.Auth, r)
			if err == nil && caller == nil {
				err = fault.New(fault.Unauthenticated, "authentication required: send an API key as 'Authorization: Bearer <key>'")
			}
			if err != nil {
				writeError(w, r, a.Log, err)
				return
			}
			ctx = audit.WithCaller(ctx, audit.Caller{Principal: caller.Principal, KeyID: caller.KeyID,
				Source: SourceAddr(r), RequestID: observe.RequestID(ctx)})
			r = r.WithContext(ctx)
		}
		ws := ""
		if rt.Scoped {
			ws = r.PathValue("ws")
		}
		// The decision looks only at the caller's grants, never at whether
		// the workspace exists, so a 403 says nothing about existence.
		if err := refusal(rt, caller, ws); err != nil {
			a.recordFailure(ctx, rt, r, ws, err)
			writeError(w, r, a.Log, err)
			return
		}
		out, err := rt.Handle(r, caller)
		if err != nil {
			a.recordFailure(ctx, rt, r, ws, err)
			writeError(w, r, a.Log, err)
			return
		}
		if resp, ok := out.(responder); ok {
			resp.respond(w, r)
			return
		}
		status := rt.Status
		if status == 0 {
			status = http.StatusOK
		}
		if status == http.StatusNoContent {
			w.WriteHeader(status)
			return
		}
		writeJSON(w, status, out)
	})
}

// refusal is why caller may not call rt in workspace ws ("" for platform
// scope), or nil when it may.
func refusal(rt Route, caller *auth.Identity, ws string) error {
	if caller != nil && caller.RunID != "" {
		// A run token: Can grants it at most the run-token permissions;
		// of the self-service routes it may call only those marked.
		if rt.Permission == auth.Authenticated && !rt.RunToken {
			return fault.New(fault.PermissionDenied, "a key limited to run %s may not %s", caller.RunID, describe(rt))
		}
		if !caller.Can(rt.Permission, ws) {
			return fault.New(fault.PermissionDenied, "a key limited to run %s may not %s at %s (needs %s)", caller.RunID, describe(rt), auth.ScopeName(ws), rt.Permission)
		}
		return nil
	}
	if !caller.Can(rt.Permission, ws) {
		return fault.New(fault.PermissionDenied, "%s may not %s at %s (needs %s)", caller.Principal, describe(rt), auth.ScopeName(ws), rt.Permission)
	}
	return nil
}

// responder is a handler's answer that writes itself (a file download)
// instead of being encoded as JSON.
type responder interface {
	respond(w http.ResponseWriter, r *http.Request)
}

// timeZero is the modification time given to http.ServeContent when none
// is known (it then sends no Last-Modified).
var timeZero time.Time

func describe(rt Route) string {
	if rt.Action != "" {
		return rt.Action
	}
	return strings.ToLower(rt.Method) + " " + rt.Path
}

// recordFailure leaves an audit record for a refused or failed change.
// Reads are not audited.
func (a *API) recordFailure(ctx context.Context, rt Route, r *http.Request, ws string, err error) {
	if rt.Action == "" {
		return
	}
	rec := audit.Record{Action: rt.Action, Resource: clipMessage(strings.TrimPrefix(r.URL.Path, "/api/v1/")), Workspace: clipMessage(ws),
		Result: string(fault.KindOf(err))}
	if fe, ok := fault.As(err); ok && fe.Kind != fault.Internal {
		rec.Details = map[string]any{"error": clipMessage(fe.Message)}
	}
	if aerr := a.Audit.Record(ctx, rec); aerr != nil {
		a.Log.Error("recording failed call in audit log", "request_id", observe.RequestID(ctx), "error", aerr)
	}
}

func clipMessage(s string) string {
	if len(s) > 512 {
		return s[:509] + "..."
	}
	return s
}

// ErrorBody is the one error shape of the API.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail describes what went wrong.
type ErrorDetail struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
}

// StatusOf maps a fault kind to its HTTP status: the one place that does.
func StatusOf(k fault.Kind) int {
	switch k {
	case fault.Invalid:
		return http.StatusBadRequest
	case fault.NotFound:
		return http.StatusNotFound
	case fault.AlreadyExists, fault.FailedPrecondition:
		return http.StatusConflict
	case fault.Unauthenticated:
		return http.StatusUnauthorized
	case fault.PermissionDenied:
		return http.StatusForbidden
	case fault.ResourceExhausted:
		return http.StatusTooManyRequests
	case fault.TooLarge:
		return http.StatusRequestEntityTooLarge
	case fault.Unavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	rid := observe.RequestID(r.Context())
	body := ErrorDetail{Code: string(fault.Internal), Message: "internal error; quote request id " + rid + " when reporting it"}
	fe, ok := fault.As(err)
	if ok && fe.Kind != fault.Internal {
		body.Code, body.Message = string(fe.Kind), fe.Message
		if fe.Field != "" || len(fe.Details) > 0 {
			body.Details = map[string]any{}
			for k, v := range fe.Details {
				body.Details[k] = v
			}
			if fe.Field != "" {
				body.Details["field"] = fe.Field
			}
		}
		if fe.Err != nil {
			log.Warn("request failed", "request_id", rid, "code", fe.Kind, "error", err)
		}
	} else {
		log.Error("request failed", "request_id", rid, "method", r.Method, "path", r.URL.Path, "error", err)
	}
	status := StatusOf(fault.Kind(body.Code))
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="plinth", Basic realm="plinth"`)
	}
	writeJSON(w, status, ErrorBody{Error: body})
}

// writeStatusError answers with a status that has no fault kind (405).
func writeStatusError(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	writeJSON(w, status, ErrorBody{Error: ErrorDetail{Code: code, Message: message}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// decode reads one JSON object from the body into v, refusing unknown
// fields, trailing data, wrong types and oversized bodies with an error
// that names the problem.
func decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return fault.New(fault.Invalid, "Content-Type must be application/json, not %q", clip(ct))
		}
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fault.New(fault.Invalid, "request body has data after the JSON object")
	}
	return nil
}

func bodyError(err error) error {
	var maxErr *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &maxErr):
		return fault.New(fault.TooLarge, "request body is larger than %d bytes", maxErr.Limit)
	case errors.Is(err, io.EOF):
		return fault.New(fault.Invalid, "request body is empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fault.New(fault.Invalid, "request body is not valid JSON: it ends too soon")
	case errors.As(err, &syntax):
		return fault.New(fault.Invalid, "request body is not valid JSON at byte %d: %v", syntax.Offset, syntax)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return fault.New(fault.Invalid, "request body must be a JSON object, not %s", typ.Value)
		}
		return fault.InvalidField(field, "must be %s, not %s", jsonType(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return fault.InvalidField(name, "unknown field")
	}
	return fault.Wrap(fault.Invalid, err, "request body is not valid")
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	case "ptr":
		return "a value of another type"
	default:
		return "a number"
	}
}

// Page is a page request: the position after which to start and how many.
type Page struct {
	After string
	Size  int
}

const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// pageOf reads page_size and page_token. Tokens are opaque to callers:
// base64 of the last key of the previous page.
func pageOf(r *http.Request) (Page, error) {
	size, err := pageSizeOf(r)
	p := Page{Size: size}
	if err != nil {
		return p, err
	}
	if t := r.URL.Query().Get("page_token"); t != "" {
		b, err := base64.RawURLEncoding.DecodeString(t)
		if err != nil || len(b) == 0 {
			return p, fault.InvalidField("page_token", "not a token this server issued")
		}
		p.After = string(b)
	}
	return p, nil
}

func pageSizeOf(r *http.Request) (int, error) {
	s := r.URL.Query().Get("page_size")
	if s == "" {
		return defaultPageSize, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxPageSize {
		return defaultPageSize, fault.InvalidField("page_size", "must be an integer from 1 to %d", maxPageSize)
	}
	return n, nil
}

func pageToken(after string) string {
	if after == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(after))
}

func boolParam(r *http.Request, name string) (bool, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return false, nil
	}
	v, err := strconv.ParseBool(s)
	if err != nil {
		return false, fault.InvalidField(name, "must be true or false, not %q", clip(s))
	}
	return v, nil
}
