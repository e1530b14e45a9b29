package cuda

import "strings"

// PeakTFLOPS returns the datasheet dense peak of a GPU model for the
// precision's matrix arithmetic (bf16 tensor cores, or fp32 without tensor
// cores for the fp32 path), or 0 for a model not in the table. MFU figures
// are measured against it.
func PeakTFLOPS(name string, p Precision) float64 {
	type peak struct {
		match      string
		bf16, fp32 float64
	}
	// NVIDIA datasheets, dense (no sparsity), SXM boards where a model has several.
	table := []peak{
		{"H200", 989.4, 66.9},
		{"H100 PCIe", 756.5, 51.2},
		{"H100", 989.4, 66.9},
		{"A100", 312, 19.5},
		{"L40S", 362.05, 91.6},
		{"L4", 121, 30.3},
		{"A10", 125, 31.2},
		{"RTX 4090", 165.2, 82.6},
		{"RTX 3090", 71, 35.6},
	}
	for _, e := range table {
		if strings.Contains(name, e.match) {
			if p == BF16 {
				return e.bf16
			}
			return e.fp32
		}
	}
	return 0
}
