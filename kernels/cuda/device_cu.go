//go:build cuda

package cuda

import (
	"embed"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"unsafe"

	"gorgonia.org/cu"

	_ "github.com/fomnet/fomnet/internal/cudaprobe" // a clear message before cu's init exits on a machine without a GPU
)

// Built reports whether this binary has the CUDA driver backend (-tags cuda).
const Built = true

//go:embed ptx/*.ptx
var ptxFS embed.FS

// Open starts a Backend on GPU o.Device.
func Open(o Options) (*Backend, error) {
	d, err := openDevice(o.Device)
	if err != nil {
		return nil, err
	}
	be, err := NewWith(d, o)
	if err != nil {
		d.Close()
		return nil, err
	}
	return be, nil
}

// cuDevice is a Device on the CUDA driver. Its context lives on one OS
// thread (thread.go); every driver call is sent there, launches, clears and
// device copies without waiting for them.
type cuDevice struct {
	t      *thread
	wait   bool // FOMNET_CUDA_WAIT=1: launches wait for the driver as every call does (to compare)
	name   string
	ctx    cu.CUContext
	stream cu.Stream
	mods   []cu.Module
	fns    map[string]cu.Function
	shared map[string]int            // the dynamic shared memory each kernel was allowed beyond 48 KiB
	mapped map[uint64]unsafe.Pointer // host memory of AllocMapped, by device address
	notes  []string                  // what the device left out (a module it could not load)
}

func openDevice(ordinal int) (*cuDevice, error) {
	d := &cuDevice{fns: map[string]cu.Function{}, shared: map[string]int{}, mapped: map[uint64]unsafe.Pointer{},
		wait: os.Getenv("FOMNET_CUDA_WAIT") == "1"}
	t, err := startThread(func() error { return d.init(ordinal) }, d.teardown)
	if err != nil {
		return nil, err
	}
	d.t = t
	return d, nil
}

var entryRE = regexp.MustCompile(`(?m)^\.visible \.entry (\w+)\(`)

func (d *cuDevice) init(ordinal int) error {
	n, err := cu.NumDevices()
	if err != nil {
		return fmt.Errorf("cuda: counting devices: %w", err)
	}
	if ordinal < 0 || ordinal >= n {
		return fmt.Errorf("cuda: device %d: this machine has %d CUDA device(s)", ordinal, n)
	}
	dev, err := cu.GetDevice(ordinal)
	if err != nil {
		return fmt.Errorf("cuda: device %d: %w", ordinal, err)
	}
	name, err := dev.Name()
	if err != nil {
		return fmt.Errorf("cuda: device %d: %w", ordinal, err)
	}
	major, minor, err := dev.ComputeCapability()
	if err != nil {
		return fmt.Errorf("cuda: %s: %w", name, err)
	}
	d.name = fmt.Sprintf("%s (sm_%d%d)", name, major, minor)
	if major < 8 {
		return fmt.Errorf("cuda: %s: fomnet's kernels need compute capability 8.0 or newer (bfloat16 tensor cores)", d.name)
	}
	if d.ctx, err = dev.MakeContext(cu.SchedAuto); err != nil {
		return fmt.Errorf("cuda: %s: creating a context: %w", d.name, err)
	}
	if d.stream, err = cu.MakeStream(cu.NonBlocking); err != nil {
		return fmt.Errorf("cuda: %s: creating a stream: %w", d.name, err)
	}
	files, err := ptxFS.ReadDir("ptx")
	if err != nil {
		return err
	}
	for _, f := range files {
		// Modules for sm_90a (wgmma) load on compute capability 9.0 only,
		// and a driver that cannot load them leaves the sm_80 kernels.
		hopper := strings.HasSuffix(f.Name(), "_sm90a.ptx")
		if hopper && (major != 9 || minor != 0) {
			continue
		}
		if hopper && os.Getenv("FOMNET_CUDA_SM90A") == "0" {
			d.notes = append(d.notes, f.Name()+" left out (FOMNET_CUDA_SM90A=0)")
			continue
		}
		src, err := ptxFS.ReadFile("ptx/" + f.Name())
		if err != nil {
			return err
		}
		mod, err := cu.LoadData(string(src))
		if err != nil && hopper {
			d.notes = append(d.notes, fmt.Sprintf("%s not loaded, its kernels are not used: %v", f.Name(), err))
			continue
		}
		if err != nil {
			return fmt.Errorf("cuda: %s: loading %s (the driver must support PTX 7.8, CUDA 11.8 or newer): %w", d.name, f.Name(), err)
		}
		d.mods = append(d.mods, mod)
		for _, m := range entryRE.FindAllStringSubmatch(string(src), -1) {
			fn, err := mod.Function(m[1])
			if err != nil {
				return fmt.Errorf("cuda: %s: kernel %s of %s: %w", d.name, m[1], f.Name(), err)
			}
			d.fns[m[1]] = fn
		}
	}
	return nil
}

