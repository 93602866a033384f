package jobs

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/plinth-dev/plinth/internal/artifact"
	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/registry"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/tracking"
)

// SubmitInput is a job submission: the job file as written (YAML or
// JSON), the digest of its code folder uploaded with UploadCode, and the
// data paths that replace local input paths (the CLI uploads those as
// data assets first).
type SubmitInput struct {
	JobFile  string `json:"job_file"`
	FileName string `json:"file_name,omitempty"`
	// Name replaces the job file's name, as `az ml job create --name`
	// does, so one file can be submitted many times under chosen names.
	Name       string            `json:"name,omitempty"`
	CodeDigest string            `json:"code_digest,omitempty"`
	Inputs     map[string]string `json:"inputs,omitempty"`
}

// MaxCodeBytes bounds an uploaded code snapshot (compressed).
const MaxCodeBytes = 512 << 20

// Submit queues a command job: it checks that the job can ever run,
// creates its MLflow run (whose id the job takes) and queues it.
func (s *Service) Submit(ctx context.Context, sc compute.Scope, in SubmitInput) (Job, error) {
	spec, err := Parse([]byte(in.JobFile), in.FileName)
	if err != nil {
		return Job{}, err
	}
	if in.Name != "" {
		spec.Name = in.Name
		if err := spec.Validate(); err != nil {
			return Job{}, err
		}
	}
	for name, p := range in.Inputs {
		inp, ok := spec.Inputs[name]
		if !ok {
			return Job{}, fault.InvalidField("inputs", "%q is not an input of the job (it has %s)", clip(name), strings.Join(sortedKeys(spec.Inputs), ", "))
		}
		inp.Path = p
		spec.Inputs[name] = inp
	}
	// Data inputs must be something the server can reach; a data asset
	// named by @latest is pinned to its version now, so a rerun reads the
	// same bytes.
	for name, inp := range spec.Inputs {
		if inp.IsLiteral() || inp.Path == "" {
			continue
		}
		src, err := ParseSource(inp.Path)
		if err != nil {
			return Job{}, fault.InvalidField("inputs."+name+".path", "%v", err)
		}
		switch src.Kind {
		case SourceLocal:
			return Job{}, fault.InvalidField("inputs."+name+".path", "%q is a path on the submitting machine; `plinth job create` uploads it as a data asset, or create one with `plinth data create` and name it data:<name>:<version>", clip(inp.Path))
		case SourceAsset:
			v, err := s.Registry.GetDataVersion(ctx, tracking.Scope{WorkspaceID: sc.WorkspaceID, Workspace: sc.Workspace}, src.Asset, src.Version)
			if err != nil {
				return Job{}, fault.InvalidField("inputs."+name+".path", "%v", errorMessage(err))
			}
			if v.Storage != registry.StorageUpload && v.Storage != registry.StorageArtifact && inp.Mode != "direct" {
				return Job{}, fault.InvalidField("inputs."+name+".mode", "%s is a reference to %s that Plinth cannot read; give mode: direct to pass the path to the job as it is", v.URI, clip(v.Path))
			}
			inp.Path = v.URI
			spec.Inputs[name] = inp
		}
	}
	if spec.Code != "" {
		if in.CodeDigest == "" {
			return Job{}, fault.InvalidField("code_digest", "the job has a code folder (%s): upload it first (POST .../jobs/code), as `plinth job create` does", clip(spec.Code))
		}
		r, _, err := s.code.Open(ctx, codeKey(sc.Workspace, in.CodeDigest))
		if err != nil {
			return Job{}, fault.InvalidField("code_digest", "no code snapshot %s was uploaded to this workspace", clip(in.CodeDigest))
		}
		r.Close()
	} else if in.CodeDigest != "" {
		return Job{}, fault.InvalidField("code_digest", "the job file names no code folder")
	}

	// Where it runs, and whether it ever can.
	target, sku, err := s.resolveTarget(ctx, sc, spec)
	if err != nil {
		return Job{}, err
	}
	count := max(spec.Resources.InstanceCount, 1)
	limits, err := s.Compute.QuotaLimits(ctx, s.DB.Read())
	if err != nil {
		return Job{}, err
	}
	var quota *Quota
	if q, ok := limits[[2]string{sc.WorkspaceID, sku.Family}]; ok {
		quota = &Quota{VCPUs: q[0], GPUs: q[1]}
	}
	if why := NeverFits(target, count, s.executorTotal(), quota); why != "" {
		return Job{}, fault.New(fault.Invalid, "this job can never run: %s", why)
	}

	tsc := tracking.Scope{WorkspaceID: sc.WorkspaceID, Workspace: sc.Workspace}
	experimentID := tracking.DefaultExperimentID
	if spec.ExperimentName != "" {
		e, err := s.Tracking.GetExperimentByName(ctx, tsc, spec.ExperimentName)
		switch {
		case err == nil:
			experimentID = e.ExperimentID
		case fault.Is(err, fault.NotFound):
			if experimentID, err = s.Tracking.CreateExperiment(ctx, tsc, spec.ExperimentName, "", nil); err != nil && !fault.Is(err, fault.AlreadyExists) {
				return Job{}, err
			} else if err != nil {
				e, err := s.Tracking.GetExperimentByName(ctx, tsc, spec.ExperimentName)
				if err != nil {
					return Job{}, err
				}
				experimentID = e.ExperimentID
			}
		default:
			return Job{}, err
		}
	}
	name := spec.Name
	if name == "" {
		name = randomJobName()
	}
	runName := spec.DisplayName
	if runName == "" {
		runName = name
	}
	tags := []tracking.Tag{{Key: "mlflow.source.type", Value: "JOB"}, {Key: "mlflow.source.name", Value: clipTo(spec.Command, 500)}}
	for k, v := range spec.Tags {
		tags = append(tags, tracking.Tag{Key: k, Value: v})
	}
	run, err := s.Tracking.CreateRun(ctx, tsc, tracking.CreateRunInput{ExperimentID: experimentID, RunName: runName, Tags: tags})
	if err != nil {
		return Job{}, err
	}
	caller := audit.CallerFrom(ctx)
	now := s.Now().UTC().Truncate(1e6)
	j := Job{ID: run.Info.RunID, Name: name, DisplayName: spec.DisplayName, Workspace: sc.Workspace, ExperimentID: experimentID,
		Status: StatusQueued, Priority: spec.Priority, Compute: target.Name, InstanceType: sku.Name, InstanceCount: count,
		CodeDigest: in.CodeDigest, MaxRetries: spec.Retries.Max, TimeoutSeconds: spec.Limits.Timeout, SubmittedBy: caller.Principal,
		Team: sc.Team, SubmittedAt: now, Spec: spec, workspaceID: sc.WorkspaceID, submitKey: caller.KeyID}
	if target.Ephemeral {
		j.Compute = compute.ServerlessName
	}
	raw, _ := json.Marshal(spec)
	err = s.DB.Tx(ctx, func(tx store.Querier) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO jobs (id, workspace_id, workspace, name, display_name, experiment_id, spec, status, reason, priority, compute, sku,
			instance_count, code_digest, max_retries, timeout_seconds, submitted_by, submitted_key, team, submitted_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			j.ID, sc.WorkspaceID, sc.Workspace, j.Name, j.DisplayName, j.ExperimentID, string(raw), j.Status, j.Priority, j.Compute, j.InstanceType,
			j.InstanceCount, j.CodeDigest, j.MaxRetries, j.TimeoutSeconds, j.SubmittedBy, j.submitKey, j.Team, now.UnixMilli()); err != nil {
			if store.IsUniqueViolation(err) {
				return fault.New(fault.AlreadyExists, "a job named %s already exists in workspace %s; job names are unique", j.Name, sc.Workspace)
			}
			return fmt.Errorf("queueing job: %w", err)
		}
		return s.Audit.Append(ctx, tx, audit.Record{Action: "job.create", Resource: jobResource(sc.Workspace, j.Name), Workspace: sc.Workspace,
			Details: map[string]any{"id": j.ID, "compute": j.Compute, "instance_type": j.InstanceType, "instance_count": j.InstanceCount, "code_digest": j.CodeDigest}})
	})
	if err != nil {
		_ = s.Tracking.DeleteRun(context.WithoutCancel(ctx), tsc, run.Info.RunID)
		return Job{}, err
	}
	s.kick()
	return j, nil
}

