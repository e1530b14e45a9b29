package cuda

import (
	"syscall"
	"testing"
)

// Every function runs on the one OS thread, posted or waited for.
func TestThreadOneOSThread(t *testing.T) {
	var tid int
	th, err := startThread(func() error { tid = syscall.Gettid(); return nil }, func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer th.close()
	other := 0
	for i := 0; i < 200; i++ {
		th.post(func() error {
			if syscall.Gettid() != tid {
				other++
			}
			return nil
		})
		if i%7 == 0 {
			th.do(func() error { return nil })
		}
	}
	th.do(func() error { return nil })
	if other != 0 {
		t.Fatalf("%d of 200 posted functions ran off the device's thread", other)
	}
}