func (d *cuDevice) teardown() {
	for _, m := range d.mods {
		m.Unload()
	}
	d.mods = nil
	if d.stream != (cu.Stream{}) {
		d.stream.Destroy()
	}
	if d.ctx != (cu.CUContext{}) {
		d.ctx.Destroy()
	}
}

// do runs f on the device's thread and waits for it (thread.do).
func (d *cuDevice) do(f func() error) error { return d.t.do(f) }

// queue sends f to the device's thread without waiting (thread.post),
// unless the device was opened with FOMNET_CUDA_WAIT=1.
func (d *cuDevice) queue(f func() error) error {
	if d.wait {
		return d.t.do(f)
	}
	d.t.post(f)
	return nil
}

func (d *cuDevice) Name() string { return d.name }

// Note says what the device left out, or "".
func (d *cuDevice) Note() string { return strings.Join(d.notes, "; ") }

func (d *cuDevice) Has(kernel string) bool {
	_, ok := d.fns[kernel]
	return ok
}

// Kernels lists the loaded kernels.
func (d *cuDevice) Kernels() []string {
	var ks []string
	for k := range d.fns {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func (d *cuDevice) Alloc(bytes int64) (uint64, error) {
	var p cu.DevicePtr
	err := d.do(func() (err error) {
		p, err = cu.MemAlloc(bytes)
		return err
	})
	return uint64(p), err
}

func (d *cuDevice) Free(p uint64) error {
	return d.do(func() error { return cu.MemFree(cu.DevicePtr(p)) })
}

func (d *cuDevice) CopyIn(dst uint64, src unsafe.Pointer, bytes int64) error {
	// From pageable memory the call returns once src has been read.
	return d.do(func() error { return cu.MemcpyHtoDAsync(cu.DevicePtr(dst), src, bytes, d.stream) })
}

func (d *cuDevice) CopyOut(dst unsafe.Pointer, src uint64, bytes int64) error {
	return d.do(func() error {
		if err := cu.MemcpyDtoHAsync(dst, cu.DevicePtr(src), bytes, d.stream); err != nil {
			return err
		}
		return d.stream.Synchronize()
	})
}

// CopyDev queues the copy; a failure is returned by a later call.
func (d *cuDevice) CopyDev(dst, src uint64, bytes int64) error {
	return d.queue(func() error {
		if err := cu.MemcpyDtoDAsync(cu.DevicePtr(dst), cu.DevicePtr(src), bytes, d.stream); err != nil {
			return fmt.Errorf("device copy of %d bytes: %w", bytes, err)
		}
		return nil
	})
}

// Clear queues the clear; a failure is returned by a later call.
func (d *cuDevice) Clear(dst uint64, bytes int64) error {
	return d.queue(func() error {
		if err := cu.MemsetD8Async(cu.DevicePtr(dst), 0, bytes, d.stream); err != nil {
			return fmt.Errorf("clearing %d bytes: %w", bytes, err)
		}
		return nil
	})
}

// Launch queues the launch; a failure is returned, naming the kernel, by a
// later call.
func (d *cuDevice) Launch(kernel string, grid, block [3]int, shared int, args []uint64) error {
	fn, ok := d.fns[kernel]
	if !ok {
		return fmt.Errorf("no kernel %s in the embedded PTX", kernel)
	}
	args = append([]uint64(nil), args...) // the caller's may change before the launch reads it
	return d.queue(func() error {
		params := make([]unsafe.Pointer, len(args))
		for i := range args {
			params[i] = unsafe.Pointer(&args[i])
		}
		// More than 48 KiB of dynamic shared memory needs the kernel's
		// permission first (once per kernel and size).
		if shared > 48<<10 && d.shared[kernel] < shared {
			if err := setMaxDynamicShared(fn, shared); err != nil {
				return fmt.Errorf("%s: allowing %d bytes of shared memory: %w", kernel, shared, err)
			}
			d.shared[kernel] = shared
		}
		if err := fn.Launch(grid[0], grid[1], grid[2], block[0], block[1], block[2], shared, d.stream, params); err != nil {
			return fmt.Errorf("launching %s: %w", kernel, err)
		}
		return nil
	})
}

// Sync waits for the device's queued work (for timing).
func (d *cuDevice) Sync() error { return d.do(func() error { return d.stream.Synchronize() }) }

// Close ends the device's goroutine after releasing the context. Idempotent.
func (d *cuDevice) Close() error {
	d.t.close()
	return nil
}
