// Package journal is orchestratord's file-backed write-ahead journal: what a restart (a crash,
// an OOM kill, a SIGTERM past the grace period) must not lose. The task service appends each
// admission, each event of a task's stream and each terminal state; after a restart it replays
// them to rebuild its tasks. It implements the task service's Journal interface, which a
// distributed backend (NATS JetStream, for example) can implement later.
//
// # Format
//
// The journal is one active segment file, <dir>/seg-<generation>.log, of records framed as
//
//	length uint32 LE | crc32c(payload) uint32 LE | payload
//	payload: kind byte | uvarint len, task | uvarint len, name | uvarint len, data | extra
//
// A record is valid only when its whole frame is present and its CRC matches. Open reads the
// segment from the start and stops at the first invalid record: a torn tail left by kill -9 (a
// record cut short) or a corrupt one is truncated away, never a crash; what follows it is lost,
// which is at most the batch being written when the process died.
//
// # Durability
//
// Append copies a record into the pending batch and returns its sequence number; it neither
// blocks on I/O nor allocates once the batch buffer has grown. One owner goroutine (Run)
// writes and fsyncs the batch: within FsyncInterval of the first pending record, or at once when
// a caller Waits for a sequence number (group commit: whatever accumulated while the previous
// fsync ran goes out with the next one). Durable reports the watermark, so that readers can show
// only what a crash cannot take back.
//
// # Compaction and size
//
// Retire marks a task forgotten (a tombstone record). When the segment is larger than
// CompactMinBytes and more than twice the bytes of the live tasks, the owner rewrites the live
// records into a new segment (seg-<generation+1>.log.tmp, fsync, rename, fsync of the
// directory) and removes the old one; Open does the same after dropping a torn tail. The
// segment therefore stays below max(CompactMinBytes, 2 × live bytes) plus one batch, and the
// live bytes are bounded by what the task service keeps: its queue capacity and its retention
// bounds (tasks.retention, tasks.max_retained), each task's log bounded by its max_tokens.
//
// # Failure
//
// A write or fsync error is sticky: Wait returns it from then on (the task service refuses
// admissions it cannot make durable), and Durable releases every record, so that streams go on
// from memory.
package journal
