package registry

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/artifact"
	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/tracking"
)

// Data asset types, as Azure ML names them.
const (
	TypeFile   = "uri_file"
	TypeFolder = "uri_folder"
)

// Where a data version's bytes are.
const (
	// StorageUpload: uploaded into Plinth's store, in an area the
	// artifact routes cannot write, so the bytes cannot change.
	StorageUpload = "upload"
	// StorageArtifact: files already in Plinth's artifact store (a run's
	// output), referenced in place, not copied.
	StorageArtifact = "artifact"
	// StorageBlob: a URL of a store Plinth does not manage (S3, Azure
	// Blob, HTTP...), recorded as given.
	StorageBlob = "blob"
	// StorageLocal: a path on one machine, recorded and not copied;
	// nothing on another machine can read it.
	StorageLocal = "local"
)

// Limits of data assets.
const (
	MaxDataFiles          = 100000
	MaxDataNameLength     = 255
	MaxDataDescription    = 5000
	MaxDataTags           = 50
	MaxDataTagKeyLength   = 250
	MaxDataTagValueLength = 5000
	MaxDataPathLength     = 4096
)

// DataFile is one file of a data version. Path is relative to the
// version's root (for a uri_file, the file's own name).
type DataFile struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
	// blobKey is where the bytes are, in the store named by the
	// version's storage.
	blobKey string
}

// DataVersion is one immutable version of a data asset.
type DataVersion struct {
	pk      int64
	Name    string `json:"name"`
	Version string `json:"version"`
	// URI is how jobs and MLflow dataset sources name this version.
	URI     string `json:"uri"`
	Type    string `json:"type"`
	Storage string `json:"storage"`
	// Path is where the bytes are: the URL or local path of a reference,
	// the artifact URI of files in Plinth's artifact store, or the API
	// path that serves an upload's files.
	Path string `json:"path"`
	// Host is the machine a local path is on.
	Host string `json:"host,omitempty"`
	// LocalOnly flags a path that only one machine can read.
	LocalOnly bool `json:"local_only"`
	// Origin is where an upload came from (host:path), for provenance.
	Origin string `json:"origin,omitempty"`
	// Digest is sha256:<hex> over the files (see DataDigest); empty when
	// unknown. DigestVerified says Plinth computed it from the bytes
	// rather than taking the client's word.
	Digest         string            `json:"digest,omitempty"`
	DigestVerified bool              `json:"digest_verified"`
	SizeBytes      int64             `json:"size_bytes"`
	FileCount      int64             `json:"file_count"`
	Region         string            `json:"region"`
	Description    string            `json:"description"`
	Tags           map[string]string `json:"tags"`
	SourceRunID    string            `json:"source_run_id,omitempty"`
	Archived       bool              `json:"archived"`
	CreatedBy      string            `json:"created_by"`
	CreatedKey     string            `json:"created_key,omitempty"`
	CreatedAt      time.Time         `json:"created_at"`
	storageKey     string
}

// DataAsset summarises a named asset and its versions.
type DataAsset struct {
	Name          string    `json:"name"`
	LatestVersion string    `json:"latest_version,omitempty"`
	Versions      int       `json:"versions"`
	CreatedBy     string    `json:"created_by"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
}

// DataScope is the workspace a data call acts in, with the region policy
// that data versions must satisfy (G2).
type DataScope struct {
	tracking.Scope
	Region         string
	AllowedRegions []string
}

// DataReference is the request to record a version whose bytes are
// elsewhere: a blob URL, files in Plinth's artifact store (runs:/ or
// mlflow-artifacts:/), or a path on a machine.
type DataReference struct {
	Version     string            `json:"version,omitempty"`
	Type        string            `json:"type,omitempty"`
	Path        string            `json:"path"`
	Host        string            `json:"host,omitempty"`
	Files       []DataFile        `json:"files,omitempty"`
	Region      string            `json:"region,omitempty"`
	Description string            `json:"description,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
}

// DataCreated is the answer to a create: the version, and whether it is
// new (false when the same content already was a version of the asset).
type DataCreated struct {
	Version DataVersion `json:"version"`
	Created bool        `json:"created"`
}

