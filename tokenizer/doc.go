// Package tokenizer is fomnet's byte-level BPE tokenizer for Korean and
// English: training in Go, lossless encoding and decoding, and Hugging Face
// tokenizer.json that the HF tokenizers library reads to the same ids.
//
//	tk, _ := tokenizer.Train(ctx, texts, tokenizer.TrainConfig{Vocab: 16000})
//	ids := tk.Encode("안녕하세요, world")
//	text, _ := tk.Decode(ids)
//	tk.Save("tokenizer.json")
//
// Pre-tokenisation (Pattern) keeps Hangul runs, Latin words, other scripts,
// single digits, punctuation and whitespace apart, with Unicode-aware classes
// (Go's \s is ASCII-only, so the pattern never uses it). Special tokens
// (<|eos|>, <|bos|>, <|pad|> and chat roles) sit at ids 256 and up, matching
// package model's byte-level ids. Training normalises text to NFC
// (golang.org/x/text); Encode does not normalise, so Decode(Encode(s)) == s
// for every input.
//
// Why hand-written: no maintained Go library trains byte-level BPE and writes
// a tokenizer.json with this pre-tokeniser; the pre-tokeniser is a
// hand-written state machine because Go's regexp is several times slower
// (Go's regexp on Pattern stays the reference in a fuzz test).
//
// What it does not do: Unigram or WordPiece models, normalisers other than
// the training-time NFC, or padding and truncation (callers pack sequences).
package tokenizer
