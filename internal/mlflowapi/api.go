// Package mlflowapi serves MLflow's REST API (tracking, and the artifact
// proxy of `mlflow server --serve-artifacts`) exactly as MLflow's own
// server does on the wire, translating it to Plinth's domain services and
// putting Plinth's authentication, RBAC and audit around every call.
package mlflowapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/plinth-dev/plinth/internal/api"
	"github.com/plinth-dev/plinth/internal/artifact"
	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/observe"
	"github.com/plinth-dev/plinth/internal/registry"
	"github.com/plinth-dev/plinth/internal/tracking"
	"github.com/plinth-dev/plinth/internal/workspace"
)

// DefaultWorkspace is the workspace served at the root path, so a plain
// MLFLOW_TRACKING_URI=http://host:8080 works; /w/{workspace} serves others.
const DefaultWorkspace = "default"

// maxBody bounds a request body: MLflow's largest message is a dataset
// profile of up to 16 MiB in runs/log-inputs.
const maxBody = 32 << 20

// maxBatchRequest is MLflow's limit on a log-batch request's size.
const maxBatchRequest = 1_000_000

// API is the MLflow-compatible HTTP surface.
type API struct {
	Auth       *auth.Service
	Workspaces *workspace.Service
	Tracking   *tracking.Service
	Registry   *registry.Service
	Artifacts  *artifact.Store
	Audit      *audit.Log
	Log        *slog.Logger
}

// handler serves one MLflow endpoint for an authorised caller in a scope.
type handler func(r *http.Request, body []byte, sc tracking.Scope) (any, error)

type endpoint struct {
	methods []string
	path    string // below /api/2.0/mlflow
	perm    auth.Permission
	action  string // audit action for refused or failed writes
	handle  handler
}

// Register adds every MLflow route, under /api/2.0/mlflow and
// /ajax-api/2.0/mlflow, at the root (the default workspace) and under
// /w/{ws}.
func (a *API) Register(mux *http.ServeMux) {
	for _, ep := range append(a.endpoints(), a.registryEndpoints()...) {
		for _, base := range []string{"/api/2.0/mlflow", "/ajax-api/2.0/mlflow"} {
			for _, prefix := range []string{"", "/w/{ws}"} {
				for _, m := range ep.methods {
					mux.Handle(m+" "+prefix+base+ep.path, a.wrap(ep))
				}
			}
		}
	}
	a.registerArtifacts(mux)
}

// workspaceOf names the workspace a request addresses.
func workspaceOf(r *http.Request) string {
	if ws := r.PathValue("ws"); ws != "" {
		return ws
	}
	return DefaultWorkspace
}

// guard authenticates r, checks perm in workspace ws and puts the audit
// caller in the context; on failure it has written the MLflow error (401
// with WWW-Authenticate, or 403) and returns ok=false.
func (a *API) guard(w http.ResponseWriter, r *http.Request, ws string, perm auth.Permission) (*http.Request, *auth.Identity, bool) {
	caller, err := api.Authenticate(r.Context(), a.Auth, r)
	if err == nil && caller == nil {
		err = fault.New(fault.Unauthenticated, "Authentication required: set MLFLOW_TRACKING_TOKEN (or MLFLOW_TRACKING_USERNAME/PASSWORD) to a Plinth API key")
	}
	if err != nil {
		writeError(w, r, a.Log, err)
		return r, nil, false
	}
	ctx := audit.WithCaller(r.Context(), audit.Caller{Principal: caller.Principal, KeyID: caller.KeyID,
		Source: api.SourceAddr(r), RequestID: observe.RequestID(r.Context())})
	r = r.WithContext(ctx)
	if !caller.Can(perm, ws) {
		writeError(w, r, a.Log, fault.New(fault.PermissionDenied, "%s", deniedMessage(caller, ws, perm)))
		return r, caller, false
	}
	return r, caller, true
}

type identityKey struct{}

// identityOf returns the authenticated caller of a request that passed wrap.
func identityOf(r *http.Request) *auth.Identity {
	id, _ := r.Context().Value(identityKey{}).(*auth.Identity)
	return id
}

// scope resolves the workspace's id.
func (a *API) scope(ctx context.Context, ws string) (tracking.Scope, error) {
	w, err := a.Workspaces.Lookup(ctx, ws)
	if err != nil {
		if fault.Is(err, fault.NotFound) {
			return tracking.Scope{}, fault.New(fault.NotFound, "Workspace '%s' does not exist", ws)
		}
		return tracking.Scope{}, err
	}
	return tracking.Scope{WorkspaceID: w.ID, Workspace: w.Name}, nil
}

func (a *API) wrap(ep endpoint) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws := workspaceOf(r)
		r, caller, ok := a.guard(w, r, ws, ep.perm)
		if caller != nil {
			r = r.WithContext(context.WithValue(r.Context(), identityKey{}, caller))
		}
		if !ok {
			if ep.action != "" && audit.CallerFrom(r.Context()).Principal != "" {
				a.recordFailure(r, ep, ws, fault.New(fault.PermissionDenied, "permission denied"))
			}
			return
		}
		body, err := readBody(w, r)
		if err == nil {
			err = runLimit(r, ep, body, caller)
		}
		if err == nil {
			var sc tracking.Scope
			sc, err = a.scope(r.Context(), ws)
			if err == nil {
				var out any
				out, err = ep.handle(r, body, sc)
				if err == nil {
					writeJSON(w, http.StatusOK, out)
					return
				}
			}
		}
		if ep.action != "" {
			a.recordFailure(r, ep, ws, err)
		}
		writeError(w, r, a.Log, err)
	})
}

