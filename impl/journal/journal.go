package journal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Sync says what an acknowledgement (Wait) and a reader's view (Visible) stand for, and so
// when the journal syncs. Whatever the mode, it writes each batch as soon as it has one. With
// SyncAlways it fdatasyncs as soon as the previous fdatasync has ended (group commit, no
// timer): readers wait for the disk. With SyncAdmission and SyncNone it fdatasyncs when a
// waiter needs it (an admission's Wait: everything written so far, one fdatasync) and
// otherwise lazily, once unsynced data is MaxUnsynced old or MaxUnsyncedBytes large.
type Sync uint8

const (
	// SyncAdmission is the default: Wait returns once the record is on disk (fdatasync), so an
	// acknowledged admission survives a power loss; Visible advances once a record is handed to
	// the kernel (write), so a frame a reader saw survives a crash of the process (kill -9, OOM
	// kill, panic) but a power loss or kernel crash may take back the frames of the last
	// MaxUnsynced (those no admission's fdatasync covered).
	SyncAdmission Sync = iota
	// SyncAlways makes Visible wait for the disk too, so a power loss never takes back a frame
	// a reader saw. Each frame pays one fdatasync (about 0.1-1 ms) before a reader sees it.
	SyncAlways
	// SyncNone makes Wait wait only for the write, so an acknowledged record survives a crash
	// of the process but not a power loss or kernel crash. The disk is synced within the
	// MaxUnsynced and MaxUnsyncedBytes bounds.
	SyncNone
)

// ParseSync parses a Sync mode's name: admission, always or none.
func ParseSync(s string) (Sync, error) {
	switch s {
	case "admission", "":
		return SyncAdmission, nil
	case "always":
		return SyncAlways, nil
	case "none":
		return SyncNone, nil
	}
	return 0, fmt.Errorf("journal: sync mode %q: want admission, always or none", s)
}

func (s Sync) String() string {
	switch s {
	case SyncAlways:
		return "always"
	case SyncNone:
		return "none"
	}
	return "admission"
}

// Options configure a Journal.
type Options struct {
	// Dir holds the segment files; it is created (0700) when missing.
	Dir string
	// Sync says what Wait and Visible wait for (default SyncAdmission).
	Sync Sync
	// CompactMinBytes is the segment size below which the journal is never compacted (default
	// 4 MiB).
	CompactMinBytes int64
	// MaxUnsynced bounds how long written data waits for an fdatasync that no waiter asked for
	// (SyncAdmission and SyncNone; default 100 ms): the window a power loss may take back.
	MaxUnsynced time.Duration
	// MaxUnsyncedBytes bounds how much written data waits for such an fdatasync (default 1 MiB).
	MaxUnsyncedBytes int64
	Logger           *slog.Logger
	// OnCompaction, when set, is called by the owner goroutine (Run) as each compaction ends,
	// done or failed: for metrics. It must not block.
	OnCompaction func(Compaction)
	// OnFailure, when set, is called once, when a write or fdatasync fails and the journal
	// refuses every later record: for metrics. It must not block nor call the journal.
	OnFailure func(error)
}

// Defaults of Options.MaxUnsynced and Options.MaxUnsyncedBytes.
const (
	DefaultMaxUnsynced      = 100 * time.Millisecond
	DefaultMaxUnsyncedBytes = 1 << 20
)

// Stats are counters for benchmarks and tests.
type Stats struct {
	Records     uint64 // records appended since Open
	Batches     uint64 // writes (one per batch)
	Syncs       uint64 // fdatasyncs (each covers the batches written before it)
	LazySyncs   uint64 // of which asked by no waiter (the MaxUnsynced or MaxUnsyncedBytes bound)
	Compactions uint64
	SegmentSize int64 // bytes in the active segment
	LiveBytes   int64 // bytes of the records of live tasks
}

// Journal is the file-backed journal. Open it, Replay it, then run Run on its own goroutine;
// Append, Wait, Durable and Retire may be called from any goroutine at any time.
type Journal struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	pending  []byte
	spare    []byte
	seq      uint64           // last sequence number handed out
	live     map[string]int64 // framed bytes per live task (written and pending)
	liveSum  int64
	failed   error
	replayed bool
	nrec     uint64

	wake    chan struct{} // pending became non-empty
	written watermark     // records handed to the kernel (write)
	durable watermark     // records on disk (fdatasync)

	// smu is held by whoever runs an fdatasync (an admission's Wait that leads, or the syncer)
	// and by compaction and close; wmu by whoever writes a batch (Run, or a leader) and by
	// compaction and close. Lock order: smu, wmu, mu.
	smu        sync.Mutex
	wmu        sync.Mutex
	f          *os.File             // written under wmu, synced under smu, replaced and closed under both
	closed     bool                 // under smu and wmu: Run has returned
	alloc      int64                // under wmu: the segment file's size (the records end at size, zeros follow)
	noPrealloc bool                 // under wmu: the file system refused to preallocate
	datasync   func(*os.File) error // fdatasync; tests hold it back
	// writeAt writes a batch (f.WriteAt); tests make it fail.
	writeAt func(f *os.File, b []byte, off int64) (int, error)
	// wroteSeq, under wmu, is the last record in the segment file: size's sequence number.
	wroteSeq uint64
	// ackSeq, under mu, is wroteSeq as of the last fdatasync (or the switch to a new segment),
	// stored with synced, its offset: a failed journal keeps the records up to synced, the
	// acknowledged ones (but with SyncNone), and sorts the rest (cutBackLocked).
	ackSeq   uint64
	newTimer func() timer     // the MaxUnsynced timer; tests fire it by hand
	now      func() time.Time // the clock of the compactions' back-off; tests move it
	gen      uint64
	size     atomic.Int64
	synced   atomic.Int64 // segment bytes on disk: size as of the last fdatasync (stored under mu)
	// okThrough is the last record acknowledged (durable; with SyncNone, written) when the
	// journal failed: a Wait for it or an earlier one still succeeds.
	okThrough atomic.Uint64
	batches   atomic.Uint64
	syncs     atomic.Uint64
	lazySyncs atomic.Uint64
	compact   atomic.Uint64
	// stopCompact: Run is returning; a compaction that runs gives up.
	stopCompact atomic.Bool
}