// DataUpdate changes what may change on an immutable version.
type DataUpdate struct {
	Description *string           `json:"description,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	RemoveTags  []string          `json:"remove_tags,omitempty"`
	Archived    *bool             `json:"archived,omitempty"`
}

var dataNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
var dataVersionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ValidDataName checks an asset name: letters, digits, '.', '_' and '-',
// starting with a letter or digit, as Azure ML requires.
func ValidDataName(name string) error {
	switch {
	case name == "":
		return fault.InvalidField("name", "a data asset needs a name")
	case len(name) > MaxDataNameLength:
		return fault.InvalidField("name", "is %d characters long; at most %d are allowed", len(name), MaxDataNameLength)
	case !dataNameRE.MatchString(name):
		return fault.InvalidField("name", "%q may contain only letters, digits, '.', '_' and '-', and must start with a letter or digit", clipText(name))
	}
	return nil
}

func validDataVersion(v string) error {
	if v == "latest" {
		return fault.InvalidField("version", "\"latest\" names the newest version; it cannot be a version's own name")
	}
	if !dataVersionRE.MatchString(v) {
		return fault.InvalidField("version", "%q must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", clipText(v))
	}
	return nil
}

func validDataType(t string) error {
	if t != TypeFile && t != TypeFolder {
		return fault.InvalidField("type", "%q is not a data type (want uri_file or uri_folder)", clipText(t))
	}
	return nil
}

func validDataMeta(description string, tags map[string]string) error {
	if len(description) > MaxDataDescription {
		return fault.InvalidField("description", "is %d bytes long; at most %d are allowed", len(description), MaxDataDescription)
	}
	if len(tags) > MaxDataTags {
		return fault.InvalidField("tags", "has %d tags; at most %d are allowed", len(tags), MaxDataTags)
	}
	for k, v := range tags {
		switch {
		case k == "":
			return fault.InvalidField("tags", "a tag key cannot be empty")
		case len(k) > MaxDataTagKeyLength:
			return fault.InvalidField("tags", "key %q is longer than %d bytes", clipText(k), MaxDataTagKeyLength)
		case len(v) > MaxDataTagValueLength:
			return fault.InvalidField("tags", "the value of %q is longer than %d bytes", clipText(k), MaxDataTagValueLength)
		}
	}
	return nil
}

// checkRegion applies the workspace's region policy to a version's region
// ("" means the workspace's own) and returns the region to record.
func checkRegion(ds DataScope, region string) (string, error) {
	if region == "" {
		region = ds.Region
	}
	if !slices.Contains(ds.AllowedRegions, region) && region != ds.Region {
		return "", fault.InvalidField("region", "%q is outside workspace %s's allowed regions (%s): its data may not be stored there",
			clipText(region), ds.Workspace, strings.Join(ds.AllowedRegions, ", "))
	}
	return region, nil
}

// validFiles checks a manifest: relative, clean, unique paths, sizes and
// SHA-256 digests in the form Plinth writes them.
func validFiles(typ string, files []DataFile, needSHA bool) error {
	if len(files) == 0 {
		return fault.InvalidField("files", "list at least one file")
	}
	if len(files) > MaxDataFiles {
		return fault.InvalidField("files", "lists %d files; a data version holds at most %d", len(files), MaxDataFiles)
	}
	if typ == TypeFile && len(files) != 1 {
		return fault.InvalidField("files", "a uri_file version is one file, not %d (use uri_folder)", len(files))
	}
	seen := make(map[string]bool, len(files))
	for i, f := range files {
		clean, err := artifact.CleanKey(f.Path)
		if err != nil || clean != f.Path {
			return fault.InvalidField(fmt.Sprintf("files[%d].path", i), "%q is not a clean relative path (no leading '/', '.', '..' or empty segments)", clipText(f.Path))
		}
		if seen[f.Path] {
			return fault.InvalidField(fmt.Sprintf("files[%d].path", i), "%q is listed twice", clipText(f.Path))
		}
		seen[f.Path] = true
		if f.Size < 0 {
			return fault.InvalidField(fmt.Sprintf("files[%d].size", i), "cannot be negative")
		}
		if f.SHA256 != "" && !sha256RE.MatchString(f.SHA256) {
			return fault.InvalidField(fmt.Sprintf("files[%d].sha256", i), "must be 64 lower-case hex digits")
		}
		if needSHA && f.SHA256 == "" {
			return fault.InvalidField(fmt.Sprintf("files[%d].sha256", i), "is required")
		}
	}
	// A file cannot also be a folder of other files.
	sorted := make([]string, 0, len(files))
	for _, f := range files {
		sorted = append(sorted, f.Path)
	}
	sort.Strings(sorted)
	for i := 1; i < len(sorted); i++ {
		if strings.HasPrefix(sorted[i], sorted[i-1]+"/") {
			return fault.InvalidField("files", "%q is a file and also a folder holding %q", clipText(sorted[i-1]), clipText(sorted[i]))
		}
	}
	return nil
}

// DataDigest is the content digest of a version: for a uri_file the
// SHA-256 of its bytes; for a uri_folder the SHA-256 of the lines
// "<sha256 hex>  <path>\n" of its files sorted by path (what sha256sum
// prints), so the same bytes under the same names give the same digest
// wherever they are stored. It is "" when a file's SHA-256 is unknown.
func DataDigest(typ string, files []DataFile) string {
	if len(files) == 0 {
		return ""
	}
	for _, f := range files {
		if f.SHA256 == "" {
			return ""
		}
	}
	if typ == TypeFile {
		return "sha256:" + files[0].SHA256
	}
	sorted := slices.Clone(files)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	h := sha256.New()
	for _, f := range sorted {
		fmt.Fprintf(h, "%s  %s\n", f.SHA256, f.Path)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func dataResource(ws, name, version string) string {
	r := "workspaces/" + ws + "/data/" + name
	if version != "" {
		r += "/versions/" + version
	}
	return r
}

// DataURI is how a job input or an MLflow dataset source names a version.
func DataURI(name, version string) string { return "data:" + name + ":" + version }

// filesPath is the API path serving an upload's files.
func filesPath(ws, name, version string) string {
	return "/api/v1/workspaces/" + url.PathEscape(ws) + "/data/" + url.PathEscape(name) + "/versions/" + url.PathEscape(version) + "/files"
}

// blobSchemes are the URL schemes of stores Plinth records but does not
// read.
var blobSchemes = map[string]bool{"s3": true, "s3a": true, "gs": true, "azblob": true, "wasbs": true, "wasb": true, "abfss": true,
	"abfs": true, "adl": true, "azureml": true, "https": true, "http": true, "hdfs": true}

// s3RegionRE finds the region in S3 endpoint host names
// (bucket.s3.eu-west-1.amazonaws.com, s3.eu-west-1.amazonaws.com).
var s3RegionRE = regexp.MustCompile(`(?:^|\.)s3[.-]([a-z]{2}(?:-gov)?-[a-z]+-\d)\.amazonaws\.com$`)

// regionOfURL is the region a blob URL names, when it names one.
func regionOfURL(u *url.URL) string {
	if r := u.Query().Get("region"); r != "" {
		return r
	}
	if m := s3RegionRE.FindStringSubmatch(u.Hostname()); m != nil {
		return m[1]
	}
	return ""
}

// CreateDataReference records a version whose bytes are not uploaded: a
// blob URL, files already in the artifact store, or a local path.
func (s *Service) CreateDataReference(ctx context.Context, ds DataScope, name string, in DataReference) (DataCreated, error) {
	if err := ValidDataName(name); err != nil {
		return DataCreated{}, err
	}
	if in.Version != "" {
		if err := validDataVersion(in.Version); err != nil {
			return DataCreated{}, err
		}
	}
	if err := validDataMeta(in.Description, in.Tags); err != nil {
		return DataCreated{}, err
	}
	if in.Path == "" {
		return DataCreated{}, fault.InvalidField("path", "required: a blob URL, runs:/<run>/<path>, mlflow-artifacts:/..., or an absolute local path")
	}
	if len(in.Path) > MaxDataPathLength {
		return DataCreated{}, fault.InvalidField("path", "is longer than %d bytes", MaxDataPathLength)
	}
	if in.Type != "" {
		if err := validDataType(in.Type); err != nil {
			return DataCreated{}, err
		}
	}
	v := DataVersion{Name: name, Type: in.Type, Description: in.Description, Tags: in.Tags, Host: in.Host}
	files := in.Files
	switch scheme, _, _ := strings.Cut(in.Path, ":"); {
	case strings.HasPrefix(in.Path, "runs:/") || strings.HasPrefix(in.Path, "mlflow-artifacts:/"):
		if len(in.Files) > 0 {
			return DataCreated{}, fault.InvalidField("files", "Plinth reads the files of %s itself; do not list them", clipText(in.Path))
		}
		var err error
		if v, files, err = s.artifactReference(ctx, ds, v, in.Path); err != nil {
			return DataCreated{}, err
		}
	case strings.HasPrefix(in.Path, "/") || strings.HasPrefix(in.Path, "file:"):
		p := in.Path
		if strings.HasPrefix(p, "file:") {
			u, err := url.Parse(p)
			if err != nil || u.Path == "" || (u.Host != "" && u.Host != "localhost") {
				return DataCreated{}, fault.InvalidField("path", "%q is not a file URL of an absolute path (file:///abs/path)", clipText(p))
			}
			p = u.Path
		}
		v.Storage, v.Path, v.LocalOnly = StorageLocal, path.Clean(p), true
	case scheme == "data" || (scheme == "azureml" && !strings.HasPrefix(in.Path, "azureml://")):
		return DataCreated{}, fault.InvalidField("path", "%q names a data asset; a version cannot point at another version", clipText(in.Path))
	case blobSchemes[strings.ToLower(scheme)]:
		u, err := url.Parse(in.Path)
		if err != nil || u.Host == "" {
			return DataCreated{}, fault.InvalidField("path", "%q is not a URL with a host or bucket", clipText(in.Path))
		}
		v.Storage, v.Path = StorageBlob, in.Path
		if in.Region == "" {
			in.Region = regionOfURL(u)
		}
	default:
		return DataCreated{}, fault.InvalidField("path", "%q is neither a blob URL (s3://, https://, azureml://, abfss://, gs://...), runs:/ or mlflow-artifacts:/ files, nor an absolute local path; relative paths are uploaded with `plinth data create`", clipText(in.Path))
	}
	if v.Storage != StorageLocal && in.Host != "" {
		return DataCreated{}, fault.InvalidField("host", "only a local path is on a host")
	}
	if v.Type == "" {
		v.Type = TypeFolder
	}
	if len(files) > 0 {
		if err := validFiles(v.Type, files, false); err != nil {
			return DataCreated{}, err
		}
	}
	region, err := checkRegion(ds, in.Region)
	if err != nil {
		return DataCreated{}, err
	}
	v.Region = region
	v.Digest = DataDigest(v.Type, files)
	v.DigestVerified = v.Storage == StorageArtifact
	return s.insertDataVersion(ctx, ds, v, in.Version, files, nil)
}

// artifactReference resolves runs:/ and mlflow-artifacts:/ paths of this
// workspace to their keys and reads the files' digests.
func (s *Service) artifactReference(ctx context.Context, ds DataScope, v DataVersion, p string) (DataVersion, []DataFile, error) {
	if s.artifacts == nil {
		return v, nil, fault.New(fault.FailedPrecondition, "this server has no artifact store")
	}
	uri := p
	if rest, ok := strings.CutPrefix(p, "runs:/"); ok {
		runID, sub, _ := strings.Cut(strings.TrimLeft(rest, "/"), "/")
		run, err := s.tracking.GetRun(ctx, ds.Scope, runID)
		if err != nil {
			return v, nil, err
		}
		uri = strings.TrimRight(run.Info.ArtifactURI, "/")
		if sub != "" {
			uri += "/" + sub
		}
		v.SourceRunID = run.Info.RunID
	}
	key, err := artifact.CleanKey(strings.TrimPrefix(uri, "mlflow-artifacts:/"))
	if err != nil {
		return v, nil, fault.InvalidField("path", "%v", err)
	}
	if ws, _, _ := strings.Cut(key, "/"); ws != ds.Workspace {
		return v, nil, fault.InvalidField("path", "%q is in workspace %q, not in %s", clipText(p), ws, ds.Workspace)
	}
	if v.SourceRunID == "" {
		// <ws>/<experiment>/<run>/artifacts/...: the run that wrote them.
		if parts := strings.SplitN(key, "/", 5); len(parts) >= 4 && parts[3] == "artifacts" {
			if run, err := s.tracking.GetRun(ctx, ds.Scope, parts[2]); err == nil {
				v.SourceRunID = run.Info.RunID
			}
		}
	}
	files, isFile, err := s.hashArtifacts(ctx, s.artifacts, key)
	if err != nil {
		return v, nil, err
	}
	switch {
	case isFile && v.Type == TypeFolder:
		return v, nil, fault.InvalidField("type", "%s is a file; record it as uri_file", clipText(p))
	case !isFile && v.Type == TypeFile:
		return v, nil, fault.InvalidField("type", "%s is a folder; record it as uri_folder", clipText(p))
	case isFile:
		v.Type = TypeFile
	default:
		v.Type = TypeFolder
	}
	v.Storage, v.Path, v.storageKey = StorageArtifact, "mlflow-artifacts:/"+key, key
	return v, files, nil
}

// hashArtifacts reads every file at or under key and returns them with
// their SHA-256 and whether key is one file.
func (s *Service) hashArtifacts(ctx context.Context, st *artifact.Store, key string) ([]DataFile, bool, error) {
	hashOne := func(k, rel string) (DataFile, error) {
		r, size, err := st.Open(ctx, k)
		if err != nil {
			return DataFile{}, err
		}
		defer r.Close()
		h := sha256.New()
		if _, err := io.Copy(h, r); err != nil {
			return DataFile{}, fmt.Errorf("reading %s: %w", k, err)
		}
		return DataFile{Path: rel, Size: size, SHA256: hex.EncodeToString(h.Sum(nil)), blobKey: k}, nil
	}
	if f, err := hashOne(key, path.Base(key)); err == nil {
		return []DataFile{f}, true, nil
	} else if !fault.Is(err, fault.NotFound) {
		return nil, false, err
	}
	var files []DataFile
	var walk func(dir, rel string) error
	walk = func(dir, rel string) error {
		entries, err := st.List(ctx, dir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			k, r := dir+"/"+e.Path, e.Path
			if rel != "" {
				r = rel + "/" + e.Path
			}
			if e.IsDir {
				if err := walk(k, r); err != nil {
					return err
				}
				continue
			}
			if len(files) >= MaxDataFiles {
				return fault.InvalidField("path", "holds more than %d files", MaxDataFiles)
			}
			f, err := hashOne(k, r)
			if err != nil {
				return err
			}
			files = append(files, f)
		}
		return nil
	}
	if err := walk(key, ""); err != nil {
		return nil, false, err
	}
	if len(files) == 0 {
		return nil, false, fault.New(fault.NotFound, "no artifacts at mlflow-artifacts:/%s", key)
	}
	return files, false, nil
}

// insertDataVersion records a new version (with version "" numbered
// after the highest numeric one) unless the same content already is an
// active version of the asset and no version name was asked for, in
// which case that version is returned with Created false. done, when not
// nil, runs in the transaction (an upload ends its session there).
func (s *Service) insertDataVersion(ctx context.Context, ds DataScope, v DataVersion, version string, files []DataFile, done func(tx store.Querier) error) (DataCreated, error) {
	caller := audit.CallerFrom(ctx)
	var out DataCreated
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		assetPK, err := s.ensureAsset(ctx, tx, ds, v.Name, caller.Principal)
		if err != nil {
			return err
		}
		if version == "" && v.Digest != "" {
			existing, err := s.dataVersions(ctx, tx, `v.asset_pk = ? AND v.digest = ? AND v.type = ? AND v.digest_verified = ? AND NOT v.archived`,
				[]any{assetPK, v.Digest, v.Type, v.DigestVerified}, "v.seq DESC", 1)
			if err != nil {
				return err
			}
			if len(existing) == 1 {
				out = DataCreated{Version: existing[0]}
				if done != nil {
					return done(tx)
				}
				return nil
			}
		}
		var maxSeq int64
		var numbers []string
		rows, err := tx.QueryContext(ctx, `SELECT seq, version FROM data_versions WHERE asset_pk = ?`, assetPK)
		if err != nil {
			return err
		}
		taken := false
		for rows.Next() {
			var seq int64
			var name string
			if err := rows.Scan(&seq, &name); err != nil {
				rows.Close()
				return err
			}
			maxSeq = max(maxSeq, seq)
			numbers = append(numbers, name)
			taken = taken || name == version
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if taken {
			return fault.New(fault.AlreadyExists, "data asset %s already has a version %s; versions are immutable, so give the new one another version", v.Name, version)
		}
		if version == "" {
			var highest int64
			for _, n := range numbers {
				if i, err := strconv.ParseInt(n, 10, 64); err == nil && i > highest {
					highest = i
				}
			}
			version = strconv.FormatInt(highest+1, 10)
		}
		v.Version, v.URI = version, DataURI(v.Name, version)
		if v.Storage == StorageUpload {
			v.Path = filesPath(ds.Workspace, v.Name, version)
		}
		var size int64
		for _, f := range files {
			size += f.Size
		}
		v.SizeBytes, v.FileCount = size, int64(len(files))
		v.CreatedBy, v.CreatedKey = caller.Principal, caller.KeyID
		v.CreatedAt = s.now().UTC().Truncate(time.Millisecond)
		if v.Tags == nil {
			v.Tags = map[string]string{}
		}
		tags, _ := json.Marshal(v.Tags)
		if err := tx.QueryRowContext(ctx, `INSERT INTO data_versions (asset_pk, workspace_id, name, version, seq, type, storage, path, storage_key, host, origin,
			digest, digest_verified, size_bytes, file_count, region, description, tags, source_run_id, created_at, created_by, created_key)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING pk`,
			assetPK, ds.WorkspaceID, v.Name, v.Version, maxSeq+1, v.Type, v.Storage, v.Path, v.storageKey, v.Host, v.Origin,
			v.Digest, v.DigestVerified, v.SizeBytes, v.FileCount, v.Region, v.Description, string(tags), v.SourceRunID,
			v.CreatedAt.UnixMilli(), v.CreatedBy, v.CreatedKey).Scan(&v.pk); err != nil {
			if store.IsUniqueViolation(err) {
				return fault.New(fault.AlreadyExists, "data asset %s already has a version %s", v.Name, version)
			}
			return fmt.Errorf("creating data version: %w", err)
		}
		if err := insertDataFiles(ctx, tx, v.pk, files); err != nil {
			return err
		}
		if done != nil {
			if err := done(tx); err != nil {
				return err
			}
		}
		out = DataCreated{Version: v, Created: true}
		details := map[string]any{"type": v.Type, "storage": v.Storage, "path": clipText(v.Path), "digest": v.Digest, "region": v.Region,
			"files": v.FileCount, "size_bytes": v.SizeBytes}
		if v.SourceRunID != "" {
			details["source_run_id"] = v.SourceRunID
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "data.version.create", Resource: dataResource(ds.Workspace, v.Name, v.Version),
			Workspace: ds.Workspace, Details: details})
	})
	return out, err
}

// insertDataFiles writes a manifest in batches of rows.
func insertDataFiles(ctx context.Context, tx store.Querier, versionPK int64, files []DataFile) error {
	const batch = 200
	for start := 0; start < len(files); start += batch {
		end := min(start+batch, len(files))
		var sb strings.Builder
		sb.WriteString(`INSERT INTO data_version_files (version_pk, path, size_bytes, sha256, blob_key) VALUES `)
		args := make([]any, 0, 5*(end-start))
		for i, f := range files[start:end] {
			if i > 0 {
				sb.WriteString(", ")
			}
			sb.WriteString("(?, ?, ?, ?, ?)")
			args = append(args, versionPK, f.Path, f.Size, f.SHA256, f.blobKey)
		}
		if _, err := tx.ExecContext(ctx, sb.String(), args...); err != nil {
			return fmt.Errorf("recording data files: %w", err)
		}
	}
	return nil
}

// ensureAsset returns the asset's pk, creating the asset on its first
// version, and locks its row so concurrent versions number one by one.
func (s *Service) ensureAsset(ctx context.Context, tx store.Querier, ds DataScope, name, by string) (int64, error) {
	var pk int64
	if _, err := tx.ExecContext(ctx, `INSERT INTO data_assets (workspace_id, name, created_at, created_by) VALUES (?, ?, ?, ?)
		ON CONFLICT (workspace_id, name) DO NOTHING`, ds.WorkspaceID, name, s.now().UnixMilli(), by); err != nil {
		return 0, fmt.Errorf("creating data asset: %w", err)
	}
	err := tx.QueryRowContext(ctx, `SELECT pk FROM data_assets WHERE workspace_id = ? AND name = ?`+store.ForUpdate(tx), ds.WorkspaceID, name).Scan(&pk)
	return pk, err
}

const dataVersionColumns = `v.pk, v.name, v.version, v.type, v.storage, v.path, v.storage_key, v.host, v.origin, v.digest, v.digest_verified,
	v.size_bytes, v.file_count, v.region, v.description, v.tags, v.source_run_id, v.archived, v.created_at, v.created_by, v.created_key`

// dataVersions reads versions matching a condition on data_versions v.
func (s *Service) dataVersions(ctx context.Context, q store.Querier, where string, args []any, order string, limit int) ([]DataVersion, error) {
	query := `SELECT ` + dataVersionColumns + ` FROM data_versions v WHERE ` + where + ` ORDER BY ` + order
	if limit > 0 {
		query += ` LIMIT ` + strconv.Itoa(limit)
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("reading data versions: %w", err)
	}
	defer rows.Close()
	var out []DataVersion
	for rows.Next() {
		var v DataVersion
		var tags string
		var created int64
		if err := rows.Scan(&v.pk, &v.Name, &v.Version, &v.Type, &v.Storage, &v.Path, &v.storageKey, &v.Host, &v.Origin, &v.Digest, &v.DigestVerified,
			&v.SizeBytes, &v.FileCount, &v.Region, &v.Description, &tags, &v.SourceRunID, &v.Archived, &created, &v.CreatedBy, &v.CreatedKey); err != nil {
			return nil, err
		}
		v.Tags = map[string]string{}
		_ = json.Unmarshal([]byte(tags), &v.Tags)
		v.CreatedAt = time.UnixMilli(created).UTC()
		v.URI = DataURI(v.Name, v.Version)
		v.LocalOnly = v.Storage == StorageLocal
		out = append(out, v)
	}
	return out, rows.Err()
}

// dataVersion finds one version of an asset; "latest" is the newest one
// not archived.
func (s *Service) dataVersion(ctx context.Context, q store.Querier, sc tracking.Scope, name, version string) (DataVersion, error) {
	var vs []DataVersion
	var err error
	if version == "latest" || version == "" {
		vs, err = s.dataVersions(ctx, q, `v.workspace_id = ? AND v.name = ? AND NOT v.archived`, []any{sc.WorkspaceID, name}, "v.seq DESC", 1)
	} else {
		vs, err = s.dataVersions(ctx, q, `v.workspace_id = ? AND v.name = ? AND v.version = ?`, []any{sc.WorkspaceID, name, version}, "v.seq", 1)
	}
	if err != nil {
		return DataVersion{}, err
	}
	if len(vs) == 0 {
		if version == "latest" || version == "" {
			return DataVersion{}, fault.New(fault.NotFound, "data asset %s has no versions (that are not archived) in workspace %s", clipText(name), sc.Workspace)
		}
		return DataVersion{}, fault.New(fault.NotFound, "data asset %s has no version %s in workspace %s", clipText(name), clipText(version), sc.Workspace)
	}
	return vs[0], nil
}

// GetDataVersion returns one version ("latest" for the newest active one).
func (s *Service) GetDataVersion(ctx context.Context, sc tracking.Scope, name, version string) (DataVersion, error) {
	return s.dataVersion(ctx, s.db.Read(), sc, name, version)
}

// ListDataVersions lists an asset's versions, newest first; archived ones
// only when asked.
func (s *Service) ListDataVersions(ctx context.Context, sc tracking.Scope, name string, archived bool) ([]DataVersion, error) {
	where := `v.workspace_id = ? AND v.name = ?`
	if !archived {
		where += ` AND NOT v.archived`
	}
	vs, err := s.dataVersions(ctx, s.db.Read(), where, []any{sc.WorkspaceID, name}, "v.seq DESC", 0)
	if err != nil {
		return nil, err
	}
	if len(vs) == 0 {
		var n int
		if err := s.db.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM data_assets WHERE workspace_id = ? AND name = ?`, sc.WorkspaceID, name).Scan(&n); err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, fault.New(fault.NotFound, "data asset %s does not exist in workspace %s", clipText(name), sc.Workspace)
		}
	}
	if vs == nil {
		vs = []DataVersion{}
	}
	return vs, nil
}

