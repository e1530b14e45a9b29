package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/node"
)

// nodeFlags are the flags of commands that touch a node: --home always,
// --listen and --bootstrap where the command may start one.
type nodeFlags struct {
	home      string
	api       string
	dhtMode   string
	listen    []string
	bootstrap []string
	timeout   time.Duration
	metrics   string
}

// addMetrics gives a command that runs a node --metrics.
func (f *nodeFlags) addMetrics(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.metrics, "metrics", "", "loopback host:port serving Prometheus /metrics without a token (default: the config's api.metrics)")
}

// addTimeout gives a command that fetches by CID --timeout: its fetches
// say what they wait for (providers found, peers connected, time without
// a block) and give up when nothing arrives for that long.
func (f *nodeFlags) addTimeout(cmd *cobra.Command, e *env) {
	cmd.Flags().DurationVar(&f.timeout, "timeout", 2*time.Minute, "give up a fetch when nothing arrives for this long (0: wait for ever)")
	prev := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		if f.timeout < 0 {
			return usagef("--timeout %v is negative", f.timeout)
		}
		c.SetContext(contentstore.WithWait(ctxOf(c), contentstore.Wait{Stall: f.timeout, Report: func(st contentstore.WaitStatus) {
			e.logf("fomnet: %s", st)
		}}))
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
}

func (f *nodeFlags) addHome(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.home, "home", "", "node home directory (default $FOMNET_HOME, else ~/.fomnet)")
}

func (f *nodeFlags) addNet(cmd *cobra.Command) {
	f.addHome(cmd)
	cmd.Flags().StringSliceVar(&f.listen, "listen", nil, "multiaddr to listen on, repeatable (default: the config's)")
	cmd.Flags().StringSliceVar(&f.bootstrap, "bootstrap", nil, "peer multiaddr (ending in /p2p/<id>) to join through, repeatable (default: the config's)")
	cmd.Flags().StringVar(&f.dhtMode, "dht-mode", "", `DHT mode: auto, server (public or LAN bootstrap nodes), client (default: the config's)`)
}

func (f *nodeFlags) homeDir() string {
	if f.home != "" {
		return f.home
	}
	return node.DefaultHome()
}

// withNode runs fn against the node on --home: through the running
// daemon's API when there is one, else on a node started for this command
// (offline unless the command needs the network). keep, when set, makes
// a started node serve until ctx ends after fn returns.
func withNode(ctx context.Context, e *env, f *nodeFlags, online, keep bool, fn func(api node.API) error) error {
	home := f.homeDir()
	cl, err := node.Dial(ctx, home)
	if err == nil {
		if len(f.listen) > 0 {
			e.logf("fomnet: a daemon runs on %s; --listen is ignored", home)
		}
		for _, a := range f.bootstrap {
			if _, err := cl.Connect(ctx, a); err != nil {
				e.logf("fomnet: %v", err)
			}
		}
		return fn(cl)
	}
	if !errors.Is(err, node.ErrNoDaemon) {
		return err
	}
	if _, serr := os.Stat(home); serr != nil {
		return fmt.Errorf("node home %s: %w (run `fomnet init` first, or pass --home)", home, serr)
	}
	n, err := node.Open(ctx, home, node.Options{Offline: !online, Listen: f.listen, Bootstrap: f.bootstrap, DHTMode: f.dhtMode, API: keep, Logf: e.logf, Debugf: e.debugf})
	if err != nil {
		return err
	}
	defer n.Close()
	if err := fn(n); err != nil {
		return err
	}
	if keep {
		e.logf("fomnet: serving; stop with Ctrl-C")
		<-ctx.Done()
	}
	return nil
}

func parseCID(s string) (cid.Cid, error) {
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, usagef("%q is not a CID: %v", s, err)
	}
	return c, nil
}

// progressPrinter shows byte progress on stderr: one rewritten line on a
// terminal, a line every few seconds otherwise.
type progressPrinter struct {
	e     *env
	label string
	tty   bool
	mu    sync.Mutex
	last  time.Time
	start time.Time
	shown bool
	done  int64 // last value shown
}

func newProgress(e *env, label string) *progressPrinter {
	p := &progressPrinter{e: e, label: label, start: time.Now()}
	if f, ok := e.stderrFile(); ok {
		p.tty = isatty.IsTerminal(f.Fd())
	}
	return p
}

