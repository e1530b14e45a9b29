// Package tokenizer will hold fomnet's byte-level BPE tokenizer for Korean
// and English: training, encoding, decoding and Hugging Face tokenizer.json.
//
// Status: not built yet (issue "Bilingual data pipeline"). Until it lands,
// models train on byte-level tokens: the 256 byte values followed by the
// special tokens model.ByteEOS, model.ByteBOS and model.BytePad.
package tokenizer
