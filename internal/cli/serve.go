package cli

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/plinth-dev/plinth/internal/buildinfo"
	"github.com/plinth-dev/plinth/internal/client"
	"github.com/plinth-dev/plinth/internal/server"
)

// serveFlags are the flags of the server roles.
type serveFlags struct {
	configFile, addr, dataDir, database string
	artifacts, artifactsRegion          string
	redis, workDir                      string
	executor, advertiseURL              string
	kube                                server.KubernetesConfig
	debugAddr                           string
	tlsCert, tlsKey                     string
	logLevel, logFormat                 string
	shutdownTimeout                     time.Duration
}

func (f *serveFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.configFile, "config", "", "YAML config file (env PLINTH_CONFIG); flags and env override it")
	fl.StringVar(&f.addr, "addr", server.DefaultAddr, "HTTP listen address (env PLINTH_ADDR)")
	fl.StringVar(&f.dataDir, "data-dir", server.DefaultDataDir, "data directory: SQLite database and local files (env PLINTH_HOME)")
	fl.StringVar(&f.database, "database", "", "PostgreSQL URL postgres://...; empty means SQLite in the data directory (env PLINTH_DATABASE)")
	fl.StringVar(&f.artifacts, "artifacts", "", "artifact store URL: file:///dir, s3://bucket?region=..., azblob://container; empty means <data-dir>/artifacts (env PLINTH_ARTIFACTS)")
	fl.StringVar(&f.artifactsRegion, "artifacts-region", "", "region the artifact store is in; uploads to workspaces that do not allow it are refused (env PLINTH_ARTIFACTS_REGION)")
	fl.StringVar(&f.workDir, "work-dir", "", "where the local executor keeps its work; servers sharing a database on one host must share it (env PLINTH_WORK_DIR; default: the data directory)")
	fl.StringVar(&f.redis, "redis", "", "Redis URL redis://host:6379/0 for the LLM limits' counters, shared with standalone gateways; empty keeps them in this process (env PLINTH_REDIS)")
	fl.StringVar(&f.executor, "executor", server.ExecutorLocal, "what runs jobs, endpoint replicas and instances: local (this machine's processes) or kubernetes (env PLINTH_EXECUTOR)")
	fl.StringVar(&f.advertiseURL, "advertise-url", "", "URL that work started by this server reaches it at, e.g. http://plinth.plinth.svc:8080; required with --executor kubernetes (env PLINTH_ADVERTISE_URL; default: the listen address)")
	fl.StringVar(&f.kube.Kubeconfig, "kube-config", "", "kubeconfig file of the cluster the kubernetes executor uses; default: the pod's service account, else $KUBECONFIG (env PLINTH_KUBE_CONFIG)")
	fl.StringVar(&f.kube.Namespace, "kube-namespace", "", "namespace of the work's Jobs, pods and Services (env PLINTH_KUBE_NAMESPACE; default: default)")
	fl.StringVar(&f.kube.Image, "kube-image", "", "container image for work whose environment names none (env PLINTH_KUBE_IMAGE)")
	fl.StringVar(&f.kube.ToolsImage, "kube-tools-image", "", "the Plinth image, whose binary fetches jobs' code and inputs in their pods and uploads their outputs (env PLINTH_KUBE_TOOLS_IMAGE)")
	fl.StringVar(&f.kube.PoolsFile, "kube-pools", "", "YAML file of node pools (name, skus, gpu, spot, node_selector, tolerations, queue) that place work by SKU and tier (env PLINTH_KUBE_POOLS)")
	fl.StringVar(&f.kube.Queue, "kube-queue", "", "Kueue LocalQueue to submit every Job to, created suspended for Kueue to admit (env PLINTH_KUBE_QUEUE)")
	fl.StringVar(&f.kube.ServiceAccount, "kube-service-account", "", "service account the work's pods run as; its token is never mounted (env PLINTH_KUBE_SERVICE_ACCOUNT)")
	fl.StringVar(&f.debugAddr, "debug-addr", "", "serve Go pprof profiles on this address, e.g. 127.0.0.1:6060 (env PLINTH_DEBUG_ADDR)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "TLS certificate file; serve HTTPS (env PLINTH_TLS_CERT)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "TLS private key file (env PLINTH_TLS_KEY)")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error (env PLINTH_LOG_LEVEL)")
	fl.StringVar(&f.logFormat, "log-format", "auto", "log format: auto (text on a terminal, JSON otherwise), text or json (env PLINTH_LOG_FORMAT)")
	fl.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight requests may finish after SIGINT/SIGTERM")
}

