package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type rec struct {
	Task  string
	Kind  uint8
	Name  string
	Data  string
	Extra string
}

// running opens a journal in dir and runs its owner until the test ends (or stop is called).
func running(t *testing.T, dir string, opts Options) (*Journal, func()) {
	t.Helper()
	opts.Dir = dir
	j, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	return j, start(t, j)
}

func start(t *testing.T, j *Journal) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = j.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func replayAll(t *testing.T, dir string) []rec {
	t.Helper()
	j, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = j.f.Close() }()
	var out []rec
	if err := j.Replay(func(task string, kind uint8, name string, data, extra []byte) error {
		out = append(out, rec{task, kind, name, string(data), string(extra)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func wait(t *testing.T, j *Journal, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := j.Wait(ctx, seq); err != nil {
		t.Fatalf("wait %d: %v", seq, err)
	}
}

// waitCompacted returns once a compaction the owner started (on a goroutine of its own) ended,
// within a bound.
func waitCompacted(t *testing.T, j *Journal) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); j.Stats().Compactions == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("no compaction: %+v", j.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

func segment(t *testing.T, dir string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	if err != nil || len(m) != 1 {
		t.Fatalf("segments in %s: %v %v", dir, m, err)
	}
	return m[0]
}

func TestReplayOrderAndRetire(t *testing.T) {
	dir := t.TempDir()
	j, stop := running(t, dir, Options{})
	var last uint64
	want := []rec{}
	for i := range 5 {
		id := fmt.Sprintf("task-%d", i)
		last = j.Append(id, 1, "", []byte("admit "+id), nil)
		want = append(want, rec{id, 1, "", "admit " + id, ""})
	}
	for i := range 5 {
		id := fmt.Sprintf("task-%d", i)
		last = j.Append(id, 2, "token", []byte(fmt.Sprint(i)), []byte("v"))
		want = append(want, rec{id, 2, "token", fmt.Sprint(i), "v"})
	}
	j.Retire("task-2")
	wait(t, j, last)
	stop()
	var kept []rec
	for _, r := range want {
		if r.Task != "task-2" {
			kept = append(kept, r)
		}
	}
	got := replayAll(t, dir)
	if fmt.Sprint(got) != fmt.Sprint(kept) {
		t.Fatalf("replay:\n got %v\nwant %v", got, kept)
	}
	// The reopen dropped the retired task from the segment itself.
	b, _ := os.ReadFile(segment(t, dir))
	if bytes.Contains(b, []byte("task-2")) {
		t.Fatal("the retired task is still in the segment after reopening")
	}
}

func TestTornAndCorruptTail(t *testing.T) {
	tests := []struct {
		name   string
		damage func(b []byte) []byte
		keep   int // records that survive
	}{
		{"cut inside the last record", func(b []byte) []byte { return b[:len(b)-3] }, 2},
		{"cut inside the last header", func(b []byte) []byte { return b[:len(b)-recordSize("c", "", []byte("three"), nil)+5] }, 2},
		{"flipped byte in the last payload", func(b []byte) []byte { b[len(b)-1] ^= 0xff; return b }, 2},
		{"flipped byte in the second record", func(b []byte) []byte {
			b[recordSize("a", "", []byte("one"), nil)+headerSize+2] ^= 0x01
			return b
		}, 1},
		{"garbage appended", func(b []byte) []byte { return append(b, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6) }, 3},
		{"huge length appended", func(b []byte) []byte { return append(b, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0) }, 3},
		{"zeroes appended (preallocated tail)", func(b []byte) []byte { return append(b, make([]byte, 64)...) }, 3},
	}
	for _, tc := range tests {
		// The damage hits the records; the segment's preallocated zeros follow them or not.
		for _, tail := range []int{0, preallocBytes} {
			t.Run(fmt.Sprintf("%s/zeros=%d", tc.name, tail), func(t *testing.T) {
				dir := t.TempDir()
				j, stop := running(t, dir, Options{})
				j.Append("a", 1, "", []byte("one"), nil)
				j.Append("b", 1, "", []byte("two"), nil)
				wait(t, j, j.Append("c", 1, "", []byte("three"), nil))
				stop()
				path := segment(t, dir)
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				valid, _, _ := scan(b)
				if !allZero(b[valid:]) || valid != 3*recordSize("a", "", []byte("one"), nil)+2 {
					t.Fatalf("segment: %d bytes of records, then %d bytes not all zero", valid, len(b)-valid)
				}
				b = append(tc.damage(b[:valid]), make([]byte, tail)...)
				if err := os.WriteFile(path, b, 0o600); err != nil {
					t.Fatal(err)
				}
				got := replayAll(t, dir)
				if len(got) != tc.keep {
					t.Fatalf("kept %d records (%v), want %d", len(got), got, tc.keep)
				}
				// The journal goes on after the truncated tail: new records replay after the
				// kept ones.
				j2, stop2 := running(t, dir, Options{})
				wait(t, j2, j2.Append("d", 1, "", []byte("four"), nil))
				stop2()
				got = replayAll(t, dir)
				if len(got) != tc.keep+1 || got[len(got)-1].Task != "d" {
					t.Fatalf("after a new append: %v", got)
				}
			})
		}
	}
}

// The segment is preallocated ahead of its records, a chunk at a time, so that an append's
// fdatasync changes no metadata: records cross chunk boundaries, a reopened segment goes on at
// the end of its records (not of the file), and the zeros after them are not a torn tail.
func TestPreallocatedSegment(t *testing.T) {
	dir := t.TempDir()
	payload := bytes.Repeat([]byte("p"), 1000)
	var want []string
	for run := range 3 {
		j, stop := running(t, dir, Options{CompactMinBytes: 1 << 40})
		var last uint64
		for i := range 700 { // about 0.7 MiB per run: the second run crosses a chunk
			id := fmt.Sprintf("r%d-%03d", run, i)
			last = j.Append(id, 2, "token", payload, nil)
			want = append(want, id)
			if i%100 == 99 {
				wait(t, j, last)
			}
		}
		wait(t, j, last)
		size := j.Stats().SegmentSize
		stop()
		path := segment(t, dir)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size()%preallocBytes != 0 || fi.Size() <= size {
			t.Fatalf("run %d: file of %d bytes for %d bytes of records: not preallocated", run, fi.Size(), size)
		}
		if filepath.Base(path) != segName(0) {
			t.Fatalf("run %d: the segment was rewritten (%s): its zeros were taken for a torn tail", run, path)
		}
	}
	got := replayAll(t, dir)
	if len(got) != len(want) {
		t.Fatalf("replayed %d records, want %d", len(got), len(want))
	}
	for i, r := range got {
		if r.Task != want[i] || r.Data != string(payload) {
			t.Fatalf("record %d: %s, want %s", i, r.Task, want[i])
		}
	}
}

func TestCompaction(t *testing.T) {
	dir := t.TempDir()
	j, stop := running(t, dir, Options{CompactMinBytes: 4096})
	payload := bytes.Repeat([]byte("x"), 200)
	var last uint64
	for i := range 100 {
		id := fmt.Sprintf("t%03d", i)
		last = j.Append(id, 2, "token", payload, nil)
		if i%10 != 0 { // keep t000, t010, ...
			j.Retire(id)
		}
		if i%20 == 19 {
			wait(t, j, last)
		}
	}
	wait(t, j, j.Append("t000", 2, "token", []byte("after"), nil))
	waitCompacted(t, j) // the owner starts a compaction
	wait(t, j, j.Append("t010", 2, "token", []byte("after"), nil))
	// Records written while a compaction runs go to the new segment, retired or not; once
	// the compactions settle (the end of one evaluates the need again) the bound holds.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		st := j.Stats()
		if st.SegmentSize <= 2*st.LiveBytes+4096+int64(len(payload))*25 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("segment not bounded by the live bytes: %+v", st)
		}
	}
	stop()
	got := replayAll(t, dir)
	var ids []string
	for _, r := range got {
		ids = append(ids, r.Task+":"+r.Data[:min(len(r.Data), 5)])
	}
	want := "[t000:xxxxx t010:xxxxx t020:xxxxx t030:xxxxx t040:xxxxx t050:xxxxx t060:xxxxx t070:xxxxx t080:xxxxx t090:xxxxx t000:after t010:after]"
	if fmt.Sprint(ids) != want {
		t.Fatalf("after compaction:\n got %v\nwant %s", ids, want)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 1 {
		t.Fatalf("leftover files: %v", m)
	}
}

// A compaction cut between writing the new segment and removing the old one leaves both (or a
// .tmp); Open keeps the newest complete one.
func TestInterruptedCompactionLeftovers(t *testing.T) {
	dir := t.TempDir()
	j, stop := running(t, dir, Options{})
	wait(t, j, j.Append("a", 1, "", []byte("one"), nil))
	stop()
	old := segment(t, dir)
	b, _ := os.ReadFile(old)
	// The "new" segment has a.
	if err := os.WriteFile(filepath.Join(dir, segName(5)), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, segName(6)+".tmp"), []byte("half-written"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, append(b, appendRecord(nil, 1, "stale", "", nil, nil)...), 0o600); err != nil {
		t.Fatal(err)
	}
	got := replayAll(t, dir)
	if fmt.Sprint(got) != fmt.Sprint([]rec{{"a", 1, "", "one", ""}}) {
		t.Fatalf("replay: %v", got)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 1 {
		t.Fatalf("leftover files: %v", m)
	}
}

// Many goroutines append concurrently; each one's records replay in its own order, and every
// acknowledged record survives, in every Sync mode.
func TestConcurrentAppends(t *testing.T) {
	for _, mode := range []Sync{SyncAdmission, SyncAlways, SyncNone} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			j, stop := running(t, dir, Options{Sync: mode})
			const writers, per = 8, 200
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					id := fmt.Sprintf("w%d", w)
					for i := range per {
						seq := j.Append(id, 2, "token", fmt.Appendf(nil, "%d", i), nil)
						if i%50 == 49 {
							if err := j.Wait(context.Background(), seq); err != nil {
								t.Error(err)
								return
							}
						}
					}
				}()
			}
			// A reader follows the watermarks meanwhile: none goes back, and nothing is
			// durable before it is written.
			stopRead := make(chan struct{})
			readDone := make(chan struct{})
			go func() {
				defer close(readDone)
				var prevV, prevD uint64
				for {
					d, _ := j.Durable()
					v, ch := j.Visible()
					w, _ := j.Written()
					if v < prevV || d < prevD {
						t.Errorf("watermark went back: visible %d after %d, durable %d after %d", v, prevV, d, prevD)
						return
					}
					if d > w {
						t.Errorf("durable %d beyond written %d", d, w)
						return
					}
					prevV, prevD = v, d
					select {
					case <-ch:
					case <-stopRead:
						return
					}
				}
			}()
			wg.Wait()
			close(stopRead)
			<-readDone
			stop()
			next := map[string]int{}
			for _, r := range replayAll(t, dir) {
				if r.Data != fmt.Sprint(next[r.Task]) {
					t.Fatalf("%s: record %q out of order (want %d)", r.Task, r.Data, next[r.Task])
				}
				next[r.Task]++
			}
			for w := range writers {
				if n := next[fmt.Sprintf("w%d", w)]; n != per {
					t.Fatalf("w%d: %d records replayed, want %d", w, n, per)
				}
			}
		})
	}
}

