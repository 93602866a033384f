package registry

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/tracking"
)

// Node kinds of the lineage graph. Deployments join the graph with the
// endpoints; their edges start at model versions (EdgeDeployed).
const (
	NodeData       = "data"
	NodeDataset    = "dataset"
	NodeRun        = "run"
	NodeModel      = "model"
	NodeDeployment = "deployment"
)

// Edge kinds: what went into a run, what a run produced (a model version
// or a data version registered from its outputs), where a model version
// is deployed.
const (
	EdgeInput    = "input"
	EdgeProduced = "produced"
	EdgeOutput   = "output"
	EdgeDeployed = "deployed"
)

// Node is one thing in the lineage graph, with a stable id:
// data:<name>:<version> (a data asset version), dataset:<name>:<digest>
// (a dataset MLflow logged that is not a data asset), run:<run_id> or
// model:<name>:<version>.
type Node struct {
	ID         string            `json:"id"`
	Kind       string            `json:"kind"`
	Label      string            `json:"label"`
	Attributes map[string]string `json:"attributes,omitempty"`
}

// Edge says that From went into To: data into a run (kind "input"), a
// run into a model version (kind "produced") or into a data version
// (kind "output").
type Edge struct {
	From string `json:"from"`
	To   string `json:"to"`
	Kind string `json:"kind"`
}

// Graph is the lineage around one node.
type Graph struct {
	Root      string `json:"root"`
	Direction string `json:"direction"`
	Depth     int    `json:"depth"`
	Nodes     []Node `json:"nodes"`
	Edges     []Edge `json:"edges"`
}

// Deployment is where a model version is (or was) served, as the
// endpoints' control plane reports it.
type Deployment struct {
	Endpoint   string    `json:"endpoint"`
	Deployment string    `json:"deployment"`
	Generation int64     `json:"generation"`
	DeployedBy string    `json:"deployed_by"`
	DeployedAt time.Time `json:"deployed_at"`
	Current    bool      `json:"current"`
}

// DeploymentFinder lists the deployments of a model version in a
// workspace; registry knows endpoints only through it.
type DeploymentFinder func(ctx context.Context, workspaceID, model, version string) ([]Deployment, error)

// SetDeploymentFinder connects the endpoints to lineage and traces.
func (s *Service) SetDeploymentFinder(f DeploymentFinder) { s.deployments = f }

// MaxLineageDepth bounds a lineage query.
const MaxLineageDepth = 20

