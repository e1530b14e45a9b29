package main

import (
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cuda"
)

// deviceFlags choose where a command computes: --device cpu (default) or
// cuda[:N], and for a GPU --precision fp32 or bf16.
type deviceFlags struct {
	device    string
	precision string
	said      bool // open has logged where it computes (once per command)
}

func (d *deviceFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&d.device, "device", "cpu", "compute device: cpu, or cuda / cuda:N for NVIDIA GPU N (needs a binary built with -tags cuda)")
	fs.StringVar(&d.precision, "precision", "fp32", "GPU arithmetic: fp32 (bit-identical to the CPU backend) or bf16 (tensor cores, fp32 master weights)")
}

// cuda reports whether the flags ask for a GPU.
func (d *deviceFlags) cuda() bool { return d.device == "cuda" || strings.HasPrefix(d.device, "cuda:") }

// bf16GPU says whether the flags choose a GPU's bf16 path.
func (d *deviceFlags) bf16GPU() bool { return d.cuda() && d.precision == "bf16" }

// check reads the flags without opening anything: the GPU number and
// precision for --device cuda[:N], or a usage error naming the bad flag.
func (d *deviceFlags) check() (ordinal int, p cuda.Precision, err error) {
	switch {
	case d.device == "cpu" || d.device == "":
		if d.precision != "fp32" {
			return 0, "", usagef("--precision %s applies to --device cuda; the CPU backend computes in fp32", d.precision)
		}
		return 0, "", nil
	case d.cuda():
		if s, ok := strings.CutPrefix(d.device, "cuda:"); ok {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return 0, "", usagef("--device %q: want cuda:N with N a GPU number (0, 1, …)", d.device)
			}
			ordinal = n
		}
		p = cuda.Precision(d.precision)
		if p != cuda.FP32 && p != cuda.BF16 {
			return 0, "", usagef("--precision %q: want fp32 or bf16", d.precision)
		}
		return ordinal, p, nil
	default:
		return 0, "", usagef("--device %q: want cpu, cuda or cuda:N", d.device)
	}
}

// open starts the backend the flags ask for (threads and path apply to the
// CPU). It says where it computes the first time only, so a command that
// opens one backend per lane logs it once.
func (d *deviceFlags) open(e *env, threads int, path string) (kernels.Backend, error) {
	ordinal, p, err := d.check()
	if err != nil {
		return nil, err
	}
	if !d.cuda() {
		be, err := cpuBackend(threads, path)
		if err != nil {
			return nil, err
		}
		if n := be.Note(); n != "" && !d.said {
			e.logf("fomnet: note: %s", n)
		}
		d.said = true
		return be, nil
	}
	be, err := cuda.Open(cuda.Options{Device: ordinal, Precision: p})
	if err != nil {
		return nil, err // ErrNotBuilt says how to get a CUDA build
	}
	if !d.said {
		e.logf("fomnet: computing on %s", be.Name())
		if n := be.Note(); n != "" {
			e.logf("fomnet: note: %s", n)
		}
	}
	d.said = true
	return be, nil
}
