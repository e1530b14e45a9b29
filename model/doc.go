// Package model is fomnet's Llama-style decoder: configuration and presets,
// the flat parameter layout with Hugging Face tensor names, forward and
// backward passes over a kernels.Backend, AdamW with gradient clipping,
// single-node training and evaluation, generation, and checkpoints
// (safetensors + config.json).
//
//	be := cpu.MustNew(cpu.Options{})
//	m, _ := model.New(be, cfg) // then m.Init(seed) or model.Load
//	loss, _ := m.Forward(tokens, targets, b, t, true); m.Backward(); m.Step(lr, model.DefaultOptim())
//
// All parameters live in one flat buffer (Model.Params) described by a
// Layout; gradients and AdamW moments share that layout, so gradsync and
// codecs work on plain ranges. Sequences are packed documents separated by
// EOS: attention never crosses a document boundary and RoPE positions
// restart at each document.
//
// Model never indexes backend memory; it moves data with Upload/Download.
// A Model is driven by one goroutine at a time.
//
// What it does not do: tokenisation (package tokenizer), data sharding
// (package sharding), or anything on the network.
package model