// heldSync replaces a journal's fdatasync with one that waits for release: each call reports
// itself on started, then waits.
type heldSync struct {
	started chan struct{}
	release chan struct{}
}

func holdSync(j *Journal) *heldSync {
	h := &heldSync{started: make(chan struct{}, 16), release: make(chan struct{}, 16)}
	j.datasync = func(f *os.File) error {
		h.started <- struct{}{}
		<-h.release
		return datasync(f)
	}
	return h
}

func recv(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s never happened", what)
	}
}

// waitWritten returns once the journal has handed seq to the kernel.
func waitWritten(t *testing.T, j *Journal, seq uint64) {
	t.Helper()
	for {
		w, ch := j.Written()
		if w >= seq {
			return
		}
		recv(t, ch, fmt.Sprintf("the write of record %d", seq))
	}
}

// What each Sync mode lets a reader see and an acknowledgement wait for, while an fdatasync
// has not returned: with admission and none a reader sees a written record at once; with always
// only once it is on disk; Wait waits for the disk except with none.
func TestSyncModes(t *testing.T) {
	tests := []struct {
		mode                     Sync
		visibleBeforeSync, acked bool
	}{
		{SyncAdmission, true, false},
		{SyncAlways, false, false},
		{SyncNone, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			j, err := Open(Options{Dir: dir, Sync: tt.mode})
			if err != nil {
				t.Fatal(err)
			}
			h := holdSync(j)
			tm := fakeTimers(j)
			start(t, j)
			seq := j.Append("a", 1, "", []byte("admit"), nil)
			waitWritten(t, j, seq)
			if tt.mode != SyncAlways {
				tm.fire(t) // nobody waits: the record is synced once it is MaxUnsynced old
			}
			recv(t, h.started, "the fdatasync")
			if v, _ := j.Visible(); (v >= seq) != tt.visibleBeforeSync {
				t.Fatalf("visible %d before the fdatasync returned (record %d): want visible=%v", v, seq, tt.visibleBeforeSync)
			}
			if d, _ := j.Durable(); d >= seq {
				t.Fatalf("durable %d before the fdatasync returned", d)
			}
			// An expired context shows whether Wait would have to wait: it checks first.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := j.Wait(ctx, seq); (err == nil) != tt.acked {
				t.Fatalf("Wait before the fdatasync returned: %v, want acked=%v", err, tt.acked)
			}
			// Written is what a crash of the process cannot take back: a journal opened on
			// the same directory now (as after kill -9) replays it.
			if got := replayAll(t, dir); len(got) != 1 || got[0].Data != "admit" {
				t.Fatalf("after a process crash: %+v", got)
			}
			h.release <- struct{}{}
			wait(t, j, seq)
			if v, _ := j.Visible(); v < seq {
				t.Fatalf("visible %d after the fdatasync, want %d", v, seq)
			}
		})
	}
}

