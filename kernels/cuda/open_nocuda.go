//go:build !cuda

package cuda

// Built reports whether this binary has the CUDA driver backend (-tags cuda).
const Built = false

// Open would start a Backend on GPU o.Device; this binary was built without
// the cuda tag, so it returns ErrNotBuilt.
func Open(o Options) (*Backend, error) { return nil, ErrNotBuilt }
