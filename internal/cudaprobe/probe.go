//go:build cuda

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
