// Package server is Plinth's composition root: it turns a Config into an
// opened store, the domain services, one HTTP handler and the background
// loops, and runs them until told to stop.
package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"sigs.k8s.io/yaml"

	"github.com/plinth-dev/plinth/internal/api"
	"github.com/plinth-dev/plinth/internal/appproxy"
	"github.com/plinth-dev/plinth/internal/artifact"
	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/buildinfo"
	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/endpoint"
	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/gateway"
	"github.com/plinth-dev/plinth/internal/jobs"
	"github.com/plinth-dev/plinth/internal/leader"
	"github.com/plinth-dev/plinth/internal/llm"
	"github.com/plinth-dev/plinth/internal/mlflowapi"
	"github.com/plinth-dev/plinth/internal/observe"
	"github.com/plinth-dev/plinth/internal/ratelimit"
	"github.com/plinth-dev/plinth/internal/registry"
	"github.com/plinth-dev/plinth/internal/secret"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/tracking"
	"github.com/plinth-dev/plinth/internal/web"
	"github.com/plinth-dev/plinth/internal/workspace"
)

// Config is everything a Plinth process needs; `plinth up` needs none of it
// set, since every field has an embedded default.
type Config struct {
	// Addr is the HTTP listen address.
	Addr string `json:"addr"`
	// DataDir holds the SQLite database and local artifacts.
	DataDir string `json:"data_dir"`
	// Database is a postgres:// URL; empty means SQLite in DataDir.
	Database string `json:"database"`
	// BootstrapKey, if set, becomes the first admin key instead of a
	// random one. Ignored once an admin exists.
	BootstrapKey string `json:"bootstrap_key"`
	// SecretKey is the platform secret key (base64 of 32 bytes) that seals
	// LLM backend credentials at rest; empty means DataDir/secret.key,
	// created on first start. Control planes sharing one PostgreSQL must
	// all have the same key.
	SecretKey string `json:"secret_key"`
	// WorkDir holds what the local executor runs: its records of work
	// and the replicas' model files; empty means DataDir. Servers that
	// share a database on one host (a leader and standbys) must share it,
	// so that a new leader finds the work the old one started.
	WorkDir string `json:"work_dir"`
	// Redis is a redis:// URL holding the LLM limits' counters, shared by
	// this control plane's gateway and standalone gateways (plinth gateway
	// --redis-url); empty keeps them in this process.
	Redis string `json:"redis"`
	// Artifacts is the blob store URL for run artifacts and uploaded data
	// (file:///dir, s3://bucket, azblob://container); empty means
	// DataDir/artifacts.
	Artifacts string `json:"artifacts"`
	// ArtifactsRegion is the region the artifact store is in; uploads to
	// a workspace whose allowed regions exclude it are refused (G2). Empty
	// means unknown: uploads are recorded in their workspace's region.
	ArtifactsRegion string `json:"artifacts_region"`
	// TLSCert and TLSKey serve HTTPS when both are set.
	TLSCert string `json:"tls_cert"`
	TLSKey  string `json:"tls_key"`
	// SKUFile overrides or extends the SKU catalogue (YAML); empty means
	// this machine's local SKUs and the built-in cloud list.
	SKUFile string `json:"sku_file"`
	// Executor runs jobs, endpoint replicas and compute instances:
	// "local" (this machine's processes; the default) or "kubernetes".
	Executor   string           `json:"executor"`
	Kubernetes KubernetesConfig `json:"kubernetes"`
	// AdvertiseURL is the URL work started by this server reaches it at
	// (jobs' MLFLOW_TRACKING_URI, where pods fetch their inputs); empty
	// means the listener's own address, which only local work can reach.
	AdvertiseURL string `json:"advertise_url"`
	// ExecutorImpl, when set, is used instead of the configured backend
	// (tests, embedders).
	ExecutorImpl executor.Executor `json:"-"`
	// DebugAddr, when set, serves Go's pprof profiles on a separate
	// listener (keep it on loopback).
	DebugAddr string `json:"debug_addr"`
	// ShutdownTimeout bounds how long in-flight requests may finish.
	ShutdownTimeout time.Duration `json:"-"`
}

