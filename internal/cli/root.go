// Package cli is the plinth command line: the server roles (up, server)
// and the client commands, which parse flags, call internal/client and
// print tables, JSON or YAML.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/plinth-dev/plinth/internal/client"
)

// globals are the flags every client command shares.
type globals struct {
	url, key, profile, output string
	stdout, stderr            io.Writer
}

// NewRoot builds the whole command tree.
func NewRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "plinth",
		Short: "Plinth: one binary for experiment tracking, training, registry and serving of AI workloads",
		Long: `Plinth is a self-hosted platform for AI workloads: experiment tracking (MLflow-compatible),
compute and jobs, a model registry, online endpoints and an OpenAI-compatible gateway.

Start everything on this machine with 'plinth up'; every other command is a client of a
running server (see 'plinth login').`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.url, "url", "", "Plinth server URL (default: $PLINTH_URL or the current profile)")
	pf.StringVar(&g.key, "key", "", "API key (default: $PLINTH_API_KEY or the current profile; prefer those over this flag, which other users can see in ps)")
	pf.StringVar(&g.profile, "profile", "", "credentials profile to use (default: $PLINTH_PROFILE or the current one)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))

	root.AddCommand(
		newUpCmd(g), newServerCmd(g), newVersionCmd(g), newLoginCmd(g), newWhoamiCmd(g),
		newWorkspaceCmd(g), newKeyCmd(g), newRoleCmd(g), newPrincipalCmd(g), newAuditCmd(g),
		newExperimentCmd(g), newRunCmd(g), newModelCmd(g), newLineageCmd(g), newDataCmd(g),
		newSKUCmd(g), newComputeCmd(g), newJobCmd(g), newQuotaCmd(g), newCostCmd(g),
		newEndpointCmd(g), newDeploymentCmd(g), newUsageCmd(g), newGatewayCmd(g), newLLMCmd(g),
		newDoctorCmd(g),
	)
	root.AddCommand(newWorkloadCmd(g))
	return root
}

// Execute runs the CLI with args and returns the process exit code. Errors
// are printed as one line on stderr.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := NewRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var exit exitError
	if errors.As(err, &exit) {
		return exit.code
	}
	fmt.Fprintln(stderr, "plinth: "+oneLine(describeError(err)))
	return 1
}

// exitError ends the process with a code after the command has already
// said what it needed to (e.g. audit verify finding damage).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func describeError(err error) string {
	var apiErr *client.Error
	if errors.As(err, &apiErr) {
		msg := apiErr.Message
		if apiErr.Code != "" {
			msg += " (" + apiErr.Code + ")"
		}
		if apiErr.Status == 401 {
			msg += "; run `plinth login` with a valid key"
		}
		return msg
	}
	return err.Error()
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// client builds an API client from flags, environment and profile.
func (g *globals) client() (*client.Client, error) {
	p, err := client.Resolve(g.profile, g.url, g.key)
	if err != nil {
		return nil, err
	}
	if p.Key == "" {
		return nil, errors.New("no API key configured: run `plinth login --url URL --key KEY` or set PLINTH_API_KEY")
	}
	return client.New(p.URL, p.Key), nil
}

func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s takes %d argument(s): %s (got %d)", cmd.CommandPath(), n, names, len(args))
		}
		return nil
	}
}

// withClient adapts a command body that needs an API client: it builds
// the client from flags, environment and profile first.
func (g *globals) withClient(run func(cmd *cobra.Command, c *client.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := g.client()
		if err != nil {
			return err
		}
		return run(cmd, c, args)
	}
}
