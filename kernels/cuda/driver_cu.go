//go:build cuda

package cuda

// Driver calls that gorgonia.org/cu does not wrap.

/*
#cgo LDFLAGS: -lcuda
#include <cuda.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// fom_encode_fn is cuTensorMapEncodeTiled's signature (CUDA 12), with its
// enumerations as ints: the headers fomnet builds with are CUDA 11.8's, which
// predate tensor maps, so the function is looked up at run time.
typedef CUresult (*fom_encode_fn)(void *map, int dtype, cuuint32_t rank, void *addr, const cuuint64_t *dim,
                                  const cuuint64_t *strides, const cuuint32_t *box, const cuuint32_t *estrides,
                                  int interleave, int swizzle, int l2, int oob);

// fom_encode_bf16 writes into out (128 bytes) the tensor map of a row-major
// bfloat16 matrix rows × cols with rows ld_bytes apart, copied in boxes of
// box_rows × box_cols into 128-byte-swizzled shared memory; elements outside
// the matrix read as zero.
static CUresult fom_encode_bf16(void *out, cuuint64_t addr, cuuint64_t rows, cuuint64_t cols, cuuint64_t ld_bytes,
                                cuuint32_t box_rows, cuuint32_t box_cols) {
	static fom_encode_fn fn;
	if (!fn) {
		void *p = 0;
		CUresult r = cuGetProcAddress("cuTensorMapEncodeTiled", &p, 12000, 0);
		if (r != CUDA_SUCCESS) return r;
		if (!p) return CUDA_ERROR_NOT_FOUND;
		fn = (fom_encode_fn)p;
	}
	void *map = aligned_alloc(64, 128); // CUtensorMap is 128 bytes, 64-byte aligned
	if (!map) return CUDA_ERROR_OUT_OF_MEMORY;
	cuuint64_t dim[2] = {cols, rows}, strides[1] = {ld_bytes};
	cuuint32_t box[2] = {box_cols, box_rows}, es[2] = {1, 1};
	// 9: CU_TENSOR_MAP_DATA_TYPE_BFLOAT16; 0: CU_TENSOR_MAP_INTERLEAVE_NONE;
	// 3: CU_TENSOR_MAP_SWIZZLE_128B; 2: CU_TENSOR_MAP_L2_PROMOTION_L2_128B;
	// 0: CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE (zeros).
	CUresult r = fn(map, 9, 2, (void *)(uintptr_t)addr, dim, strides, box, es, 0, 3, 2, 0);
	memcpy(out, map, 128);
	free(map);
	return r;
}

// fom_alloc_mapped allocates bytes of pinned host memory mapped into the
// device's address space, zeroed, and gives both addresses.
static CUresult fom_alloc_mapped(void **host, CUdeviceptr *dev, size_t bytes) {
	CUresult r = cuMemHostAlloc(host, bytes, CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_PORTABLE);
	if (r != CUDA_SUCCESS) return r;
	memset(*host, 0, bytes);
	r = cuMemHostGetDevicePointer(dev, *host, 0);
	if (r != CUDA_SUCCESS) cuMemFreeHost(*host);
	return r;
}
*/
import "C"

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

// setMaxDynamicShared allows fn up to bytes of dynamic shared memory
// (cuFuncSetAttribute with CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES).
// A cu.Function is a struct holding the driver's CUfunction and nothing
// else, so its bits are that handle.
func setMaxDynamicShared(fn cu.Function, bytes int) error {
	h := *(*C.CUfunction)(unsafe.Pointer(&fn))
	if r := C.cuFuncSetAttribute(h, C.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, C.int(bytes)); r != C.CUDA_SUCCESS {
		return fmt.Errorf("cuFuncSetAttribute: CUresult %d", int(r))
	}
	return nil
}

// (A compile-time check that the sizes agree: the index is 0 only then.)
var _ = [1]struct{}{}[unsafe.Sizeof(cu.Function{})-unsafe.Sizeof(C.CUfunction(nil))]

// TensorMap encodes the tensor map of a bfloat16 matrix at device address p
// (rows × cols, rows ld elements apart) for copies of boxRows × boxCols into
// 128-byte-swizzled shared memory.
func (d *cuDevice) TensorMap(p uint64, rows, cols, ld, boxRows, boxCols int) ([]byte, error) {
	out := make([]byte, 128)
	var r C.CUresult
	d.do(func() error {
		r = C.fom_encode_bf16(unsafe.Pointer(&out[0]), C.cuuint64_t(p), C.cuuint64_t(rows), C.cuuint64_t(cols),
			C.cuuint64_t(2*ld), C.cuuint32_t(boxRows), C.cuuint32_t(boxCols))
		return nil
	})
	if r != C.CUDA_SUCCESS {
		return nil, fmt.Errorf("cuTensorMapEncodeTiled of a %d×%d bf16 matrix (ld %d, box %d×%d): CUresult %d", rows, cols, ld, boxRows, boxCols, int(r))
	}
	return out, nil
}

// AllocMapped returns the device address of bytes of zeroed, pinned host
// memory mapped into the device's address space (cuMemHostAlloc with
// DEVICEMAP): kernels and copies use it as device memory; every access
// crosses the bus.
func (d *cuDevice) AllocMapped(bytes int64) (uint64, error) {
	var dev C.CUdeviceptr
	err := d.do(func() error {
		var host unsafe.Pointer
		if r := C.fom_alloc_mapped(&host, &dev, C.size_t(bytes)); r != C.CUDA_SUCCESS {
			return fmt.Errorf("cuMemHostAlloc of %d mapped bytes: CUresult %d", bytes, int(r))
		}
		d.mapped[uint64(dev)] = host
		return nil
	})
	return uint64(dev), err
}

// FreeMapped releases memory from AllocMapped, once the device's work
// before it is done.
func (d *cuDevice) FreeMapped(p uint64) error {
	return d.do(func() error {
		host, ok := d.mapped[p]
		if !ok {
			return fmt.Errorf("free of mapped memory %#x, which AllocMapped did not return", p)
		}
		if err := d.stream.Synchronize(); err != nil {
			return err
		}
		delete(d.mapped, p)
		if r := C.cuMemFreeHost(host); r != C.CUDA_SUCCESS {
			return fmt.Errorf("cuMemFreeHost: CUresult %d", int(r))
		}
		return nil
	})
}