// Defaults for `plinth up`.
const (
	DefaultAddr    = "127.0.0.1:8080"
	DefaultDataDir = ".plinth"
)

// DatabaseURL is where the store lives: the configured PostgreSQL URL or
// the SQLite file in the data directory.
func (c Config) DatabaseURL() string {
	if c.Database != "" {
		return c.Database
	}
	return "sqlite:" + filepath.Join(c.DataDir, "plinth.db")
}

// ArtifactsURL is where run artifacts are stored.
func (c Config) ArtifactsURL() (string, error) {
	if c.Artifacts != "" {
		return c.Artifacts, nil
	}
	abs, err := filepath.Abs(filepath.Join(c.DataDir, "artifacts"))
	if err != nil {
		return "", err
	}
	return "file://" + filepath.ToSlash(abs), nil
}

// Server is a running (or ready to run) Plinth control plane.
type Server struct {
	cfg      Config
	log      *slog.Logger
	db       *store.DB
	handler  http.Handler
	ready    atomic.Bool
	registry *prometheus.Registry
	redis    *ratelimit.Redis // nil: the gateway counts LLM limits in memory

	Auth       *auth.Service
	Workspaces *workspace.Service
	Audit      *audit.Log
	Tracking   *tracking.Service
	Registry   *registry.Service
	Compute    *compute.Service
	Instances  *compute.Instances
	Jobs       *jobs.Service
	Executor   executor.Executor
	Endpoints  *endpoint.Service
	Controller *endpoint.Controller
	Snapshots  *endpoint.Publisher
	// Elector decides which replica on a shared PostgreSQL runs the
	// scheduler and controllers (on SQLite this one, always).
	Elector   *leader.Elector
	LLM       *llm.Service
	Gateway   *gateway.Gateway
	meter     *gateway.Meter
	Artifacts *artifact.Store
	API       *api.API
	MLflow    *mlflowapi.API
	UI        *web.UI

	// BootstrapSecret is the first admin key when this start created it,
	// so the caller can show it once; empty otherwise.
	BootstrapSecret string
}

