package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/client"
)

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read and verify the hash-chained audit log"}

	var q client.AuditQuery
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List audit records, newest first",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			var all []audit.Record
			for {
				q.PageSize = min(limit-len(all), 1000)
				page, next, err := c.ListAudit(cmd.Context(), q)
				if err != nil {
					return err
				}
				all = append(all, page...)
				if next == "" || len(all) >= limit {
					break
				}
				q.PageToken = next
			}
			if all == nil {
				all = []audit.Record{}
			}
			return g.printResult(all, func() [][]string {
				rows := [][]string{{"SEQ", "TIME", "PRINCIPAL", "ACTION", "RESOURCE", "RESULT", "SOURCE", "REQUEST"}}
				for _, r := range all {
					rows = append(rows, []string{fmt.Sprint(r.Seq), fmtTime(r.Time), r.Principal, r.Action, r.Resource, r.Result, orDash(r.Source), orDash(r.RequestID)})
				}
				return rows
			})
		}),
	}
	fl := list.Flags()
	fl.StringVar(&q.Principal, "principal", "", "only records by this principal")
	fl.StringVar(&q.Resource, "resource", "", "only records about this resource or below it (e.g. workspaces/fraud)")
	fl.StringVar(&q.Action, "action", "", "only this action (e.g. workspace.delete)")
	fl.StringVar(&q.Result, "result", "", "only this result (success, permission_denied, ...)")
	fl.StringVar(&q.Workspace, "workspace", "", "only records in this workspace (needs audit.read there)")
	fl.StringVar(&q.Since, "since", "", "from this time (RFC 3339) or this long ago (e.g. 24h)")
	fl.StringVar(&q.Until, "until", "", "before this time (RFC 3339) or this long ago")
	fl.IntVar(&limit, "limit", 100, "show at most this many")

	verify := &cobra.Command{
		Use:   "verify",
		Short: "Check the audit log's hash chain; exits 1 if any record was edited, deleted or reordered",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			rep, err := c.VerifyAudit(cmd.Context())
			if err != nil {
				return err
			}
			if g.output == "table" || g.output == "" {
				if rep.OK {
					fmt.Fprintf(g.stdout, "audit log OK: %d records, chain head %d %s\n", rep.Records, rep.HeadSeq, short(rep.HeadHash))
				} else {
					fmt.Fprintf(g.stdout, "audit log DAMAGED: %d problem(s) in %d records (chain head %d)\n", len(rep.Problems), rep.Records, rep.HeadSeq)
					rows := [][]string{{"SEQ", "PROBLEM", "DETAIL"}}
					for _, p := range rep.Problems {
						rows = append(rows, []string{fmt.Sprint(p.Seq), p.Kind, p.Detail})
					}
					if err := writeTable(g.stdout, rows); err != nil {
						return err
					}
					if rep.Truncated {
						fmt.Fprintln(g.stdout, "(more problems not shown)")
					}
				}
			} else if err := g.printResult(rep, nil); err != nil {
				return err
			}
			if !rep.OK {
				return exitError{code: 1}
			}
			return nil
		}),
	}
	cmd.AddCommand(list, verify)
	return cmd
}

func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}
