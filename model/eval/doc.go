// Package eval measures a checkpoint: loss, perplexity and bits per byte
// per language and source on held-out text, and accuracy on
// multiple-choice tasks scored by log-likelihood.
//
// Bits per byte compare models with different tokenizers: the summed
// negative log-likelihood of the targets, in bits, divided by the UTF-8
// bytes those targets spell (special tokens such as EOS spell none, but
// their loss counts).
package eval
