package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"
	"github.com/spf13/pflag"

	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/model"
)

// memoryFlags choose how a model holds its state (--optimizer, --recompute,
// --micro) and the memory it may use (--memory); every command that
// trains checks its configuration against that budget with the same plan
// (model.MakePlan) before allocating anything.
type memoryFlags struct {
	optimizer string
	grads     string
	offload   string
	recompute bool
	micro     int
	memory    string
	copyW     bool
}

// add registers the flags; optimizer is false where a run spec fixes the
// optimizer (fomnet join, whose contributions others re-execute bit for
// bit: no bf16 gradients either).
func (f *memoryFlags) add(fs *pflag.FlagSet, optimizer bool) {
	if optimizer {
		fs.StringVar(&f.optimizer, "optimizer", "adamw", "AdamW's moments: adamw (fp32) or adamw8 (8 bits a value, blockwise scales: 2 bytes a parameter instead of 8)")
		fs.StringVar(&f.grads, "grads", "fp32", "gradients: fp32, or bf16 (--device cuda --precision bf16 only: 2 bytes a parameter instead of 4, each rounded once where it is stored)")
		fs.BoolVar(&f.copyW, "weight-copy", false, "keep a bf16 copy of the weights on the GPU beside the fp32 ones for the matrix products (--device cuda --precision bf16 only: the same results, 2 bytes a parameter more, no rounding pass over the weights at each product)")
	}
	fs.StringVar(&f.offload, "offload", "", "what to keep in host memory, comma-separated (--device cuda only): moments (AdamW's, read and written there by the GPU's AdamW: the same results, each step's moments crossing PCIe twice); master (the fp32 weights AdamW updates, with a bf16 copy on the GPU that the passes read; --precision bf16 only: 2 bytes a parameter on the device instead of 4)")
	fs.BoolVar(&f.recompute, "recompute", false, "keep only each block's input through the forward pass and recompute the block in backward (same results, about a third more compute, far less activation memory)")
	fs.IntVar(&f.micro, "micro", 1, "cut each step's batch into this many micro-batches (same results; activations of one micro-batch)")
	fs.StringVar(&f.memory, "memory", "", "memory the run may use, e.g. 24GiB: plans that need more are refused, and on the CPU the Go collector keeps the process under it (default: the CPU's available memory; for --device cuda, the device's, no check unless given)")
}

// options reads --optimizer, --grads, --weight-copy, --offload and
// --recompute.
func (f *memoryFlags) options(dev *deviceFlags) (model.Options, error) {
	o := model.Options{Recompute: f.recompute}
	switch f.optimizer {
	case "", "adamw":
	case "adamw8":
		o.AdamW8 = true
	default:
		return o, usagef("--optimizer %q: want adamw or adamw8", f.optimizer)
	}
	switch f.grads {
	case "", "fp32":
	case "bf16":
		if !dev.bf16GPU() {
			return o, usagef("--grads bf16 needs --device cuda --precision bf16 (the CPU and the fp32 path keep gradients in fp32)")
		}
		o.GradsBF16 = true
	default:
		return o, usagef("--grads %q: want fp32 or bf16", f.grads)
	}
	if f.copyW {
		if !dev.bf16GPU() {
			return o, usagef("--weight-copy needs --device cuda --precision bf16 (only the bf16 path rounds the weights for its products)")
		}
		o.WeightCopy = true
	}
	for _, part := range strings.Split(f.offload, ",") {
		switch part {
		case "":
		case "moments":
			if !dev.cuda() {
				return o, usagef("--offload moments needs --device cuda (on the CPU the moments are in host memory already)")
			}
			o.OffloadMoments = true
		case "master":
			if !dev.bf16GPU() {
				return o, usagef("--offload master needs --device cuda --precision bf16 (the passes read a bf16 copy of the weights; the fp32 path keeps the CPU's bits)")
			}
			o.OffloadMaster = true
		default:
			return o, usagef("--offload %q: want moments, master or both (master,moments)", f.offload)
		}
	}
	return o, nil
}

