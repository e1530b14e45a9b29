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
	var o node.AuditOptions
	cmd := &cobra.Command{
		Use:   "audit CHECKPOINT|RUN",
		Short: "Recompute every round of a checkpoint's lineage and re-execute its contributions, bit for bit",
		Long: `Walk the lineage of CHECKPOINT (a round's checkpoint CID; given a RUN ID, the
newest checkpoint of the run this home holds, as a follower does) back to the run's
genesis and recompute every round transition here, on the CPU: the round's
base checkpoint and the contributions its round.json lists give, by the
aggregation and outer step every participant runs, exactly one checkpoint
CID, which must be the lineage's. Contributions are fetched where missing
and rehashed block by block first. Each round is audited on its own (its
base read back from the store), so one bad round does not hide the others;
--from audits a tail. Then every contribution the round included (or the
--sample share of them, picked by a hash of the round's checkpoint) is
re-executed: from the base, the worker state it names as its prior, the
shards the schedule assigns its author and its author's seed, the run's
inner steps and encoding must give its partitions and the state it links,
byte for byte (a contribution trained on a GPU in fp32 re-executes here
exactly). One line per round: ok, mismatch (the CID the round's inputs give
instead, or the contribution that does not follow from its inputs and the
first parameter where it differs), corrupt (a block that does not hash to
its CID), missing (content nobody served within --timeout) or refused (a
record or contribution that breaks the run's rules). Exit status 1 unless
every round is ok. An interrupted audit of the same checkpoint resumes: the
rounds it had found ok are taken from HOME/audits until it finishes.`,
		Example: `  fomnet audit baguqeera…                # a run this home follows: no trainer needed
  fomnet audit bafybei…                  # any checkpoint, fetched from whoever serves it
  fomnet audit bafybei… --from 90 --json
  fomnet audit bafybei… --sample 0.1     # re-execute a tenth of the contributions`,
		Args: oneCID("audit"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ck, _ := parseCID(args[0])
			if o.From < 0 {
				return usagef("--from %d is negative", o.From)
			}
			if !(o.Sample >= 0 && o.Sample <= 1) {
				return usagef("--sample %v is not a share between 0 and 1", o.Sample)
			}
			return withNode(ctxOf(cmd), e, &f, true, false, func(api node.API) error {
				start := time.Now()
				rep, err := api.Audit(ctxOf(cmd), ck, o, func(done, total int64) {
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
	cmd.Flags().IntVar(&o.From, "from", 1, "first round to audit")
	cmd.Flags().Float64Var(&o.Sample, "sample", 1, "share of each round's contributions to re-execute (0: none)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func printAudit(e *env, rep *node.AuditReport) {
	fmt.Fprintf(e.stdout, "run %s, lineage of %s\n", rep.Run, rep.Checkpoint)
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "round\tcheckpoint\tcontributions\tre-executed\tresult\tseconds\t")
	for _, r := range rep.Rounds {
		fmt.Fprintf(w, "%d\t%s\t%d\t%d\t%s\t%.2f\t\n", r.Round, r.Checkpoint, r.Contributions, r.Reexecuted, r.Result, r.Seconds)
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

func newProofCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "proof",
		Short: "Fraud proofs: re-check one",
	}
	var f nodeFlags
	var asJSON bool
	check := &cobra.Command{
		Use:   "check PROOF",
		Short: "Re-check a fraud proof by re-executing the contribution it quotes",
		Long: `Fetch the fraud proof PROOF (a CID a round record's "excluded" list names, or
a node's log), open the contribution announcement it quotes under its
author's signature, and re-execute that contribution here, on the CPU, from
the run's checkpoint it was based on, the worker state it names and the
shards the schedule assigned its author. This home need not have taken part
in the run. Prints the author the proof convicts and the first difference
re-execution found; exit status 1 when the proof proves nothing (the
contribution re-executes to its own bytes, a forged signature, another
run's message) or could not be checked within --timeout.`,
		Example: `  fomnet proof check bafkrei…
  fomnet proof check bafkrei… --json`,
		Args: oneCID("proof check"),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, _ := parseCID(args[0])
			return withNode(ctxOf(cmd), e, &f, true, false, func(api node.API) error {
				fc, err := api.CheckFraud(ctxOf(cmd), k)
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(fc)
				}
				fmt.Fprintf(e.stdout, "proof %s convicts %s\ncontribution %s to round %d of run %s: %s\n",
					fc.Proof, fc.Author, fc.Contribution, fc.Round, fc.Run, fc.Detail)
				return nil
			})
		},
	}
	f.addNet(check)
	f.addTimeout(check, e)
	check.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.AddCommand(check)
	return cmd
}
