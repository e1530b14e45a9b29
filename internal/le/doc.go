// Package le writes and reads float32 vectors little-endian, the byte
// order of every file fomnet writes, a chunk at a time: a large model's
// vector streams to and from its file without being held a second time as
// bytes. (encoding/binary's Write and Read convert the whole vector
// through one buffer.)
package le