// timer is the part of a time.Timer that Run uses.
type timer interface {
	C() <-chan time.Time
	Reset(d time.Duration)
	Stop()
}

type realTimer struct{ t *time.Timer }

func newRealTimer() timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return realTimer{t}
}
func (r realTimer) C() <-chan time.Time   { return r.t.C }
func (r realTimer) Reset(d time.Duration) { r.t.Reset(d) }
func (r realTimer) Stop()                 { r.t.Stop() }

// watermark is a sequence number that only grows, with a channel closed at each advance that
// follows a load of it. An advance that nobody can be waiting for (no load since the last
// channel was closed) keeps the channel: most advances have no waiter (an admission under sync
// none writes its record itself), and a new channel per advance was two allocations.
type watermark struct {
	mu      sync.Mutex // serializes advances (the writer and the syncer both advance on failure)
	v       atomic.Uint64
	ch      atomic.Pointer[chan struct{}]
	watched atomic.Bool // a load since the channel was made: close it at the next advance
	waiters []waiter    // under mu: functions to call once the watermark reaches their seq
	spare   []func()    // under mu: the list of due functions, kept for the next advance
}

// waiter is a function to call once a watermark reaches seq.
type waiter struct {
	seq uint64
	fn  func()
}

// notifyAt arranges for fn to be called once the watermark reaches seq, by the goroutine that
// advances it (outside the lock), and reports true; when it already has, it reports false and
// does not call fn.
func (w *watermark) notifyAt(seq uint64, fn func()) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.v.Load() >= seq {
		return false
	}
	w.waiters = append(w.waiters, waiter{seq, fn})
	return true
}

func (w *watermark) init() {
	ch := make(chan struct{})
	w.ch.Store(&ch)
}

// load returns the watermark and a channel closed when it next advances.
//
// The channel is read before the flag is set and the flag before the value: an advance whose
// value the load does not see finds the flag set and closes the channel (or a newer advance
// already replaced, and closed, the one returned).
func (w *watermark) load() (uint64, <-chan struct{}) {
	ch := *w.ch.Load()
	w.watched.Store(true)
	return w.v.Load(), ch
}

// value returns the watermark, for a caller that will not wait for it to advance.
func (w *watermark) value() uint64 { return w.v.Load() }

func (w *watermark) advance(to uint64) {
	w.mu.Lock()
	if to <= w.v.Load() {
		w.mu.Unlock()
		return
	}
	// The list of due functions is kept for the next advance (an advance running meanwhile
	// makes its own): a batch of many streams' frames allocates nothing.
	due := w.spare
	w.spare = nil
	w.v.Store(to)
	if len(w.waiters) > 0 {
		kept := w.waiters[:0]
		for _, x := range w.waiters {
			if x.seq <= to {
				due = append(due, x.fn)
			} else {
				kept = append(kept, x)
			}
		}
		clear(w.waiters[len(kept):])
		w.waiters = kept
	}
	if w.watched.Swap(false) { // else no load since the last close: nobody holds the current channel
		next := make(chan struct{})
		close(*w.ch.Swap(&next))
	}
	w.mu.Unlock()
	callAll(due)
	if due != nil {
		clear(due)
		w.mu.Lock()
		if cap(due) > cap(w.spare) {
			w.spare = due[:0]
		}
		w.mu.Unlock()
	}
}

// inlineWaiters is how many due functions the advancing goroutine calls alone: a longer list
// (a batch of many streams' frames, whose readers write to their clients) is shared with one
// goroutine per other processor, and the advance returns once all are called.
const inlineWaiters = 16

// callAll calls fns, sharing a long list among processors (see inlineWaiters).
func callAll(fns []func()) {
	parts := min(runtime.GOMAXPROCS(0), (len(fns)+inlineWaiters-1)/inlineWaiters)
	if parts <= 1 {
		for _, fn := range fns {
			fn()
		}
		return
	}
	per := (len(fns) + parts - 1) / parts
	var wg sync.WaitGroup
	for i := per; i < len(fns); i += per {
		part := fns[i:min(i+per, len(fns))]
		wg.Go(func() {
			for _, fn := range part {
				fn()
			}
		})
	}
	for _, fn := range fns[:per] {
		fn()
	}
	wg.Wait()
}

const segPrefix, segSuffix = "seg-", ".log"

func segName(gen uint64) string { return fmt.Sprintf("%s%016x%s", segPrefix, gen, segSuffix) }

// Open opens (or creates) the journal in opts.Dir. It truncates a torn or corrupt tail, drops
// retired tasks and removes leftovers of an interrupted compaction.
func Open(opts Options) (*Journal, error) {
	if opts.CompactMinBytes <= 0 {
		opts.CompactMinBytes = 4 << 20
	}
	if opts.MaxUnsynced <= 0 {
		opts.MaxUnsynced = DefaultMaxUnsynced
	}
	if opts.MaxUnsyncedBytes <= 0 {
		opts.MaxUnsyncedBytes = DefaultMaxUnsyncedBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	j := &Journal{opts: opts, log: opts.Logger, live: map[string]int64{}, wake: make(chan struct{}, 1), datasync: datasync,
		writeAt:  (*os.File).WriteAt,
		newTimer: newRealTimer, now: time.Now}
	j.written.init()
	j.durable.init()

	ents, err := os.ReadDir(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	var gens []uint64
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".tmp"):
			_ = os.Remove(filepath.Join(opts.Dir, name)) // an interrupted compaction
		case strings.HasPrefix(name, segPrefix) && strings.HasSuffix(name, segSuffix):
			g, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, segPrefix), segSuffix), 16, 64)
			if err == nil {
				gens = append(gens, g)
			}
		}
	}
	var data []byte
	if len(gens) > 0 {
		for _, g := range gens {
			j.gen = max(j.gen, g)
		}
		// The newest segment is complete: a compaction renames it into place only after
		// fsyncing it, and removes the older one only after that.
		for _, g := range gens {
			if g != j.gen {
				_ = os.Remove(filepath.Join(opts.Dir, segName(g)))
			}
		}
		data, err = os.ReadFile(filepath.Join(opts.Dir, segName(j.gen)))
		if err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
	}
	valid, retired, err := scan(data)
	// The preallocated rest of a segment is zeros; anything else after the valid records is a
	// torn or corrupt tail.
	clean := allZero(data[valid:])
	if !clean {
		j.log.Warn("journal: dropped an invalid tail", "segment", segName(j.gen), "offset", valid,
			"bytes", len(data)-valid, "err", err)
	}
	// Rewrite the segment when it has a bad tail or retired tasks: what remains is exactly the
	// live records, and a later Replay reads only those.
	if !clean || retired.len() > 0 || len(gens) == 0 {
		data, err = j.rewrite(data[:valid])
		if err != nil {
			return nil, err
		}
	} else {
		if j.f, err = os.OpenFile(filepath.Join(opts.Dir, segName(j.gen)), os.O_WRONLY, 0o600); err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		j.alloc = int64(len(data))
		data = data[:valid]
		j.size.Store(int64(valid))
		// A process killed before its last fdatasync left written records in the page cache:
		// bring them to disk now, so that the unsynced bounds hold across restarts.
		if err := datasync(j.f); err != nil {
			_ = j.f.Close()
			return nil, fmt.Errorf("journal: %w", err)
		}
		j.synced.Store(int64(valid))
	}
	for off := 0; off < len(data); {
		r, n, _ := Decode(data[off:])
		j.live[r.Task] += int64(n)
		j.liveSum += int64(n)
		off += n
	}
	return j, nil
}

