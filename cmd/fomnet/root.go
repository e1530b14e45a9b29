package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/kernels/cpu"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command failed
	exitUsage = 2 // bad flags or arguments
)

// usageError marks errors in how the command was called.
type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// env carries the output streams: results on stdout, logs and progress on
// stderr.
type env struct {
	stdout, stderr io.Writer
	log            *slog.Logger // on stderr: --log-format, --log-level
}

// logf logs an informational line; debugf one shown with --log-level debug.
func (e *env) logf(format string, a ...any)   { e.log.Info(fmt.Sprintf(format, a...)) }
func (e *env) debugf(format string, a ...any) { e.log.Debug(fmt.Sprintf(format, a...)) }

// stderrFile returns the file under stderr, if it is one (for terminal
// detection).
func (e *env) stderrFile() (*os.File, bool) {
	w := e.stderr
	if l, ok := w.(*lockedWriter); ok {
		w = l.w
	}
	f, ok := w.(*os.File)
	return f, ok
}

// lockedWriter serialises writes.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// run executes the command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runIn(ctx, args, os.Stdin, stdout, stderr)
}

// runIn is run reading stdin from in.
func runIn(ctx context.Context, args []string, in io.Reader, stdout, stderr io.Writer) int {
	// Logs come from many goroutines (a demo swarm's nodes, libp2p); one
	// lock keeps their lines whole.
	e := &env{stdout: stdout, stderr: &lockedWriter{w: stderr}}
	e.log = slog.New(&lineHandler{w: e.stderr, level: slog.LevelInfo})
	defer peakHeapProfile(e.stderr)()
	defer cpuProfile(e.stderr)()
	root := newRoot(e)
	root.SetArgs(args)
	root.SetIn(in)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "fomnet:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitError
}

func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "fomnet",
		Short: "Train fully open language models on a peer-to-peer network of volunteer machines",
		Long: `fomnet trains fully open language models on volunteer machines.

A node joins a libp2p swarm (fomnet init, fomnet daemon), stores and serves
content by CID (add, get, verify, mirror, car), and takes part in training
runs (run create, join): each round it trains locally and exchanges a
compressed pseudo-gradient in a DiLoCo outer sync, and every honest node
writes the same checkpoint. fomnet demo runs a small swarm on this machine.
fomnet train, bench, model, tokenizer, data and generate work on one node.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	var lf logFlags
	lf.add(root.PersistentFlags())
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		l, err := lf.logger(e.stderr)
		if err == nil {
			e.log = l
		}
		return err
	}
	root.AddCommand(newTrainCmd(e), newBenchCmd(e), newModelCmd(e), newDemoCmd(e), newTokenizerCmd(e), newDataCmd(e), newGenCmd(e), newGenerateCmd(e), newChatCmd(e), newRecipeCmd(e),
		newInitCmd(e), newIDCmd(e), newDaemonCmd(e), newAddCmd(e), newGetCmd(e), newVerifyCmd(e), newAuditCmd(e), newProofCmd(e), newMirrorCmd(e),
		newCarCmd(e), newPeersCmd(e), newConnectCmd(e), newPinCmd(e), newGCCmd(e), newAnnouncedCmd(e),
		newRunCmd(e), newJoinCmd(e), newCheckpointCmd(e), newExportCmd(e), newImportCmd(e), newEvalCmd(e), newStatusCmd(e), newDashboardCmd(e))
	return root
}

// exactArgs and friends wrap cobra's validators so that wrong arguments are
// usage errors (exit 2).
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}

// newBackend starts the CPU backend with the requested threads and path.
func newBackend(e *env, threads int, path string) (*cpu.Backend, error) {
	be, err := cpuBackend(threads, path)
	if err != nil {
		return nil, err
	}
	if n := be.Note(); n != "" {
		e.logf("fomnet: note: %s", n)
	}
	return be, nil
}

// cpuBackend starts the CPU backend; bad flags are usage errors.
func cpuBackend(threads int, path string) (*cpu.Backend, error) {
	if threads < 0 {
		return nil, usagef("--threads %d must not be negative", threads)
	}
	be, err := cpu.New(cpu.Options{Threads: threads, Path: path})
	if err != nil {
		return nil, usageError{err}
	}
	return be, nil
}

// ctxOf returns the command's context (never nil).
func ctxOf(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}
