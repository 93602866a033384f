package mlflowapi

import (
	"net/http"
	"strings"

	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/fault"
)

// Run tokens (auth.CreateRunToken): a key limited to one run may read what
// tracking.read and registry.read allow in its workspace (auth.Identity.Can
// decides that), and may write only to its own run. This file is where
// the MLflow layer enforces the second half: runLimit for the tracking
// calls, runArtifactLimit for the artifact proxy.

// runWrites are the calls a run token may make, each to the run named by
// the request's run_id (or run_uuid). Every other write (creating
// experiments and runs, deleting or restoring runs, experiment changes,
// registry changes) is refused to it, including writes added later that
// are not listed here.
var runWrites = map[string]bool{
	"/runs/update":        true,
	"/runs/log-metric":    true,
	"/runs/log-parameter": true,
	"/runs/log-batch":     true,
	"/runs/log-model":     true,
	"/runs/log-inputs":    true,
	"/runs/set-tag":       true,
	"/runs/delete-tag":    true,
}

// readOnly reports whether an MLflow route's permission only reads.
func readOnly(p auth.Permission) bool {
	return p == auth.TrackingRead || p == auth.RegistryRead
}

// runLimit refuses a run token's call to ep unless it reads or writes to
// the token's own run. body is the request's, decoded as the handler will
// decode it, so both see the same run id.
func runLimit(r *http.Request, ep endpoint, body []byte, caller *auth.Identity) error {
	if caller == nil || caller.RunID == "" || readOnly(ep.perm) {
		return nil
	}
	if !runWrites[ep.path] {
		return fault.New(fault.PermissionDenied, "Permission denied: this token is limited to run '%s' and may not call %s", caller.RunID, ep.path)
	}
	var m runIDMsg
	if err := decode(r, body, &m); err != nil {
		return err
	}
	if err := required("run_id", m.id() != ""); err != nil {
		return err
	}
	if m.id() != caller.RunID {
		return fault.New(fault.PermissionDenied, "Permission denied: this token is limited to run '%s' and may not write to run '%s'", caller.RunID, clipAudit(m.id()))
	}
	return nil
}

// runArtifactLimit refuses a run token's artifact write (upload, delete,
// multipart) to key unless key lies under its run's artifact root
// (<ws>/<experiment>/<run>/artifacts, or wherever the run's artifact URI
// points inside the workspace).
func (a *API) runArtifactLimit(r *http.Request, caller *auth.Identity, ws, key string) error {
	if caller == nil || caller.RunID == "" {
		return nil
	}
	sc, err := a.scope(r.Context(), ws)
	if err != nil {
		return err
	}
	ri, err := a.Tracking.GetRunInfo(r.Context(), sc, caller.RunID)
	if fault.Is(err, fault.NotFound) {
		return fault.New(fault.PermissionDenied, "Permission denied: this token is limited to run '%s', which is not in workspace '%s'", caller.RunID, ws)
	}
	if err != nil {
		return err
	}
	root, ok := strings.CutPrefix(ri.ArtifactURI, "mlflow-artifacts:")
	root = strings.Trim(root, "/")
	if !ok || root == "" || (key != root && !strings.HasPrefix(key, root+"/")) {
		return fault.New(fault.PermissionDenied, "Permission denied: this token is limited to run '%s' and may only write artifacts under %s", caller.RunID, ri.ArtifactURI)
	}
	return nil
}

// deniedMessage is the 403 message for a caller without perm in ws.
func deniedMessage(caller *auth.Identity, ws string, perm auth.Permission) string {
	if caller.RunID != "" {
		return "Permission denied: this token is limited to run '" + caller.RunID + "' and may not do this in workspace '" + ws + "' (needs " + string(perm) + ")"
	}
	return "Permission denied: " + caller.Principal + " may not do this in workspace '" + ws + "' (needs " + string(perm) + ")"
}
