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
//	     or: 0xfe | kind byte | task as 16 bytes | uvarint len, name | uvarint len, data | extra
//
// The second form is for a task id that is a UUID in canonical text form (lower-case), as the
// daemon's are: 20 bytes less per record, a fifth of a token's. Segments written before it
// hold only the first form, and are read, replayed and compacted as before.
// followed by zeros up to the file's preallocated size. A record is valid only when its whole
// frame is present and its CRC matches. Open reads the segment from the start and stops at the
// first invalid record: if only zeros follow, that is the end of the records; otherwise a torn
// tail (a record cut short by a crash) or a corrupt one is dropped, never a crash; what follows
// it is lost, which is at most what was not yet durable when the machine or process died.
//
// # Durability
//
// Append copies a record into the pending batch and returns its sequence number; it neither
// blocks on I/O nor allocates once the batch buffer has grown. Two watermarks follow it:
//
//   - written: the record was handed to the kernel (write). A crash of the process (kill -9,
//     an OOM kill, a panic) cannot take it back: the page cache outlives the process.
//   - durable: the record is on disk (fdatasync). A power loss or a kernel crash cannot take
//     it back either.
//
// The owner goroutine (Run) writes each batch as soon as there is one (after letting the
// producers that are runnable append first). When it syncs depends on who waits for the disk:
//
//   - SyncAlways: readers wait for the durable watermark, so a syncer goroutine fdatasyncs as
//     soon as the previous fdatasync has ended; whatever was written meanwhile goes out with
//     the next one (group commit, no timer).
//   - SyncAdmission and SyncNone: nobody waits for a stream frame's fdatasync, so frames are
//     synced lazily: by the next waiter's fdatasync (an admission's Wait syncs everything
//     written so far, one fdatasync), or by the syncer once the oldest unsynced batch is
//     Options.MaxUnsynced old (default 100 ms, one timer armed per run of unsynced batches:
//     no latency on any request path) or the unsynced bytes reach Options.MaxUnsyncedBytes
//     (default 1 MiB). At low rates the eager policy gave each frame its own fdatasync (about
//     a quarter of a stream's CPU per token) and made the next admission wait behind it.
//
// Wait, when it waits for the disk, leads if no fdatasync is running (it writes and syncs on
// its own goroutine: one fdatasync, no hand-off) and follows otherwise: behind a lazy sync it
// started after, that is one sync's wait and then its own.
//
// Options.Sync says what waits for what. Visible (what a reader may be shown) is the written
// watermark, or the durable one with SyncAlways; Wait (what an acknowledgement waits for) is
// the durable one, or the written one with SyncNone. The default, SyncAdmission, thus makes
// an acknowledged admission survive a power loss, and a frame a reader saw survive a crash of
// the process; a power loss may take back the frames written in the last MaxUnsynced (or
// MaxUnsyncedBytes) that no admission's fdatasync covered. Open fdatasyncs what a previous
// process wrote, so that the bound holds across a restart after kill -9.
//
// fdatasync, not fsync: the journal needs its data and its size, not its timestamps. And the
// segment is preallocated (fallocate) a MiB at a time ahead of its records, so that an append
// and its fdatasync change no metadata: measured on this project's build machine (ext4 on a
// virtual disk, 2 shared cores), a 400-byte append plus fdatasync takes 130-200 µs on a
// growing file and 105-145 µs on a preallocated one. The preallocated rest of a segment reads
// as zeros: Open and Replay take an all-zero rest for the end of the records, and anything
// else after the last valid record for a torn or corrupt tail (dropped by a rewrite, as
// below). Where the file system cannot preallocate, the segment grows with each write.
//
// # Compaction and size
//
// Retire marks a task forgotten (a tombstone record). When the segment is larger than
// CompactMinBytes and more than twice the bytes of the live tasks, the owner starts a
// compaction on a goroutine of its own. It rewrites the live records into a new segment
// (seg-<generation+1>.log.tmp, fdatasync), reading the old one a MiB at a time, while batches
// go on being written to the active one; it copies what they added, in rounds, each
// fdatasynced; and only for the last copy (under 256 KiB), the rename, the fsync of the
// directory and the switch does it hold the writers and syncers off. Then it removes the old
// segment. Measured on this project's build machine at 1,000 streams (tools/bench/ab-relay.sh),
// rewriting 30 MB of live records took 0.2-1.3 s and held the writers 0.5-25 ms; when the
// whole rewrite held them, every stream stalled 0.2-0.4 s at each compaction, and reading the
// whole segment into memory took the daemon's peak RSS to 0.5 GB (0.28 GB a window at a
// time). Open rewrites too, after dropping a torn tail, before anything runs. The segment's
// records therefore stay below max(CompactMinBytes, 2 × live bytes) plus what is written
// during one compaction (its file up to a MiB more, preallocated); the end of a compaction
// checks the need again; a failed one (a full disk) is tried again after 1 s, doubling to a
// minute, while the segment grows. The live bytes are bounded by what the task service keeps:
// its queue capacity and its retention bounds (tasks.retention, tasks.max_retained), each
// task's log bounded by its max_tokens.
//
// # Failure
//
// A write or fdatasync error is sticky: Wait returns it from then on (the task service refuses
// admissions it cannot make durable), and both watermarks release every record, so that
// streams go on from memory. Acknowledged are the records up to the last fdatasync (with
// SyncNone, every record written): a Wait for one of them still succeeds. Of the records
// written after it, the failure keeps those of tasks whose admission was acknowledged (the
// frames and final states readers were shown, the tombstones: a task seen finished does not
// run again after a restart) and drops those of tasks whose first record comes after it, whose
// admission was refused (it would run at the next start). It rewrites them in place, over
// blocks the file already holds, so a full disk does not stop it; where that fails, it cuts
// the segment back to the last fdatasync. A task's first record must therefore be its
// admission, acknowledged by a Wait for it or a later record of the task.
package journal