// Group commit without a timer (sync=always, where readers wait for the disk): records that
// arrive while an fdatasync runs are written at once and made durable by exactly one more
// fdatasync, which starts as soon as the first ends.
func TestGroupCommitWithoutTimer(t *testing.T) {
	j, err := Open(Options{Dir: t.TempDir(), Sync: SyncAlways})
	if err != nil {
		t.Fatal(err)
	}
	h := holdSync(j)
	start(t, j)
	first := j.Append("a", 1, "", nil, nil)
	recv(t, h.started, "the first fdatasync")
	var last uint64
	for i := range 10 {
		last = j.Append("b", 2, "token", fmt.Appendf(nil, "%d", i), nil)
	}
	waitWritten(t, j, last) // written while the first fdatasync is still running
	if d, _ := j.Durable(); d != first-1 {
		t.Fatalf("durable %d while the first fdatasync runs", d)
	}
	h.release <- struct{}{}
	recv(t, h.started, "the second fdatasync")
	if d, _ := j.Durable(); d != first {
		t.Fatalf("after the first fdatasync: durable %d, want %d", d, first)
	}
	h.release <- struct{}{}
	wait(t, j, last)
	if s := j.Stats(); s.Syncs != 2 {
		t.Fatalf("%d fdatasyncs for two batches, want 2", s.Syncs)
	}
}

// A Wait with no fdatasync (with sync=none, no write) running leads: it writes, and syncs when
// the mode waits for the disk, on its own goroutine, so an admission at concurrency 1 pays no
// hand-off. Shown with no Run at all: only the waiter can have written the record.
func TestWaitLeads(t *testing.T) {
	tests := []struct {
		mode  Sync
		syncs uint64
	}{
		{SyncAdmission, 1},
		{SyncAlways, 1},
		{SyncNone, 0},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			j, err := Open(Options{Dir: dir, Sync: tt.mode})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = j.f.Close() }()
			seq := j.Append("a", 1, "", []byte("admit"), nil)
			wait(t, j, seq)
			if d, _ := j.Durable(); (d >= seq) != (tt.syncs > 0) {
				t.Fatalf("durable %d after Wait(%d)", d, seq)
			}
			if s := j.Stats(); s.Syncs != tt.syncs || s.Batches != 1 {
				t.Fatalf("stats %+v, want one write and %d fdatasyncs", s, tt.syncs)
			}
			if got := replayAll(t, dir); len(got) != 1 || got[0].Data != "admit" {
				t.Fatalf("replayed %+v", got)
			}
		})
	}
}

func TestWaitAfterWriteFailure(t *testing.T) {
	dir := t.TempDir()
	j, _ := running(t, dir, Options{})
	wait(t, j, j.Append("a", 1, "", nil, nil))
	// Make the next write fail: the owner's file is closed under it.
	_ = j.f.Close()
	seq := j.Append("b", 1, "", nil, nil)
	err := j.Wait(context.Background(), seq)
	if err == nil {
		t.Fatal("Wait succeeded on a failed journal")
	}
	if d, _ := j.Visible(); d < seq {
		t.Fatalf("a failed journal holds streams back: visible %d < %d", d, seq)
	}
	if err := j.Wait(context.Background(), j.Append("c", 1, "", nil, nil)); err == nil {
		t.Fatal("the failure is not sticky")
	}
}

func TestWaitHonoursContext(t *testing.T) {
	j, err := Open(Options{Dir: t.TempDir()}) // not running: nothing becomes durable
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = j.f.Close() }()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := j.Wait(ctx, j.Append("a", 1, "", nil, nil)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait: %v", err)
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	tests := []rec{
		{"", 0, "", "", ""},
		{"8c1f-task", 1, "", `{"spec":{}}`, ""},
		{"id", 2, "token", `{"t":"hi","i":0}`, "verbose"},
		{string(bytes.Repeat([]byte("k"), 300)), 4, "end", string(bytes.Repeat([]byte("d"), 70000)), "x"},
		{"5f0c2d1e-9b3a-4c7d-8e6f-0123456789ab", 2, "token", `{"t":"hi","i":0}`, ""}, // packed
		{"5f0c2d1e-9b3a-4c7d-8e6f-0123456789ab", KindRetire, "", "", ""},             // packed
		{"5F0C2D1E-9B3A-4C7D-8E6F-0123456789AB", 2, "token", "x", ""},                // not canonical: text
		{"5f0c2d1e-9b3a-4c7d-8e6f-0123456789ag", 2, "token", "x", ""},                // not hex: text
		{"5f0c2d1e9b3a-4c7d-8e6f-0123456789abc", 2, "token", "x", ""},                // hyphen misplaced: text
	}
	for _, tc := range tests {
		b := appendRecord([]byte("prefix"), tc.Kind, tc.Task, tc.Name, []byte(tc.Data), []byte(tc.Extra))[6:]
		if len(b) != recordSize(tc.Task, tc.Name, []byte(tc.Data), []byte(tc.Extra)) {
			t.Fatalf("recordSize %d, encoded %d", recordSize(tc.Task, tc.Name, []byte(tc.Data), []byte(tc.Extra)), len(b))
		}
		r, n, err := Decode(b)
		if err != nil || n != len(b) {
			t.Fatalf("decode: %v, n %d of %d", err, n, len(b))
		}
		if got := (rec{r.Task, r.Kind, r.Name, string(r.Data), string(r.Extra)}); got != tc {
			t.Fatalf("round trip: %+v", got)
		}
		for cut := range len(b) {
			if _, _, err := Decode(b[:cut]); !errors.Is(err, ErrTorn) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("cut at %d decoded: %v", cut, err)
			}
		}
	}
}