func (p *progressPrinter) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	every := 3 * time.Second
	if p.tty {
		every = 200 * time.Millisecond
	}
	now := time.Now()
	if (now.Sub(p.last) < every && done != total) || (done == p.done && !p.last.IsZero()) {
		return
	}
	p.last, p.done = now, done
	elapsed := now.Sub(p.start)
	rate := float64(done) / (1 << 20) / max(elapsed.Seconds(), 1e-3)
	line := fmt.Sprintf("%s %s", p.label, mib(done))
	if total > 0 {
		line += fmt.Sprintf(" / %s (%.0f%%)", mib(total), 100*float64(done)/float64(total))
	}
	line += fmt.Sprintf(", %.1f MiB/s%s", rate, eta(done, total, elapsed))
	if p.tty {
		fmt.Fprintf(p.e.stderr, "\r%s\033[K", line)
		p.shown = true
	} else {
		fmt.Fprintln(p.e.stderr, line)
	}
}

func (p *progressPrinter) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprintln(p.e.stderr)
		p.shown = false
	}
}

// eta says how long the rest takes at the pace so far (", ETA 1m20s"),
// or nothing before there is a pace or a total.
func eta(done, total int64, elapsed time.Duration) string {
	if done <= 0 || total <= done || elapsed < time.Second {
		return ""
	}
	left := time.Duration(float64(elapsed) * float64(total-done) / float64(done))
	return ", ETA " + left.Round(time.Second).String()
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func newInitCmd(e *env) *cobra.Command {
	var f nodeFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a node home: identity key, store and a commented config.toml",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := node.DefaultConfig()
			cfg.Override(f.listen, f.bootstrap, f.dhtMode, f.api)
			if err := cfg.Validate(); err != nil {
				return usageError{err}
			}
			home := f.homeDir()
			id, err := node.Init(home, cfg)
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(map[string]string{"peer_id": id.String(), "home": home})
			}
			e.logf("fomnet: initialised %s (config: %s)", home, home+string(os.PathSeparator)+node.ConfigFile)
			fmt.Fprintln(e.stdout, id)
			return nil
		},
	}
	f.addNet(cmd)
	cmd.Flags().StringVar(&f.api, "api", "", "loopback host:port for the daemon's local API (default 127.0.0.1:0, a free port, written to the home's api file)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print {peer_id, home} as JSON")
	return cmd
}

func newIDCmd(e *env) *cobra.Command {
	var f nodeFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "id",
		Short: "Print this node's peer ID and addresses",
		Long: `Print the node's peer ID and the addresses other nodes can use as
--bootstrap. With a daemon running these are its live addresses; otherwise
the configured listen addresses.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withNode(ctxOf(cmd), e, &f, false, false, func(api node.API) error {
				pi, err := api.ID(ctxOf(cmd))
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(pi)
				}
				fmt.Fprintln(e.stdout, pi.ID)
				for _, a := range pi.Addrs {
					fmt.Fprintln(e.stdout, a)
				}
				if pi.Reachability != "" {
					e.logf("reachability (AutoNAT): %s", pi.Reachability)
				}
				return nil
			})
		},
	}
	f.addHome(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print {peer_id, addrs, reachability} as JSON")
	return cmd
}

func newDaemonCmd(e *env) *cobra.Command {
	var f nodeFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the node: serve the store, join the DHT, answer other fomnet commands",
		Long: `Run the node until interrupted: listen on the configured (or --listen)
addresses, join the swarm through the bootstrap peers, serve every stored
block over bitswap, provide pinned content on the DHT, announce what it pins
on the gossipsub topic ` + node.AnnounceTopic + ` (and hear others' announcements:
fomnet announced), and serve the local API that other fomnet commands use
while the daemon runs.

The daemon's dialable multiaddrs are printed on stdout (--json: {peer_id,
addrs}); logs go to stderr.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := ctxOf(cmd)
			home := f.homeDir()
			if _, err := node.Dial(ctx, home); err == nil {
				return fmt.Errorf("a daemon already runs on %s", home)
			}
			n, err := node.Open(ctx, home, node.Options{Listen: f.listen, Bootstrap: f.bootstrap, DHTMode: f.dhtMode, API: true, APIListen: f.api, Metrics: f.metrics, Logf: e.logf, Debugf: e.debugf})
			if err != nil {
				return err
			}
			defer n.Close()
			pi, err := n.ID(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				if err := e.printJSON(pi); err != nil {
					return err
				}
			} else {
				for _, a := range pi.Addrs {
					fmt.Fprintln(e.stdout, a)
				}
			}
			blocks, bytes, _ := n.Store.Stat(ctx)
			e.logf("fomnet: daemon %s ready: %d blocks (%s) stored, %d pins, API on %s", pi.ID, blocks, mib(bytes), len(n.Store.Pins()), n.APIAddr())
			<-ctx.Done()
			e.logf("fomnet: shutting down")
			return nil
		},
	}
	f.addNet(cmd)
	f.addMetrics(cmd)
	cmd.Flags().StringVar(&f.api, "api", "", "loopback host:port for the local API, also serving /metrics and the token-protected API (default: the config's)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print {peer_id, addrs} as JSON")
	return cmd
}

