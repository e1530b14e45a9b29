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