// resolveTarget finds where a job runs: its named cluster, or the
// workspace's serverless pool in the SKU it names.
func (s *Service) resolveTarget(ctx context.Context, sc compute.Scope, spec Spec) (*PlanTarget, compute.SKU, error) {
	if spec.Compute != "" {
		t, err := s.Compute.Target(ctx, sc, spec.Compute)
		if err != nil {
			return nil, compute.SKU{}, fault.InvalidField("compute", "%v", errorMessage(err))
		}
		if t.Kind != compute.KindCluster {
			return nil, compute.SKU{}, fault.InvalidField("compute", "%s is a compute %s; jobs run on clusters or on serverless compute (resources.instance_type)", t.Name, t.Kind)
		}
		if spec.Resources.InstanceType != "" && !strings.EqualFold(spec.Resources.InstanceType, t.Size) {
			return nil, compute.SKU{}, fault.InvalidField("resources.instance_type", "%s's nodes are %s, not %s", t.Name, t.Size, spec.Resources.InstanceType)
		}
		return &PlanTarget{Key: sc.WorkspaceID + "/" + t.Name, Name: t.Name, Workspace: sc.WorkspaceID, Family: t.SKU.Family,
			PerNode: amountOf(t.SKU), Max: t.MaxInstances}, t.SKU, nil
	}
	sku, err := s.Compute.SKUs().Get(spec.Resources.InstanceType)
	if err != nil {
		return nil, compute.SKU{}, fault.InvalidField("resources.instance_type", "%v", errorMessage(err))
	}
	return &PlanTarget{Key: serverlessKey(sc.WorkspaceID, sku.Name), Name: "serverless " + sku.Name, Workspace: sc.WorkspaceID, Family: sku.Family,
		PerNode: amountOf(sku), Max: 1 << 30, Ephemeral: true}, sku, nil
}