// scan returns the length of the valid prefix of data, the offset of each task's last
// tombstone in it, and the error that ended it early (nil when all of data is valid). A
// tombstone retires the records of its task before it only: a task id used again after its
// retirement (a client re-posting it once the first task left retention) is a new task.
func scan(data []byte) (int, taskIndex[int], error) {
	var retired taskIndex[int]
	off := 0
	for off < len(data) {
		r, n, err := decode(data[off:])
		if err != nil {
			return off, retired, err
		}
		if r.kind == KindRetire {
			retired.put(keyOf(&r), off)
		}
		off += n
	}
	return off, retired, nil
}

// taskKey is a record's task id as compactions and scans look it up: a UUID by its 16 bytes,
// whether the record holds it packed or as text (an earlier build's), any other id by its text.
type taskKey struct {
	uuid bool
	id   [16]byte
	text []byte // when not a UUID
}

func keyOf(r *rawRecord) taskKey {
	if r.packed {
		return taskKey{uuid: true, id: [16]byte(r.task)}
	}
	var k taskKey
	if k.uuid = decodeUUID(&k.id, r.task); !k.uuid {
		k.text = r.task
	}
	return k
}

// taskIndex maps task ids to values by taskKey: a compaction looks up every record's task, and
// a UUID's lookup hashes its 16 bytes, with no text made of them. The zero value is empty.
type taskIndex[V any] struct {
	uuids map[[16]byte]V
	texts map[string]V
}

func (x *taskIndex[V]) get(k taskKey) (v V, ok bool) {
	if k.uuid {
		v, ok = x.uuids[k.id]
	} else {
		v, ok = x.texts[string(k.text)]
	}
	return v, ok
}

func (x *taskIndex[V]) put(k taskKey, v V) {
	switch {
	case k.uuid && x.uuids == nil:
		x.uuids = map[[16]byte]V{k.id: v}
	case k.uuid:
		x.uuids[k.id] = v
	case x.texts == nil:
		x.texts = map[string]V{string(k.text): v}
	default:
		x.texts[string(k.text)] = v
	}
}

// putID is put of the task id task.
func (x *taskIndex[V]) putID(task string, v V) {
	var k taskKey
	if k.uuid = decodeUUID(&k.id, task); k.uuid {
		x.put(k, v)
		return
	}
	if x.texts == nil {
		x.texts = map[string]V{}
	}
	x.texts[task] = v
}

func (x *taskIndex[V]) len() int { return len(x.uuids) + len(x.texts) }

// keepLive returns the records of data that are not retired; tombstones are left out.
func keepLive(data []byte) []byte {
	_, retired, _ := scan(data)
	out := make([]byte, 0, len(data))
	for off := 0; off < len(data); {
		r, n, err := decode(data[off:])
		if err != nil {
			break
		}
		if keeps(&r, off, &retired, nil) {
			out = append(out, data[off:off+n]...)
		}
		off += n
	}
	return out
}

// keeps reports whether a rewrite keeps the record r found at off: not a tombstone, not before
// its task's last tombstone (retired holds their offsets), and, when live is not nil, of a task
// in live.
func keeps[T int | int64](r *rawRecord, off T, retired *taskIndex[T], live *taskIndex[struct{}]) bool {
	if r.kind == KindRetire {
		return false
	}
	k := keyOf(r)
	if live != nil { // first: in a compaction most records dropped are of tasks no longer live
		if _, ok := live.get(k); !ok {
			return false
		}
	}
	last, ok := retired.get(k)
	return !ok || off >= last
}

// compactWindow is how much of a segment a compaction reads at a time, and how much of the new
// segment it buffers before a write: its memory does not grow with the segment.
const compactWindow = 1 << 20

// eachRecord calls fn with every record of the segment rf from offset 0 to end, decoded by dec
// (decode, or peek for the kinds alone), reading compactWindow bytes at a time (more only for a
// record larger than that). framed is the whole record, valid during the call. A record that
// does not end by end, or does not decode, is an error.
func eachRecord(rf io.ReaderAt, end int64, buf []byte, dec func([]byte) (rawRecord, int, error),
	fn func(off int64, r rawRecord, framed []byte) error) error {
	buf = buf[:0]
	var base int64 // the offset of buf[0] in the segment
	for off := int64(0); off < end; {
		i := int(off - base)
		r, n, err := dec(buf[i:])
		if errors.Is(err, ErrTorn) {
			// Slide what is left of the window to its start and read on.
			buf = buf[:copy(buf[:cap(buf)], buf[i:])]
			base = off
			need := headerSize
			if len(buf) >= headerSize {
				need += int(binary.LittleEndian.Uint32(buf)) // at most MaxRecordBytes: decode checked it
			}
			if need > cap(buf) {
				buf = append(make([]byte, 0, need), buf...)
			}
			m := int(min(int64(cap(buf)-len(buf)), end-base-int64(len(buf))))
			if m <= 0 {
				return fmt.Errorf("record at offset %d: %w", off, ErrTorn)
			}
			if _, err := rf.ReadAt(buf[len(buf):len(buf)+m], base+int64(len(buf))); err != nil {
				return err
			}
			buf = buf[:len(buf)+m]
			continue
		}
		if err != nil {
			return fmt.Errorf("record at offset %d: %w", off, err)
		}
		if err := fn(off, r, buf[i:i+n]); err != nil {
			return err
		}
		off += int64(n)
	}
	return nil
}

