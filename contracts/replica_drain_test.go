package contracts

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
)

// replicaStates maps each replica of the pool to its state in pool health.
func (h *harness) replicaStates(t testing.TB) (map[string]client.ReplicaHealthState, client.PoolHealth) {
	t.Helper()
	g, err := h.client.GetPoolHealthWithResponse(h.ctx(t), poolID, nil)
	if err != nil || g.JSON200 == nil || g.JSON200.Replicas == nil {
		t.Fatalf("getPoolHealth: %v %s", err, g.Body)
	}
	out := map[string]client.ReplicaHealthState{}
	for _, r := range *g.JSON200.Replicas {
		out[r.Id] = r.State
	}
	return out, *g.JSON200
}

// TestDrainReplica, end to end through the generated client on a pool of two replicas: a
// drained replica takes no new task (the placement says why), the task running on it finishes,
// the pool stays ready on the other; draining both makes the pool refuse new tasks with 503
// POOL_UNAVAILABLE; resuming one serves again; unknown pools and replicas are 404 envelopes.
func TestDrainReplica(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withReplicas(2), withSlots(3))
	ctx := h.ctx(t)
	eventually(t, "both replicas ready", func() bool {
		st, _ := h.replicaStates(t)
		return st["p0/0"] == client.ReplicaHealthStateReady && st["p0/1"] == client.ReplicaHealthStateReady
	})

	for _, tc := range []struct{ pool, replica, mention string }{
		{"nope", "p0/0", "pool"},
		{poolID, "p0/9", "replica"},
	} {
		d, err := h.client.DrainReplicaWithResponse(ctx, tc.pool, tc.replica, nil, client.DrainRequest{DeadlineMs: 1000})
		if err != nil || d.StatusCode() != http.StatusNotFound || d.JSON404 == nil || d.JSON404.Code != client.NOTFOUND ||
			!strings.Contains(d.JSON404.Message, tc.mention) {
			t.Errorf("drain %s %s: %v %d %s, want 404 NOT_FOUND naming the %s", tc.pool, tc.replica, err, d.StatusCode(), d.Body, tc.mention)
		}
		r, err := h.client.ResumeReplicaWithResponse(ctx, tc.pool, tc.replica, nil)
		if err != nil || r.StatusCode() != http.StatusNotFound || r.JSON404 == nil || r.JSON404.Code != client.NOTFOUND {
			t.Errorf("resume %s %s: %v %d %s, want 404", tc.pool, tc.replica, err, r.StatusCode(), r.Body)
		}
	}

	h.fake.SetGated(true)
	first := taskReq(uuid.New())
	h.submit(t, first)
	st := h.waitPlaced(t, first.TaskId)
	if st.Placement == nil {
		t.Fatalf("running task without placement: %+v", st)
	}
	drained := st.Placement.ReplicaId
	other := "p0/0"
	if drained == other {
		other = "p0/1"
	}

	d, err := h.client.DrainReplicaWithResponse(ctx, poolID, drained, nil, client.DrainRequest{DeadlineMs: 600000})
	if err != nil || d.StatusCode() != http.StatusAccepted || d.JSON202 == nil ||
		d.JSON202.Status != client.DrainResponseStatusDraining || d.JSON202.DeadlineMs != 600000 {
		t.Fatalf("drain %s: %v %d %s, want 202 draining", drained, err, d.StatusCode(), d.Body)
	}
	states, ph := h.replicaStates(t)
	if states[drained] != client.ReplicaHealthStateDraining || states[other] != client.ReplicaHealthStateReady ||
		!ph.Ready || ph.Draining || ph.Metrics.SlotsTotal != 4 { // the other's 3, and the 1 the running task holds
		t.Fatalf("health with %s drained: %+v, replicas %v", drained, ph, states)
	}

	// The replica's gauge says it takes no tasks; the drain is counted.
	_, exposition := h.do(t, http.MethodGet, "/metrics", nil, nil)
	for _, line := range []string{
		`replica_ready{pool_id="p0",replica_id="` + drained + `"} 0`,
		`replica_ready{pool_id="p0",replica_id="` + other + `"} 1`,
		`drain_events_total{pool_id="p0",reason="replica_api_request"} 1`,
	} {
		if !strings.Contains(string(exposition), line+"\n") {
			t.Errorf("/metrics lacks %s", line)
		}
	}

	// A task pinned to the drained replica is refused at once (it would wait for a replica
	// that takes nothing); pinned to the other, it runs.
	pinned := func(replica string) client.TaskRequest {
		req := taskReq(uuid.New())
		req.Placement = &client.PlacementOverrides{Mode: ptr(client.Pin), PinPoolId: ptr(poolID), PinReplicaId: ptr(replica)}
		return req
	}
	p, err := h.client.CreateTaskWithResponse(ctx, nil, pinned(drained))
	if err != nil || p.StatusCode() != http.StatusServiceUnavailable || p.JSON503 == nil || p.JSON503.Code != client.POOLUNAVAILABLE ||
		!p.JSON503.Retriable || !strings.Contains(p.JSON503.Message, "draining") {
		t.Errorf("a task pinned to the drained replica: %v %d %s, want 503 POOL_UNAVAILABLE, retriable", err, p.StatusCode(), p.Body)
	}
	pinnedOther := pinned(other)
	h.submit(t, pinnedOther)
	if s := h.waitPlaced(t, pinnedOther.TaskId); s.Placement == nil || s.Placement.ReplicaId != other {
		t.Fatalf("a task pinned to %s: %+v", other, s.Placement)
	}

	// New tasks go to the other replica, and the explanation names the drain.
	for range 2 {
		next := taskReq(uuid.New())
		h.submit(t, next)
		s := h.waitPlaced(t, next.TaskId)
		if s.Placement == nil || s.Placement.ReplicaId != other {
			t.Fatalf("a task placed with %s drained: %+v", drained, s.Placement)
		}
		i := slices.IndexFunc(s.Placement.Candidates, func(c client.PlacementCandidate) bool { return c.ReplicaId == drained })
		if i < 0 || s.Placement.Candidates[i].ExcludedBecause == nil || *s.Placement.Candidates[i].ExcludedBecause != "draining" {
			t.Fatalf("candidates %+v, want %s excluded_because draining", s.Placement.Candidates, drained)
		}
	}

	// Both replicas drained: the pool is not ready and refuses new tasks as a drained pool does.
	if d, err := h.client.DrainReplicaWithResponse(ctx, poolID, other, nil, client.DrainRequest{DeadlineMs: 600000}); err != nil || d.StatusCode() != http.StatusAccepted {
		t.Fatalf("drain %s: %v %d %s", other, err, d.StatusCode(), d.Body)
	}
	if _, ph := h.replicaStates(t); ph.Ready || ph.Draining {
		t.Errorf("every replica drained: ready %v, draining %v; want not ready, the pool itself not drained", ph.Ready, ph.Draining)
	}
	c, err := h.client.CreateTaskWithResponse(ctx, nil, taskReq(uuid.New()))
	if err != nil || c.StatusCode() != http.StatusServiceUnavailable || c.JSON503 == nil || c.JSON503.Code != client.POOLUNAVAILABLE {
		t.Errorf("createTask with every replica drained: %v %d %s, want 503 POOL_UNAVAILABLE", err, c.StatusCode(), c.Body)
	}
	r, err := h.client.ResumeReplicaWithResponse(ctx, poolID, other, nil)
	if err != nil || r.StatusCode() != http.StatusOK || r.JSON200 == nil || r.JSON200.Id != other || r.JSON200.State != client.ReplicaHealthStateReady {
		t.Fatalf("resume %s: %v %d %s, want 200 ready", other, err, r.StatusCode(), r.Body)
	}
	if _, ph := h.replicaStates(t); !ph.Ready {
		t.Errorf("one replica resumed: pool not ready")
	}

	// The task that was running on the drained replica finishes there, in full.
	h.fake.SetGated(false)
	h.fake.Allow(1 << 10)
	frames := h.openStream(t, first.TaskId, streamOpts{}).rest()
	if end := final(t, frames); end.Event != "end" {
		t.Fatalf("the task on the drained replica ends with %s %s, want end", end.Event, end.Raw)
	}
	if s := h.state(t, first.TaskId); s.State != client.Succeeded || s.Placement == nil || s.Placement.ReplicaId != drained {
		t.Errorf("task on the drained replica: %s on %+v", s.State, s.Placement)
	}
}