// A task id that is a UUID is written as its 16 bytes: a token's record is 20 bytes shorter.
// Records written before, with the id as text, read as the same records, and a journal that
// holds both kinds replays, retires and compacts them as one task's.
func TestPackedTaskIDs(t *testing.T) {
	id := testUUID(7)
	if d := recordSize("not-a-uuid-but-as-long-as-one-000000", "token", []byte("x"), nil) - recordSize(id, "token", []byte("x"), nil); d != 20 {
		t.Fatalf("a UUID's record is %d bytes shorter, want 20", d)
	}
	dir := t.TempDir()
	// A segment as an earlier build wrote it: the id as text.
	var seg []byte
	seg = legacyRecord(seg, 1, id, "", []byte("admit"), nil)
	seg = legacyRecord(seg, 2, id, "token", []byte("t0"), nil)
	seg = legacyRecord(seg, 1, testUUID(8), "", []byte("admit"), nil)
	if err := os.WriteFile(filepath.Join(dir, segName(1)), seg, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := replayAll(t, dir); fmt.Sprint(got) != fmt.Sprint([]rec{{id, 1, "", "admit", ""}, {id, 2, "token", "t0", ""}, {testUUID(8), 1, "", "admit", ""}}) {
		t.Fatalf("replay of the earlier segment: %v", got)
	}
	j, stop := running(t, dir, Options{})
	wait(t, j, j.Append(id, 2, "token", []byte("t1"), nil))
	wait(t, j, j.Append(testUUID(8), 2, "token", []byte("u1"), nil))
	stop()
	want := []rec{{id, 1, "", "admit", ""}, {id, 2, "token", "t0", ""}, {testUUID(8), 1, "", "admit", ""},
		{id, 2, "token", "t1", ""}, {testUUID(8), 2, "token", "u1", ""}}
	if got := replayAll(t, dir); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("replay of both kinds: %v", got)
	}
	// Retiring the task retires its records of both kinds, on reopening and in a compaction.
	j, stop = running(t, dir, Options{CompactMinBytes: 1})
	j.Retire(id)
	wait(t, j, j.Append(testUUID(8), 2, "token", []byte("u2"), nil))
	stop()
	want = []rec{{testUUID(8), 1, "", "admit", ""}, {testUUID(8), 2, "token", "u1", ""}, {testUUID(8), 2, "token", "u2", ""}}
	if got := replayAll(t, dir); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("replay after the retirement: %v", got)
	}
	b, err := os.ReadFile(segment(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	// The compaction dropped the retired task's records; it copies the others as they are,
	// the earlier build's one among them.
	if bytes.Contains(b, []byte(id)) || bytes.Count(b, []byte(testUUID(8))) != 1 {
		t.Fatalf("after the compaction, the retired task's id as text %d times, the other's %d (want 0, 1)",
			bytes.Count(b, []byte(id)), bytes.Count(b, []byte(testUUID(8))))
	}
}

// testUUID is the i-th of a family of UUIDs in their canonical text form.
func testUUID(i int) string { return fmt.Sprintf("5f0c2d1e-9b3a-4c7d-8e6f-%012x", i) }

// legacyRecord frames a record with its task id as text, as every build before packed ids did.
func legacyRecord(b []byte, kind uint8, task, name string, data, extra []byte) []byte {
	var p []byte
	p = append(p, kind)
	p = binary.AppendUvarint(p, uint64(len(task)))
	p = append(p, task...)
	p = binary.AppendUvarint(p, uint64(len(name)))
	p = append(p, name...)
	p = binary.AppendUvarint(p, uint64(len(data)))
	p = append(p, data...)
	p = append(p, extra...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(p, castagnoli))
	return append(b, p...)
}

func FuzzDecode(f *testing.F) {
	f.Add(appendRecord(nil, 2, "task", "token", []byte("data"), []byte("extra")))
	f.Add(appendRecord(nil, 2, testUUID(3), "token", []byte("data"), nil))
	f.Add(legacyRecord(nil, 2, testUUID(3), "token", []byte("data"), nil))
	f.Add(append(appendRecord(nil, 1, "a", "", nil, nil), 0xff, 0xff))
	f.Add([]byte{4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		// Scanning never panics, and what it accepts re-encodes to the same bytes.
		off := 0
		for off < len(b) {
			r, n, err := Decode(b[off:])
			// peek frames as decode does: where decode reads a record, or finds it torn, peek
			// reads its kind and size, or finds it torn.
			pr, pn, perr := peek(b[off:])
			raw, _, _ := decode(b[off:])
			switch {
			case err == nil && (perr != nil || pn != n || pr.kind != raw.kind):
				t.Fatalf("peek at %d: kind %d, %d bytes, %v; decode: kind %d, %d bytes", off, pr.kind, pn, perr, raw.kind, n)
			case errors.Is(err, ErrTorn) && !errors.Is(perr, ErrTorn):
				t.Fatalf("peek at %d: %v, decode: %v", off, perr, err)
			}
			if err != nil {
				if !errors.Is(err, ErrTorn) && !errors.Is(err, ErrCorrupt) {
					t.Fatalf("unexpected error %v", err)
				}
				break
			}
			if n <= 0 || n > len(b)-off {
				t.Fatalf("size %d at %d of %d", n, off, len(b))
			}
			again := appendRecord(nil, r.Kind, r.Task, r.Name, r.Data, r.Extra)
			if !bytes.Equal(again, b[off:off+n]) {
				// Only a record of an earlier build, a UUID as text, is written anew packed.
				r2, n2, err := Decode(again)
				if raw.packed || !isUUID(r.Task) || err != nil || n2 != len(again) ||
					fmt.Sprint(r2) != fmt.Sprint(r) {
					t.Fatalf("re-encoding differs:\n%x\n%x", again, b[off:off+n])
				}
			}
			off += n
		}
		valid, _, _ := scan(b)
		if valid != off {
			t.Fatalf("scan stopped at %d, decode at %d", valid, off)
		}
	})
}

// A task id used again after its retirement is a new task: the tombstone retires only what came
// before it, on reopening and in a compaction.
func TestIDReusedAfterRetire(t *testing.T) {
	for _, compact := range []bool{false, true} {
		t.Run(fmt.Sprintf("compact=%v", compact), func(t *testing.T) {
			dir := t.TempDir()
			j, stop := running(t, dir, Options{CompactMinBytes: 1})
			j.Append("x", 1, "", bytes.Repeat([]byte("first life "), 20), nil)
			j.Retire("x")
			wait(t, j, j.Append("x", 1, "", []byte("second life"), nil))
			want := []rec{{"x", 1, "", "second life", ""}}
			if compact {
				// The owner compacts (the segment is mostly the first life); the next batch
				// goes to the new segment.
				waitCompacted(t, j)
				wait(t, j, j.Append("y", 1, "", nil, nil))
				want = append(want, rec{"y", 1, "", "", ""})
			}
			stop()
			got := replayAll(t, dir)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("replay: %v", got)
			}
		})
	}
}

// fakeTimer is the MaxUnsynced timer, fired by the test.
type fakeTimer struct{ c chan time.Time }

func fakeTimers(j *Journal) *fakeTimer {
	ft := &fakeTimer{c: make(chan time.Time)}
	j.newTimer = func() timer { return ft }
	return ft
}

func (f *fakeTimer) C() <-chan time.Time { return f.c }
func (f *fakeTimer) Reset(time.Duration) {}
func (f *fakeTimer) Stop()               {}

// fire delivers one tick to Run.
func (f *fakeTimer) fire(t *testing.T) {
	t.Helper()
	select {
	case f.c <- time.Time{}:
	case <-time.After(10 * time.Second):
		t.Fatal("Run never took the tick")
	}
}

