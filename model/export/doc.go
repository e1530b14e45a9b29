// Package export writes fomnet checkpoints in the formats other tools load:
// a Hugging Face Llama directory and a GGUF file for llama.cpp.
package export