func serverlessKey(workspaceID, sku string) string {
	return workspaceID + "/serverless/" + strings.ToLower(sku)
}

func amountOf(sku compute.SKU) Amount {
	return Amount{VCPUs: sku.VCPUs, MemoryBytes: sku.MemoryBytes, GPUs: sku.GPUs}
}

// executorTotal is all the executor has.
func (s *Service) executorTotal() Amount {
	c := s.Executor.Capabilities()
	return Amount{VCPUs: c.CPUs, MemoryBytes: c.MemoryBytes, GPUs: len(c.GPUs)}
}

func errorMessage(err error) string {
	if fe, ok := fault.As(err); ok {
		return fe.Message
	}
	return err.Error()
}

func clipTo(s string, n int) string {
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}

var adjectives = []string{"amber", "brave", "calm", "dapper", "eager", "frosty", "gentle", "honest", "icy", "jolly", "keen", "lucid", "mellow", "nimble", "olive", "plucky", "quiet", "rapid", "sunny", "tidy"}
var nouns = []string{"apple", "badger", "cactus", "dingo", "ember", "falcon", "garden", "harbor", "iris", "jackal", "kettle", "lemon", "maple", "needle", "otter", "pepper", "quartz", "river", "salmon", "tiger"}

// randomJobName makes a readable unique-enough name, as Azure ML does.
func randomJobName() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return adjectives[int(b[0])%len(adjectives)] + "_" + nouns[int(b[1])%len(nouns)] + "_" + hex.EncodeToString(b[2:])
}

func codeKey(ws, digest string) string {
	return ws + "/" + strings.TrimPrefix(digest, "sha256:") + ".tar.gz"
}