// TestDrainReplicaDeadline: once a replica's drain deadline passed, the task still running on
// it ends with error POOL_UNAVAILABLE; the other replica keeps serving.
func TestDrainReplicaDeadline(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withReplicas(2), withSlots(1))
	ctx := h.ctx(t)
	eventually(t, "both replicas ready", func() bool {
		st, _ := h.replicaStates(t)
		return st["p0/0"] == client.ReplicaHealthStateReady && st["p0/1"] == client.ReplicaHealthStateReady
	})
	h.fake.SetGated(true)
	stuck := taskReq(uuid.New())
	h.submit(t, stuck)
	st := h.waitPlaced(t, stuck.TaskId)
	if d, err := h.client.DrainReplicaWithResponse(ctx, poolID, st.Placement.ReplicaId, nil, client.DrainRequest{DeadlineMs: 50}); err != nil || d.StatusCode() != http.StatusAccepted {
		t.Fatalf("drain: %v %d %s", err, d.StatusCode(), d.Body)
	}
	frames := h.openStream(t, stuck.TaskId, streamOpts{}).rest()
	if end := final(t, frames); end.Event != "error" || end.Data["code"] != "POOL_UNAVAILABLE" ||
		!strings.Contains(end.Raw, "replica's drain deadline") {
		t.Fatalf("task on a replica past its drain deadline ends with %s %s, want error POOL_UNAVAILABLE", end.Event, end.Raw)
	}
	h.fake.SetGated(false)
	h.fake.Allow(1 << 10)
	next := taskReq(uuid.New())
	h.submit(t, next)
	if end := final(t, h.openStream(t, next.TaskId, streamOpts{}).rest()); end.Event != "end" {
		t.Fatalf("a task after the drain deadline ends with %s %s", end.Event, end.Raw)
	}
}

