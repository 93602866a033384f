package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/plinth-dev/plinth/internal/client"
	"github.com/plinth-dev/plinth/internal/registry"
)

func newDataCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "data",
		Short: "Data assets: named, versioned, immutable data",
		Long: `Data assets name data so that jobs, runs and models can say exactly which data they used.
Each version is immutable: an upload into Plinth, files already in Plinth's artifact store,
a blob URL (s3://, https://, azureml://, abfss://...), or a path on one machine.
A version is named data:<name>:<version>; log that as an MLflow dataset source (or use it as a
job input) and lineage links the run to the version.`,
	}
	var ws string
	cmd.PersistentFlags().StringVar(&ws, "workspace", "default", "workspace")
	cmd.AddCommand(newDataCreateCmd(g, &ws), newDataListCmd(g, &ws), newDataShowCmd(g, &ws), newDataVersionsCmd(g, &ws),
		newDataFilesCmd(g, &ws), newDataDownloadCmd(g, &ws), newDataUpdateCmd(g, &ws))
	return cmd
}

// splitDataRef parses NAME, NAME:VERSION or data:NAME:VERSION.
func splitDataRef(ref string) (name, version string) {
	ref = strings.TrimPrefix(ref, "data:")
	if i := strings.LastIndex(ref, ":"); i > 0 {
		return ref[:i], ref[i+1:]
	}
	return ref, "latest"
}

// isReference tells a path that names data elsewhere from a local one.
func isReference(p string) bool {
	return strings.Contains(p, "://") || strings.HasPrefix(p, "runs:/") || strings.HasPrefix(p, "mlflow-artifacts:/")
}

func newDataCreateCmd(g *globals, ws *string) *cobra.Command {
	var name, path, typ, version, description, region string
	var tags []string
	var noUpload bool
	var concurrency int
	cmd := &cobra.Command{
		Use:   "create --name NAME --path PATH",
		Short: "Create a data version: upload a local file or folder, or record a reference",
		Long: `Create a new version of a data asset.

A local file or folder is uploaded (SHA-256 computed as it goes; the same bytes as an existing
version are recognised and not sent again). An interrupted upload (Ctrl-C, lost connection)
resumes when the same command is run again.
With --no-upload, a local path is recorded, not copied, and flagged as readable only on this machine.
A blob URL (s3://, https://, azureml://, abfss://, gs://...) is recorded as given; runs:/<run>/<path>
and mlflow-artifacts:/ paths are read in place from Plinth's artifact store.`,
		Example: `  plinth data create --name transactions --path ./data/transactions
  plinth data create --name cards --path s3://bucket/cards/2026-11/ --region eu-west-1
  plinth data create --name features --path runs:/0123abcd/features --description "run output"
  plinth data create --name scratch --path /mnt/nvme/scratch --no-upload`,
		Args: exactArgs(0, "(none)"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if name == "" || path == "" {
				return fmt.Errorf("--name and --path are required")
			}
			tagMap, err := parseTags("tag", tags)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var created registry.DataCreated
			switch {
			case isReference(path):
				created, err = c.CreateDataReference(ctx, *ws, name, registry.DataReference{Version: version, Type: typ, Path: path,
					Region: region, Description: description, Tags: tagMap})
			case noUpload:
				created, err = recordLocal(ctx, c, *ws, name, path, typ, version, region, description, tagMap)
			default:
				created, err = g.upload(ctx, c, *ws, name, path, client.UploadOptions{Version: version, Type: typ, Region: region,
					Description: description, Tags: tagMap, Concurrency: concurrency})
			}
			if err != nil {
				return err
			}
			if g.output != "table" && g.output != "" {
				return g.printResult(created, nil)
			}
			v := created.Version
			if created.Created {
				fmt.Fprintf(g.stdout, "created %s  (%s, %s, %s in %d files, digest %s)\n", v.URI, v.Type, v.Storage,
					client.FormatBytes(v.SizeBytes), v.FileCount, orDash(v.Digest))
			} else {
				fmt.Fprintf(g.stdout, "unchanged: %s already has exactly this content (digest %s); no new version\n", v.URI, v.Digest)
			}
			if v.LocalOnly {
				fmt.Fprintf(g.stdout, "note: %s is a path on %s only; jobs elsewhere cannot read it\n", v.Path, orDash(v.Host))
			}
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&name, "name", "", "data asset name (required)")
	fl.StringVar(&path, "path", "", "local file or folder to upload, blob URL, runs:/ or mlflow-artifacts:/ path (required)")
	fl.StringVar(&typ, "type", "", "uri_file or uri_folder (default: from the path)")
	fl.StringVar(&version, "version", "", "version name (default: the next number)")
	fl.StringVar(&description, "description", "", "description")
	fl.StringArrayVar(&tags, "tag", nil, "tag as key=value (repeatable)")
	fl.StringVar(&region, "region", "", "region the data is in (default: from the URL, the artifact store or the workspace)")
	fl.BoolVar(&noUpload, "no-upload", false, "record a local path without copying it (readable only on this machine)")
	fl.IntVar(&concurrency, "concurrency", 4, "files uploaded at once")
	return cmd
}

// recordLocal records a local path with the digest of its files.
func recordLocal(ctx context.Context, c *client.Client, ws, name, path, typ, version, region, description string, tags map[string]string) (registry.DataCreated, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return registry.DataCreated{}, err
	}
	files, isDir, err := client.LocalManifest(ctx, abs)
	if err != nil {
		return registry.DataCreated{}, err
	}
	if typ == "" {
		typ = registry.TypeFile
		if isDir {
			typ = registry.TypeFolder
		}
	}
	host, _ := os.Hostname()
	return c.CreateDataReference(ctx, ws, name, registry.DataReference{Version: version, Type: typ, Path: abs, Host: host, Files: files,
		Region: region, Description: description, Tags: tags})
}

