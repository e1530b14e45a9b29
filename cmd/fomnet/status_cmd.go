package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/node"
)

func newStatusCmd(e *env) *cobra.Command {
	var f nodeFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Summarise the node and its runs: round, phase, ETA, peers, last loss, bytes",
		Long: "status prints, on one screen, the node (identity, reachability, peers, store, traffic) and each run it holds:\n" +
			"the newest round it settled, its last phase, the pace and ETA of the rounds left, and the newest validation\n" +
			"loss the dashboard computed. It asks the daemon when one runs, and reads the home otherwise.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withNode(ctxOf(cmd), e, &f, false, false, func(api node.API) error {
				st, err := api.Status(ctxOf(cmd))
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(st)
				}
				printStatus(e, st)
				return nil
			})
		},
	}
	f.addHome(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

func printStatus(e *env, st *node.NodeStatus) {
	w := e.stdout
	reach := st.Reachability
	if reach == "" {
		reach = "offline (no daemon)"
	}
	fmt.Fprintf(w, "node     %s (%s)\n", st.ID, reach)
	fmt.Fprintf(w, "peers    %d connected\n", st.Peers)
	fmt.Fprintf(w, "store    %d blocks, %s; %d pins\n", st.StoreBlocks, mib(st.StoreBytes), st.Pins)
	var in, out float64
	for _, b := range st.P2PBytes {
		in, out = in+b[0], out+b[1]
	}
	fmt.Fprintf(w, "traffic  received %s, sent %s (bitswap %s in, %s out)\n", mib(int64(in)), mib(int64(out)),
		mib(int64(st.Bitswap.BytesReceived)), mib(int64(st.Bitswap.BytesSent)))
	if len(st.Runs) == 0 {
		fmt.Fprintln(w, "runs     none")
	}
	for _, r := range st.Runs {
		fmt.Fprintf(w, "\nrun      %s  %s (%s)\n", r.Run, r.Name, r.Stage)
		fmt.Fprintf(w, "round    %d of %d", max(r.Settled, 0), r.Rounds)
		if !r.SettledAt.IsZero() {
			fmt.Fprintf(w, ", settled %s ago", time.Since(r.SettledAt).Round(time.Second))
		}
		if r.Phase != "" {
			fmt.Fprintf(w, "; %s", r.Phase)
		}
		fmt.Fprintln(w)
		if r.RoundSeconds > 0 {
			eta := "done"
			if r.Settled < r.Rounds {
				eta = (time.Duration(r.ETASeconds) * time.Second).String()
			}
			fmt.Fprintf(w, "pace     %.1f s a round; ETA %s\n", r.RoundSeconds, eta)
		}
		fmt.Fprintf(w, "last     %d contributions; checkpoint %s\n", r.Contributions, r.Checkpoint)
		if len(r.Val) > 0 {
			keys := make([]string, 0, len(r.Val))
			for k := range r.Val {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			parts := make([]string, len(keys))
			for i, k := range keys {
				parts[i] = fmt.Sprintf("%s %.3f", k, r.Val[k])
			}
			fmt.Fprintf(w, "val loss %s\n", strings.Join(parts, ", "))
		}
	}
}

func newDashboardCmd(e *env) *cobra.Command {
	var f nodeFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Print a one-time link that opens the daemon's dashboard in a browser",
		Long: "dashboard asks the running daemon for a link to its dashboard (the node, its runs, loss curves, contributions,\n" +
			"checkpoints). The link works once, within 10 minutes: opening it gives the browser a session and drops the code\n" +
			"from the address. The page is on the daemon's loopback API address and reaches nothing else.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withNode(ctxOf(cmd), e, &f, false, false, func(api node.API) error {
				link, err := api.DashboardLink(ctxOf(cmd))
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(map[string]string{"url": link})
				}
				fmt.Fprintln(e.stdout, link)
				return nil
			})
		},
	}
	f.addHome(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"url": …} as JSON`)
	return cmd
}