// rewrite writes the records of data that are not retired into a new segment (generation+1),
// makes it the active one and removes the old one. It returns the new segment's content.
func (j *Journal) rewrite(data []byte) ([]byte, error) {
	out := keepLive(data)
	old, next := j.gen, j.gen+1
	if j.f == nil && old == 0 {
		if _, err := os.Stat(filepath.Join(j.opts.Dir, segName(0))); errors.Is(err, os.ErrNotExist) {
			next = 0 // a fresh journal
		}
	}
	final := filepath.Join(j.opts.Dir, segName(next))
	tmp := final + ".tmp"
	if err := writeSync(tmp, out, preallocBytes); err != nil {
		return nil, fmt.Errorf("journal: compaction: %w", err)
	}
	if err := j.install(tmp, final, next, int64(len(out))); err != nil {
		return nil, fmt.Errorf("journal: compaction: %w", err)
	}
	return out, nil
}

// install makes the new segment tmp (its size bytes of records on disk) the active one:
// renamed to final (generation next), the directory fsynced, the old segment closed and
// removed. On failure the old segment stays the active and newest one. The caller holds smu and
// wmu, or runs before anything else (Open).
func (j *Journal) install(tmp, final string, next uint64, size int64) error {
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	if err := syncDir(j.opts.Dir); err != nil {
		_ = os.Remove(final)
		return err
	}
	f, err := os.OpenFile(final, os.O_WRONLY, 0o600)
	if err != nil {
		_ = os.Remove(final)
		return err
	}
	if j.f != nil {
		_ = j.f.Close()
	}
	if old := j.gen; next != old {
		_ = os.Remove(filepath.Join(j.opts.Dir, segName(old)))
	}
	j.f, j.gen = f, next
	j.size.Store(size)
	j.mu.Lock()
	j.synced.Store(size) // the new segment is on disk, all of it
	j.ackSeq = j.wroteSeq
	j.mu.Unlock()
	j.alloc = size
	if st, err := f.Stat(); err == nil {
		j.alloc = max(st.Size(), size)
	}
	return nil
}

// preallocBytes is how far ahead of its records a segment is preallocated: an append and its
// fdatasync then change no metadata (measured here: about 30 % less than an fdatasync that
// grows the file). It costs that much disk per journal.
const preallocBytes = 1 << 20

