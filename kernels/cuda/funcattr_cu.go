//go:build cuda

package cuda

/*
#cgo LDFLAGS: -lcuda
#include <cuda.h>
*/
import "C"

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

// setMaxDynamicShared allows fn up to bytes of dynamic shared memory
// (cuFuncSetAttribute with CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES),
// which gorgonia.org/cu does not wrap. A cu.Function is a struct holding the
// driver's CUfunction and nothing else, so its bits are that handle.
// (A compile-time check that the sizes agree: the index is 0 only then.)
var _ = [1]struct{}{}[unsafe.Sizeof(cu.Function{})-unsafe.Sizeof(C.CUfunction(nil))]

func setMaxDynamicShared(fn cu.Function, bytes int) error {
	h := *(*C.CUfunction)(unsafe.Pointer(&fn))
	if r := C.cuFuncSetAttribute(h, C.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, C.int(bytes)); r != C.CUDA_SUCCESS {
		return fmt.Errorf("cuFuncSetAttribute: CUresult %d", int(r))
	}
	return nil
}
