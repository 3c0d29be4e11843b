package task

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/session"
)

// copyJournal is a Journal that copies the last event record's data, as the file journal
// copies its records (it must not retain its arguments), into a buffer of its own.
type copyJournal struct {
	seq  uint64
	last []byte
}

func (j *copyJournal) Append(_ string, kind uint8, _ string, data, _ []byte) uint64 {
	j.seq++
	if kind == recEvent {
		j.last = append(j.last[:0], data...)
	}
	return j.seq
}
func (j *copyJournal) Wait(context.Context, uint64) error { return nil }
func (j *copyJournal) Visible() (uint64, <-chan struct{}) { return j.seq, nil }
func (j *copyJournal) Retire(string)                      {}
func (j *copyJournal) Replay(func(string, uint8, string, []byte, []byte) error) error {
	return nil
}

// A relayed token costs no allocation of its own once the task's log has room: its frame is
// encoded straight into the log, and the journal is given the frame's data from there.
func TestOnTokenAllocatesNothing(t *testing.T) {
	ss, err := session.New(session.Options{MaxSessions: 16})
	if err != nil {
		t.Fatal(err)
	}
	svc := mustNew(t, Options{Capacity: 16, Policy: admission.Reject, Pools: &fakePools{}, Sessions: ss,
		Metrics: metrics.New(prometheus.NewRegistry()), MetricsInterval: time.Hour})
	j := &copyJournal{last: make([]byte, 0, 256)}
	tk := &Task{spec: Spec{ID: "t", MaxTokens: 1 << 20}, j: j, done: make(chan struct{}),
		buf: make([]byte, 0, 1<<20), spans: make([]span, 0, 1024)}
	tk.text.Grow(1 << 16)
	ctx := context.Background()
	if err := svc.onToken(ctx, tk, engine.Token{Text: []byte("first")}, time.Now()); err != nil { // first token: metrics frame, session
		t.Fatal(err)
	}
	var n int
	text := []byte(" tok\"") // as an adapter hands it out: one buffer, reused per token
	allocs := testing.AllocsPerRun(200, func() {
		n++
		if err := svc.onToken(ctx, tk, engine.Token{Text: text, Index: n}, time.Now()); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("onToken: %.1f allocations per token, want 0", allocs)
	}
	// The journal saw the frame's data, exactly as the log holds it.
	got := string(j.last)
	want := `{"t":" tok\"","i":` + strconv.Itoa(tk.tokensOut-1) + `}`
	if sp := tk.spans[len(tk.spans)-1]; !strings.Contains(string(tk.buf[sp.start:sp.end]), "\ndata: "+want+"\n\n") {
		t.Errorf("log frame %q lacks data %q", tk.buf[sp.start:sp.end], want)
	}
	if got != want {
		t.Errorf("journal data %q, want %q", got, want)
	}
}

// A token's text is valid only during the emit call (the adapter reuses its buffer for the
// next frame): the task keeps copies, in its log and in the text a migration continues.
func TestOnTokenCopiesText(t *testing.T) {
	ss, err := session.New(session.Options{MaxSessions: 16})
	if err != nil {
		t.Fatal(err)
	}
	svc := mustNew(t, Options{Capacity: 16, Policy: admission.Reject, Pools: &fakePools{}, Sessions: ss,
		Metrics: metrics.New(prometheus.NewRegistry()), MetricsInterval: time.Hour})
	tk := &Task{spec: Spec{ID: "t", MaxTokens: 16}, done: make(chan struct{})}
	buf := []byte("one")
	for i, next := range []string{"two", "six", "ten"} {
		if err := svc.onToken(context.Background(), tk, engine.Token{Text: buf, Index: i}, time.Now()); err != nil {
			t.Fatal(err)
		}
		copy(buf, next) // the adapter's next frame overwrites the buffer
	}
	if got := tk.text.String(); got != "onetwosix" {
		t.Errorf("continuation text %q, want %q", got, "onetwosix")
	}
	c := tk.Subscribe(0, false)
	defer c.Close()
	frames, _ := c.Next(nil)
	for _, want := range []string{`{"t":"one","i":0}`, `{"t":"two","i":1}`, `{"t":"six","i":2}`} {
		if !strings.Contains(string(frames), want) {
			t.Errorf("log %q lacks %s", frames, want)
		}
	}
}

// Only a task whose generation can be continued elsewhere (a completion) keeps the text it
// streamed: a chat cannot migrate, so its tokens are not copied a second time.
func TestOnTokenKeepsTextOnlyToContinue(t *testing.T) {
	ss, err := session.New(session.Options{MaxSessions: 16})
	if err != nil {
		t.Fatal(err)
	}
	svc := mustNew(t, Options{Capacity: 16, Policy: admission.Reject, Pools: &fakePools{}, Sessions: ss,
		Metrics: metrics.New(prometheus.NewRegistry()), MetricsInterval: time.Hour})
	tests := []struct {
		name string
		spec Spec
		want string
	}{
		{"completion", Spec{ID: "c", MaxTokens: 16, Workload: engine.WorkloadCompletion}, " a b"},
		{"default workload", Spec{ID: "d", MaxTokens: 16}, " a b"},
		{"chat", Spec{ID: "h", MaxTokens: 16, Workload: engine.WorkloadChat,
			Messages: []engine.Message{{Role: "user", Content: "hi"}}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := &Task{spec: tt.spec, done: make(chan struct{})}
			for i, text := range []string{" a", " b"} {
				if err := svc.onToken(context.Background(), tk, engine.Token{Text: []byte(text), Index: i}, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			if got := tk.text.String(); got != tt.want {
				t.Errorf("kept text %q, want %q", got, tt.want)
			}
			if tk.tokensOut != 2 {
				t.Errorf("tokens out %d, want 2", tk.tokensOut)
			}
		})
	}
}
