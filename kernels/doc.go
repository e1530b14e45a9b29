// Package kernels defines the compute interface that fomnet's model runs on.
//
// A Backend owns device memory and executes the operations of a Llama-style
// transformer, forward and backward side by side, plus AdamW, gradient-norm
// clipping and a few buffer utilities. The model never indexes device memory:
// it allocates opaque Buffers, moves host data in and out with explicit
// Upload/Download calls, and names the shapes of every operation. That keeps
// the same model code valid for the CPU backend (kernels/cpu, the default) and
// a CUDA backend (kernels/cuda, built only with `-tags cuda`).
//
//	be := cpu.New(cpu.Options{})
//	x := be.Alloc(n)
//	be.Upload(x, host)
//
// Every operation has a written arithmetic contract (see Backend): where a
// result is a reduction, the order of that reduction is fixed and does not
// depend on the number of threads, so a backend gives bit-identical results
// whatever GOMAXPROCS is. fomnet's verification of other peers' work depends
// on that.
//
// Learning-rate schedules (schedule.go) live here too because every backend's
// optimizer step consumes them; they are host-side arithmetic.
//
// What this package does not do: it knows nothing of models, runs or the
// network, and it does not choose shapes; package model does.
package kernels
