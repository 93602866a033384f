package cli

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/plinth-dev/plinth/internal/workload"
)

// newWorkloadCmd is what runs inside the containers of a remote executor:
// nobody types it, so it is hidden from help.
func newWorkloadCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:    "workload",
		Short:  "Run work inside a container of a remote executor (started by Plinth, not by hand)",
		Hidden: true,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "install PATH",
		Short: "Copy this binary to PATH (an init container shares it with the work's container)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return workload.Install(args[0])
		},
	}, &cobra.Command{
		Use:   "run",
		Short: "Fetch the work's code and inputs, run its command, upload its outputs (described by $PLINTH_STAGED_RUN)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			run, err := workload.FromEnv()
			if err != nil {
				return err
			}
			// Signals go to the command (the runner forwards them): the
			// runner itself ends only once the command has, and uploads
			// nothing unless it succeeded.
			r := &workload.Runner{Run: run, Stdout: g.stdout, Stderr: g.stderr}
			if code := r.Exec(context.WithoutCancel(cmd.Context())); code != 0 {
				return exitError{code: code}
			}
			return nil
		},
	})
	return cmd
}
