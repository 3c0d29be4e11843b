package impl

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/gen/api"
	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/pool"
)

// reloadPools is one pool whose model a reload switches.
type reloadPools struct {
	Pools
	v pool.View
}

func (p *reloadPools) Get(id string) (pool.View, bool) { return p.v, id == p.v.ID }
func (p *reloadPools) Views() []pool.View              { return []pool.View{p.v} }
func (p *reloadPools) Reload(_ context.Context, id, ref string) (pool.View, error) {
	if id != p.v.ID {
		return pool.View{}, pool.ErrNotFound
	}
	p.v.ModelRef = ref
	p.v.ModelID = strings.TrimSuffix(strings.TrimPrefix(ref, "models/"), ".gguf")
	return p.v, nil
}

// TestModelStateAfterReload: model_state is "1 for the state each served model is in".
// After the only pool serving model a is reloaded to model b, a is no longer served, yet its
// series stays at 1 beside b's: dashboards and alerts see two Active models on one pool, and
// every reload to another model adds a series that never goes.
func TestModelStateAfterReload(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	ps := &reloadPools{v: pool.View{Spec: pool.Spec{ID: "p0", Engine: "llamacpp", ModelRef: "models/a.gguf", ModelID: "a"},
		Live: true, Healthy: true}}
	// As app.New does for each configured pool.
	m.ModelState.WithLabelValues("a", "Active").Set(1)
	s := NewServer(Options{Pools: ps, Metrics: m, Gatherer: reg})

	for _, ref := range []string{"models/b.gguf", "models/c.gguf"} {
		resp, err := s.ReloadPool(context.Background(), api.ReloadPoolRequestObject{Id: "p0",
			Body: &api.ReloadRequest{NewModelRef: ref}})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := resp.(api.ReloadPool200JSONResponse); !ok {
			t.Fatalf("reload to %s: %T %+v", ref, resp, resp)
		}
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var active []string
	for _, mf := range mfs {
		if mf.GetName() != "model_state" {
			continue
		}
		for _, s := range mf.GetMetric() {
			if s.GetGauge().GetValue() != 1 {
				continue
			}
			for _, lp := range s.GetLabel() {
				if lp.GetName() == "model_id" {
					active = append(active, lp.GetValue())
				}
			}
		}
	}
	if len(active) != 1 || active[0] != "c" {
		t.Errorf("model_state series at 1 after reloading the one pool a -> b -> c: %v, want only [c]", active)
	}
}