// upload sends a local path with a progress bar on a terminal.
func (g *globals) upload(ctx context.Context, c *client.Client, ws, name, path string, o client.UploadOptions) (registry.DataCreated, error) {
	dir, err := client.ConfigDir()
	if err == nil {
		o.StateDir = filepath.Join(dir, "uploads")
	}
	bar := newProgressBar(g.stderr, name)
	o.Progress = bar.update
	res, err := c.UploadData(ctx, ws, name, path, o)
	bar.finish()
	if err != nil {
		return registry.DataCreated{}, err
	}
	if res.Resumed {
		fmt.Fprintf(g.stderr, "resumed an interrupted upload: sent the remaining %s\n", client.FormatBytes(res.SentBytes))
	}
	return res.DataCreated, nil
}

// progressBar draws one self-rewriting line on a terminal and nothing
// elsewhere (logs of scripted runs stay clean).
type progressBar struct {
	w       io.Writer
	name    string
	tty     bool
	start   time.Time
	last    time.Time
	drawn   bool
	phase   string
	phaseAt time.Time
	from    int64
}

func newProgressBar(w io.Writer, name string) *progressBar {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progressBar{w: w, name: name, tty: tty, start: time.Now()}
}

func (b *progressBar) update(p client.UploadProgress) {
	if !b.tty {
		return
	}
	now := time.Now()
	if p.Phase != b.phase {
		b.phase, b.phaseAt, b.from = p.Phase, now, p.Done
	}
	if now.Sub(b.last) < 100*time.Millisecond && p.Done < p.Total {
		return
	}
	b.last = now
	pct := 100.0
	if p.Total > 0 {
		pct = float64(p.Done) * 100 / float64(p.Total)
	}
	const width = 24
	filled := int(pct / 100 * width)
	rate := ""
	if secs := now.Sub(b.phaseAt).Seconds(); secs > 0.5 {
		rate = client.FormatBytes(int64(float64(p.Done-b.from)/secs)) + "/s"
	}
	fmt.Fprintf(b.w, "\r%s %-9s [%s%s] %5.1f%%  %s / %s  %d/%d files  %s\033[K", b.name, p.Phase, strings.Repeat("=", filled), strings.Repeat(" ", width-filled),
		pct, client.FormatBytes(p.Done), client.FormatBytes(p.Total), p.Files, p.FilesTotal, rate)
	b.drawn = true
}

func (b *progressBar) finish() {
	if b.drawn {
		fmt.Fprintln(b.w)
	}
}

func dataRows(vs []registry.DataVersion) [][]string {
	rows := [][]string{{"URI", "TYPE", "STORAGE", "SIZE", "FILES", "REGION", "DIGEST", "CREATED BY", "CREATED"}}
	for _, v := range vs {
		digest := v.Digest
		if len(digest) > 19 {
			digest = digest[:19] + "…"
		}
		rows = append(rows, []string{v.URI, v.Type, v.Storage, client.FormatBytes(v.SizeBytes), strconv.FormatInt(v.FileCount, 10), v.Region,
			orDash(digest), v.CreatedBy, fmtTime(v.CreatedAt)})
	}
	return rows
}

func newDataListCmd(g *globals, ws *string) *cobra.Command {
	var digest string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List data assets (or, with --digest, the versions holding given content)",
		Args:  exactArgs(0, "(none)"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if digest != "" {
				vs, err := c.FindDataByDigest(cmd.Context(), *ws, digest)
				if err != nil {
					return err
				}
				return g.printResult(vs, func() [][]string { return dataRows(vs) })
			}
			list, err := c.ListDataAssets(cmd.Context(), *ws)
			if err != nil {
				return err
			}
			return g.printResult(list, func() [][]string {
				rows := [][]string{{"NAME", "LATEST", "VERSIONS", "CREATED BY", "UPDATED"}}
				for _, a := range list {
					rows = append(rows, []string{a.Name, orDash(a.LatestVersion), strconv.Itoa(a.Versions), a.CreatedBy, fmtTime(a.UpdatedAt)})
				}
				return rows
			})
		}),
	}
	cmd.Flags().StringVar(&digest, "digest", "", "list the versions whose content has this digest (sha256:<hex>)")
	return cmd
}