// input is the plan input for a batch×seq step on the device flags' device
// with threads CPU threads.
func (f *memoryFlags) input(c model.Config, batch, seq, threads int, dev *deviceFlags) (model.PlanInput, error) {
	o, err := f.options(dev)
	if err != nil {
		return model.PlanInput{}, err
	}
	if f.micro < 1 || batch%f.micro != 0 {
		return model.PlanInput{}, usagef("--micro %d must be positive and divide the batch of %d", f.micro, batch)
	}
	in := model.PlanInput{Batch: batch, Seq: seq, Micro: f.micro, Options: o, BF16: dev.precision == "bf16", GPU: dev.cuda()}
	if !dev.cuda() {
		if threads <= 0 {
			threads = runtime.GOMAXPROCS(0)
		}
		in.Workspace = cpu.MaxWorkspaceBytes(threads, model.MatmulRows(c, in.Tokens()), seq)
	}
	return in, nil
}

// budget is --memory, or the CPU's available memory (0: unknown, no check).
func (f *memoryFlags) budget(dev *deviceFlags) (int64, error) {
	if f.memory != "" {
		b, err := humanize.ParseBytes(f.memory)
		if err != nil || b == 0 || b > 1<<62 {
			return 0, usagef("--memory %q: want a size such as 24GiB or 141GB", f.memory)
		}
		return int64(b), nil
	}
	if dev.cuda() {
		return 0, nil
	}
	return memAvailable(), nil
}

// memAvailable is /proc/meminfo's MemAvailable in bytes (0 where there is
// none).
func memAvailable() int64 {
	fh, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// holdTo makes a CPU budget the Go runtime's soft memory limit (unless
// GOMEMLIMIT sets one): the collector then works harder as the heap nears
// it, where by default it lets garbage grow as large as the live heap
// before collecting — which took a swarm participant to twice its plan. A
// GPU's budget is the device's, which the collector does not hold.
func holdTo(budget int64, dev *deviceFlags) {
	if budget > 0 && !dev.cuda() && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(budget)
	}
}

// check refuses, before anything is allocated, a configuration whose plan
// does not fit the budget, naming the flags that would (fixedOptimizer: a
// run's optimizer is not the node's to change), or, on a GPU, whose host
// part (moments or master weights in host memory) does not fit the available memory. The refusal is a usage
// error: the flags ask for more than this machine holds.
func (f *memoryFlags) check(e *env, c model.Config, in model.PlanInput, dev *deviceFlags, fixedOptimizer bool) (model.Plan, error) {
	budget, err := f.budget(dev)
	if err != nil {
		return model.Plan{}, err
	}
	if dev.cuda() {
		in.HostBudget = memAvailable()
	}
	p, err := model.CheckPlan(c, in, budget, fixedOptimizer)
	var fe *model.FitError
	switch {
	case errors.As(err, &fe) && fe.Fit != nil:
		return p, usagef("%v: %s", err, flagsFor(fe.Fit.Input))
	case err != nil:
		return p, usageError{err}
	}
	if dev.cuda() {
		if err := hostFits(p, in.HostBudget); err != nil {
			return p, err
		}
	}
	holdTo(budget, dev)
	return p, nil
}

// hostFits refuses a GPU's plan whose host part needs more than avail
// bytes (0: unknown, no check).
func hostFits(p model.Plan, avail int64) error {
	if avail > 0 && p.Host > avail {
		return usagef("%s needs %s of host memory beside the GPU's, more than the %s available", p.Input.Settings(), model.Bytes(p.Host), model.Bytes(avail))
	}
	return nil
}

// flagsFor spells a plan input as the flags that choose it.
func flagsFor(in model.PlanInput) string {
	var s []string
	if in.Recompute {
		s = append(s, "--recompute")
	}
	if in.AdamW8 {
		s = append(s, "--optimizer adamw8")
	}
	if in.GradsBF16 {
		s = append(s, "--grads bf16")
	}
	switch {
	case in.OffloadMoments && in.OffloadMaster:
		s = append(s, "--offload master,moments")
	case in.OffloadMoments:
		s = append(s, "--offload moments")
	case in.OffloadMaster:
		s = append(s, "--offload master")
	}
	if in.WeightCopy && !in.OffloadMaster {
		s = append(s, "--weight-copy")
	}
	if in.Micro > 1 {
		s = append(s, fmt.Sprintf("--micro %d", in.Micro))
	}
	if in.Swarm && in.Lean {
		s = append(s, "--lean")
	}
	return strings.Join(s, " ")
}
