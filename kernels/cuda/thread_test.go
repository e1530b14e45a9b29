package cuda

import (
	"errors"
	"fmt"
	"testing"
)

func TestThreadOrderAndErrors(t *testing.T) {
	var ran []string
	fini := 0
	th, err := startThread(func() error { return nil }, func() { fini++ })
	if err != nil {
		t.Fatal(err)
	}
	note := func(s string) func() error { return func() error { ran = append(ran, s); return nil } }
	th.post(note("a"))
	th.post(func() error { ran = append(ran, "b"); return errors.New("b failed") })
	th.post(note("c")) // skipped: b failed
	if err := th.do(note("d")); err == nil || err.Error() != "b failed" {
		t.Fatalf("do after a failed post returned %v, want b's error", err)
	}
	th.post(note("e")) // runs: the error was handed over
	if err := th.do(func() error { ran = append(ran, "f"); return errors.New("f failed") }); err == nil || err.Error() != "f failed" {
		t.Fatalf("do returned %v, want its own error", err)
	}
	if err := th.do(note("g")); err != nil {
		t.Fatalf("do returned %v after the errors were handed over", err)
	}
	th.post(note("h"))
	th.close()
	th.close()
	if got := fmt.Sprint(ran); got != "[a b d e f g h]" || fini != 1 {
		t.Fatalf("ran %s, fini %d times; want [a b d e f g h] and once", got, fini)
	}
}

func TestThreadInitFails(t *testing.T) {
	fini := 0
	th, err := startThread(func() error { return errors.New("no device") }, func() { fini++ })
	if th != nil || err == nil || err.Error() != "no device" || fini != 1 {
		t.Fatalf("startThread = %v, %v with fini %d times; want nil, init's error, once", th, err, fini)
	}
}

// BenchmarkThread is the launching goroutine's cost of one driver call
// sent to the device's thread: waiting for it (do), as every launch did,
// or queueing it (post). The calls here do nothing; a real launch adds the
// driver's few microseconds on the thread, which post overlaps with the
// caller's next launch.
func BenchmarkThread(b *testing.B) {
	th, err := startThread(func() error { return nil }, func() {})
	if err != nil {
		b.Fatal(err)
	}
	defer th.close()
	nop := func() error { return nil }
	b.Run("do", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			th.do(nop)
		}
	})
	b.Run("post", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			th.post(nop)
		}
		th.do(nop)
	})
}