func waitDurable(t *testing.T, j *Journal, seq uint64) {
	t.Helper()
	for {
		d, ch := j.Durable()
		if d >= seq {
			return
		}
		recv(t, ch, fmt.Sprintf("the fdatasync of record %d", seq))
	}
}

// With sync=admission and sync=none, frames nobody waits on are not synced one by one: they
// wait for an admission's fdatasync, which covers everything written before it (one
// fdatasync), or for the MaxUnsynced bound (a tick) or the MaxUnsyncedBytes bound. sync=always
// syncs each frame a reader waits for.
func TestLazySync(t *testing.T) {
	const frames = 20
	tests := []struct {
		name  string
		mode  Sync
		bytes bool // MaxUnsyncedBytes: the frames' size, reached by the last one
		tick  bool // fire the MaxUnsynced timer after the frames
		admit bool // then append an admission and Wait for it
		// fdatasyncs after the frames were written (and the tick), and after the admission
		syncsFrames, syncsAdmit uint64
		lazy                    uint64 // of them, asked by no waiter
	}{
		{"admission frames wait for the next admission", SyncAdmission, false, false, true, 0, 1, 0},
		{"admission frames synced at the time bound", SyncAdmission, false, true, false, 1, 1, 1},
		{"none frames synced at the time bound", SyncNone, false, true, false, 1, 1, 1},
		{"admission frames synced at the byte bound", SyncAdmission, true, false, false, 1, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := bytes.Repeat([]byte{'x'}, 40)
			var bound int64
			if tt.bytes {
				bound = frames * int64(recordSize("b", "token", data, nil))
			}
			j, err := Open(Options{Dir: t.TempDir(), Sync: tt.mode, MaxUnsyncedBytes: bound})
			if err != nil {
				t.Fatal(err)
			}
			tm := fakeTimers(j)
			start(t, j)
			var last uint64
			for range frames {
				// One frame at a time, each written before the next: at low rates the eager
				// policy gave each its own fdatasync.
				last = j.Append("b", 2, "token", data, nil)
				waitWritten(t, j, last)
			}
			if tt.tick {
				tm.fire(t)
			}
			if tt.syncsFrames > 0 {
				waitDurable(t, j, last)
			}
			if s := j.Stats(); s.Syncs != tt.syncsFrames {
				t.Fatalf("after %d frames: %d fdatasyncs, want %d", frames, s.Syncs, tt.syncsFrames)
			}
			if tt.admit {
				seq := j.Append("a", 1, "", []byte("admit"), nil)
				wait(t, j, seq)
				if d, _ := j.Durable(); d < seq {
					t.Fatalf("durable %d after the admission's Wait(%d)", d, seq)
				}
			}
			if s := j.Stats(); s.Syncs != tt.syncsAdmit || s.LazySyncs != tt.lazy {
				t.Fatalf("stats %+v: want %d fdatasyncs, %d lazy", s, tt.syncsAdmit, tt.lazy)
			}
		})
	}
}

// An admission whose record is written while a lazy fdatasync runs waits for it and then leads
// one more (1 wait + 1 sync), and that one covers the frames written meanwhile.
func TestAdmissionBehindLazySync(t *testing.T) {
	j, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	h := holdSync(j)
	tm := fakeTimers(j)
	start(t, j)
	t.Cleanup(func() { close(h.release) }) // before the stop: a failed test lets every sync go
	frame := j.Append("b", 2, "token", []byte("t0"), nil)
	waitWritten(t, j, frame)
	tm.fire(t)
	recv(t, h.started, "the lazy fdatasync")
	more := j.Append("b", 2, "token", []byte("t1"), nil)
	seq := j.Append("a", 1, "", []byte("admit"), nil)
	done := make(chan error, 1)
	go func() { done <- j.Wait(context.Background(), seq) }()
	h.release <- struct{}{}
	recv(t, h.started, "the admission's fdatasync")
	h.release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d, _ := j.Durable(); d < more || d < seq {
		t.Fatalf("durable %d, want %d", d, seq)
	}
	if s := j.Stats(); s.Syncs != 2 || s.LazySyncs != 1 {
		t.Fatalf("stats %+v: want 2 fdatasyncs, 1 lazy", s)
	}
}

// Compaction reads every record of a segment twice (scan, rewrite): doing so allocates nothing
// per record, only per tombstone.
func TestCompactionDecodesWithoutAllocating(t *testing.T) {
	var data []byte
	for i := range 1000 {
		id := testUUID(i) // packed: the task id as its 16 bytes
		data = appendRecord(data, 1, id, "", []byte(`{"spec":{}}`), nil)
		data = appendRecord(data, 2, id, "token", []byte(`{"t":"x"}`), nil)
	}
	data = appendRecord(data, KindRetire, testUUID(0), "", nil, nil)
	var live taskIndex[struct{}]
	live.putID(testUUID(1), struct{}{})
	allocs := testing.AllocsPerRun(20, func() {
		valid, retired, err := scan(data)
		if valid != len(data) || err != nil || retired.len() != 1 {
			t.Fatalf("scan: %d of %d, %v, %v", valid, len(data), retired, err)
		}
		var kept, dead int
		for off := 0; off < len(data); {
			r, n, err := decode(data[off:])
			if err != nil {
				t.Fatal(err)
			}
			k := keyOf(&r)
			if _, ok := live.get(k); ok {
				kept++
			}
			if last, ok := retired.get(k); ok && off < last {
				dead++
			}
			if keeps(&r, off, &retired, &live) {
				kept += 10
			}
			off += n
		}
		if kept != 22 || dead != 2 {
			t.Fatalf("%d records of task 1 (kept: +10 each), %d of the retired task 0", kept, dead)
		}
	})
	if allocs > 3 { // the tombstones' map and its one key
		t.Errorf("%.0f allocations to read 2,001 records, want at most 3", allocs)
	}
}

