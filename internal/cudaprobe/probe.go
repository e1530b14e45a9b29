//go:build cuda

// Package cudaprobe initialises the CUDA driver before gorgonia.org/cu does,
// to say clearly what is wrong when it cannot: cu's own init prints a bare
// driver error and exits the process (there is no way to keep running), so a
// fomnet built with -tags cuda on a machine without a usable GPU would
// otherwise stop with a message that does not name fomnet or the fix.
//
// Go initialises packages in import-path order among those whose imports are
// ready; this package imports nothing but cgo, and its path sorts before
// gorgonia.org/cu, so its init runs first.
package cudaprobe

/*
#cgo LDFLAGS: -lcuda
#include <cuda.h>
#include <stdio.h>

static void fomnet_cuda_probe(void) {
	CUresult r = cuInit(0);
	if (r != CUDA_SUCCESS) {
		const char *name = "unknown error";
		cuGetErrorName(r, &name);
		fprintf(stderr,
			"fomnet: this binary was built with -tags cuda and needs an NVIDIA GPU and driver, "
			"but cuInit failed: %s.\n"
			"fomnet: on a machine without a GPU use a build without -tags cuda (go build ./cmd/fomnet).\n",
			name);
	}
}
*/
import "C"

func init() { C.fomnet_cuda_probe() }