func newAddCmd(e *env) *cobra.Command {
	var f nodeFlags
	var asJSON, noPin bool
	cmd := &cobra.Command{
		Use:   "add PATH",
		Short: "Add a file or directory to the store (UnixFS) and print its CID",
		Long: `Import a file or directory tree as UnixFS (CIDv1, sha2-256, raw leaves,
balanced DAG of 1 MiB chunks), pin it and, with a daemon running, provide it
on the DHT. The same bytes always get the same CID, on every machine.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("add takes one PATH, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return withNode(ctxOf(cmd), e, &f, false, false, func(api node.API) error {
				p := newProgress(e, "added")
				c, err := api.Add(ctxOf(cmd), args[0], !noPin, p.update)
				p.finish()
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(map[string]string{"cid": c.String()})
				}
				fmt.Fprintln(e.stdout, c)
				return nil
			})
		},
	}
	f.addHome(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print {cid} as JSON")
	cmd.Flags().BoolVar(&noPin, "no-pin", false, "do not pin (the blocks go at the next gc)")
	return cmd
}

func oneCID(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != 1 {
			return usagef("%s takes one CID, got %d arguments", what, len(args))
		}
		_, err := parseCID(args[0])
		return err
	}
}

func newGetCmd(e *env) *cobra.Command {
	var f nodeFlags
	var out string
	cmd := &cobra.Command{
		Use:   "get CID [-o PATH]",
		Short: "Fetch a file or directory by CID and write it out",
		Long: `Fetch the DAG under CID (over bitswap, from every peer that has it; blocks
already stored are not fetched again, so an interrupted get resumes) and
write it to PATH (default: the CID). The output appears only when complete.`,
		Args: oneCID("get"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := parseCID(args[0])
			if out == "" {
				out = c.String()
			}
			return withNode(ctxOf(cmd), e, &f, true, false, func(api node.API) error {
				p := newProgress(e, "fetched")
				err := api.Get(ctxOf(cmd), c, out, p.update)
				p.finish()
				if err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, out)
				return nil
			})
		},
	}
	f.addNet(cmd)
	f.addTimeout(cmd, e)
	cmd.Flags().StringVarP(&out, "output", "o", "", "where to write (default: ./CID)")
	return cmd
}

func printVerify(e *env, r node.VerifyResult) {
	if r.OK {
		fmt.Fprintf(e.stdout, "%s ok: %d blocks, %s\n", r.CID, r.Blocks, mib(r.Bytes))
		return
	}
	fmt.Fprintf(e.stdout, "%s FAILED: %d blocks intact, %d missing, %d corrupt\n", r.CID, r.Blocks, len(r.Missing), len(r.Corrupt))
	for _, m := range r.Missing {
		fmt.Fprintf(e.stdout, "  missing %s\n", m)
	}
	for _, c := range r.Corrupt {
		fmt.Fprintf(e.stdout, "  corrupt %s\n", c)
	}
}

func newVerifyCmd(e *env) *cobra.Command {
	var f nodeFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify CID",
		Short: "Rehash every stored block of a DAG and report missing or corrupt ones",
		Long: `Walk the DAG under CID in the local store, rehash every block against its
CID, and report missing and corrupt blocks. Exit status 1 when any is.`,
		Args: oneCID("verify"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := parseCID(args[0])
			return withNode(ctxOf(cmd), e, &f, false, false, func(api node.API) error {
				r, err := api.Verify(ctxOf(cmd), c)
				if err != nil {
					return err
				}
				if asJSON {
					err = e.printJSON(r)
				} else {
					printVerify(e, r)
				}
				if err == nil && !r.OK {
					err = fmt.Errorf("%s: %d missing and %d corrupt blocks", c, len(r.Missing), len(r.Corrupt))
				}
				return err
			})
		},
	}
	f.addHome(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func newMirrorCmd(e *env) *cobra.Command {
	var f nodeFlags
	var asJSON, exit, follow, unfollow bool
	cmd := &cobra.Command{
		Use:   "mirror CID... | mirror --follow RUN-ID",
		Short: "Fetch, verify and pin content, and keep serving it",
		Long: `For each CID: fetch the whole DAG, verify every block (fetching again any
that turn out corrupt), pin it and provide it on the DHT. With a daemon
running the daemon keeps serving it; otherwise this command starts a node and
keeps serving until interrupted (--exit: stop once everything is mirrored).

--follow RUN-ID mirrors a training run as it goes: every checkpoint its
participants announce (heard on the run's topic, asked over the status
protocol), and every earlier round it lacks, each recomputed here from the
round's contributions before it is kept (a peer's word is never taken), pinned as
"run <id> round <r>" (see fomnet checkpoint ls) and served. With a daemon
running, the daemon follows the run in the background, also after restarts
(--unfollow RUN-ID stops it; what was mirrored stays pinned). Without one,
this command follows in the foreground until interrupted, one line per
checkpoint on stdout (--json: {"round", "cid"} objects); restarted, it
continues where it stopped.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("mirror takes at least one CID")
			}
			for _, a := range args {
				if _, err := parseCID(a); err != nil {
					return err
				}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if follow && unfollow {
				return usagef("--follow and --unfollow exclude each other")
			}
			if unfollow {
				if len(args) != 1 {
					return usagef("mirror --unfollow takes one RUN-ID")
				}
				run, _ := parseCID(args[0])
				cl, err := node.Dial(ctxOf(cmd), f.homeDir())
				if err != nil {
					return fmt.Errorf("--unfollow talks to the daemon on %s: %w", f.homeDir(), err)
				}
				return cl.Unfollow(ctxOf(cmd), run)
			}
			if follow {
				if len(args) != 1 {
					return usagef("mirror --follow takes one RUN-ID")
				}
				run, _ := parseCID(args[0])
				return withNode(ctxOf(cmd), e, &f, true, false, func(api node.API) error {
					nd, ok := api.(*node.Node)
					if !ok {
						if err := api.Follow(ctxOf(cmd), run); err != nil {
							return err
						}
						fmt.Fprintf(e.stdout, "the daemon on %s follows run %s (fomnet checkpoint ls %s shows what it mirrored)\n", f.homeDir(), run, run)
						return nil
					}
					e.logf("fomnet: following run %s; stop with Ctrl-C", run)
					return nd.FollowRun(ctxOf(cmd), run, node.FollowOptions{Logf: e.logf, Mirrored: func(r int, ck cid.Cid) {
						if asJSON {
							e.printJSON(map[string]any{"round": r, "cid": ck.String()})
						} else {
							fmt.Fprintf(e.stdout, "round %d %s\n", r, ck)
						}
					}})
				})
			}
			return withNode(ctxOf(cmd), e, &f, true, !exit, func(api node.API) error {
				var results []node.VerifyResult
				for _, a := range args {
					c, _ := parseCID(a)
					p := newProgress(e, "mirroring "+a)
					r, err := api.Mirror(ctxOf(cmd), c, p.update)
					p.finish()
					if err != nil {
						return err
					}
					results = append(results, r)
					if !asJSON {
						printVerify(e, r)
					}
				}
				if asJSON {
					return e.printJSON(results)
				}
				return nil
			})
		},
	}
	f.addTimeout(cmd, e)
	f.addNet(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the verification reports as JSON")
	cmd.Flags().BoolVar(&exit, "exit", false, "exit after mirroring instead of serving (no daemon only)")
	cmd.Flags().BoolVar(&follow, "follow", false, "follow a run: mirror its checkpoints as they appear")
	cmd.Flags().BoolVar(&unfollow, "unfollow", false, "make the daemon stop following a run")
	return cmd
}

func newCarCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "car", Short: "Export and import CAR files", Args: noArgs}
	var f nodeFlags
	var out string
	export := &cobra.Command{
		Use:   "export CID -o FILE.car",
		Short: "Write a stored DAG as a CARv2 file",
		Args:  oneCID("car export"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := parseCID(args[0])
			if out == "" {
				return usagef("car export needs -o FILE.car")
			}
			return withNode(ctxOf(cmd), e, &f, false, false, func(api node.API) error {
				if err := api.ExportCAR(ctxOf(cmd), c, out); err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, out)
				return nil
			})
		},
	}
	f.addHome(export)
	export.Flags().StringVarP(&out, "output", "o", "", "CAR file to write")

	var fi nodeFlags
	var asJSON, noPin bool
	imp := &cobra.Command{
		Use:   "import FILE.car",
		Short: "Store the blocks of a CARv1/CARv2 file (each checked against its CID) and pin its roots",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("car import takes one FILE.car, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return withNode(ctxOf(cmd), e, &fi, false, false, func(api node.API) error {
				r, err := api.ImportCAR(ctxOf(cmd), args[0], !noPin)
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(r)
				}
				e.logf("fomnet: imported %d blocks (%s)", r.Blocks, mib(r.Bytes))
				for _, c := range r.Roots {
					fmt.Fprintln(e.stdout, c)
				}
				if len(r.Incomplete) > 0 {
					return fmt.Errorf("%d roots are incomplete (not pinned): %s", len(r.Incomplete), strings.Join(r.Incomplete, ", "))
				}
				return nil
			})
		},
	}
	fi.addHome(imp)
	imp.Flags().BoolVar(&asJSON, "json", false, "print {roots, blocks, bytes, incomplete} as JSON")
	imp.Flags().BoolVar(&noPin, "no-pin", false, "do not pin the roots")
	cmd.AddCommand(export, imp)
	return cmd
}