// TestMetricsScope: /metrics is public by default; with auth.metrics_public false it needs a
// key with the metrics scope.
func TestMetricsScope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		opts   []option
		key    string
		status int
	}{
		{"default: public", []option{withKeys(keysDoc)}, "", http.StatusOK},
		{"secured: no key", []option{withKeys(keysDoc), withMetricsPublic(false)}, "", http.StatusUnauthorized},
		{"secured: key without the scope", []option{withKeys(keysDoc), withMetricsPublic(false)}, aliceKey, http.StatusForbidden},
		{"secured: key with the scope", []option{withKeys(keysDoc), withMetricsPublic(false)}, opsKey, http.StatusOK},
		{"configured public", []option{withKeys(keysDoc), withMetricsPublic(true)}, "", http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, tc.opts...)
			hdr := http.Header{}
			if tc.key != "" {
				hdr.Set("X-API-Key", tc.key)
			}
			resp, body := h.do(t, http.MethodGet, "/metrics", nil, hdr)
			if resp.StatusCode != tc.status {
				t.Fatalf("/metrics: %d %s, want %d", resp.StatusCode, body, tc.status)
			}
			if tc.status == http.StatusOK && !strings.Contains(string(body), "# TYPE ") {
				t.Errorf("/metrics body is not the exposition: %.200s", body)
			}
		})
	}
}