// FindDataByDigest lists the active versions in the workspace with this
// digest: where the same bytes already are.
func (s *Service) FindDataByDigest(ctx context.Context, sc tracking.Scope, digest string) ([]DataVersion, error) {
	vs, err := s.dataVersions(ctx, s.db.Read(), `v.workspace_id = ? AND v.digest = ? AND NOT v.archived`, []any{sc.WorkspaceID, digest}, "v.name, v.seq", 0)
	if vs == nil {
		vs = []DataVersion{}
	}
	return vs, err
}

// ListDataAssets lists the workspace's assets by name.
func (s *Service) ListDataAssets(ctx context.Context, sc tracking.Scope) ([]DataAsset, error) {
	rows, err := s.db.Read().QueryContext(ctx, `SELECT a.name, a.created_by, a.created_at,
		(SELECT COUNT(*) FROM data_versions v WHERE v.asset_pk = a.pk AND NOT v.archived),
		COALESCE((SELECT MAX(v.created_at) FROM data_versions v WHERE v.asset_pk = a.pk), a.created_at),
		COALESCE((SELECT v.version FROM data_versions v WHERE v.asset_pk = a.pk AND NOT v.archived ORDER BY v.seq DESC LIMIT 1), '')
		FROM data_assets a WHERE a.workspace_id = ? ORDER BY a.name`, sc.WorkspaceID)
	if err != nil {
		return nil, fmt.Errorf("listing data assets: %w", err)
	}
	defer rows.Close()
	out := []DataAsset{}
	for rows.Next() {
		var a DataAsset
		var created, updated int64
		if err := rows.Scan(&a.Name, &a.CreatedBy, &created, &a.Versions, &updated, &a.LatestVersion); err != nil {
			return nil, err
		}
		a.CreatedAt, a.UpdatedAt = time.UnixMilli(created).UTC(), time.UnixMilli(updated).UTC()
		out = append(out, a)
	}
	return out, rows.Err()
}