// config merges the file, the environment and the flags, in rising order
// of precedence.
func (f *serveFlags) config(cmd *cobra.Command) (server.Config, error) {
	cfg := server.Config{Addr: server.DefaultAddr, DataDir: server.DefaultDataDir}
	file := f.configFile
	if file == "" {
		file = os.Getenv("PLINTH_CONFIG")
	}
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return cfg, fmt.Errorf("reading config file: %w", err)
		}
		if err := server.LoadConfigFile(data, &cfg); err != nil {
			return cfg, fmt.Errorf("%s: %w", file, err)
		}
	}
	for env, dst := range map[string]*string{
		"PLINTH_ADDR": &cfg.Addr, "PLINTH_HOME": &cfg.DataDir, "PLINTH_DATABASE": &cfg.Database, "PLINTH_ARTIFACTS": &cfg.Artifacts, "PLINTH_ARTIFACTS_REGION": &cfg.ArtifactsRegion, "PLINTH_DEBUG_ADDR": &cfg.DebugAddr,
		"PLINTH_TLS_CERT": &cfg.TLSCert, "PLINTH_TLS_KEY": &cfg.TLSKey, "PLINTH_BOOTSTRAP_KEY": &cfg.BootstrapKey, "PLINTH_SECRET_KEY": &cfg.SecretKey, "PLINTH_REDIS": &cfg.Redis, "PLINTH_WORK_DIR": &cfg.WorkDir,
		"PLINTH_LOG_LEVEL": &f.logLevel, "PLINTH_LOG_FORMAT": &f.logFormat,
		"PLINTH_EXECUTOR": &cfg.Executor, "PLINTH_ADVERTISE_URL": &cfg.AdvertiseURL, "PLINTH_KUBE_CONFIG": &cfg.Kubernetes.Kubeconfig,
		"PLINTH_KUBE_NAMESPACE": &cfg.Kubernetes.Namespace, "PLINTH_KUBE_IMAGE": &cfg.Kubernetes.Image, "PLINTH_KUBE_TOOLS_IMAGE": &cfg.Kubernetes.ToolsImage,
		"PLINTH_KUBE_POOLS": &cfg.Kubernetes.PoolsFile, "PLINTH_KUBE_QUEUE": &cfg.Kubernetes.Queue, "PLINTH_KUBE_SERVICE_ACCOUNT": &cfg.Kubernetes.ServiceAccount,
	} {
		if v, ok := os.LookupEnv(env); ok && v != "" {
			*dst = v
		}
	}
	fl := cmd.Flags()
	for name, pair := range map[string][2]*string{
		"addr": {&cfg.Addr, &f.addr}, "data-dir": {&cfg.DataDir, &f.dataDir}, "database": {&cfg.Database, &f.database},
		"artifacts": {&cfg.Artifacts, &f.artifacts}, "artifacts-region": {&cfg.ArtifactsRegion, &f.artifactsRegion}, "debug-addr": {&cfg.DebugAddr, &f.debugAddr},
		"tls-cert": {&cfg.TLSCert, &f.tlsCert}, "tls-key": {&cfg.TLSKey, &f.tlsKey}, "redis": {&cfg.Redis, &f.redis}, "work-dir": {&cfg.WorkDir, &f.workDir},
		"executor": {&cfg.Executor, &f.executor}, "advertise-url": {&cfg.AdvertiseURL, &f.advertiseURL}, "kube-config": {&cfg.Kubernetes.Kubeconfig, &f.kube.Kubeconfig},
		"kube-namespace": {&cfg.Kubernetes.Namespace, &f.kube.Namespace}, "kube-image": {&cfg.Kubernetes.Image, &f.kube.Image},
		"kube-tools-image": {&cfg.Kubernetes.ToolsImage, &f.kube.ToolsImage}, "kube-pools": {&cfg.Kubernetes.PoolsFile, &f.kube.PoolsFile},
		"kube-queue": {&cfg.Kubernetes.Queue, &f.kube.Queue}, "kube-service-account": {&cfg.Kubernetes.ServiceAccount, &f.kube.ServiceAccount},
	} {
		if fl.Changed(name) {
			*pair[0] = *pair[1]
		}
	}
	cfg.ShutdownTimeout = f.shutdownTimeout
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return cfg, fmt.Errorf("--tls-cert and --tls-key must be given together")
	}
	switch cfg.Executor {
	case "", server.ExecutorLocal:
	case server.ExecutorKubernetes:
		if cfg.AdvertiseURL == "" {
			return cfg, fmt.Errorf("--executor kubernetes needs --advertise-url: the URL pods reach this server at (its Service), for jobs to log runs and fetch their inputs")
		}
	default:
		return cfg, fmt.Errorf("--executor %q: want %s or %s", cfg.Executor, server.ExecutorLocal, server.ExecutorKubernetes)
	}
	if u := cfg.AdvertiseURL; u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return cfg, fmt.Errorf("--advertise-url %q: want an http:// or https:// URL", u)
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return cfg, fmt.Errorf("--addr %q is not host:port: %v", cfg.Addr, err)
	}
	return cfg, nil
}