// splitLast splits "name:tail" at its last colon: names may contain
// colons, versions, digests and run ids do not.
func splitLast(s string) (string, string, bool) {
	i := strings.LastIndex(s, ":")
	if i <= 0 || i == len(s)-1 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

// Lineage walks the graph from node up (towards what it came from), down
// (towards what was made from it) or both, at most depth steps.
func (s *Service) Lineage(ctx context.Context, sc tracking.Scope, node, direction string, depth int) (Graph, error) {
	if direction == "" {
		direction = "both"
	}
	if direction != "up" && direction != "down" && direction != "both" {
		return Graph{}, fault.InvalidField("direction", "%q is not a direction (want up, down or both)", direction)
	}
	if depth == 0 {
		depth = 5
	}
	if depth < 1 || depth > MaxLineageDepth {
		return Graph{}, fault.InvalidField("depth", "must be from 1 to %d", MaxLineageDepth)
	}
	g := &walker{s: s, ctx: ctx, sc: sc, nodes: map[string]Node{}, edges: map[Edge]bool{}}
	root, err := g.node(node)
	if err != nil {
		return Graph{}, err
	}
	for _, dir := range []string{"up", "down"} {
		if direction != "both" && direction != dir {
			continue
		}
		frontier := []Node{root}
		seen := map[string]bool{root.ID: true}
		for step := 0; step < depth && len(frontier) > 0; step++ {
			var next []Node
			for _, n := range frontier {
				neighbours, err := g.neighbours(n, dir)
				if err != nil {
					return Graph{}, err
				}
				for _, nb := range neighbours {
					if !seen[nb.ID] {
						seen[nb.ID] = true
						next = append(next, nb)
					}
				}
			}
			frontier = next
		}
	}
	out := Graph{Root: root.ID, Direction: direction, Depth: depth, Nodes: []Node{}, Edges: []Edge{}}
	for _, n := range g.nodes {
		out.Nodes = append(out.Nodes, n)
	}
	for e := range g.edges {
		out.Edges = append(out.Edges, e)
	}
	sort.Slice(out.Nodes, func(i, j int) bool { return out.Nodes[i].ID < out.Nodes[j].ID })
	sort.Slice(out.Edges, func(i, j int) bool {
		if out.Edges[i].From != out.Edges[j].From {
			return out.Edges[i].From < out.Edges[j].From
		}
		return out.Edges[i].To < out.Edges[j].To
	})
	return out, nil
}

type walker struct {
	s     *Service
	ctx   context.Context
	sc    tracking.Scope
	nodes map[string]Node
	edges map[Edge]bool
}

func (w *walker) add(n Node) Node {
	if old, ok := w.nodes[n.ID]; ok {
		return old
	}
	w.nodes[n.ID] = n
	return n
}

// node resolves a node id to an existing thing of the workspace.
func (w *walker) node(id string) (Node, error) {
	kind, rest, _ := strings.Cut(id, ":")
	switch kind {
	case NodeModel:
		name, version, ok := splitLast(rest)
		if !ok {
			return Node{}, fault.InvalidField("node", "%q: a model node is model:<name>:<version>", id)
		}
		v, err := w.s.GetVersion(w.ctx, w.sc, name, version)
		if err != nil {
			return Node{}, err
		}
		return w.add(modelNode(v)), nil
	case NodeRun:
		run, err := w.s.tracking.GetRun(w.ctx, w.sc, rest)
		if err != nil {
			return Node{}, err
		}
		return w.add(runNode(run.Info)), nil
	case NodeDataset:
		name, digest, ok := splitLast(rest)
		if !ok {
			return Node{}, fault.InvalidField("node", "%q: a dataset node is dataset:<name>:<digest>", id)
		}
		d, found, err := w.s.tracking.DatasetExists(w.ctx, w.sc, tracking.DatasetRef{Name: name, Digest: digest})
		if err != nil {
			return Node{}, err
		}
		if !found {
			return Node{}, fault.New(fault.NotFound, "dataset %q with digest %q not found", name, digest)
		}
		return w.add(datasetNode(d, "")), nil
	case NodeData:
		name, version, ok := splitLast(rest)
		if !ok {
			return Node{}, fault.InvalidField("node", "%q: a data node is data:<name>:<version>", id)
		}
		v, err := w.s.GetDataVersion(w.ctx, w.sc, name, version)
		if err != nil {
			return Node{}, err
		}
		return w.add(dataNode(v)), nil
	}
	return Node{}, fault.InvalidField("node", "%q is not a node id (want data:<name>:<version>, model:<name>:<version>, run:<id> or dataset:<name>:<digest>)", id)
}

func dataNode(v DataVersion) Node {
	attrs := map[string]string{"type": v.Type, "storage": v.Storage, "path": v.Path, "region": v.Region,
		"created_by": v.CreatedBy, "created_at": v.CreatedAt.Format(time.RFC3339)}
	if v.Digest != "" {
		attrs["digest"] = v.Digest
	}
	if v.LocalOnly {
		attrs["host"] = v.Host
	}
	return Node{ID: "data:" + v.Name + ":" + v.Version, Kind: NodeData, Label: v.Name + ":" + v.Version, Attributes: attrs}
}

func modelNode(v Version) Node {
	return Node{ID: "model:" + v.Name + ":" + v.Version, Kind: NodeModel, Label: v.Name + " v" + v.Version,
		Attributes: map[string]string{"stage": v.CurrentStage, "source": v.Source, "registered_by": v.UserID,
			"registered_at": strconv.FormatInt(v.CreationTime, 10)}}
}

func runNode(ri tracking.RunInfo) Node {
	attrs := map[string]string{"status": ri.Status, "experiment_id": ri.ExperimentID, "user_id": ri.UserID}
	return Node{ID: "run:" + ri.RunID, Kind: NodeRun, Label: ri.RunName, Attributes: attrs}
}

func datasetNode(d tracking.Dataset, context string) Node {
	attrs := map[string]string{"source_type": d.SourceType, "source": d.Source}
	return Node{ID: "dataset:" + d.Name + ":" + d.Digest, Kind: NodeDataset, Label: d.Name + "@" + d.Digest, Attributes: attrs}
}

// neighbours adds and returns the nodes one step from n in a direction,
// with the edges between them.
func (w *walker) neighbours(n Node, dir string) ([]Node, error) {
	var out []Node
	link := func(from, to Node, kind string) {
		w.edges[Edge{From: from.ID, To: to.ID, Kind: kind}] = true
	}
	switch {
	case n.Kind == NodeModel && dir == "up":
		name, version, _ := splitLast(strings.TrimPrefix(n.ID, "model:"))
		v, err := w.s.GetVersion(w.ctx, w.sc, name, version)
		if err != nil {
			return nil, err
		}
		if v.RunID == "" {
			return nil, nil
		}
		run, err := w.s.tracking.GetRun(w.ctx, w.sc, v.RunID)
		if fault.Is(err, fault.NotFound) {
			return nil, nil // the run was in another workspace or is gone
		}
		if err != nil {
			return nil, err
		}
		r := w.add(runNode(run.Info))
		link(r, n, EdgeProduced)
		out = append(out, r)
	case n.Kind == NodeRun && dir == "up":
		run, err := w.s.tracking.GetRun(w.ctx, w.sc, strings.TrimPrefix(n.ID, "run:"))
		if err != nil {
			return nil, err
		}
		for _, in := range run.Inputs {
			// A dataset that names a data asset version is that version.
			dv, err := w.s.dataVersionOf(w.ctx, w.sc, in.Dataset)
			if err != nil {
				return nil, err
			}
			var d Node
			if dv != nil {
				d = w.add(dataNode(*dv))
			} else {
				d = w.add(datasetNode(in.Dataset, ""))
			}
			link(d, n, EdgeInput)
			out = append(out, d)
		}
	case n.Kind == NodeData && dir == "up":
		v, err := w.dataOf(n)
		if err != nil || v.SourceRunID == "" {
			return nil, err
		}
		run, err := w.s.tracking.GetRun(w.ctx, w.sc, v.SourceRunID)
		if fault.Is(err, fault.NotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		r := w.add(runNode(run.Info))
		link(r, n, EdgeOutput)
		out = append(out, r)
	case n.Kind == NodeData && dir == "down":
		v, err := w.dataOf(n)
		if err != nil {
			return nil, err
		}
		runs, err := w.s.runsUsingData(w.ctx, w.sc, v)
		if err != nil {
			return nil, err
		}
		for _, ri := range runs {
			r := w.add(runNode(ri))
			link(n, r, EdgeInput)
			out = append(out, r)
		}
	case n.Kind == NodeModel && dir == "down" && w.s.deployments != nil:
		name, version, _ := splitLast(strings.TrimPrefix(n.ID, "model:"))
		deps, err := w.s.deployments(w.ctx, w.sc.WorkspaceID, name, version)
		if err != nil {
			return nil, err
		}
		for _, d := range deps {
			attrs := map[string]string{"deployed_by": d.DeployedBy, "deployed_at": d.DeployedAt.Format(time.RFC3339), "current": strconv.FormatBool(d.Current)}
			dn := w.add(Node{ID: "deployment:" + d.Endpoint + "/" + d.Deployment, Kind: NodeDeployment, Label: d.Endpoint + "/" + d.Deployment, Attributes: attrs})
			link(n, dn, EdgeDeployed)
			out = append(out, dn)
		}
	case n.Kind == NodeRun && dir == "down":
		vs, err := w.s.versions(w.ctx, w.s.db.Read(), `NOT v.deleted AND v.run_id = ? AND v.model_pk IN (SELECT pk FROM registered_models WHERE workspace_id = ?)`,
			[]any{strings.TrimPrefix(n.ID, "run:"), w.sc.WorkspaceID}, "v.name, v.version", 0, 0)
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			m := w.add(modelNode(v))
			link(n, m, EdgeProduced)
			out = append(out, m)
		}
		dvs, err := w.s.dataVersions(w.ctx, w.s.db.Read(), `v.workspace_id = ? AND v.source_run_id = ?`,
			[]any{w.sc.WorkspaceID, strings.TrimPrefix(n.ID, "run:")}, "v.name, v.seq", 0)
		if err != nil {
			return nil, err
		}
		for _, dv := range dvs {
			d := w.add(dataNode(dv))
			link(n, d, EdgeOutput)
			out = append(out, d)
		}
	case n.Kind == NodeDataset && dir == "down":
		name, digest, _ := splitLast(strings.TrimPrefix(n.ID, "dataset:"))
		runs, err := w.s.tracking.RunsUsingDataset(w.ctx, w.sc, tracking.DatasetRef{Name: name, Digest: digest})
		if err != nil {
			return nil, err
		}
		for _, ri := range runs {
			r := w.add(runNode(ri))
			link(n, r, EdgeInput)
			out = append(out, r)
		}
	}
	return out, nil
}

func (w *walker) dataOf(n Node) (DataVersion, error) {
	name, version, _ := splitLast(strings.TrimPrefix(n.ID, "data:"))
	return w.s.GetDataVersion(w.ctx, w.sc, name, version)
}

// Trace is a model version's traceability record (I2): who registered
// it, when and with which key; the run that produced it with its code
// version and environment; and the data it was trained on.
type Trace struct {
	Model        string            `json:"model"`
	Version      string            `json:"version"`
	Stage        string            `json:"stage"`
	Source       string            `json:"source"`
	RegisteredBy string            `json:"registered_by"`
	RegisteredAt int64             `json:"registered_at"`
	KeyID        string            `json:"key_id,omitempty"`
	Run          *RunTrace         `json:"run,omitempty"`
	Datasets     []DataTrace       `json:"datasets"`
	Tags         map[string]string `json:"tags,omitempty"`
	// Deployments are where the version is, or was, served: who deployed
	// it, when (I2).
	Deployments []Deployment `json:"deployments"`
}

// RunTrace is what the trace says about the producing run.
type RunTrace struct {
	RunID        string            `json:"run_id"`
	RunName      string            `json:"run_name"`
	ExperimentID string            `json:"experiment_id"`
	UserID       string            `json:"user_id"`
	Principal    string            `json:"principal,omitempty"`
	KeyID        string            `json:"key_id,omitempty"`
	Status       string            `json:"status"`
	StartTime    *int64            `json:"start_time,omitempty"`
	EndTime      *int64            `json:"end_time,omitempty"`
	GitCommit    string            `json:"git_commit,omitempty"`
	Source       string            `json:"source,omitempty"`
	Environment  map[string]string `json:"environment,omitempty"`
}

// DataTrace is one dataset the run used: as MLflow logged it and, when
// it names a data asset version, that version.
type DataTrace struct {
	Name       string       `json:"name"`
	Digest     string       `json:"digest"`
	SourceType string       `json:"source_type"`
	Source     string       `json:"source"`
	Context    string       `json:"context,omitempty"`
	Asset      *DataVersion `json:"asset,omitempty"`
}

// TraceVersion assembles a model version's traceability record.
func (s *Service) TraceVersion(ctx context.Context, sc tracking.Scope, name, version string) (Trace, error) {
	v, err := s.GetVersion(ctx, sc, name, version)
	if err != nil {
		return Trace{}, err
	}
	t := Trace{Model: v.Name, Version: v.Version, Stage: v.CurrentStage, Source: v.Source, RegisteredBy: v.UserID,
		RegisteredAt: v.CreationTime, KeyID: v.KeyID, Datasets: []DataTrace{}, Deployments: []Deployment{}}
	if s.deployments != nil {
		deps, err := s.deployments(ctx, sc.WorkspaceID, v.Name, v.Version)
		if err != nil {
			return Trace{}, err
		}
		t.Deployments = append(t.Deployments, deps...)
	}
	if len(v.Tags) > 0 {
		t.Tags = map[string]string{}
		for _, tag := range v.Tags {
			t.Tags[tag.Key] = tag.Value
		}
	}
	if v.RunID == "" {
		return t, nil
	}
	run, err := s.tracking.GetRun(ctx, sc, v.RunID)
	if fault.Is(err, fault.NotFound) {
		return t, nil
	}
	if err != nil {
		return Trace{}, err
	}
	rt := &RunTrace{RunID: run.Info.RunID, RunName: run.Info.RunName, ExperimentID: run.Info.ExperimentID, UserID: run.Info.UserID,
		Status: run.Info.Status, StartTime: run.Info.StartTime, EndTime: run.Info.EndTime, Environment: map[string]string{}}
	for _, tag := range run.Tags {
		switch {
		case tag.Key == "mlflow.source.git.commit":
			rt.GitCommit = tag.Value
		case tag.Key == "mlflow.source.name":
			rt.Source = tag.Value
		case tag.Key == tracking.TagPrincipal:
			rt.Principal = tag.Value
		case tag.Key == tracking.TagKeyID:
			rt.KeyID = tag.Value
		case strings.HasPrefix(tag.Key, "mlflow.source.") || strings.HasPrefix(tag.Key, "mlflow.docker.") ||
			strings.HasPrefix(tag.Key, "mlflow.project.") || tag.Key == tracking.TagLogModelHistory:
			rt.Environment[tag.Key] = tag.Value
		}
	}
	t.Run = rt
	for _, in := range run.Inputs {
		dt := DataTrace{Name: in.Dataset.Name, Digest: in.Dataset.Digest, SourceType: in.Dataset.SourceType, Source: in.Dataset.Source}
		for _, tag := range in.Tags {
			if tag.Key == "mlflow.data.context" {
				dt.Context = tag.Value
			}
		}
		if dt.Asset, err = s.dataVersionOf(ctx, sc, in.Dataset); err != nil {
			return Trace{}, err
		}
		t.Datasets = append(t.Datasets, dt)
	}
	return t, nil
}
