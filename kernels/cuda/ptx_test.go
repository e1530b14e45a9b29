package cuda

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// kernelSigs maps each kernel of the .cu sources to its parameter count;
// hopper lists those of the *_sm90a.cu files (which the emulator lacks).
func kernelSigs(t *testing.T) (sigs map[string]int, hopper map[string]bool) {
	t.Helper()
	re := regexp.MustCompile(`(?s)FOM_KERNEL void (?:__launch_bounds__\([^)]*\)\s*)?(\w+)\((.*?)\)\s*\{`)
	sigs, hopper = map[string]int{}, map[string]bool{}
	files, _ := filepath.Glob("*.cu")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			sigs[m[1]] = strings.Count(m[2], ",") + 1
			hopper[m[1]] = strings.HasSuffix(f, "_sm90a.cu")
		}
	}
	return sigs, hopper
}

// TestPTXMatchesSources: the committed PTX has exactly the kernels of the .cu
// files, each with the source's number of parameters — a kernel added or a
// signature changed without `go generate ./kernels/cuda` fails here, where no
// nvcc is needed (scripts/check-ptx.sh compares the PTX byte for byte).
func TestPTXMatchesSources(t *testing.T) {
	want, _ := kernelSigs(t)
	entry := regexp.MustCompile(`(?s)\.visible \.entry (\w+)\((.*?)\)`)
	got := map[string]int{}
	files, _ := filepath.Glob("ptx/*.ptx")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range entry.FindAllStringSubmatch(string(b), -1) {
			got[m[1]] = strings.Count(m[2], ".param")
		}
	}
	if len(want) == 0 {
		t.Fatal("no kernels found in the .cu sources")
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("kernel %s: %d parameters in the source, %d in ptx/ (run go generate ./kernels/cuda)", k, n, got[k])
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("ptx/ has kernel %s that no .cu file defines (run go generate ./kernels/cuda)", k)
		}
	}
}

// TestLaunchedKernelsExist: every kernel name the launchers use is defined,
// and the emulator's table lists every kernel but the sm_90a ones.
func TestLaunchedKernelsExist(t *testing.T) {
	sigs, hopper := kernelSigs(t)
	var used []string // kernel names in launch calls
	files, _ := filepath.Glob("*.go")
	name := regexp.MustCompile(`"(fom_\w+)"`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range name.FindAllStringSubmatch(string(b), -1) {
			used = append(used, m[1])
			if _, ok := sigs[m[1]]; !ok {
				t.Errorf("%s launches %s, which no .cu file defines", f, m[1])
			}
		}
	}
	sort.Strings(used)
	if len(used) == 0 {
		t.Fatal("no launches found")
	}
	emu, err := os.ReadFile("emu/emu.cc")
	if err != nil {
		t.Fatal(err)
	}
	for k := range sigs {
		if !hopper[k] && !strings.Contains(string(emu), "EMU_KERNEL("+k+")") {
			t.Errorf("emu/emu.cc's kernel table lacks %s", k)
		}
	}
}

// ptxSourcesHash is scripts/gen-ptx.sh's hash of a .cu file's sources: the
// file's name and bytes, then each .cuh header's (in name order), each name
// followed by a NUL byte.
func ptxSourcesHash(t *testing.T, cu string) string {
	t.Helper()
	h := sha256.New()
	add := func(name string) {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		h.Write([]byte(name + "\x00"))
		h.Write(b)
	}
	add(cu)
	headers, _ := filepath.Glob("*.cuh")
	sort.Strings(headers)
	for _, f := range headers {
		add(f)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestPTXIsCurrent: each PTX file records the hash of the sources it was
// generated from, and it is the hash of today's sources: a kernel edited
// without `go generate ./kernels/cuda` (which needs nvcc) fails here.
func TestPTXIsCurrent(t *testing.T) {
	sources, _ := filepath.Glob("*.cu")
	if len(sources) == 0 {
		t.Fatal("no .cu sources")
	}
	for _, cu := range sources {
		ptx := "ptx/" + strings.TrimSuffix(cu, ".cu") + ".ptx"
		b, err := os.ReadFile(ptx)
		if err != nil {
			t.Errorf("%s has no PTX: %v (run go generate ./kernels/cuda)", cu, err)
			continue
		}
		first, _, _ := strings.Cut(string(b), "\n")
		got, ok := strings.CutPrefix(first, "// fomnet-sources: ")
		if want := ptxSourcesHash(t, cu); !ok || got != want {
			t.Errorf("%s was generated from other sources than today's %s (recorded %q, now %s): run go generate ./kernels/cuda", ptx, cu, first, want)
		}
	}
}
