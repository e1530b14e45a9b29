// Package le writes and reads float32 vectors little-endian, the byte
// order of every file fomnet writes, a chunk at a time: a large model's
// vector streams to and from its file without being held a second time as
// bytes. (encoding/binary's Write and Read convert the whole vector
// through one buffer.) On a little-endian machine the vector's own memory
// is written and read (no conversion, no copy); elsewhere it is converted
// a chunk at a time.
package le