// New opens the store, migrates it, bootstraps the admin on first start
// and builds the HTTP handler. Close releases what it opened.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.ArtifactsRegion != "" && !workspace.KnownRegion(cfg.ArtifactsRegion) {
		return nil, fmt.Errorf("artifacts region %q is not a known region (see `plinth workspace regions`)", cfg.ArtifactsRegion)
	}
	db, err := store.Open(ctx, cfg.DatabaseURL())
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, db: db}
	applied, err := db.Migrate(ctx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("migrating %s: %w", db.Location, err)
	}
	for _, m := range applied {
		log.Info("applied migration", "version", m.Version, "name", m.Name, "database", db.Location)
	}

	secretKey, keyCreated, err := secret.Load(cfg.SecretKey, cfg.DataDir)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("the platform secret key: %w", err)
	}
	if keyCreated {
		log.Info("created the platform secret key, which seals LLM backend credentials; back it up with the database",
			"file", filepath.Join(cfg.DataDir, secret.FileName), "key_id", secretKey.ID())
	}

	s.Audit = audit.New(db, nil)
	s.Workspaces = workspace.NewService(db, s.Audit, nil)
	s.Auth = auth.NewService(db, s.Audit, s.Workspaces, nil)
	s.Workspaces.SetAuth(s.Auth)

	s.Tracking = tracking.NewService(db, s.Audit, nil)
	s.Workspaces.AddHolder(s.Tracking)
	s.Registry = registry.NewService(db, s.Audit, s.Tracking, nil)
	s.Workspaces.AddHolder(s.Registry)
	s.Workspaces.OnCreate(func(ctx context.Context, tx store.Querier, w workspace.Workspace) error {
		return s.Tracking.CreateDefaultExperiment(ctx, tx, w.ID, w.Name)
	})

	secret, created, err := s.Auth.Bootstrap(ctx, cfg.BootstrapKey)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("bootstrapping admin: %w", err)
	}
	if created {
		s.BootstrapSecret = secret
	}
	// The MLflow API's root path serves this workspace.
	if _, err := s.Workspaces.EnsureExists(ctx, workspace.CreateInput{Name: mlflowapi.DefaultWorkspace,
		Description: "The workspace served at the root MLflow tracking URI"}); err != nil {
		db.Close()
		return nil, fmt.Errorf("creating the default workspace: %w", err)
	}
	if err := s.ensureDefaultExperiments(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("creating Default experiments: %w", err)
	}
	artifactsURL, err := cfg.ArtifactsURL()
	if err != nil {
		db.Close()
		return nil, err
	}
	if s.Artifacts, err = artifact.Open(ctx, artifactsURL); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening artifact store %s: %w", artifactsURL, err)
	}
	s.Registry.UseArtifacts(s.Artifacts, cfg.ArtifactsRegion)

	skus, err := compute.LoadCatalogue(cfg.SKUFile, nil)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("SKU catalogue: %w", err)
	}
	for _, w := range skus.Warnings() {
		log.Warn("SKU catalogue", "note", w)
	}
	s.Compute = compute.NewService(db, s.Audit, skus, nil)
	s.Workspaces.AddHolder(s.Compute)
	workDir := cfg.WorkDir
	if workDir == "" {
		workDir = cfg.DataDir
	}
	if s.Executor, err = cfg.openExecutor(ctx, workDir, log); err != nil {
		db.Close()
		return nil, err
	}
	if caps := s.Executor.Capabilities(); !caps.CgroupLimits {
		log.Info("job CPU and memory limits are not enforced by cgroups", "reason", caps.CgroupReason)
	}
	s.Jobs = jobs.NewService(jobs.Deps{DB: db, Audit: s.Audit, Tracking: s.Tracking, Registry: s.Registry, Compute: s.Compute, Tokens: s.Auth,
		Artifacts: s.Artifacts, Executor: s.Executor, Workspaces: s.Workspaces, WorkDir: filepath.Join(cfg.DataDir, "jobs"), Log: log})
	s.Workspaces.AddHolder(s.Jobs)
	s.Instances = compute.NewInstances(s.Compute, s.Executor, instanceKeys{s.Auth}, cfg.DataDir, log)

	doc, err := api.OpenAPIJSON()
	if err != nil {
		db.Close()
		return nil, err
	}
	s.API = &api.API{Auth: s.Auth, Workspaces: s.Workspaces, Registry: s.Registry, Compute: s.Compute, Instances: s.Instances, Jobs: s.Jobs, Audit: s.Audit, Log: log, OpenAPI: doc}
	// A deleted workspace's artifact files go too: a new workspace of the
	// same name must not find them.
	s.Workspaces.OnDeleted(func(ctx context.Context, w workspace.Workspace) {
		if err := s.Artifacts.Delete(ctx, w.Name); err != nil {
			log.Error("deleting a deleted workspace's artifacts", "workspace", w.Name, "error", err)
		}
		if err := s.Registry.DeleteWorkspaceData(ctx, w.Name); err != nil {
			log.Error("deleting a deleted workspace's uploaded data", "workspace", w.Name, "error", err)
		}
	})
	s.MLflow = &mlflowapi.API{Auth: s.Auth, Workspaces: s.Workspaces, Tracking: s.Tracking, Registry: s.Registry, Artifacts: s.Artifacts, Audit: s.Audit, Log: log}

	s.registry = prometheus.NewRegistry()
	s.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	for role, pool := range db.Pools() {
		s.registry.MustRegister(collectors.NewDBStatsCollector(pool, role))
	}
	metrics := observe.NewMetrics(s.registry)

	// Online endpoints: the control plane (service, controller, route
	// snapshots) and the in-process gateway that serves from them.
	s.Endpoints = endpoint.NewService(db, s.Audit, s.Compute, nil)
	s.Endpoints.Log = log
	s.Workspaces.AddHolder(s.Endpoints)
	s.registry.MustRegister(endpoint.NewCollector(s.Endpoints))
	s.Registry.SetDeploymentFinder(func(ctx context.Context, wsID, model, version string) ([]registry.Deployment, error) {
		list, err := s.Endpoints.DeploymentsOfModel(ctx, wsID, model, version)
		out := make([]registry.Deployment, 0, len(list))
		for _, d := range list {
			out = append(out, registry.Deployment(d))
		}
		return out, err
	})
	s.meter = gateway.NewMeter(s.Endpoints.WriteCalls, 1<<16, 500, time.Second, s.registry, log)
	models := modelResolver{s.Registry}
	s.Controller = endpoint.NewController(s.Endpoints, s.Executor, s.Artifacts, models, filepath.Join(workDir, "replicas"), log, nil)
	s.Controller.UseRemote(s.Jobs.ServerURL, replicaTokens{s.Auth})
	captured := s.Artifacts.Private("capture")
	var counter ratelimit.Counter
	if cfg.Redis != "" {
		rc, err := ratelimit.OpenRedis(cfg.Redis, "plinth")
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("redis: %w", err)
		}
		s.redis, counter = rc, rc
	}
	s.Gateway = gateway.New(gateway.Options{Auth: gatewayAuth{s.Auth}, Waker: s.Controller, Meter: s.meter, Registry: s.registry, Log: log, Counter: counter,
		Capture: func(ctx context.Context, r gateway.Record, req, resp []byte) {
			// One JSON document per sampled call, by deployment and hour,
			// where the artifact routes cannot change it.
			doc, _ := json.Marshal(map[string]any{"time": r.Time, "request_id": r.RequestID, "status": r.Status, "latency_ms": r.Latency.Milliseconds(),
				"principal": r.Principal, "replica": r.Replica, "request": string(req), "response": string(resp)})
			key := fmt.Sprintf("%s/%s/%s/%s/%s.json", r.Workspace, r.Endpoint, r.Deployment, r.Time.UTC().Format("2006/01/02/15"), r.RequestID)
			if _, err := captured.Put(ctx, key, bytes.NewReader(doc)); err != nil {
				log.Warn("capturing an endpoint call", "endpoint", r.Endpoint, "error", err)
			}
		}})
	s.Snapshots = endpoint.NewPublisher(s.Endpoints, s.Gateway.Update)
	s.Elector = leader.New(db, log)
	s.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "plinth_leader",
		Help: "1 while this server is the leader that runs the scheduler and controllers, 0 on a standby.",
	}, func() float64 {
		if s.Elector.Leading() {
			return 1
		}
		return 0
	}))
	s.Endpoints.OnChange(func() { s.Snapshots.Changed(); s.Controller.Kick() })
	s.Controller.OnChange(s.Snapshots.Changed)
	s.Controller.SetLoad(func() map[string]endpoint.LoadInfo {
		out := map[string]endpoint.LoadInfo{}
		for k, l := range s.Gateway.Load() {
			out[k] = endpoint.LoadInfo{InFlight: l.InFlight, Queued: l.Queued}
		}
		return out
	})
	s.API.Endpoints, s.API.Models, s.API.Snapshots, s.API.Controller = s.Endpoints, models, s.Snapshots, s.Controller

	// The foundation-model front door: its routing table travels in every
	// route snapshot, and its changes are published within a second.
	s.LLM = llm.NewService(db, s.Audit, secretKey, s.Snapshots.Changed)
	s.LLM.UseWorkspaceTeams(s.workspaceTeams)
	s.Snapshots.SetLLM(s.LLM.Snapshot)
	s.API.LLM = s.LLM
	if err := s.LLM.CheckCredentials(ctx); err != nil {
		log.Error("LLM backend credentials cannot be unsealed: gateways keep routing without them", "key_id", secretKey.ID(), "error", err)
	}

	mux := http.NewServeMux()
	s.API.Register(mux)
	s.MLflow.Register(mux)
	// The web UI at /ui (and / redirects there), over the same services.
	s.UI = web.New(web.Deps{Auth: s.Auth, Workspaces: s.Workspaces, Tracking: s.Tracking, Registry: s.Registry, Artifacts: s.Artifacts,
		Compute: s.Compute, Instances: s.Instances, Jobs: s.Jobs, Endpoints: s.Endpoints, LLM: s.LLM, Audit: s.Audit, Secret: secretKey, Metrics: s.registry, Log: log})
	s.UI.Register(mux)
	(&appproxy.Proxy{Auth: s.Auth, Workspaces: s.Workspaces, Instances: s.Instances}).Register(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeStatus(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		writeStatus(w, http.StatusOK, buildinfo.Get())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}))
	// Scoring calls go straight to the gateway, which keeps its own
	// request ids, access log and metrics: wrapping it again would log
	// each call twice and cost latency on the hottest path.
	outer := http.NewServeMux()
	s.Gateway.Register(outer)
	outer.Handle("/", observe.Wrap(mux, metrics, log))
	s.handler = outer
	s.ready.Store(true)
	return s, nil
}