// writeSync writes b to a new file at path, preallocates prealloc bytes after it (best
// effort: zeros, which a scan takes for the end of the records), and fsyncs it.
func writeSync(path string, b []byte, prealloc int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return err
	}
	if prealloc > 0 {
		_ = preallocate(f, int64(len(b)), prealloc) // without it the file grows with each write
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Replay calls fn with every record of the live tasks, in the order they were appended. The
// record's slices are valid only during the call. Call it once, after Open and before Run.
func (j *Journal) Replay(fn func(task string, kind uint8, name string, data, extra []byte) error) error {
	j.mu.Lock()
	if j.replayed {
		j.mu.Unlock()
		return errors.New("journal: Replay called twice")
	}
	j.replayed = true
	j.mu.Unlock()
	data, err := os.ReadFile(filepath.Join(j.opts.Dir, segName(j.gen)))
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	valid, _, err := scan(data)
	if !allZero(data[valid:]) {
		return fmt.Errorf("journal: replay at offset %d: %w", valid, err)
	}
	data = data[:valid] // the rest is the preallocated tail
	for off := 0; off < len(data); {
		r, n, err := Decode(data[off:])
		if err != nil {
			return fmt.Errorf("journal: replay at offset %d: %w", off, err)
		}
		if r.Kind != KindRetire {
			if err := fn(r.Task, r.Kind, r.Name, r.Data, r.Extra); err != nil {
				return err
			}
		}
		off += n
	}
	return nil
}

// Append adds one record of task to the pending batch and returns its sequence number. It
// copies the fields and never blocks on I/O. kind must be below 0xfe (the journal's own kinds
// are 0xfe and KindRetire, 0xff).
func (j *Journal) Append(task string, kind uint8, name string, data, extra []byte) uint64 {
	j.mu.Lock()
	before := len(j.pending)
	wasEmpty := before == 0
	j.pending = appendRecord(j.pending, kind, task, name, data, extra)
	n := int64(len(j.pending) - before)
	j.seq++
	seq := j.seq
	j.nrec++
	j.live[task] += n
	j.liveSum += n
	j.mu.Unlock()
	if wasEmpty {
		signal(j.wake)
	}
	return seq
}

// Retire marks task forgotten: its records go at the next compaction, and a restart does not
// replay them.
func (j *Journal) Retire(task string) {
	j.mu.Lock()
	wasEmpty := len(j.pending) == 0
	j.pending = appendRecord(j.pending, KindRetire, task, "", nil, nil)
	j.seq++
	j.nrec++
	j.liveSum -= j.live[task]
	delete(j.live, task)
	j.mu.Unlock()
	if wasEmpty {
		signal(j.wake)
	}
}

// Wait returns once the record numbered seq is acknowledged as the Sync mode says (on disk;
// with SyncNone, written), or with the journal's write error, or with ctx's error. The caller
// leads when no fdatasync (with SyncNone, no write) runs: it writes what is pending and runs
// the fdatasync itself, with no goroutine hand-off; otherwise it follows, and leads the next
// one if the running one does not cover its record (group commit, no timer: one sync's wait
// at most, not cancelled by ctx once the running one has ended).
func (j *Journal) Wait(ctx context.Context, seq uint64) error {
	w, lead, behind := &j.durable, true, false
	if j.opts.Sync == SyncNone {
		w = &j.written
	}
	for {
		if w.value() >= seq {
			if err := j.err(); err != nil && seq > j.okThrough.Load() {
				return err
			}
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if lead && j.opts.Sync == SyncNone && j.wmu.TryLock() {
			// Only the write: lead it unless Run (or another waiter) is writing.
			var to uint64
			if j.closed {
				lead = false
			} else if j.written.v.Load() < seq {
				to = j.writeLocked()
			}
			j.wmu.Unlock()
			j.written.advance(to)
			continue
		}
		if lead && j.opts.Sync != SyncNone {
			locked := j.smu.TryLock()
			if !locked && behind {
				// The fdatasync this waiter followed has ended without covering its record:
				// lead the next one (with lazy syncing nobody else may start it), after whoever
				// took the lock first (an fdatasync that may cover it, or a compaction).
				j.smu.Lock()
				locked = true
			}
			if locked {
				if j.durable.v.Load() < seq && !j.syncLocked(false) {
					lead = false // closed: nothing more becomes durable
				}
				j.smu.Unlock()
				continue
			}
		}
		// Only a waiter that blocks loads the channel (see watermark).
		v, ch := w.load()
		if v >= seq {
			continue
		}
		select {
		case <-ch:
			behind = true
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (j *Journal) err() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.failed
}

// Visible returns the highest sequence number a reader may be shown (written; with SyncAlways,
// on disk) and a channel closed when it next advances.
func (j *Journal) Visible() (uint64, <-chan struct{}) {
	if j.opts.Sync == SyncAlways {
		return j.durable.load()
	}
	return j.written.load()
}

// AfterVisible arranges for fn to be called once Visible reaches seq, by the goroutine that
// advances it, and reports true; when Visible already has, it reports false and does not call
// fn. fn is called with no lock of the journal's held (but for a failure, below), by the
// journal's writer or syncer (or goroutines it shares a long list of them with, see callAll): it must not block (set a flag, start a goroutine, write to a
// socket without waiting), nor wait for the journal. A failed journal shows
// everything: its waiters are called then. A reader that is told instead of waiting on
// Visible's channel needs no goroutine of its own while the journal writes.
func (j *Journal) AfterVisible(seq uint64, fn func()) bool {
	if j.opts.Sync == SyncAlways {
		return j.durable.notifyAt(seq, fn)
	}
	return j.written.notifyAt(seq, fn)
}

// Durable returns the highest sequence number on disk and a channel closed when it next
// advances.
func (j *Journal) Durable() (uint64, <-chan struct{}) { return j.durable.load() }

// OnDisk is the last record known to be on disk (with SyncNone, written). It is Durable's
// mark until the journal fails; a failure raises that mark to release every waiter, but the
// records past the last acknowledged one never reached the disk, and OnDisk says so. Whoever
// keeps a fact until its record is on disk (the budget file's charged tasks) reads this.
func (j *Journal) OnDisk() uint64 {
	d := j.durable.value()
	if j.err() != nil { // read after the mark: a failure sets the error before it raises the mark
		return min(d, j.okThrough.Load())
	}
	return d
}

// Written returns the highest sequence number handed to the kernel and a channel closed when it
// next advances.
func (j *Journal) Written() (uint64, <-chan struct{}) { return j.written.load() }

// Stats returns the journal's counters.
func (j *Journal) Stats() Stats {
	j.mu.Lock()
	defer j.mu.Unlock()
	return Stats{Records: j.nrec, Batches: j.batches.Load(), Syncs: j.syncs.Load(), LazySyncs: j.lazySyncs.Load(),
		Compactions: j.compact.Load(),
		SegmentSize: j.size.Load(), LiveBytes: j.liveSum}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Run is the owner goroutine: it writes each batch as soon as there is one, has the syncer
// fdatasync what no waiter asked for (with SyncAlways as soon as the previous fdatasync has
// ended, so whatever was written meanwhile goes out with the next one: group commit without a
// timer; otherwise once the oldest unsynced batch is MaxUnsynced old or the unsynced bytes
// reach MaxUnsyncedBytes), and starts compactions (one at a time, each on a goroutine of its
// own: see compactLive), until ctx is done; then it gives up a compaction that runs, writes
// and syncs what is pending, closes the segment and returns.
func (j *Journal) Run(ctx context.Context) error {
	reqs := make(chan uint64, 1) // a written sequence number to make durable
	idle := make(chan struct{}, 1)
	sdone := make(chan struct{})
	go func() { defer close(sdone); j.syncer(reqs, idle) }()
	busy := false // the syncer holds a request
	eager := j.opts.Sync == SyncAlways
	tm := j.newTimer()
	armed, due := false, false // the timer runs / has fired for the oldest unsynced batch
	compacted := make(chan Compaction, 1)
	compacting := false // a compaction's goroutine runs
	// After a failed compaction (a full disk, say) the next waits compactBackoff (1 s, doubling
	// to a minute): each attempt reads the whole segment, and the need is checked at every
	// batch.
	var compactAfter time.Time
	var compactBackoff time.Duration
	ended := func(rep Compaction) { // a compaction's end: back-off, log, OnCompaction
		compacting = false
		switch {
		case rep.Err == nil:
			compactBackoff = 0
		case errors.Is(rep.Err, errCompactionAbandoned):
			return // not reported
		default:
			compactBackoff = min(max(2*compactBackoff, time.Second), time.Minute)
			compactAfter = j.now().Add(compactBackoff)
			j.log.Error("journal: compaction failed; the segment grows until one succeeds", "err", rep.Err,
				"retry_in", compactBackoff)
		}
		if j.opts.OnCompaction != nil {
			j.opts.OnCompaction(rep)
		}
	}
	defer func() {
		j.stopCompact.Store(true)
		if compacting {
			ended(<-compacted)
		}
		tm.Stop()
		if busy {
			<-idle
		}
		close(reqs)
		<-sdone
		j.smu.Lock()
		j.syncLocked(false)
		j.wmu.Lock()
		j.closed = true
		_ = j.f.Close()
		j.wmu.Unlock()
		j.smu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-j.wake:
			// Let the producers that are runnable now append first: under load the batch grows,
			// alone it costs nothing (no timer).
			runtime.Gosched()
		case <-idle:
			busy = false
		case rep := <-compacted:
			ended(rep)
		case <-tm.C():
			armed, due = false, true
		}
		before := j.written.value()
		settled := j.durable.v.Load() >= before // nothing written was unsynced
		j.wmu.Lock()
		to := j.writeLocked()
		j.wmu.Unlock()
		j.written.advance(to) // its waiters may write to clients: not under wmu
		w := j.written.value()
		if w == math.MaxUint64 {
			continue // failed: nothing more to sync
		}
		if !eager && w > before && (settled || !armed && !due) {
			// This batch is the oldest unsynced one (or, while the syncer runs, the oldest the
			// running sync may not cover): it is due MaxUnsynced from now.
			tm.Reset(j.opts.MaxUnsynced)
			armed, due = true, false
		}
		if !compacting && j.needCompact() && !j.now().Before(compactAfter) {
			compacting = true
			go func() { compacted <- j.compactLive() }()
		}
		if busy {
			continue
		}
		if w <= j.durable.v.Load() {
			due = false // a waiter synced it all
			continue
		}
		if eager || due || j.size.Load()-j.synced.Load() >= j.opts.MaxUnsyncedBytes {
			if armed {
				tm.Stop()
			}
			armed, due = false, false
			reqs <- w
			busy = true
		}
	}
}

// syncer makes what Run wrote durable, one fdatasync at a time (unless a leader did it
// meanwhile), and tells Run when it is idle again.
func (j *Journal) syncer(reqs <-chan uint64, idle chan<- struct{}) {
	lazy := j.opts.Sync != SyncAlways
	for seq := range reqs {
		j.smu.Lock()
		if j.durable.v.Load() < seq {
			j.syncLocked(lazy)
		}
		j.smu.Unlock()
		idle <- struct{}{}
	}
}

// syncLocked writes what is pending, then makes everything written durable with one
// fdatasync (writes go on meanwhile); lazy counts it as asked by no waiter. The caller holds
// smu. It reports false once the journal is closed.
func (j *Journal) syncLocked(lazy bool) bool {
	j.wmu.Lock()
	if j.closed {
		j.wmu.Unlock()
		return false
	}
	to := j.writeLocked()
	f := j.f // replaced only under smu
	// The fdatasync covers the segment as of now: its size and its last record, a pair (a
	// batch written after this, before the fdatasync, goes to disk with it, but is claimed by
	// the next one).
	size, w := j.size.Load(), j.wroteSeq
	j.wmu.Unlock()
	j.written.advance(to)
	if w <= j.durable.v.Load() || j.written.value() == math.MaxUint64 {
		return true
	}
	if err := j.datasync(f); err != nil {
		j.wmu.Lock()
		j.fail(err)
		j.wmu.Unlock()
		return true
	}
	j.syncs.Add(1)
	if lazy {
		j.lazySyncs.Add(1)
	}
	j.mu.Lock()
	if j.failed == nil { // a failure meanwhile (a write's) kept the pair it saw
		j.synced.Store(size)
		j.ackSeq = w
	}
	j.mu.Unlock()
	j.durable.advance(w)
	return true
}

// fail makes a write or sync error sticky, sorts what the segment holds past the acknowledged
// records (cutBackLocked) and releases every waiter: those of records acknowledged with
// success, the others with the error. Acknowledged are the records up to the last fdatasync's
// (with SyncNone, every record in the file). The caller holds wmu.
func (j *Journal) fail(err error) {
	j.log.Error("journal: write failed: admissions are refused from now on", "err", err)
	j.mu.Lock()
	first := j.failed == nil
	ackOff, ack := j.synced.Load(), j.ackSeq
	if j.opts.Sync == SyncNone {
		ackOff, ack = j.size.Load(), j.wroteSeq
	}
	if first {
		j.okThrough.Store(ack) // before the error is seen
		j.failed = fmt.Errorf("journal: %w", err)
	}
	j.mu.Unlock()
	if first {
		j.cutBackLocked(ackOff)
		if j.opts.OnFailure != nil {
			j.opts.OnFailure(err)
		}
	}
	j.written.advance(math.MaxUint64)
	j.durable.advance(math.MaxUint64)
}

// cutBackLocked, once the journal failed, drops from the segment what was refused, and keeps
// the rest. Past ackOff lie records no Wait acknowledged (with SyncNone, none: ackOff is the
// size), written before the failure: the tasks' frames, final states and tombstones that
// readers were shown, and admissions. A task's first record (after its tombstone, if its id
// was used before) is its admission, which the caller acknowledges through a Wait for it or a
// later record: a task whose first record lies past ackOff was refused, and its tombstone will
// never be written. Its records are dropped (left in the file, they would be replayed, and
// run, at the next start); the others' are kept, and the segment ends after them. The records
// past ackOff are rewritten in place, over blocks the file already has (so it works on a full
// disk), then the file is truncated. Best effort: where the rewrite fails, the segment is cut
// back to ackOff; where the device refuses that too, the error is logged. The caller holds wmu.
func (j *Journal) cutBackLocked(ackOff int64) {
	if j.closed {
		return
	}
	end := j.size.Load()
	keep := ackOff
	if end > ackOff {
		tail, dropped, err := j.refusedDropped(ackOff, end)
		switch {
		case err != nil:
			j.log.Error("journal: reading the unacknowledged records back; they are dropped", "offset", ackOff, "err", err)
		case dropped == 0:
			keep = end
		case len(tail) > 0:
			if _, err := j.writeAt(j.f, tail, ackOff); err != nil {
				j.log.Error("journal: rewriting the unacknowledged records; they are dropped", "offset", ackOff, "err", err)
				break
			}
			keep = ackOff + int64(len(tail))
		}
		if keep > ackOff {
			j.log.Warn("journal: kept the records written since the last fdatasync but for the refused admissions' tasks",
				"bytes_kept", keep-ackOff, "records_dropped", dropped)
		}
	}
	if err := j.f.Truncate(keep); err != nil {
		j.log.Error("journal: cutting the segment back to what was kept", "size", keep, "err", err)
		return
	}
	j.alloc = keep
	if keep > ackOff {
		_ = j.datasync(j.f) // best effort: the device has failed once
	}
}

// refusedDropped reads the segment's records from ackOff to end and returns them without the
// records of the tasks whose first record lies past ackOff (see cutBackLocked), and how many
// records it dropped. It reads the records before ackOff for the tasks found past it only.
func (j *Journal) refusedDropped(ackOff, end int64) ([]byte, int, error) {
	rf, err := os.Open(filepath.Join(j.opts.Dir, segName(j.gen)))
	if err != nil {
		return nil, 0, err
	}
	defer rf.Close()
	data := make([]byte, end-ackOff)
	if _, err := rf.ReadAt(data, ackOff); err != nil {
		return nil, 0, err
	}
	var tail taskIndex[struct{}] // the tasks with records past ackOff
	for off := 0; off < len(data); {
		r, n, err := decode(data[off:])
		if err != nil {
			return nil, 0, err
		}
		tail.put(keyOf(&r), struct{}{})
		off += n
	}
	// acked: whether a task's incarnation (its records since its last tombstone) began before
	// ackOff, so that its admission was acknowledged.
	var acked taskIndex[bool]
	err = eachRecord(rf, ackOff, make([]byte, 0, compactWindow), decode, func(_ int64, r rawRecord, _ []byte) error {
		k := keyOf(&r)
		if _, ok := tail.get(k); ok {
			acked.put(k, r.kind != KindRetire)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	out, dropped := data[:0], 0 // in place: out never passes the record being read
	for off := 0; off < len(data); {
		r, n, _ := decode(data[off:])
		k := keyOf(&r)
		kept, _ := acked.get(k)
		if !kept || r.kind == KindRetire {
			// Past a tombstone, or a refused admission: what follows of the task (a new
			// incarnation, or the rest of the refused one) was never acknowledged.
			acked.put(k, false)
		}
		if kept {
			out = append(out, data[off:off+n]...)
		} else {
			dropped++
		}
		off += n
	}
	return out, dropped, nil
}

// writeLocked hands the pending batch to the kernel and returns the sequence number the
// written watermark may advance to (0: none), which the caller publishes once it has released
// wmu: the watermark's waiters (AfterVisible) may write to clients meanwhile, and a sync or an
// admission's write must not wait for that. Writes are serialized by wmu, so a later batch's
// advance never comes before an earlier one's takes effect (advance only raises the mark). The
// caller holds wmu.
func (j *Journal) writeLocked() uint64 {
	if j.closed {
		return 0
	}
	j.mu.Lock()
	buf, seq := j.pending, j.seq
	j.pending = j.spare[:0]
	j.spare = nil
	failed := j.failed
	j.mu.Unlock()
	if failed != nil {
		return 0
	}
	if len(buf) > 0 {
		end := j.size.Load()
		if need := end + int64(len(buf)); need > j.alloc {
			j.extend(need)
		}
		if _, err := j.writeAt(j.f, buf, end); err != nil {
			j.fail(err)
			return 0
		}
		j.size.Add(int64(len(buf)))
		j.batches.Add(1)
	}
	j.wroteSeq = seq
	if cap(buf) <= 4<<20 { // reuse the batch buffer unless a burst made it huge
		j.mu.Lock()
		j.spare = buf[:0]
		j.mu.Unlock()
	}
	return seq
}

// extend preallocates the segment past need, a whole chunk at a time (the fdatasync after it
// records the new size once per chunk). Where the file system refuses, the segment grows with
// each write instead. The caller holds wmu.
func (j *Journal) extend(need int64) {
	if !j.noPrealloc {
		to := (need/preallocBytes + 1) * preallocBytes
		if err := preallocate(j.f, j.alloc, to-j.alloc); err == nil {
			j.alloc = to
			return
		}
		j.noPrealloc = true
	}
	j.alloc = need
}

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// needCompact reports whether the segment is mostly retired tasks.
func (j *Journal) needCompact() bool {
	size := j.size.Load()
	j.mu.Lock()
	liveSum, failed := j.liveSum, j.failed
	j.mu.Unlock()
	return failed == nil && size >= j.opts.CompactMinBytes && size > 2*liveSum
}

// Compaction is what Options.OnCompaction is told when a compaction ends.
type Compaction struct {
	Err         error         // nil: done, the new segment is the active one
	Took        time.Duration // from its start to its end
	WritersHeld time.Duration // how long writers and syncers waited for its switch (0: it failed before)
	BytesBefore int64         // the segment's size when it started
	BytesKept   int64         // of which the records of live tasks
	BytesAfter  int64         // the new segment's size (with what was written meanwhile)
	segment     string
}

// errCompactionAbandoned is a compaction given up because the journal closed or failed.
var errCompactionAbandoned = errors.New("journal: compaction abandoned")

// catchUpBytes is how far a compaction's copy may trail the active segment when it takes the
// locks to switch: what it copies and fdatasyncs while writers wait.
const catchUpBytes = 256 << 10

// compactLive rewrites the active segment with the records of the tasks live now, without holding
// the writers off while it does (Run starts it on a goroutine of its own, one at a time):
//
//  1. It notes the segment's size (cut) and the live tasks, then reads the segment up to cut
//     twice, a window (compactWindow) at a time: the tombstones (each record's kind only),
//     then the records to keep (each decoded and checked, its task looked up by taskKey),
//     which it writes into a new segment (seg-<generation+1>.log.tmp), fdatasynced. Its memory
//     is two windows and the tombstones, whatever the segment's size. Batches go on being
//     written to the active segment meanwhile.
//  2. It copies what was written past cut to the new segment, in rounds, each fdatasynced,
//     until less than catchUpBytes is left.
//  3. Holding the syncers and the writers off, it copies the rest, fdatasyncs, renames the new
//     segment into place, fsyncs the directory and makes it the active one: every record
//     written is then in it and on disk. Writers wait for this step only (a few ms), not for
//     the whole rewrite (hundreds of ms for tens of MB of live records).
//
// A record of a task retired after the cut is copied with its tombstone, which retires it on
// replay and at the next compaction. It gives up, leaving the active segment as it was, when
// the journal closes (stopCompact) or fails meanwhile.
func (j *Journal) compactLive() Compaction {
	start := time.Now()
	var rep Compaction
	rep.Err = j.compactInto(&rep)
	rep.Took = time.Since(start)
	if rep.Err == nil {
		j.log.Info("journal compacted", "segment", rep.segment, "bytes_before", rep.BytesBefore, "bytes_kept", rep.BytesKept,
			"bytes_after", rep.BytesAfter, "took", rep.Took, "writers_held", rep.WritersHeld)
	}
	return rep
}

// compactInto is compactLive's work: it fills rep's sizes and hold and returns its failure, or
// errCompactionAbandoned.
func (j *Journal) compactInto(rep *Compaction) error {
	j.wmu.Lock()
	if j.closed {
		j.wmu.Unlock()
		return errCompactionAbandoned
	}
	gen, cut := j.gen, j.size.Load()
	rep.BytesBefore = cut
	j.wmu.Unlock()
	j.mu.Lock()
	live := taskIndex[struct{}]{uuids: make(map[[16]byte]struct{}, len(j.live))}
	for k := range j.live {
		live.putID(k, struct{}{})
	}
	j.mu.Unlock()

	oldPath := filepath.Join(j.opts.Dir, segName(gen))
	rf, err := os.Open(oldPath)
	if err != nil {
		return fmt.Errorf("journal: compaction: %w", err)
	}
	defer rf.Close()
	next := gen + 1
	final := filepath.Join(j.opts.Dir, segName(next))
	tmp := final + ".tmp"
	nf, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("journal: compaction: %w", err)
	}
	switched := false
	defer func() {
		_ = nf.Close()
		if !switched {
			_ = os.Remove(tmp)
		}
	}()
	// Two passes over the segment up to cut, a window at a time: the tombstones' offsets,
	// then the records kept, written to the new segment as they fill a window. The first pass
	// reads each record's kind only (peek); the second decodes and checks every record, so a
	// corrupt one fails the compaction whatever the first pass made of it.
	buf := make([]byte, 0, compactWindow)
	var retired taskIndex[int64]
	err = eachRecord(rf, cut, buf, peek, func(off int64, r rawRecord, framed []byte) error {
		if r.kind != KindRetire {
			return nil
		}
		tomb, _, err := decode(framed)
		if err != nil {
			return err
		}
		retired.put(keyOf(&tomb), off)
		return nil
	})
	if err != nil {
		return fmt.Errorf("journal: compaction: %w", err)
	}
	out := make([]byte, 0, compactWindow)
	var kept int64
	err = eachRecord(rf, cut, buf, decode, func(off int64, r rawRecord, framed []byte) error {
		if !keeps(&r, off, &retired, &live) {
			return nil
		}
		if len(out)+len(framed) > cap(out) && len(out) > 0 {
			if _, err := nf.Write(out); err != nil {
				return err
			}
			kept += int64(len(out))
			out = out[:0]
		}
		out = append(out, framed...)
		return nil
	})
	if err == nil && len(out) > 0 {
		_, err = nf.Write(out)
		kept += int64(len(out))
	}
	if err != nil {
		return fmt.Errorf("journal: compaction: %w", err)
	}
	if err := j.datasync(nf); err != nil { // its data and size: the rename below is fsynced with the directory
		return fmt.Errorf("journal: compaction: %w", err)
	}
	pos := kept // the new segment's end
	buf = out[:0]
	// copyTail copies the active segment's records from cut to end to the new segment.
	copyTail := func(end int64) error {
		for cut < end {
			n := min(end-cut, 1<<20)
			if int64(cap(buf)) < n {
				buf = make([]byte, n)
			}
			b := buf[:n]
			if _, err := rf.ReadAt(b, cut); err != nil {
				return err
			}
			if _, err := nf.WriteAt(b, pos); err != nil {
				return err
			}
			cut += n
			pos += n
		}
		return nil
	}
	for range 8 {
		if j.stopCompact.Load() || j.err() != nil {
			return errCompactionAbandoned
		}
		end := j.size.Load() // records up to end are written: size grows after each write
		if end-cut < catchUpBytes {
			break
		}
		if err := copyTail(end); err != nil {
			return fmt.Errorf("journal: compaction: %w", err)
		}
		if err := j.datasync(nf); err != nil {
			return fmt.Errorf("journal: compaction: %w", err)
		}
	}

	// Preallocate past what the last copy may add, so that its fdatasync under the locks
	// changes no metadata.
	_ = preallocate(nf, pos, preallocBytes+catchUpBytes) // best effort, as writeSync
	if err := j.datasync(nf); err != nil {
		return fmt.Errorf("journal: compaction: %w", err)
	}

	j.smu.Lock()
	j.wmu.Lock()
	held := time.Now()
	if j.closed || j.stopCompact.Load() || j.err() != nil {
		j.wmu.Unlock()
		j.smu.Unlock()
		return errCompactionAbandoned
	}
	written := j.wroteSeq // under wmu: everything in the segment, all of it copied
	err = j.switchTo(nf, final, tmp, copyTail, &pos)
	if err == nil {
		switched = true
	}
	j.wmu.Unlock()
	j.smu.Unlock()
	rep.WritersHeld = time.Since(held)
	if err != nil {
		return fmt.Errorf("journal: compaction: %w", err)
	}
	rep.BytesKept, rep.BytesAfter, rep.segment = kept, pos, segName(next)
	j.compact.Add(1)
	j.durable.advance(written) // its waiters may write to clients: not under the locks
	return nil
}

// switchTo copies the rest of the active segment to the new one (nf, at *pos, named tmp),
// makes it durable and installs it as final. The caller holds smu and wmu.
func (j *Journal) switchTo(nf *os.File, final, tmp string, copyTail func(end int64) error, pos *int64) error {
	if err := copyTail(j.size.Load()); err != nil {
		return err
	}
	if err := j.datasync(nf); err != nil {
		return err
	}
	return j.install(tmp, final, j.gen+1, *pos)
}
