// Package gen makes synthetic text as verifiable work: a generation spec
// names a generator checkpoint (by CID), a prompt set (by CID) and the
// sampling settings, and splits the prompts into shards. Anyone holding the
// checkpoint and the prompts generates a shard (Generate) to the same
// bytes — decoding is deterministic and batch-independent (model.Decoder)
// — so a shard someone else made is checked by generating a sample of its
// records again (Verify): other text, or text from other settings, is a
// fraud proof naming the record.
//
// A shard is JSONL, one record a prompt in order, in one canonical
// encoding (Record, compact JSON, HTML unescaped, "\n" after each), so the
// same work gives the same shard CID; data prepare reads its "text".
package gen
