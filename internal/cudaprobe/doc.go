// Package cudaprobe initialises the CUDA driver before gorgonia.org/cu does,
// to say clearly what is wrong when it cannot: cu's own init prints a bare
// driver error and exits the process (there is no way to keep running), so a
// fomnet built with -tags cuda on a machine without a usable GPU would
// otherwise stop with a message that does not name fomnet or the fix.
//
// Go initialises packages in import-path order among those whose imports are
// ready; this package imports nothing but cgo, and its path sorts before
// gorgonia.org/cu, so its init runs first.
//
// The probe is built only with -tags cuda (probe.go); without the tag this
// package is empty.
package cudaprobe