func newPeersCmd(e *env) *cobra.Command {
	var f nodeFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "peers",
		Short: "List the daemon's connected peers",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withNode(ctxOf(cmd), e, &f, false, false, func(api node.API) error {
				ps, err := api.Peers(ctxOf(cmd))
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(ps)
				}
				for _, p := range ps {
					fmt.Fprintf(e.stdout, "%s %s\n", p.ID, strings.Join(p.Addrs, " "))
				}
				return nil
			})
		},
	}
	f.addHome(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print [{peer_id, addrs}] as JSON")
	return cmd
}

func newConnectCmd(e *env) *cobra.Command {
	var f nodeFlags
	cmd := &cobra.Command{
		Use:   "connect MULTIADDR",
		Short: "Connect the daemon to a peer (/ip4/…/tcp/…/p2p/<id>)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("connect takes one MULTIADDR, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return withNode(ctxOf(cmd), e, &f, false, false, func(api node.API) error {
				pi, err := api.Connect(ctxOf(cmd), args[0])
				if err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, pi.ID)
				return nil
			})
		},
	}
	f.addHome(cmd)
	return cmd
}

func newPinCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "pin", Short: "List and remove pins", Args: noArgs}
	var f nodeFlags
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List pinned roots",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withNode(ctxOf(cmd), e, &f, false, false, func(api node.API) error {
				ps, err := api.Pins(ctxOf(cmd))
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(ps)
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				for _, p := range ps {
					fmt.Fprintf(tw, "%s\t%s\n", p.CID, p.Name)
				}
				return tw.Flush()
			})
		},
	}
	f.addHome(ls)
	ls.Flags().BoolVar(&asJSON, "json", false, "print [{cid, name}] as JSON")
	var fr nodeFlags
	rm := &cobra.Command{
		Use:   "rm CID",
		Short: "Unpin a root (its blocks go at the next gc)",
		Args:  oneCID("pin rm"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := parseCID(args[0])
			return withNode(ctxOf(cmd), e, &fr, false, false, func(api node.API) error {
				return api.Unpin(ctxOf(cmd), c)
			})
		},
	}
	fr.addHome(rm)
	cmd.AddCommand(ls, rm)
	return cmd
}

func newGCCmd(e *env) *cobra.Command {
	var f nodeFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Delete every stored block no pin reaches",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withNode(ctxOf(cmd), e, &f, false, false, func(api node.API) error {
				r, err := api.GC(ctxOf(cmd))
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(r)
				}
				fmt.Fprintf(e.stdout, "removed %d blocks (%s), kept %d\n", r.Removed, mib(r.Freed), r.Kept)
				return nil
			})
		},
	}
	f.addHome(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print {removed, freed_bytes, kept} as JSON")
	return cmd
}

func newAnnouncedCmd(e *env) *cobra.Command {
	var f nodeFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "announced",
		Short: "List what other daemons announced they hold (the latest 256)",
		Long: `Daemons announce each root they pin (by add or mirror) on the gossipsub
topic ` + node.AnnounceTopic + `, signed by their peer key. This lists the
announcements the running daemon has heard, oldest first: CID, name, size and
the announcing peer. Mirror one with ` + "`fomnet mirror CID`" + `.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := node.Dial(ctxOf(cmd), f.homeDir())
			if err != nil {
				return fmt.Errorf("%w: announcements are heard by a running daemon", err)
			}
			as, err := cl.Announced(ctxOf(cmd))
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(as)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			for _, a := range as {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.CID, mib(a.Bytes), a.Name, a.Peer)
			}
			return tw.Flush()
		},
	}
	f.addHome(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print [{cid, name, bytes, peer, seen}] as JSON")
	return cmd
}
