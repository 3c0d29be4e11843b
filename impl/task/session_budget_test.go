package task

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

// TestSessionGrantSettled: a task holding a grant of its session's budget is charged what it
// produced when it ends, before its end frame, and the rest returns; its metrics frames report
// what the session would have left if it stopped there.
func TestSessionGrantSettled(t *testing.T) {
	for _, tc := range []struct {
		name          string
		grant, stopAt int
		send          int
		wantLeft      int64  // the session's budget after the end
		wantMetrics   string // the first metrics frame's tokens_budget_remaining
		wantStop      bool
	}{
		// 100 − 8 reserved + (8 − 1) not yet produced after the first token.
		{name: "within the grant", grant: 8, send: 3, wantLeft: 97, wantMetrics: `"tokens_budget_remaining":99`},
		{name: "grant spent", grant: 2, stopAt: 2, send: 3, wantLeft: 98, wantMetrics: `"tokens_budget_remaining":99`, wantStop: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ss, err := session.New(session.Options{TokenBudget: 100})
			if err != nil {
				t.Fatal(err)
			}
			eng := newGate()
			v := pool.View{Spec: pool.Spec{ID: "p", Engine: "llamacpp", ModelRef: "/m/tiny.gguf", ModelID: "tiny", CtxMax: 4096,
				Slots: 1, KVBytesPerToken: 10, PriorServiceMs: 100, PriorTokensPerS: 100, Workloads: []string{"completion"}},
				Live: true, Healthy: true}
			svc := mustNew(t, Options{Capacity: 4, Policy: admission.Reject, Pools: &fakePools{views: []pool.View{v}, rep: eng},
				Sessions: ss, Metrics: metrics.New(prometheus.NewRegistry()), Clock: tasktest.NewClock(time.Unix(1_700_000_000, 0))})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = svc.Run(ctx); close(done) }()
			t.Cleanup(func() {
				sctx, c := context.WithCancel(context.Background())
				c()
				svc.Shutdown(sctx)
				cancel()
				<-done
			})
			svc.PoolChanged(ctx, oneReplica(v))
			h := &harness{t: t, svc: svc, eng: eng, ctx: ctx}

			s := spec(admission.Interactive)
			s.Owner = "alice"
			r, err := ss.Reserve(s.SessionID, s.Owner, tc.grant) // as admission does
			if err != nil || r.Grant != tc.grant {
				t.Fatalf("Reserve = %+v, %v", r, err)
			}
			s.SessionGrant, s.SessionGen, s.StopAt = r.Grant, r.Gen, tc.stopAt
			h.submit(s)
			<-eng.started
			for i := range tc.send {
				eng.tokens <- fmt.Sprint(" t", i)
			}
			if !tc.wantStop {
				close(eng.tokens)
			}
			evs := h.events(s.ID)
			var metricsFrame string
			for _, e := range evs {
				if e.Event == "metrics" && metricsFrame == "" {
					metricsFrame = e.Data
				}
			}
			if !strings.Contains(metricsFrame, tc.wantMetrics) {
				t.Errorf("metrics frame %s, want %s", metricsFrame, tc.wantMetrics)
			}
			if end := evs[len(evs)-1].Data; strings.Contains(end, `"stop":"budget"`) != tc.wantStop {
				t.Errorf("end %s, want stop budget %v", end, tc.wantStop)
			}
			info, ok := ss.Get(s.SessionID)
			if !ok || *info.TokensBudgetRemaining != tc.wantLeft {
				t.Fatalf("session after the end: %+v %v, want %d left", info, ok, tc.wantLeft)
			}
		})
	}
}