// UpdateDataVersion changes a version's description, tags or archived
// flag; its content never changes.
func (s *Service) UpdateDataVersion(ctx context.Context, sc tracking.Scope, name, version string, in DataUpdate) (DataVersion, error) {
	if in.Description != nil {
		if err := validDataMeta(*in.Description, nil); err != nil {
			return DataVersion{}, err
		}
	}
	if version == "latest" {
		return DataVersion{}, fault.InvalidField("version", "name the version to change; \"latest\" moves")
	}
	var out DataVersion
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		v, err := s.dataVersion(ctx, tx, sc, name, version)
		if err != nil {
			return err
		}
		if in.Description != nil {
			v.Description = *in.Description
		}
		for k, val := range in.Tags {
			v.Tags[k] = val
		}
		for _, k := range in.RemoveTags {
			delete(v.Tags, k)
		}
		if err := validDataMeta(v.Description, v.Tags); err != nil {
			return err
		}
		if in.Archived != nil {
			v.Archived = *in.Archived
		}
		tags, _ := json.Marshal(v.Tags)
		if _, err := tx.ExecContext(ctx, `UPDATE data_versions SET description = ?, tags = ?, archived = ? WHERE pk = ?`, v.Description, string(tags), v.Archived, v.pk); err != nil {
			return err
		}
		out = v
		details := map[string]any{}
		if in.Archived != nil {
			details["archived"] = *in.Archived
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "data.version.update", Resource: dataResource(sc.Workspace, name, v.Version), Workspace: sc.Workspace, Details: details})
	})
	return out, err
}

