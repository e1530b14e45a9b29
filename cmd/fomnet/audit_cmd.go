package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/node"
)

func newAuditCmd(e *env) *cobra.Command {
	var f nodeFlags
	var asJSON bool
	var from int
	cmd := &cobra.Command{
		Use:   "audit CHECKPOINT|RUN",
		Short: "Recompute every round of a checkpoint's lineage, bit for bit",
		Long: `Walk the lineage of CHECKPOINT (a round's checkpoint CID; given a RUN ID, the
newest checkpoint of the run this home holds, as a follower does) back to the run's
genesis and recompute every round transition here, on the CPU: the round's
base checkpoint and the contributions its round.json lists give, by the
aggregation and outer step every participant runs, exactly one checkpoint
CID, which must be the lineage's. Contributions are fetched where missing
and rehashed block by block first. Each round is audited on its own (its
base read back from the store), so one bad round does not hide the others;
--from audits a tail. One line per round: ok, mismatch (the CID the round's
inputs give instead), corrupt (a block that does not hash to its CID),
missing (content nobody served within --timeout) or refused (a record or
contribution that breaks the run's rules). Exit status 1 unless every round
is ok. An interrupted audit of the same checkpoint resumes: the rounds it
had found ok are taken from HOME/audits until it finishes. Re-executing each contribution's inner steps is not part of it yet.`,
		Example: `  fomnet audit baguqeera…                # a run this home follows: no trainer needed
  fomnet audit bafybei…                  # any checkpoint, fetched from whoever serves it
  fomnet audit bafybei… --from 90 --json`,
		Args: oneCID("audit"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ck, _ := parseCID(args[0])
			if from < 0 {
				return usagef("--from %d is negative", from)
			}
			return withNode(ctxOf(cmd), e, &f, true, false, func(api node.API) error {
				start := time.Now()
				rep, err := api.Audit(ctxOf(cmd), ck, from, func(done, total int64) {
					eta := time.Duration(float64(time.Since(start)) / float64(done) * float64(total-done))
					e.logf("audit: %d of %d rounds recomputed, about %s to go", done, total, eta.Round(time.Second))
				})
				if err != nil {
					return err
				}
				if asJSON {
					err = e.printJSON(rep)
				} else {
					printAudit(e, rep)
				}
				if err == nil && !rep.OK {
					err = fmt.Errorf("audit of %s: %s", ck, auditFailures(rep))
				}
				return err
			})
		},
	}
	f.addNet(cmd)
	f.addTimeout(cmd, e)
	cmd.Flags().IntVar(&from, "from", 1, "first round to audit")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func printAudit(e *env, rep *node.AuditReport) {
	fmt.Fprintf(e.stdout, "run %s, lineage of %s\n", rep.Run, rep.Checkpoint)
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "round\tcheckpoint\tcontributions\tresult\tseconds\t")
	for _, r := range rep.Rounds {
		fmt.Fprintf(w, "%d\t%s\t%d\t%s\t%.2f\t\n", r.Round, r.Checkpoint, r.Contributions, r.Result, r.Seconds)
	}
	w.Flush()
	for _, r := range rep.Rounds {
		if r.Detail != "" {
			fmt.Fprintf(e.stdout, "round %d: %s: %s\n", r.Round, r.Result, r.Detail)
		}
	}
}

func auditFailures(rep *node.AuditReport) string {
	n, first := 0, 0
	for _, r := range rep.Rounds {
		if r.Result != "ok" {
			if n == 0 {
				first = r.Round
			}
			n++
		}
	}
	return fmt.Sprintf("%d of %d rounds failed, the first round %d", n, len(rep.Rounds), first)
}
