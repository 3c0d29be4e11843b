package journal

import (
	"context"
	"testing"
)

// BenchmarkAppend is the cost a token pays on the streaming path: one record copied into the
// pending batch (the write and fsync run on the owner goroutine).
func BenchmarkAppend(b *testing.B) {
	j, err := Open(Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = j.Run(ctx) }()
	defer func() { cancel(); <-done }()
	data := []byte(`{"t":" tok","i":123}`)
	b.ReportAllocs()
	for b.Loop() {
		j.Append("00000000-0000-4000-8000-000000000000", 2, "token", data, nil)
	}
}

// BenchmarkAppendWait is one durable record at a time: the latency an admission pays alone.
func BenchmarkAppendWait(b *testing.B) {
	j, err := Open(Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = j.Run(ctx) }()
	defer func() { cancel(); <-done }()
	data := make([]byte, 400) // about an admission record
	b.ReportAllocs()
	for b.Loop() {
		if err := j.Wait(ctx, j.Append("00000000-0000-4000-8000-000000000000", 1, "", data, nil)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendVisible is the latency of a stream frame on one stream: append, then wait
// until the journal lets a reader see it.
func BenchmarkAppendVisible(b *testing.B) {
	j, err := Open(Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = j.Run(ctx) }()
	defer func() { cancel(); <-done }()
	data := []byte(`{"t":" tok","i":123}`)
	b.ReportAllocs()
	for b.Loop() {
		seq := j.Append("00000000-0000-4000-8000-000000000000", 2, "token", data, nil)
		for {
			v, ch := j.Durable()
			if v >= seq {
				break
			}
			<-ch
		}
	}
}
