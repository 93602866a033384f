package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/client"
	"github.com/plinth-dev/plinth/internal/gateway"
	"github.com/plinth-dev/plinth/internal/gateway/h1"
	"github.com/plinth-dev/plinth/internal/ratelimit"
)

// newGatewayCmd runs the gateway apart from the control plane: it
// long-polls route snapshots and keeps serving on the last one while the
// control plane is down.
func newGatewayCmd(g *globals) *cobra.Command {
	var addr, cp, redisURL, httpServer string
	cmd := &cobra.Command{
		Use:   "gateway --control-plane URL",
		Short: "Run the gateway (endpoints and the OpenAI-compatible API) on its own, following a control plane's routes",
		Long: `Run the data plane of online endpoints as its own process. It follows the control plane's
route snapshots (long-polling /api/v1/gateway/snapshot with its API key, which needs
endpoints.read at platform scope; llm.credentials.read too for the OpenAI-compatible API to reach
LLM backends) and keeps serving on the last one when the control plane is unreachable. Endpoint
keys are checked locally; platform keys are checked with the control plane and the answer kept for
a minute. With --redis-url, rate limits and LLM quotas are shared with every gateway using it. Calls are metered back to the control plane in batches.`,
		Example: "  PLINTH_API_KEY=plk_... plinth gateway --control-plane http://10.0.0.5:8080 --addr 0.0.0.0:8081",
		Args:    exactArgs(0, "(none)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if httpServer != "plinth" && httpServer != "net" {
				return fmt.Errorf("--http-server %q: want plinth or net", httpServer)
			}
			p, err := client.Resolve(g.profile, cp, g.key)
			if err != nil {
				return err
			}
			if p.URL == "" || p.Key == "" {
				return fmt.Errorf("--control-plane URL and an API key (PLINTH_API_KEY or --key) are required")
			}
			c := client.New(p.URL, p.Key)
			c.HTTP.Timeout = 60 * time.Second
			log, err := (&serveFlags{logLevel: "info", logFormat: "auto"}).logger(g.stderr)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			reg := prometheus.NewRegistry()
			meter := gateway.NewMeter(func(ctx context.Context, batch []gateway.Record) error {
				return c.Do(ctx, "POST", "/api/v1/gateway/calls", nil, map[string]any{"calls": batch}, nil)
			}, 1<<16, 500, time.Second, reg, log)
			tuneGC()
			opts := gateway.Options{Auth: &remoteAuth{c: c, cache: map[string]remoteDecision{}}, Meter: meter, Registry: reg, Log: log}
			if redisURL != "" {
				rc, err := ratelimit.OpenRedis(redisURL, "plinth")
				if err != nil {
					return fmt.Errorf("--redis-url: %w", err)
				}
				defer rc.Close()
				opts.Counter = rc
			}
			gw := gateway.New(opts)
			mctx, stopMeter := context.WithCancel(context.Background())
			defer stopMeter()
			metered := make(chan struct{})
			go func() { defer close(metered); meter.Run(mctx) }()
			go gw.Follow(ctx, func(ctx context.Context, after int64) (*gateway.Snapshot, error) {
				var s gateway.Snapshot
				err := c.Do(ctx, "GET", "/api/v1/gateway/snapshot", url.Values{"after": {strconv.FormatInt(after, 10)}}, nil, &s)
				return &s, err
			})
			srv := gw.Server(addr)
			mux := http.NewServeMux()
			mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
			mux.Handle("/", srv.Handler)
			srv.Handler = mux
			// Both servers get the same handler, timeouts and header limit.
			serve, shutdown := srv.ListenAndServe, srv.Shutdown
			if httpServer == "plinth" {
				hs := h1.FromHTTP(srv)
				serve, shutdown = func() error { return hs.ListenAndServe(addr) }, hs.Shutdown
			}
			errc := make(chan error, 1)
			go func() { errc <- serve() }()
			fmt.Fprintf(g.stdout, "Plinth gateway serving at http://%s, following %s\n", addr, p.URL)
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err = shutdown(sctx)
			// The meter writes what it holds before it returns.
			stopMeter()
			select {
			case <-metered:
			case <-sctx.Done():
			}
			return err
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8081", "address to serve scoring calls on")
	cmd.Flags().StringVar(&cp, "control-plane", "", "URL of the Plinth control plane")
	cmd.Flags().StringVar(&httpServer, "http-server", "plinth", "HTTP/1.1 server of the data plane: plinth (its own, cheaper per call; see docs/benchmarks.md) or net (Go's net/http)")
	cmd.Flags().StringVar(&redisURL, "redis-url", "", "Redis holding the LLM limits' counters, shared with the other gateways and the control plane (redis://host:6379/0); default: in this process")
	return cmd
}

// remoteAuth checks platform keys with the control plane (whoami) and
// keeps each answer for a minute, so a known caller is served while the
// control plane is down.
type remoteAuth struct {
	c     *client.Client
	mu    sync.Mutex
	cache map[string]remoteDecision
}

type remoteDecision struct {
	id      *auth.Identity
	invalid bool
	at      time.Time
}

func (a *remoteAuth) Authorize(ctx context.Context, token, workspace string) (string, string, error) {
	h := sha256.Sum256([]byte(token))
	k := hex.EncodeToString(h[:])
	a.mu.Lock()
	d, ok := a.cache[k]
	a.mu.Unlock()
	if !ok || time.Since(d.at) > time.Minute {
		who, err := client.New(a.c.BaseURL, token).WhoAmI(ctx)
		var apiErr *client.Error
		switch {
		case errors.As(err, &apiErr) && apiErr.Status == http.StatusUnauthorized:
			d = remoteDecision{invalid: true, at: time.Now()}
		case err != nil:
			if ok {
				break // keep the last answer while the control plane is away
			}
			return "", "", fmt.Errorf("checking the key with the control plane: %w", err)
		default:
			id := &auth.Identity{Principal: who.Principal, KeyID: who.KeyID, KeyWorkspace: who.KeyWorkspace}
			for _, gr := range who.Grants {
				id.Grants = append(id.Grants, auth.Grant{Role: auth.Role(gr.Role), Workspace: strings.TrimPrefix(strings.TrimPrefix(gr.Scope, "platform"), "workspaces/")})
			}
			d = remoteDecision{id: id, at: time.Now()}
		}
		a.mu.Lock()
		a.cache[k] = d
		a.mu.Unlock()
	}
	if d.invalid || d.id == nil {
		return "", "", gateway.ErrUnauthenticated
	}
	if !d.id.Can(auth.EndpointsInvoke, workspace) {
		return d.id.Principal, d.id.KeyID, fmt.Errorf("%w: %s may not call endpoints in %s", gateway.ErrForbidden, d.id.Principal, workspace)
	}
	return d.id.Principal, d.id.KeyID, nil
}