func (a *API) recordFailure(r *http.Request, ep endpoint, ws string, err error) {
	rec := audit.Record{Action: ep.action, Resource: "workspaces/" + ws + "/mlflow" + ep.path, Workspace: ws, Result: string(fault.KindOf(err))}
	if fe, ok := fault.As(err); ok && fe.Kind != fault.Internal {
		msg := fe.Message
		if len(msg) > 512 {
			msg = msg[:509] + "..."
		}
		rec.Details = map[string]any{"error": msg}
	}
	if aerr := a.Audit.Record(r.Context(), rec); aerr != nil {
		a.Log.Error("recording failed call in audit log", "request_id", observe.RequestID(r.Context()), "error", aerr)
	}
}

// readBody reads a POST body (GET requests carry their fields in the
// query string).
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.Method == http.MethodGet {
		return nil, nil
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return nil, fault.New(fault.Invalid, "Request body is larger than %d bytes", maxErr.Limit)
	}
	if err != nil {
		return nil, fault.Wrap(fault.Invalid, err, "Could not read the request body")
	}
	return b, nil
}

// decode fills msg from the JSON body of a POST or the query string of a
// GET, as MLflow's _get_request_message does: unknown fields are ignored,
// wrong types are INVALID_PARAMETER_VALUE naming the parameter.
func decode(r *http.Request, body []byte, msg any) error {
	if r.Method == http.MethodGet {
		return decodeQuery(r, msg)
	}
	body = quoteBareNonFinite(body)
	if len(strings.TrimSpace(string(body))) == 0 {
		// Some clients send DELETE's fields in the query string.
		return decodeQuery(r, msg)
	}
	if err := json.Unmarshal(body, msg); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) && typ.Field != "" {
			return fault.New(fault.Invalid, "Invalid value %s for parameter '%s' supplied. Hint: Value was of type '%s'. See the API docs for more information about request parameters.", typ.Value, typ.Field, typ.Value)
		}
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			return fault.New(fault.Invalid, "Malformed request body: invalid JSON at byte %d: %v", syntax.Offset, err)
		}
		return fault.New(fault.Invalid, "Invalid request body: %v", strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

// decodeQuery sets the message's fields from query parameters: repeated
// fields from repeated parameters, numbers and booleans parsed.
func decodeQuery(r *http.Request, msg any) error {
	return setFromQuery(r.URL.Query(), reflect.ValueOf(msg).Elem())
}

func setFromQuery(q map[string][]string, v reflect.Value) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).Anonymous {
			if err := setFromQuery(q, v.Field(i)); err != nil {
				return err
			}
			continue
		}
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		vals, ok := q[name]
		if !ok || len(vals) == 0 {
			continue
		}
		f := v.Field(i)
		switch f.Interface().(type) {
		case string:
			f.SetString(vals[0])
		case []string:
			f.Set(reflect.ValueOf(vals))
		case optInt64:
			var o optInt64
			if err := o.UnmarshalJSON([]byte(vals[0])); err != nil {
				return fault.New(fault.Invalid, "Invalid value %s for parameter '%s' supplied. Hint: Value was of type 'str'. See the API docs for more information about request parameters.", vals[0], name)
			}
			f.Set(reflect.ValueOf(o))
		case bool:
			b, err := strconv.ParseBool(vals[0])
			if err != nil {
				return fault.New(fault.Invalid, "Invalid value %s for parameter '%s' supplied.", vals[0], name)
			}
			f.SetBool(b)
		default:
			return fmt.Errorf("mlflowapi: query field %s has unsupported type %s", name, f.Type())
		}
	}
	return nil
}

func required(name string, present bool) error {
	if !present {
		return fault.New(fault.Invalid, "Missing value for required parameter '%s'. See the API docs for more information about request parameters.", name)
	}
	return nil
}

// errorCode maps a fault kind to MLflow's error code and HTTP status, the
// one place this layer does so.
func errorCode(k fault.Kind) (string, int) {
	switch k {
	case fault.Invalid:
		return "INVALID_PARAMETER_VALUE", http.StatusBadRequest
	case fault.NotFound:
		return "RESOURCE_DOES_NOT_EXIST", http.StatusNotFound
	case fault.AlreadyExists:
		return "RESOURCE_ALREADY_EXISTS", http.StatusBadRequest
	case fault.FailedPrecondition:
		return "INVALID_STATE", http.StatusBadRequest
	case fault.Unauthenticated:
		return "UNAUTHENTICATED", http.StatusUnauthorized
	case fault.PermissionDenied:
		return "PERMISSION_DENIED", http.StatusForbidden
	case fault.ResourceExhausted:
		return "REQUEST_LIMIT_EXCEEDED", http.StatusTooManyRequests
	case fault.TooLarge:
		return "INVALID_PARAMETER_VALUE", http.StatusRequestEntityTooLarge
	case fault.Unavailable:
		return "TEMPORARILY_UNAVAILABLE", http.StatusServiceUnavailable
	}
	return "INTERNAL_ERROR", http.StatusInternalServerError
}

// writeError writes MLflow's error body for err.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	code, status := errorCode(fault.KindOf(err))
	msg := "Internal error; quote request id " + observe.RequestID(r.Context()) + " when reporting it"
	if fe, ok := fault.As(err); ok && fe.Kind != fault.Internal {
		msg = fe.Message
	} else {
		log.Error("mlflow request failed", "request_id", observe.RequestID(r.Context()), "path", r.URL.Path, "error", err)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="plinth", Bearer realm="plinth"`)
	}
	writeJSON(w, status, map[string]string{"error_code": code, "message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	if raw, ok := v.(rawJSON); ok {
		w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
		w.WriteHeader(status)
		w.Write(raw)
		return
	}
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