// DataFiles lists a version's files (the manifest), by path.
func (s *Service) DataFiles(ctx context.Context, sc tracking.Scope, name, version string) (DataVersion, []DataFile, error) {
	v, err := s.GetDataVersion(ctx, sc, name, version)
	if err != nil {
		return v, nil, err
	}
	files, err := s.dataFiles(ctx, v.pk, "")
	return v, files, err
}

func (s *Service) dataFiles(ctx context.Context, versionPK int64, onePath string) ([]DataFile, error) {
	q := `SELECT path, size_bytes, sha256, blob_key FROM data_version_files WHERE version_pk = ?`
	args := []any{versionPK}
	if onePath != "" {
		q += ` AND path = ?`
		args = append(args, onePath)
	}
	rows, err := s.db.Read().QueryContext(ctx, q+` ORDER BY path`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []DataFile{}
	for rows.Next() {
		var f DataFile
		if err := rows.Scan(&f.Path, &f.Size, &f.SHA256, &f.blobKey); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// OpenDataFile opens one file of a version whose bytes Plinth holds.
func (s *Service) OpenDataFile(ctx context.Context, sc tracking.Scope, name, version, file string) (DataFile, io.ReadCloser, error) {
	v, err := s.GetDataVersion(ctx, sc, name, version)
	if err != nil {
		return DataFile{}, nil, err
	}
	if v.Storage != StorageUpload && v.Storage != StorageArtifact {
		return DataFile{}, nil, fault.New(fault.FailedPrecondition, "%s is a reference to %s; Plinth does not hold its bytes", v.URI, clipText(v.Path))
	}
	files, err := s.dataFiles(ctx, v.pk, file)
	if err != nil {
		return DataFile{}, nil, err
	}
	if len(files) == 0 {
		return DataFile{}, nil, fault.New(fault.NotFound, "%s has no file %s", v.URI, clipText(file))
	}
	st := s.artifacts
	if v.Storage == StorageUpload {
		st = s.dataStore
	}
	r, _, err := st.Open(ctx, files[0].blobKey)
	if err != nil {
		return DataFile{}, nil, err
	}
	return files[0], r, nil
}

// ResourcesIn is part of workspace.Holder for data assets.
func (s *Service) dataResourcesIn(ctx context.Context, q store.Querier, workspaceID string) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM data_assets WHERE workspace_id = ?`, workspaceID).Scan(&n)
	return n, err
}

func clipText(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// errNoRows reports a missing row.
func errNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
