package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/node/swarmsim"
)

func newBenchSwarmCmd(e *env) *cobra.Command {
	c := swarmsim.DefaultConfig()
	var (
		peers     []int
		protocols []string
		modes     []string
		asJSON    bool
	)
	cmd := &cobra.Command{
		Use:   "swarm",
		Short: "Simulate rounds at scale: utilisation, round time and bytes per node for N peers",
		Long: `Simulate fomnet's rounds over N peers with their own inner-step times and
links, churn and a model of the given size (node/swarmsim: a model of time,
no training and no network) and report, for each N, protocol and mode: the
compute utilisation (the time peers computed inner steps, their own and the
spot checks', over the time they were up), the useful share (inner steps of
contributions a round included), the mean time between checkpoints, the bytes
a node sends and receives a round, contributions included, stragglers left
out by the close rule (gradsync.CloseRule), crashes and contributions lost
to them. Rounds after the first are measured.

Protocols: "all" is today's node (every participant fetches every
contribution and recomputes every aggregate); "scatter" gives each
participant one partition to reduce and Verify partitions to recompute.
Modes: "sequential" waits for each round's checkpoint before the next inner
steps, as the node does today; "overlap" trains on while the exchange
completes (the outer step applied a round late).

The same seed gives the same report. Defaults: a 1B-parameter model, int4,
H 500 steps of 1 s, 100 Mbit/s median uplinks, 10% churn an hour.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, mode := range modes {
				if mode != "sequential" && mode != "overlap" {
					return usagef("--modes %q: want sequential or overlap", mode)
				}
			}
			var reps []swarmsim.Report
			for _, n := range peers {
				for _, proto := range protocols {
					for _, mode := range modes {
						cc := c
						cc.Peers, cc.Protocol, cc.Overlap = n, proto, mode == "overlap"
						rep, err := swarmsim.Run(cc)
						if err != nil {
							return usageError{err}
						}
						e.logf("bench swarm: %d peers, %s, %s: utilisation %.1f%%, round %.1f s", n, proto, mode, 100*rep.Utilization, rep.RoundSeconds)
						reps = append(reps, rep)
					}
				}
			}
			if asJSON {
				return e.printJSON(reps)
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintf(w, "peers\tprotocol\tmode\tutilisation\tuseful\tround\tsent/round\treceived/round\tincluded\tstragglers\tcrashes\tlost\t\n")
			for _, r := range reps {
				mode := "sequential"
				if r.Overlap {
					mode = "overlap"
				}
				if r.Adaptive {
					mode += "+adaptive"
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%.1f%%\t%.1f%%\t%.1f s\t%s\t%s\t%.1f\t%d\t%d\t%d\t\n", r.Peers, r.Protocol, mode, 100*r.Utilization, 100*r.Useful, r.RoundSeconds,
					bytesHuman(int64(r.SentPerRound)), bytesHuman(int64(r.ReceivedPerRound)), r.Contributions, r.Stragglers, r.Crashes, r.Lost)
			}
			return w.Flush()
		},
	}
	f := cmd.Flags()
	f.IntSliceVar(&peers, "peers", []int{8, 64, 512, 4096, 10000}, "swarm sizes N to simulate")
	f.StringSliceVar(&protocols, "protocols", []string{"all", "scatter"}, "admission protocols: all (today's node), scatter")
	f.StringSliceVar(&modes, "modes", []string{"sequential", "overlap"}, "sequential (today's node), overlap")
	f.BoolVar(&c.Adaptive, "adaptive", false, "each peer trains as many steps as land its contribution with a median peer's (not in the node yet)")
	f.BoolVar(&asJSON, "json", false, "print JSON reports")
	f.Int64Var(&c.Params, "params", c.Params, "model parameters")
	f.StringVar(&c.Codec, "codec", c.Codec, "pseudo-gradient codec: "+strings.Join([]string{"fp32", "int8", "int4", "int2", "topk"}, ", "))
	f.IntVar(&c.H, "h", c.H, "inner steps per round")
	f.IntVar(&c.Rounds, "rounds", c.Rounds, "rounds simulated (the first is not measured)")
	f.Float64Var(&c.StepSeconds, "step", c.StepSeconds, "median inner-step seconds")
	f.Float64Var(&c.StepSpread, "step-spread", c.StepSpread, "σ of log step time across peers")
	f.Float64Var(&c.Jitter, "jitter", c.Jitter, "σ of log step time from round to round")
	f.Float64Var(&c.UpMbps, "up", c.UpMbps, "median uplink, Mbit/s")
	f.Float64Var(&c.DownMbps, "down", c.DownMbps, "median downlink, Mbit/s")
	f.Float64Var(&c.LinkSpread, "link-spread", c.LinkSpread, "σ of log link rate across peers")
	f.Float64Var(&c.MinMbps, "min-mbps", c.MinMbps, "slowest link, Mbit/s")
	f.Float64Var(&c.MaxMbps, "max-mbps", c.MaxMbps, "fastest link, Mbit/s")
	f.Float64Var(&c.Latency, "latency", c.Latency, "seconds added per exchange")
	f.Float64Var(&c.ChurnPerHour, "churn", c.ChurnPerHour, "share of peers crashing per hour")
	f.Float64Var(&c.Downtime, "downtime", c.Downtime, "mean seconds before a crashed peer is back")
	f.IntVar(&c.Partitions, "partitions", c.Partitions, "reducer partitions (protocol all)")
	f.IntVar(&c.Verify, "verify", c.Verify, "partitions each node recomputes (protocol scatter)")
	f.Float64Var(&c.SpotShare, "spot-share", c.SpotShare, "share of contributions re-executed by a spot checker")
	f.Float64Var(&c.Overhead, "overhead", c.Overhead, "seconds of fixed work per round and node (checkpoint, vote)")
	f.Float64Var(&c.AggregateNs, "aggregate-ns", c.AggregateNs, "nanoseconds to aggregate one element of one contribution")
	f.Float64Var(&c.Close.Core, "core", c.Close.Core, "close rule: share of the expected contributions after which the round waits only --slack")
	f.Float64Var(&c.Close.Slack, "slack", c.Close.Slack, "close rule: how much longer, as a share of the core's time")
	f.DurationVar(&c.Close.Deadline, "deadline", c.Close.Deadline, "close rule: the longest wait after the core")
	f.Uint64Var(&c.Seed, "seed", c.Seed, "seed of peers, churn and jitter")
	return cmd
}