func newDataShowCmd(g *globals, ws *string) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME[:VERSION]",
		Short: "Show a data version (the latest without VERSION)",
		Args:  exactArgs(1, "NAME[:VERSION]"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			name, version := splitDataRef(args[0])
			v, err := c.GetDataVersion(cmd.Context(), *ws, name, version)
			if err != nil {
				return err
			}
			return g.printResult(v, func() [][]string {
				rows := [][]string{{"FIELD", "VALUE"}, {"uri", v.URI}, {"type", v.Type}, {"storage", v.Storage}, {"path", v.Path}}
				if v.LocalOnly {
					rows = append(rows, []string{"host", v.Host + " (local only)"})
				}
				if v.Origin != "" {
					rows = append(rows, []string{"uploaded from", v.Origin})
				}
				verified := "reported by the client"
				if v.DigestVerified {
					verified = "computed by Plinth"
				}
				rows = append(rows, []string{"digest", orDash(v.Digest) + "  (" + verified + ")"},
					[]string{"size", fmt.Sprintf("%s in %d files", client.FormatBytes(v.SizeBytes), v.FileCount)},
					[]string{"region", v.Region}, []string{"description", v.Description})
				if v.SourceRunID != "" {
					rows = append(rows, []string{"source run", v.SourceRunID})
				}
				for k, val := range v.Tags {
					rows = append(rows, []string{"tag " + k, val})
				}
				rows = append(rows, []string{"archived", strconv.FormatBool(v.Archived)}, []string{"created by", v.CreatedBy}, []string{"created", fmtTime(v.CreatedAt)})
				return rows
			})
		}),
	}
}

func newDataVersionsCmd(g *globals, ws *string) *cobra.Command {
	var archived bool
	cmd := &cobra.Command{
		Use:   "versions NAME",
		Short: "List a data asset's versions, newest first",
		Args:  exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			vs, err := c.ListDataVersions(cmd.Context(), *ws, args[0], archived)
			if err != nil {
				return err
			}
			return g.printResult(vs, func() [][]string { return dataRows(vs) })
		}),
	}
	cmd.Flags().BoolVar(&archived, "archived", false, "include archived versions")
	return cmd
}

func newDataFilesCmd(g *globals, ws *string) *cobra.Command {
	return &cobra.Command{
		Use:   "files NAME[:VERSION]",
		Short: "List a data version's files with their SHA-256",
		Args:  exactArgs(1, "NAME[:VERSION]"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			name, version := splitDataRef(args[0])
			list, err := c.ListDataFiles(cmd.Context(), *ws, name, version)
			if err != nil {
				return err
			}
			return g.printResult(list, func() [][]string {
				rows := [][]string{{"PATH", "SIZE", "SHA256"}}
				for _, f := range list.Files {
					rows = append(rows, []string{f.Path, client.FormatBytes(f.Size), orDash(f.SHA256)})
				}
				return rows
			})
		}),
	}
}

func newDataDownloadCmd(g *globals, ws *string) *cobra.Command {
	return &cobra.Command{
		Use:   "download NAME[:VERSION] [DIR]",
		Short: "Download a data version's files into DIR (default: ./NAME), checking each SHA-256",
		Args:  cobra.RangeArgs(1, 2),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			name, version := splitDataRef(args[0])
			dir := name
			if len(args) == 2 {
				dir = args[1]
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			bar := newProgressBar(g.stderr, name)
			list, err := c.DownloadData(ctx, *ws, name, version, dir, bar.update)
			bar.finish()
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "downloaded data:%s:%s (%d files) into %s\n", list.Name, list.Version, len(list.Files), dir)
			return nil
		}),
	}
}

func newDataUpdateCmd(g *globals, ws *string) *cobra.Command {
	var description string
	var tags, remove []string
	var archive, restore bool
	cmd := &cobra.Command{
		Use:   "update NAME:VERSION",
		Short: "Change a data version's description or tags, or archive it (its content never changes)",
		Args:  exactArgs(1, "NAME:VERSION"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			name, version := splitDataRef(args[0])
			var in registry.DataUpdate
			fl := cmd.Flags()
			if fl.Changed("description") {
				in.Description = &description
			}
			var err error
			if in.Tags, err = parseTags("tag", tags); err != nil {
				return err
			}
			in.RemoveTags = remove
			if archive && restore {
				return fmt.Errorf("--archive and --restore contradict each other")
			}
			if archive || restore {
				in.Archived = &archive
			}
			v, err := c.UpdateDataVersion(cmd.Context(), *ws, name, version, in)
			if err != nil {
				return err
			}
			return g.printResult(v, func() [][]string { return dataRows([]registry.DataVersion{v}) })
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&description, "description", "", "new description")
	fl.StringArrayVar(&tags, "tag", nil, "set a tag key=value (repeatable)")
	fl.StringArrayVar(&remove, "remove-tag", nil, "remove a tag (repeatable)")
	fl.BoolVar(&archive, "archive", false, "archive the version (hidden from listings and from latest)")
	fl.BoolVar(&restore, "restore", false, "restore an archived version")
	return cmd
}
