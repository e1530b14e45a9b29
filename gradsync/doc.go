// Package gradsync will implement DiLoCo's outer loop over a flat []float32
// and named ranges: pseudo-gradients, codecs with error feedback, robust
// partition-wise aggregation and the Nesterov outer optimizer. It never sees
// the model's shape; model.Layout provides the ranges.
//
// Status: not built yet (issue "gradsync: the DiLoCo outer loop").
package gradsync
