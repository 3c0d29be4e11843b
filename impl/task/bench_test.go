package task

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/journal"
	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/internal/cpuclock"
)

// burst is an engine that emits n tokens as fast as the service takes them.
type burst struct{ n int }

func (e burst) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	text := []byte(" tok") // as an adapter hands it out: one buffer, reused per token
	for i := range e.n {
		if err := emit(engine.Token{Text: text, Index: i}); err != nil {
			return engine.Result{TokensOut: i}, err
		}
	}
	return engine.Result{TokensOut: e.n, Stop: engine.StopLimit}, nil
}

func (burst) Health(context.Context) (engine.Health, error) {
	return engine.Health{Live: true, Ready: true}, nil
}

// benchService runs a Service on eng, with a file journal in a temporary directory when
// journaled.
func benchService(b *testing.B, eng engine.Replica, journaled bool) (*Service, *journal.Journal) {
	b.Helper()
	ss, err := session.New(session.Options{MaxSessions: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	v := pool.View{Spec: pool.Spec{ID: "p", Engine: "llamacpp", ModelRef: "/m/tiny.gguf", ModelID: "tiny", CtxMax: 1 << 20,
		Slots: 64, PriorServiceMs: 100, PriorTokensPerS: 100, Workloads: []string{"completion"}},
		Live: true, Healthy: true}
	opts := Options{Capacity: 1 << 20, Policy: admission.Reject, Pools: &fakePools{views: []pool.View{v}, rep: eng},
		Sessions: ss, Metrics: metrics.New(prometheus.NewRegistry()), MaxRetained: 1 << 20}
	ctx, cancel := context.WithCancel(context.Background())
	jdone := make(chan struct{})
	var jr *journal.Journal
	if journaled {
		jr, err = journal.Open(journal.Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		opts.Journal = jr
		go func() { defer close(jdone); _ = jr.Run(ctx) }()
	} else {
		close(jdone)
	}
	svc := mustNew(b, opts)
	done := make(chan struct{})
	go func() { defer close(done); _ = svc.Run(ctx) }()
	svc.PoolChanged(ctx, oneReplica(v))
	b.Cleanup(func() { cancel(); <-done; <-jdone })
	return svc, jr
}

// reportSyncs reports the journal's fdatasyncs per op (0 without a journal).
func reportSyncs(b *testing.B, jr *journal.Journal, syncs0 uint64) {
	if jr != nil {
		b.ReportMetric(float64(jr.Stats().Syncs-syncs0)/float64(b.N), "syncs/op")
	}
}

func journalSyncs(jr *journal.Journal) uint64 {
	if jr == nil {
		return 0
	}
	return jr.Stats().Syncs
}

func benchSpec(i int) Spec {
	return Spec{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), SessionID: fmt.Sprintf("11111111-1111-4111-8111-%012d", i),
		Workload: "completion", ModelRef: "tiny", Engine: "llamacpp", Ctx: 1 << 20, Priority: admission.Interactive,
		Prompt: "hi", MaxTokens: 1 << 20, Deadline: time.Hour}
}

// BenchmarkTokens is the cost of one streamed token (engine → log), and with the journal,
// of journaling it (the fsync runs on the journal's goroutine, batched).
func BenchmarkTokens(b *testing.B) {
	for _, journaled := range []bool{false, true} {
		b.Run(fmt.Sprintf("journal=%v", journaled), func(b *testing.B) {
			svc, jr := benchService(b, burst{n: b.N}, journaled)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0, syncs0 := cpuclock.Total(), journalSyncs(jr)
			if _, err := svc.Submit(context.Background(), benchSpec(0)); err != nil {
				b.Fatal(err)
			}
			tk, err := svc.Task(benchSpec(0).ID)
			if err != nil {
				b.Fatal(err)
			}
			<-tk.Done()
			// The process's CPU per token, every goroutine included (the journal's writer and
			// syncer run beside the producer).
			b.ReportMetric(float64((cpuclock.Total()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
			reportSyncs(b, jr, syncs0)
		})
	}
}

// BenchmarkSubmit is the cost of one admission; with the journal, 202 waits for its record to
// be durable (one fsync, shared by the admissions that arrive meanwhile).
func BenchmarkSubmit(b *testing.B) {
	for _, journaled := range []bool{false, true} {
		for _, par := range []int{1, 16} {
			b.Run(fmt.Sprintf("journal=%v/clients=%d", journaled, par), func(b *testing.B) {
				svc, jr := benchService(b, burst{n: 0}, journaled)
				ids := make(chan int, b.N)
				for i := range b.N {
					ids <- i
				}
				close(ids)
				b.ReportAllocs()
				b.ResetTimer()
				syncs0 := journalSyncs(jr)
				errs := make(chan error, par)
				lat := make([]time.Duration, b.N) // each admission's latency, by its index
				for range par {
					go func() {
						for i := range ids {
							t0 := time.Now()
							if _, err := svc.Submit(context.Background(), benchSpec(i)); err != nil {
								errs <- err
								return
							}
							lat[i] = time.Since(t0)
						}
						errs <- nil
					}()
				}
				for range par {
					if err := <-errs; err != nil {
						b.Fatal(err)
					}
				}
				// The median: on a shared machine the mean of an fsync-bound op follows the
				// slowest fsyncs of other processes.
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
				reportSyncs(b, jr, syncs0)
			})
		}
	}
}

// pingpong emits one token, then waits for the reader to have seen it before the next: the
// time per op is one token's latency from the engine to a reader, not a throughput.
type pingpong struct {
	n    int
	seen chan struct{}
}

func (e pingpong) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	text := []byte(" tok") // as an adapter hands it out: one buffer, reused per token
	for i := range e.n {
		if err := emit(engine.Token{Text: text, Index: i}); err != nil {
			return engine.Result{TokensOut: i}, err
		}
		select {
		case <-e.seen:
		case <-ctx.Done():
			return engine.Result{TokensOut: i + 1}, ctx.Err()
		}
	}
	return engine.Result{TokensOut: e.n, Stop: engine.StopLimit}, nil
}

func (pingpong) Health(context.Context) (engine.Health, error) {
	return engine.Health{Live: true, Ready: true}, nil
}

// BenchmarkTokenLatency is the latency a token pays on one stream from the engine's emit to a
// reader of the task's log (the wait for the journal included): the engine emits the next
// token only once the reader has seen the previous one.
func BenchmarkTokenLatency(b *testing.B) {
	for _, journaled := range []bool{false, true} {
		b.Run(fmt.Sprintf("journal=%v", journaled), func(b *testing.B) {
			eng := pingpong{n: b.N, seen: make(chan struct{})}
			svc, _ := benchService(b, eng, journaled)
			if _, err := svc.Submit(context.Background(), benchSpec(0)); err != nil {
				b.Fatal(err)
			}
			tk, err := svc.Task(benchSpec(0).ID)
			if err != nil {
				b.Fatal(err)
			}
			cur := tk.Subscribe(1, false) // after `started`
			defer cur.Close()
			b.ReportAllocs()
			b.ResetTimer()
			var buf []byte
			for tokens := 0; ; {
				var complete bool
				buf, complete = cur.Next(buf[:0])
				for n := bytes.Count(buf, []byte("event: token\n")); n > 0; n-- {
					tokens++
					if tokens <= b.N {
						eng.seen <- struct{}{}
					}
				}
				if complete {
					break
				}
				select {
				case <-cur.Wake():
				case <-cur.Flushed():
				}
			}
		})
	}
}

// BenchmarkTaskLog is the event log's cost per token over a task's whole life, growth
// included: an op is one token of a fresh task of 64, 256 or 1,024 tokens (onToken, as the
// runner calls it, without a journal or readers). B/op is the log's growth, amortised.
func BenchmarkTaskLog(b *testing.B) {
	ss, err := session.New(session.Options{MaxSessions: 16})
	if err != nil {
		b.Fatal(err)
	}
	svc := mustNew(b, Options{Capacity: 16, Policy: admission.Reject, Pools: &fakePools{}, Sessions: ss,
		Metrics: metrics.New(prometheus.NewRegistry()), MetricsInterval: time.Hour})
	text := []byte(" tok") // as an adapter hands it out: one buffer, reused per token
	ctx, now := context.Background(), time.Now()
	for _, tokens := range []int{64, 256, 1024} {
		b.Run(fmt.Sprintf("tokens=%d", tokens), func(b *testing.B) {
			b.ReportAllocs()
			var tk *Task
			for i := 0; b.Loop(); i++ {
				if i%tokens == 0 {
					tk = &Task{spec: Spec{ID: "t", MaxTokens: tokens}, done: make(chan struct{})}
				}
				if err := svc.onToken(ctx, tk, engine.Token{Text: text, Index: i % tokens}, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