// TestKeepsByTaskKey: a rewrite keeps the records it kept when tasks were looked up by their
// ids as text, for segments mixing every form of id: a UUID packed and as text (an earlier
// build's), its upper-case text (not canonical: another task), and ids that are not UUIDs; with
// tombstones in either form, and tasks live or not.
func TestKeepsByTaskKey(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	ids := []string{testUUID(1), testUUID(2), strings.ToUpper(testUUID(1)), "task-a", "", "5f0c2d1e-9b3a-4c7d-8e6f-00000000000g"}
	for round := range 300 {
		var data []byte
		for range 1 + rng.IntN(40) {
			id, kind := ids[rng.IntN(len(ids))], uint8(2)
			if rng.IntN(5) == 0 {
				kind = KindRetire
			}
			if rng.IntN(2) == 0 {
				data = appendRecord(data, kind, id, "token", []byte("x"), nil) // packed if a UUID
			} else {
				data = legacyRecord(data, kind, id, "token", []byte("x"), nil)
			}
		}
		liveIDs := map[string]struct{}{}
		var live taskIndex[struct{}]
		for _, id := range ids {
			if rng.IntN(2) == 0 {
				liveIDs[id] = struct{}{}
				live.putID(id, struct{}{})
			}
		}
		// The reference: tombstones' offsets and lookups by the id's text.
		lastRetire := map[string]int{}
		var id [36]byte
		for off := 0; off < len(data); {
			r, n, err := decode(data[off:])
			if err != nil {
				t.Fatal(err)
			}
			if r.kind == KindRetire {
				lastRetire[string(r.taskID(&id))] = off
			}
			off += n
		}
		_, retired, _ := scan(data)
		for _, withLive := range []bool{false, true} {
			for off := 0; off < len(data); {
				r, n, _ := decode(data[off:])
				text := string(r.taskID(&id))
				last, retiredText := lastRetire[text]
				_, isLive := liveIDs[text]
				want := r.kind != KindRetire && (!retiredText || off >= last) && (!withLive || isLive)
				lp := &live
				if !withLive {
					lp = nil
				}
				if got := keeps(&r, off, &retired, lp); got != want {
					t.Fatalf("round %d: record at %d (task %q, kind %#x, packed %v, live set %v): keeps %v, want %v",
						round, off, text, r.kind, r.packed, withLive, got, want)
				}
				off += n
			}
		}
	}
}

// A watermark closes the channel a load returned at the next advance, and makes no new channel
// for an advance that nobody loaded it for.
func TestWatermarkChannels(t *testing.T) {
	var w watermark
	w.init()
	if allocs := testing.AllocsPerRun(100, func() { w.advance(w.value() + 1) }); allocs != 0 {
		t.Errorf("an advance nobody waits for: %.0f allocations, want 0", allocs)
	}
	v, ch := w.load()
	w.advance(v) // not an advance
	select {
	case <-ch:
		t.Fatal("closed without an advance")
	default:
	}
	w.advance(v + 1)
	select {
	case <-ch:
	default:
		t.Fatal("the loaded channel is still open after an advance")
	}
	v2, ch2 := w.load()
	if v2 != v+1 || ch2 == ch {
		t.Fatalf("after the advance: %d and the same channel: %v", v2, ch2 == ch)
	}
}