// UploadCode stores a code snapshot (a tar.gz of the job's code folder)
// and returns its digest: the SHA-256 over its files as registry.DataDigest
// computes it for a folder, so the same files give the same digest
// whoever packed them. A snapshot already stored is not stored again.
func (s *Service) UploadCode(ctx context.Context, sc compute.Scope, body io.Reader) (digest string, files int, err error) {
	tmp, err := os.CreateTemp("", "plinth-code-*.tar.gz")
	if err != nil {
		return "", 0, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	n, err := io.Copy(tmp, io.LimitReader(body, MaxCodeBytes+1))
	if err != nil {
		return "", 0, fault.Wrap(fault.Invalid, err, "reading the code snapshot")
	}
	if n > MaxCodeBytes {
		return "", 0, fault.New(fault.TooLarge, "a code snapshot may be at most %d MiB compressed; keep data out of the code folder (.amlignore)", MaxCodeBytes>>20)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return "", 0, err
	}
	list, err := walkTarGz(tmp, nil)
	if err != nil {
		return "", 0, err
	}
	digest = registry.DataDigest(registry.TypeFolder, list)
	if digest == "" {
		return "", 0, fault.New(fault.Invalid, "the code snapshot holds no files")
	}
	key := codeKey(sc.Workspace, digest)
	if r, _, err := s.code.Open(ctx, key); err == nil {
		r.Close()
		return digest, len(list), nil
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return "", 0, err
	}
	if _, err := s.code.Put(ctx, key, tmp); err != nil {
		return "", 0, err
	}
	return digest, len(list), nil
}

// walkTarGz reads a tar.gz of regular files and folders, checks every
// name, hashes every file and, when extract is not nil, writes each file
// through it.
func walkTarGz(r io.Reader, extract func(name string, mode int64, body io.Reader) error) ([]registry.DataFile, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, fault.Wrap(fault.Invalid, err, "the code snapshot is not gzip data")
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	var files []registry.DataFile
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fault.Wrap(fault.Invalid, err, "the code snapshot is not a valid tar archive")
		}
		name := strings.TrimPrefix(strings.TrimPrefix(h.Name, "./"), "/")
		switch h.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
		default:
			return nil, fault.New(fault.Invalid, "the code snapshot holds %q, which is not a regular file (links and devices are not allowed)", clip(h.Name))
		}
		clean, err := artifact.CleanKey(name)
		if err != nil || clean != name {
			return nil, fault.New(fault.Invalid, "the code snapshot holds an unsafe path %q", clip(h.Name))
		}
		if seen[name] {
			return nil, fault.New(fault.Invalid, "the code snapshot holds %q twice", clip(name))
		}
		seen[name] = true
		if len(files) >= 100000 {
			return nil, fault.New(fault.Invalid, "the code snapshot holds more than 100000 files")
		}
		hash := sha256.New()
		var body io.Reader = io.TeeReader(tr, hash)
		if extract != nil {
			if err := extract(name, h.Mode, body); err != nil {
				return nil, err
			}
		}
		size, err := io.Copy(io.Discard, body)
		if err != nil {
			return nil, fault.Wrap(fault.Invalid, err, "reading %s from the code snapshot", clip(name))
		}
		if extract != nil {
			size = h.Size
		}
		files = append(files, registry.DataFile{Path: name, Size: size, SHA256: hex.EncodeToString(hash.Sum(nil))})
	}
	return files, nil
}

// extractCode unpacks a job's code snapshot into dir.
func (s *Service) extractCode(ctx context.Context, ws, digest, dir string) error {
	r, _, err := s.code.Open(ctx, codeKey(ws, digest))
	if err != nil {
		return fmt.Errorf("opening code snapshot %s: %w", digest, err)
	}
	defer r.Close()
	return ExtractCode(r, dir)
}

// OpenCode opens a code snapshot of the workspace (a tar.gz), for work that
// extracts it where it runs.
func (s *Service) OpenCode(ctx context.Context, sc compute.Scope, digest string) (io.ReadCloser, error) {
	if !codeDigestRE.MatchString(digest) {
		return nil, fault.InvalidField("digest", "%q is not a code snapshot digest (sha256:<64 hex digits>)", clip(digest))
	}
	r, _, err := s.code.Open(ctx, codeKey(sc.Workspace, digest))
	if err != nil {
		return nil, fault.Wrap(fault.NotFound, err, "no code snapshot %s in workspace %s", digest, sc.Workspace)
	}
	return r, nil
}

var codeDigestRE = regexp.MustCompile(`^(sha256:)?[0-9a-f]{64}$`)

// ExtractCode unpacks a code snapshot (as UploadCode checked it) into dir.
func ExtractCode(r io.Reader, dir string) error {
	_, err := walkTarGz(r, func(name string, mode int64, body io.Reader) error {
		target := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		perm := os.FileMode(0o644)
		if mode&0o111 != 0 {
			perm = 0o755
		}
		f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, body); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
	return err
}
