package journal

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/internal/cpuclock"
)

// latencies records each op's duration and reports their median as p50-ns: on a shared
// machine the mean of an fsync-bound op follows the slowest fsyncs of other processes.
type latencies []time.Duration

func (l *latencies) report(b *testing.B) {
	if len(*l) == 0 {
		return
	}
	slices.Sort(*l)
	b.ReportMetric(float64((*l)[len(*l)/2].Nanoseconds()), "p50-ns")
}

// runBench opens a journal with opts in a temporary directory and runs its owner until the
// benchmark ends.
func runBench(b *testing.B, opts Options) *Journal {
	b.Helper()
	opts.Dir = b.TempDir()
	j, err := Open(opts)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = j.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	return j
}

// BenchmarkAppend is the cost a token pays on the streaming path: one record copied into the
// pending batch (the write and fdatasync run on the owner goroutine and the syncer).
func BenchmarkAppend(b *testing.B) {
	j := runBench(b, Options{Sync: SyncAdmission})
	data := []byte(`{"t":" tok","i":123}`)
	b.ReportAllocs()
	for b.Loop() {
		j.Append("00000000-0000-4000-8000-000000000000", 2, "token", data, nil)
	}
}

// BenchmarkAppendWait is one acknowledged record at a time: the latency an admission pays alone
// from its append to its 202 (one fdatasync; with sync=none, one write).
func BenchmarkAppendWait(b *testing.B) {
	for _, mode := range []Sync{SyncAdmission, SyncNone} {
		b.Run("sync="+mode.String(), func(b *testing.B) {
			j := runBench(b, Options{Sync: mode})
			data := make([]byte, 400) // about an admission record
			ctx := context.Background()
			lat := make(latencies, 0, b.N)
			b.ReportAllocs()
			for b.Loop() {
				t0 := time.Now()
				if err := j.Wait(ctx, j.Append("00000000-0000-4000-8000-000000000000", 1, "", data, nil)); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			lat.report(b)
		})
	}
}

// BenchmarkAppendVisible is the latency of a stream frame on one stream: append, then wait
// until the journal lets a reader see it (written; with sync=always, on disk).
func BenchmarkAppendVisible(b *testing.B) {
	for _, mode := range []Sync{SyncAdmission, SyncAlways} {
		b.Run("sync="+mode.String(), func(b *testing.B) {
			j := runBench(b, Options{Sync: mode})
			data := []byte(`{"t":" tok","i":123}`)
			lat := make(latencies, 0, b.N)
			b.ReportAllocs()
			for b.Loop() {
				t0 := time.Now()
				seq := j.Append("00000000-0000-4000-8000-000000000000", 2, "token", data, nil)
				for {
					v, ch := j.Visible()
					if v >= seq {
						break
					}
					<-ch
				}
				lat = append(lat, time.Since(t0))
			}
			lat.report(b)
		})
	}
}

// BenchmarkCompaction is one compaction of a segment that holds as many bytes of retired tasks
// as of live ones, the point at which the owner starts one: 400 live tasks and 400 retired
// ones, 256 token records each under UUID task ids, interleaved as concurrent streams write
// them. Besides ns/op (which the fdatasyncs' waits on this disk are part of) it reports
// cpu-ns/op, the process's CPU time per compaction, and rec/s, the records it reads a second
// of that CPU (two passes over the segment).
func BenchmarkCompaction(b *testing.B) {
	const tasks, tokens = 400, 256
	j := runBench(b, Options{Sync: SyncNone, CompactMinBytes: 1 << 50}) // compacted by the benchmark only
	ctx := context.Background()
	data := []byte(`{"t":" tok","i":123}`)
	// fill writes tokens records of each of generation gen's tasks, interleaved, then retires
	// them if retire, and waits until all of it is written.
	fill := func(gen int, retire bool) {
		ids := make([]string, tasks)
		for i := range ids {
			ids[i] = fmt.Sprintf("%08x-0000-4000-8000-%012x", gen, i)
		}
		var seq uint64
		for range tokens {
			for _, id := range ids {
				seq = j.Append(id, 2, "token", data, nil)
			}
		}
		if retire {
			for _, id := range ids {
				j.Retire(id)
			}
			seq = j.Append(ids[0], 2, "token", data, nil) // a record after the tombstones, to wait for
			j.Retire(ids[0])
		}
		if err := j.Wait(ctx, seq); err != nil {
			b.Fatal(err)
		}
	}
	fill(0, false)
	var cpu time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		fill(i+1, true)
		cpu0 := cpuclock.Total()
		b.StartTimer()
		if rep := j.compactLive(); rep.Err != nil {
			b.Fatal(rep.Err)
		}
		b.StopTimer()
		cpu += cpuclock.Total() - cpu0
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(2*2*tasks*tokens)/cpu.Seconds()*float64(b.N), "rec/s")
}