// Waiters that load and wait while others advance never miss an advance (a miss hangs the test:
// with one waiter nobody else's load rescues it).
func TestWatermarkNoLostWakeup(t *testing.T) {
	for _, waiters := range []int{1, 8} {
		t.Run(fmt.Sprintf("waiters=%d", waiters), func(t *testing.T) {
			var w watermark
			w.init()
			const target = 50000
			var wg sync.WaitGroup
			for range 2 {
				wg.Add(1)
				go func() { // advancers, racing each other
					defer wg.Done()
					for v := uint64(1); v <= target; v++ {
						w.advance(v)
					}
				}()
			}
			for i := range waiters {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for want := uint64(i + 1); ; want += 7 {
						for {
							v, ch := w.load()
							if v >= min(want, target) {
								break
							}
							<-ch
						}
						if want >= target {
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// TestWatermarkNotifyAt: a function waits for its value, is called once when an advance
// reaches it (not before), and an already reached value is refused; a failure's advance to the
// end calls every waiter.
func TestWatermarkNotifyAt(t *testing.T) {
	var w watermark
	w.init()
	w.advance(5)
	calls := map[uint64]int{}
	note := func(seq uint64) func() { return func() { calls[seq]++ } }
	if w.notifyAt(5, note(5)) {
		t.Fatal("notifyAt accepted a value already reached")
	}
	for _, seq := range []uint64{9, 7, 12, 7} {
		if !w.notifyAt(seq, note(seq)) {
			t.Fatalf("notifyAt(%d) refused", seq)
		}
	}
	w.advance(6)
	if len(calls) != 0 {
		t.Fatalf("called before their values: %v", calls)
	}
	w.advance(9)
	if calls[7] != 2 || calls[9] != 1 || calls[12] != 0 {
		t.Fatalf("after 9: %v, want 7 twice and 9 once", calls)
	}
	w.advance(math.MaxUint64) // a failure shows everything
	if calls[12] != 1 || calls[7] != 2 || calls[9] != 1 || len(w.waiters) != 0 {
		t.Fatalf("after the end: %v (%d waiting)", calls, len(w.waiters))
	}
}

// TestAfterVisible: a record the writer has not written yet is announced once written, for
// every sync mode's meaning of visible.
func TestAfterVisible(t *testing.T) {
	for _, mode := range []Sync{SyncAdmission, SyncAlways, SyncNone} {
		t.Run(mode.String(), func(t *testing.T) {
			j, err := Open(Options{Dir: t.TempDir(), Sync: mode})
			if err != nil {
				t.Fatal(err)
			}
			seq := j.Append("t1", 2, "token", []byte(`{"t":"a","i":0}`), nil)
			shown := make(chan struct{})
			if !j.AfterVisible(seq, func() { close(shown) }) {
				t.Fatal("the record is visible before the journal runs")
			}
			start(t, j) // the writer writes the pending batch
			<-shown
			if v, _ := j.Visible(); v < seq {
				t.Fatalf("called at visible %d, before %d", v, seq)
			}
			if j.AfterVisible(seq, func() { t.Error("called for a visible record") }) {
				t.Fatal("AfterVisible accepted a visible record")
			}
		})
	}
}

// TestAdvanceManyWaitersAllocatesNothing: a watermark that calls many waiters per advance (a
// write batch with many streams' frames) reuses its list of due functions (AllocsPerRun runs
// with one processor: the list is not shared with other goroutines, see callAll).
func TestAdvanceManyWaitersAllocatesNothing(t *testing.T) {
	var w watermark
	w.init()
	var called atomic.Int32
	fn := func() { called.Add(1) }
	var k uint64
	round := func() {
		for i := range uint64(100) {
			w.notifyAt(k*100+i+1, fn)
		}
		k++
		w.advance(k * 100)
	}
	round()
	if allocs := testing.AllocsPerRun(20, round); allocs != 0 {
		t.Errorf("%v allocations per advance with 100 waiters, want 0", allocs)
	}
	if called := called.Load(); called != 22*100 { // AllocsPerRun runs it once more, to warm up
		t.Errorf("%d calls, want %d", called, 22*100)
	}
}

// TestCallAll: every function is called once, by the caller or by the goroutines it shares a
// long list with, and callAll returns after the last.
func TestCallAll(t *testing.T) {
	for _, n := range []int{0, 1, inlineWaiters, inlineWaiters + 1, 100, 1000} {
		counts := make([]atomic.Int32, n)
		fns := make([]func(), n)
		for i := range fns {
			fns[i] = func() { counts[i].Add(1) }
		}
		callAll(fns)
		for i := range counts {
			if c := counts[i].Load(); c != 1 {
				t.Fatalf("n=%d: function %d called %d times", n, i, c)
			}
		}
	}
}

// compactionGate holds each fdatasync of a compaction's new segment until the test lets it go.
type compactionGate struct {
	calls chan chan struct{}
	free  chan struct{} // closed: let every later call go at once
	once  sync.Once
}

func holdCompaction(j *Journal) *compactionGate {
	g := &compactionGate{calls: make(chan chan struct{}), free: make(chan struct{})}
	j.datasync = func(f *os.File) error {
		if filepath.Ext(f.Name()) == ".tmp" {
			done := make(chan struct{})
			select {
			case g.calls <- done:
				<-done
			case <-g.free:
			}
		}
		return datasync(f)
	}
	return g
}

// next waits for the compaction's next fdatasync of its new segment and returns the function
// that lets it go.
func (g *compactionGate) next(t *testing.T, what string) func() {
	t.Helper()
	select {
	case done := <-g.calls:
		return func() { close(done) }
	case <-time.After(10 * time.Second):
		t.Fatalf("no fdatasync of the new segment: %s", what)
		return nil
	}
}

// release lets every later fdatasync go.
func (g *compactionGate) release() { g.once.Do(func() { close(g.free) }) }

// runningHeld runs a journal that compacts from 4 KiB, its compactions held by a gate (released
// when the test ends).
func runningHeld(t *testing.T, onCompaction func(Compaction)) (string, *Journal, *compactionGate, func()) {
	t.Helper()
	dir := t.TempDir()
	j, err := Open(Options{Dir: dir, CompactMinBytes: 4096, OnCompaction: onCompaction})
	if err != nil {
		t.Fatal(err)
	}
	g := holdCompaction(j)
	stop := start(t, j)
	t.Cleanup(g.release) // registered after start's stop, so it runs before it: a held compaction goes on
	return dir, j, g, stop
}

// A compaction holds the writers and the syncers off only to switch segments: records appended
// while it rewrites, or while it copies what was written meanwhile, are written and made
// durable at once (Wait returns), and they are in the new segment, with the tombstones written
// meanwhile, in their order.
func TestCompactionLetsWritersGoOn(t *testing.T) {
	dir, j, g, stop := runningHeld(t, nil)
	payload := bytes.Repeat([]byte("x"), 200)
	var want []string
	for i := range 60 {
		id := fmt.Sprintf("t%03d", i)
		j.Append(id, 2, "token", payload, nil)
		if i%10 != 0 {
			j.Retire(id)
		} else {
			want = append(want, id+":x")
		}
	}
	wait(t, j, j.Append("t000", 2, "token", []byte("cut"), nil))
	want = append(want, "t000:c")
	rewritten := g.next(t, "after the rewrite")

	// The rewrite is held: writers and acknowledgements go on. More than catchUpBytes is
	// written, so that a round of copying runs before the switch.
	big := bytes.Repeat([]byte("y"), 64<<10)
	for i := range 6 {
		id := fmt.Sprintf("d%d", i)
		wait(t, j, j.Append(id, 2, "token", big, nil))
		want = append(want, id+":y")
	}
	j.Retire("t010") // retired after the cut: its tombstone follows it into the new segment
	want = slices.DeleteFunc(want, func(r string) bool { return r == "t010:x" })
	wait(t, j, j.Append("t020", 2, "token", []byte("during"), nil))
	want = append(want, "t020:d")
	rewritten()

	// The copying round is held: what is written now is copied once the writers are held.
	copied := g.next(t, "after a round of copying")
	wait(t, j, j.Append("t040", 2, "token", []byte("late"), nil))
	want = append(want, "t040:l")
	if j.Stats().Compactions != 0 {
		t.Fatal("compacted while held")
	}
	copied()
	g.next(t, "the switch")()
	g.release()
	waitCompacted(t, j)
	wait(t, j, j.Append("t030", 2, "token", []byte("after"), nil))
	want = append(want, "t030:a")
	stop()
	var got []string
	for _, r := range replayAll(t, dir) {
		got = append(got, r.Task+":"+r.Data[:1])
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("replay after compaction:\n got %v\nwant %v", got, want)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 1 {
		t.Fatalf("leftover files: %v", m)
	}
}

// Closing the journal while a compaction rewrites gives the compaction up: the active segment
// keeps every record and no new segment is left behind.
func TestCloseDuringCompaction(t *testing.T) {
	var reported atomic.Bool
	dir, j, g, stop := runningHeld(t, func(Compaction) { reported.Store(true) })
	payload := bytes.Repeat([]byte("x"), 200)
	for i := range 40 {
		id := fmt.Sprintf("t%03d", i)
		j.Append(id, 2, "token", payload, nil)
		if i != 7 {
			j.Retire(id)
		}
	}
	wait(t, j, j.Append("t007", 2, "token", []byte("last"), nil))
	rewritten := g.next(t, "after the rewrite")
	stopped := make(chan struct{})
	go func() { defer close(stopped); stop() }()
	for !j.stopCompact.Load() { // Run is returning: let the compaction go on then
		time.Sleep(time.Millisecond)
	}
	g.release()
	rewritten()
	recv(t, stopped, "Run's return")
	if j.Stats().Compactions != 0 {
		t.Fatal("compacted after the close")
	}
	if reported.Load() {
		t.Error("a compaction given up was reported")
	}
	got := replayAll(t, dir)
	if len(got) != 2 || got[0].Task != "t007" || got[1].Data != "last" {
		t.Fatalf("replay: %v", got)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 1 {
		t.Fatalf("leftover files: %v", m)
	}
}

// eachRecord reads a segment a window at a time and sees the records a decode of the whole
// segment sees, whatever the window (records larger than it among them); a segment that ends
// inside a record is an error.
func TestEachRecordWindows(t *testing.T) {
	var seg []byte
	var want []string
	for i := range 200 {
		data := bytes.Repeat([]byte{byte('a' + i%26)}, (i*37)%300)
		if i%50 == 7 {
			data = bytes.Repeat([]byte("L"), 3000) // larger than the small windows below
		}
		kind := uint8(2)
		if i%9 == 0 {
			kind = KindRetire
		}
		off, task := len(seg), fmt.Sprintf("t%d", i%13)
		if i%3 == 0 {
			task = testUUID(i % 13) // packed
		}
		seg = appendRecord(seg, kind, task, "n", data, nil)
		want = append(want, fmt.Sprintf("%d:%d:%s:%d", off, kind, task, len(seg)-off))
	}
	for _, window := range []int{1, 8, 9, 100, 1024, compactWindow} {
		for _, dec := range []struct {
			name string
			f    func([]byte) (rawRecord, int, error)
		}{{"decode", decode}, {"peek", peek}} {
			t.Run(fmt.Sprint(window, dec.name), func(t *testing.T) {
				var got []string
				err := eachRecord(bytes.NewReader(seg), int64(len(seg)), make([]byte, 0, window), dec.f,
					func(off int64, r rawRecord, framed []byte) error {
						if !bytes.Equal(framed, seg[off:off+int64(len(framed))]) {
							t.Fatalf("record at %d: framed bytes differ", off)
						}
						var id [36]byte
						task := r.taskID(&id)
						if dec.name == "peek" { // the kind alone: the task from the framed record
							full, _, err := decode(framed)
							if err != nil || full.kind != r.kind || r.task != nil {
								t.Fatalf("record at %d: peeked kind %d and task %q, decoded %+v, %v", off, r.kind, r.task, full, err)
							}
							task = full.taskID(&id)
						}
						got = append(got, fmt.Sprintf("%d:%d:%s:%d", off, r.kind, task, len(framed)))
						return nil
					})
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("records:\n got %v\nwant %v", got, want)
				}
				if err := eachRecord(bytes.NewReader(seg), int64(len(seg)-3), make([]byte, 0, window), dec.f,
					func(int64, rawRecord, []byte) error { return nil }); !errors.Is(err, ErrTorn) {
					t.Fatalf("a segment cut inside its last record: %v, want ErrTorn", err)
				}
			})
		}
	}
}

// A compaction that fails (here its new segment's fdatasync) is tried again after a back-off of
// 1 s, doubling, not at every batch; one that succeeds then compacts.
func TestCompactionFailureBacksOff(t *testing.T) {
	dir := t.TempDir()
	var reps []Compaction
	var repMu sync.Mutex
	j, err := Open(Options{Dir: dir, CompactMinBytes: 4096, OnCompaction: func(c Compaction) {
		repMu.Lock()
		reps = append(reps, c)
		repMu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	clock := time.Unix(1_000_000, 0)
	j.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	var attempts atomic.Int32
	var failing atomic.Bool
	failing.Store(true)
	j.datasync = func(f *os.File) error {
		if filepath.Ext(f.Name()) == ".tmp" && failing.Load() {
			attempts.Add(1)
			return errors.New("no space left on device")
		}
		return datasync(f)
	}
	start(t, j)
	payload := bytes.Repeat([]byte("x"), 200)
	batch := func(i int) { // one batch of retired records: the segment needs compacting
		id := fmt.Sprintf("t%04d", i)
		j.Append(id, 2, "token", payload, nil)
		j.Retire(id)
		wait(t, j, j.Append("keep", 2, "token", nil, nil))
	}
	waitAttempts := func(n int32) {
		t.Helper()
		for i, deadline := 0, time.Now().Add(10*time.Second); attempts.Load() < n; i++ {
			if time.Now().After(deadline) {
				t.Fatalf("%d compaction attempts, want %d", attempts.Load(), n)
			}
			batch(1000 + i)
		}
	}
	for i := range 40 {
		batch(i)
	}
	waitAttempts(1)
	for i := range 50 { // batches within the back-off start nothing
		batch(100 + i)
	}
	if got := attempts.Load(); got != 1 {
		t.Fatalf("%d attempts within the back-off, want 1", got)
	}
	advance(time.Second)
	waitAttempts(2)
	advance(time.Second) // the back-off doubled: 2 s
	for i := range 50 {
		batch(200 + i)
	}
	if got := attempts.Load(); got != 2 {
		t.Fatalf("%d attempts within the doubled back-off, want 2", got)
	}
	failing.Store(false)
	advance(time.Minute) // past the back-off, whenever Run took the second failure
	for i, deadline := 0, time.Now().Add(10*time.Second); j.Stats().Compactions == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no compaction once the disk took it: %+v", j.Stats())
		}
		batch(2000 + i)
	}
	// Each compaction that ended was reported, failed or done, with its sizes.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		repMu.Lock()
		n := len(reps)
		repMu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d compactions reported, want 3", n)
		}
	}
	repMu.Lock()
	defer repMu.Unlock()
	for i, c := range reps[:2] {
		if c.Err == nil || c.BytesBefore == 0 || c.WritersHeld != 0 {
			t.Errorf("report %d: %+v, want a failure before the switch", i, c)
		}
	}
	if c := reps[2]; c.Err != nil || c.WritersHeld <= 0 || c.Took < c.WritersHeld || c.BytesAfter <= 0 ||
		c.BytesKept > c.BytesAfter || c.BytesKept >= c.BytesBefore {
		t.Errorf("report of the compaction that succeeded: %+v", c)
	}
}

// recordSize is the framed size of a record with these fields, from the format's definition
// (doc.go), to check appendRecord's against.
func recordSize(task, name string, data, extra []byte) int {
	t := uvarintLen(len(task)) + len(task)
	if isUUID(task) {
		t = 1 + 16 // the kind, then the id's bytes
	}
	return headerSize + 1 + t + uvarintLen(len(name)) + len(name) + uvarintLen(len(data)) + len(data) + len(extra)
}

// isUUID reports whether s is a UUID in its canonical text form: lower-case hex digits in
// groups of 8-4-4-4-12, so that formatUUID gives s back.
func isUUID(s string) bool {
	var b [16]byte
	_, ok := appendUUID(b[:0], s)
	return ok
}

// A compaction of a segment with a corrupt record fails and leaves the segment as it was: a
// token record's bad CRC is found by the second pass (the first reads kinds only), a
// tombstone's by the first, which decodes the tombstones it finds.
func TestCompactionOfACorruptSegmentFails(t *testing.T) {
	for _, kind := range []uint8{2, KindRetire} {
		t.Run(fmt.Sprint("kind ", kind), func(t *testing.T) {
			dir := t.TempDir()
			j, stop := running(t, dir, Options{Sync: SyncNone, CompactMinBytes: 1 << 50})
			defer stop()
			for i := range 50 {
				j.Append(testUUID(1), 2, "token", []byte(fmt.Sprint("t", i)), nil)
			}
			j.Retire(testUUID(1))
			j.Append(testUUID(2), 2, "token", []byte("tok"), nil)
			j.Retire(testUUID(2))
			wait(t, j, j.Append(testUUID(3), 2, "token", []byte("after"), nil))
			seg := segment(t, dir)
			b, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			// Flip the last byte of testUUID(2)'s record of the kind under test.
			var id [36]byte
			for off := 0; ; {
				r, n, err := decode(b[off:])
				if err != nil {
					t.Fatalf("no record of kind %d of task 2: %v", kind, err)
				}
				if r.kind == kind && string(r.taskID(&id)) == testUUID(2) {
					b[off+n-1] ^= 0x40
					break
				}
				off += n
			}
			if err := os.WriteFile(seg, b, 0o600); err != nil {
				t.Fatal(err)
			}
			rep := j.compactLive()
			if !errors.Is(rep.Err, ErrCorrupt) {
				t.Fatalf("compaction: %v, want ErrCorrupt", rep.Err)
			}
			if got := segment(t, dir); got != seg {
				t.Fatalf("the active segment is %s, was %s", got, seg)
			}
			if after, err := os.ReadFile(seg); err != nil || !bytes.Equal(after, b) {
				t.Fatalf("the segment changed (%v)", err)
			}
		})
	}
}
