package config

import (
	"strings"
	"testing"
)

// TestNonFinitePriorsRefused: prior_service_ms and prior_tokens_per_s are checked with
// "<= 0", which NaN passes and +Inf passes; the admission queue then refuses the pool
// (finiteNonNegative) and every task on it gets 503 (see impl/app TestNonFinitePriorBreaksThePool).
func TestNonFinitePriorsRefused(t *testing.T) {
	for field, v := range map[string]string{
		"prior_service_ms":   ".nan",
		"prior_tokens_per_s": ".inf",
	} {
		doc := "pools:\n  - {id: p1, engine: llamacpp, model_ref: /m/m.gguf, ctx_max: 2048, slots: 1, " + field + ": " + v +
			", replicas: [{url: 'http://127.0.0.1:9'}]}\n"
		_, err := load(t, doc, Overrides{})
		if err == nil || !strings.Contains(err.Error(), "pools[0]."+field) {
			t.Errorf("%s: %s loaded (err %v); want an error naming pools[0].%s", field, v, err, field)
		}
	}
}

// TestGCPercentZeroRefused: validation says server.gc_percent "must be at least 1, or -1
// (off) with server.memory_limit_bytes", yet 0 passes (the check is *p < -1), and the daemon
// then runs debug.SetGCPercent(0): a collection after nearly every allocation.
func TestGCPercentZeroRefused(t *testing.T) {
	c, err := load(t, "server: {gc_percent: 0}\n"+minimal, Overrides{})
	if err == nil {
		t.Fatalf("gc_percent 0 accepted (%d), though the field's own message says it must be at least 1 or -1", *c.Server.GCPercent)
	}
}