// Handler is the server's whole HTTP surface, for tests and embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// DB exposes the store, for tests and maintenance commands.
func (s *Server) DB() *store.DB { return s.db }

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{"migrations": "ok", "store": "ok", "role": "standby"}
	if s.Elector.Leading() {
		checks["role"] = "leader"
	}
	status := http.StatusOK
	if !s.ready.Load() {
		checks["migrations"], status = "pending", http.StatusServiceUnavailable
	}
	if err := s.db.Ping(ctx); err != nil {
		checks["store"], status = "unreachable: "+err.Error(), http.StatusServiceUnavailable
	}
	writeStatus(w, status, map[string]any{"status": map[bool]string{true: "ready", false: "not ready"}[status == http.StatusOK], "checks": checks})
}

func writeStatus(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// Listen opens the configured address; separate from Serve so callers can
// learn the real port (":0") before serving.
func (s *Server) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w (is another plinth running? use --addr)", s.cfg.Addr, err)
	}
	return ln, nil
}

// Serve serves HTTP on ln until ctx is cancelled, then lets in-flight
// requests finish (up to ShutdownTimeout) and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if s.cfg.DebugAddr != "" {
		dbg := &http.Server{Addr: s.cfg.DebugAddr, Handler: debugMux(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := dbg.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("debug listener failed", "addr", s.cfg.DebugAddr, "error", err)
			}
		}()
		defer dbg.Close()
		s.log.Info("serving pprof profiles", "addr", s.cfg.DebugAddr)
	}
	scheme := "http"
	if s.cfg.TLSCert != "" {
		scheme = "https"
	}
	self := scheme + "://" + ln.Addr().String()
	if s.cfg.AdvertiseURL != "" {
		self = strings.TrimRight(s.cfg.AdvertiseURL, "/")
	}
	s.Jobs.SetTrackingURL(self)
	s.Instances.SetServerURL(self)
	// Every replica publishes route snapshots to its own gateway and
	// meters its own calls; one leader at a time schedules and controls.
	go s.Snapshots.Run(ctx)
	go s.meter.Run(ctx)
	leadDone := make(chan struct{})
	go func() {
		defer close(leadDone)
		s.Elector.Run(ctx, s.lead)
	}()
	defer func() { <-leadDone }()
	errc := make(chan error, 1)
	go func() {
		if s.cfg.TLSCert != "" || s.cfg.TLSKey != "" {
			srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			errc <- srv.ServeTLS(ln, s.cfg.TLSCert, s.cfg.TLSKey)
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.ready.Store(false)
	s.log.Info("shutting down: waiting for in-flight requests", "timeout", s.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && e != nil {
		err = errors.Join(err, e)
	}
	return err
}

// Close closes the artifact store, the Redis client and the database
// (SQLite checkpoints its WAL).
func (s *Server) Close() error {
	var err error
	if s.Artifacts != nil {
		err = s.Artifacts.Close()
	}
	if s.redis != nil {
		s.redis.Close()
	}
	return errors.Join(err, s.db.Close())
}

// LoadConfigFile reads a YAML (or JSON) config file into cfg; fields the
// file leaves out keep their values.
func LoadConfigFile(data []byte, cfg *Config) error {
	if err := yaml.UnmarshalStrict(data, cfg); err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	return nil
}

// debugMux serves the pprof profiles; kept off the main listener so they
// are never exposed with the API.
func debugMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// pruneUploads removes multipart uploads abandoned for a day, hourly,
// until ctx ends: clients do not always abort what they give up on.
func (s *Server) pruneUploads(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if n, err := s.Artifacts.PruneMultipart(ctx, time.Now().Add(-24*time.Hour)); err != nil && ctx.Err() == nil {
			s.log.Warn("pruning abandoned multipart uploads", "error", err)
		} else if n > 0 {
			s.log.Info("pruned abandoned multipart uploads", "uploads", n)
		}
		if n, err := s.Registry.PruneDataUploads(ctx, time.Now().Add(-registry.DataUploadTTL)); err != nil && ctx.Err() == nil {
			s.log.Warn("pruning abandoned data uploads", "error", err)
		} else if n > 0 {
			s.log.Info("pruned abandoned data uploads", "uploads", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ensureDefaultExperiments gives workspaces made before tracking existed
// their Default experiment.
func (s *Server) ensureDefaultExperiments(ctx context.Context) error {
	var all [][2]string
	after := ""
	for {
		page, next, err := s.Workspaces.List(ctx, workspace.ListOptions{After: after, Limit: 1000})
		if err != nil {
			return err
		}
		for _, w := range page {
			all = append(all, [2]string{w.ID, w.Name})
		}
		if next == "" {
			return s.Tracking.EnsureDefaultExperiments(ctx, all)
		}
		after = next
	}
}

// workspaceTeams maps every workspace to its team, for the LLM routing
// table (LLM calls are charged and limited as their workspace's team).
func (s *Server) workspaceTeams(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	after := ""
	for {
		page, next, err := s.Workspaces.List(ctx, workspace.ListOptions{After: after, Limit: 1000})
		if err != nil {
			return nil, err
		}
		for _, w := range page {
			out[w.Name] = w.Team
		}
		if next == "" {
			return out, nil
		}
		after = next
	}
}

// instanceKeys issues and revokes compute instances' keys: their owner's,
// limited to the workspace.
type instanceKeys struct{ auth *auth.Service }

func (k instanceKeys) IssueInstanceKey(ctx context.Context, owner, workspace, instance string, ttl time.Duration) (string, string, error) {
	exp := time.Now().Add(ttl)
	key, secret, err := k.auth.CreateKey(ctx, &auth.Identity{Principal: owner}, auth.CreateKeyInput{
		Name: fmt.Sprintf("instance-%s-%d", instance, time.Now().UnixNano()%1e9), Workspace: workspace, ExpiresAt: &exp})
	return secret, key.ID, err
}

func (k instanceKeys) RevokeInstanceKey(ctx context.Context, owner, keyID string) error {
	_, err := k.auth.RevokeKey(ctx, &auth.Identity{Principal: owner}, keyID)
	return err
}

// replicaTokens are the keys replicas on a remote executor fetch their
// model with: run tokens bound to a run id that no run has ("replica-" and
// the replica's id), so they read the workspace's tracking, registry and
// data with their owner's rights there and can write nothing (every write
// a run token may make names its run).
type replicaTokens struct{ auth *auth.Service }

// replicaKeyTTL outlives any replica; the key is revoked when it stops.
const replicaKeyTTL = 365 * 24 * time.Hour

func (k replicaTokens) IssueReplicaToken(ctx context.Context, owner, workspace, replica string) (string, error) {
	secret, _, err := k.auth.CreateRunToken(ctx, owner, workspace, "replica-"+replica, replicaKeyTTL)
	return secret, err
}

func (k replicaTokens) RevokeReplicaToken(ctx context.Context, replica string) error {
	return k.auth.RevokeRunTokens(ctx, "replica-"+replica)
}

// lead runs what exactly one replica may run at a time — the job
// scheduler, the endpoint controller, compute instance schedules and the
// pruning of abandoned uploads — until leadership ends with ctx. Work they
// started keeps running; the next leader adopts it from the database.
func (s *Server) lead(ctx context.Context) {
	var wg sync.WaitGroup
	for _, run := range []func(context.Context){
		s.pruneUploads,
		func(ctx context.Context) { s.Instances.Run(ctx, 5*time.Second) },
		s.Controller.Run,
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(ctx)
		}()
	}
	s.Jobs.Run(ctx)
	wg.Wait()
}

// RunEndpoints runs the endpoint controller, the route snapshot publisher
// and the gateway's meter until ctx ends (Serve runs it; tests that
// serve through httptest start it themselves).
func (s *Server) RunEndpoints(ctx context.Context) {
	go s.Snapshots.Run(ctx)
	go s.meter.Run(ctx)
	s.Controller.Run(ctx)
}

// gatewayAuth lets platform API keys call endpoints (EndpointsInvoke).
type gatewayAuth struct{ auth *auth.Service }

func (g gatewayAuth) Authorize(ctx context.Context, token, workspace string) (string, string, error) {
	id, err := g.auth.Authenticate(ctx, token)
	if err != nil {
		return "", "", fmt.Errorf("%w: %v", gateway.ErrUnauthenticated, err)
	}
	if !id.Can(auth.EndpointsInvoke, workspace) {
		return id.Principal, id.KeyID, fmt.Errorf("%w: %s may not call endpoints in %s (needs %s)", gateway.ErrForbidden, id.Principal, workspace, auth.EndpointsInvoke)
	}
	return id.Principal, id.KeyID, nil
}

// modelResolver resolves MLflow model URIs for deployments.
type modelResolver struct{ reg *registry.Service }

func (m modelResolver) ResolveModel(ctx context.Context, sc compute.Scope, ref string) (string, string, string, error) {
	tsc := tracking.Scope{WorkspaceID: sc.WorkspaceID, Workspace: sc.Workspace}
	var v registry.Version
	var err error
	switch {
	case strings.HasPrefix(ref, "azureml:"):
		name, version, ok := strings.Cut(strings.TrimPrefix(ref, "azureml:"), ":")
		if !ok {
			return "", "", "", fault.New(fault.Invalid, "%q: want azureml:<name>:<version>", ref)
		}
		v, err = m.reg.GetVersion(ctx, tsc, name, version)
	case strings.HasPrefix(ref, "models:/"):
		rest := strings.TrimPrefix(ref, "models:/")
		if name, alias, ok := strings.Cut(rest, "@"); ok {
			v, err = m.reg.VersionByAlias(ctx, tsc, name, alias)
			break
		}
		name, which, ok := strings.Cut(rest, "/")
		if !ok {
			return "", "", "", fault.New(fault.Invalid, "%q: want models:/<name>/<version|stage> or models:/<name>@<alias>", ref)
		}
		if _, perr := strconv.Atoi(which); perr == nil {
			v, err = m.reg.GetVersion(ctx, tsc, name, which)
			break
		}
		var vs []registry.Version
		vs, err = m.reg.LatestVersions(ctx, tsc, name, []string{which})
		if err == nil && len(vs) == 0 {
			err = fault.New(fault.NotFound, "model %s has no version in stage %s", name, which)
		}
		if err == nil {
			v = vs[0]
		}
	default:
		return "", "", "", fault.New(fault.Invalid, "%q is not a model URI", ref)
	}
	if err != nil {
		return "", "", "", err
	}
	loc := v.StorageLocation
	if loc == "" {
		loc = v.Source
	}
	return v.Name, v.Version, loc, nil
}
