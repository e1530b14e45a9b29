package kernels

// HostBackend is the optional capability of keeping buffers in the host's
// memory where the device's kernels read and write them in place (pinned
// and mapped into the device's address space, so no copy is made): for
// state an operation touches once a step, such as AdamW's moments, which
// then take none of the device's memory. Each pass over such a buffer
// crosses the bus (PCIe: tens of GB/s, not the device memory's TB/s).
//
// The buffers are the backend's like any other: every operation takes
// them, and Upload, Download and View work as on device buffers.
type HostBackend interface {
	// AllocHost returns a zeroed host buffer of n float32s.
	AllocHost(n int) Buffer
	// AllocHostBytes returns n zeroed host bytes (Adam8Backend's codes).
	AllocHostBytes(n int) ByteBuffer
}

// AsHost returns be's host buffers, if it has them (through Timed too). A
// CPU backend has none: its memory is the host's already.
func AsHost(be Backend) (HostBackend, bool) {
	if t, ok := be.(*Timed); ok {
		return AsHost(t.Backend)
	}
	h, ok := be.(HostBackend)
	return h, ok
}

// MasterBackend is the optional capability of keeping a model's float32
// weights (the master copy AdamW updates) in the host's memory, with a
// bfloat16 copy on the device that the forward and backward passes read:
// 2 bytes a parameter on the device instead of 4. A backend whose matrix
// products round their operands to bfloat16 anyway reads the copy as it
// would have rounded the weights (the same products); the embedding and
// RMSNorm's gain then read rounded weights too. AllocCopied keeps the
// float32 weights on the device with the copy beside them, for the
// products alone: 2 bytes a parameter more, and no rounding pass over the
// weights at each product.
//
// The backend keeps the copy equal to the rounding of the weights through
// every write it accepts: Upload, Zero, Copy and Scale round the weights
// they wrote into it again, AdamW and Adam8Backend's AdamW8 write both.
// The weights may be passed to View, Download and SumSquares, as Matmul's
// operands A and B, EmbeddingForward's table and RMSNorm's weight; any
// other operation given them panics with ErrShape, so nothing writes them
// without the copy following.
type MasterBackend interface {
	// AllocMaster returns n zeroed float32s in host memory, with their
	// (zeroed) bfloat16 copy on the device.
	AllocMaster(n int) Buffer
	// AllocCopied returns n zeroed float32s on the device with a (zeroed)
	// bfloat16 copy beside them, which only matrix products read (they
	// would round the weights so: the same bits, no rounding pass at each
	// use); the same rules for what may be given them.
	AllocCopied(n int) Buffer
}

// AsMaster returns be's weights with a bfloat16 copy, if it has them
// (through Timed too): the CUDA bf16 path.
func AsMaster(be Backend) (MasterBackend, bool) { return asBF16[MasterBackend](be) }