func (f *serveFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	format := f.logFormat
	if format == "auto" {
		format = "json"
		if file, ok := w.(*os.File); ok {
			if st, err := file.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want auto, text or json", f.logFormat)
}

func newUpCmd(g *globals) *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the whole platform on this machine (API, web UI, local executor) with embedded storage",
		Long: `Run the whole platform in one process: the API, the web UI and the local executor, storing
data under ./.plinth (SQLite) unless told otherwise. On first start it creates the 'admin'
principal, prints its API key once and saves it to the CLI's credentials file, so the other
plinth commands work right away.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return serve(cmd, g, f, true) },
	}
	f.register(cmd)
	return cmd
}

func newServerCmd(g *globals) *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane only (API, scheduler, controllers); run many on PostgreSQL",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return serve(cmd, g, f, false) },
	}
	f.register(cmd)
	return cmd
}

func serve(cmd *cobra.Command, g *globals, f *serveFlags, allInOne bool) error {
	cfg, err := f.config(cmd)
	if err != nil {
		return err
	}
	log, err := f.logger(g.stderr)
	if err != nil {
		return err
	}
	tuneGC()
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := srv.Listen()
	if err != nil {
		return err
	}
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	url := scheme + "://" + dialable(ln.Addr().String())

	role := "control plane"
	if allInOne {
		role = "all-in-one"
	}
	w := g.stdout
	fmt.Fprintf(w, "Plinth %s (%s) is serving at %s\n", buildinfo.Get().Version, role, url)
	where := srv.DB().Location
	if cfg.Database == "" {
		abs, _ := filepath.Abs(cfg.DataDir)
		where = abs + " (SQLite)"
	}
	fmt.Fprintf(w, "  data: %s\n", where)
	switch {
	case srv.BootstrapSecret != "" && cfg.BootstrapKey != "":
		fmt.Fprintf(w, "  admin key: set from PLINTH_BOOTSTRAP_KEY\n")
	case srv.BootstrapSecret != "":
		fmt.Fprintf(w, "\n  Admin API key (shown only this once; keep it safe):\n\n      %s\n\n", srv.BootstrapSecret)
	}
	if allInOne && srv.BootstrapSecret != "" {
		path, err := client.SaveProfile("local", client.Profile{URL: url, Key: srv.BootstrapSecret}, true)
		if err != nil {
			fmt.Fprintf(w, "  could not save the key for the CLI: %v\n", err)
		} else {
			fmt.Fprintf(w, "  The CLI is logged in (profile \"local\" in %s): try `plinth workspace list`.\n", path)
		}
	}
	fmt.Fprintf(w, "  Stop with Ctrl-C.\n")

	if err := srv.Serve(ctx, ln); err != nil {
		return err
	}
	log.Info("stopped cleanly")
	return nil
}

// dialable turns a listen address into one a client can dial: a wildcard
// host becomes loopback.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return host + ":" + port
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			info := buildinfo.Get()
			return g.printResult(info, func() [][]string {
				commit := orDash(info.Commit)
				if info.Modified {
					commit += " (modified)"
				}
				return [][]string{{"VERSION", "COMMIT", "GO", "PLATFORM"}, {info.Version, commit, info.GoVersion, info.Platform}}
			})
		},
	}
}

// Garbage collection defaults for the server roles, unless GOGC or
// GOMEMLIMIT say otherwise. Plinth's live heap is small while its hot
// paths (metric logging, history reads) allocate per point, so collecting
// less often buys throughput: log-batch went from 146,000 to 197,000
// points/s with GOGC=800 (docs/benchmarks.md). The soft memory limit keeps
// a large heap from growing unchecked: near it the collector runs as
// often as it must.
const (
	serverGCPercent   = 800
	serverMemoryLimit = 1 << 30
)

func tuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(serverGCPercent)
	}
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(serverMemoryLimit)
	}
}
