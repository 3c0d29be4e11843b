package pool

import (
	"context"
	"errors"
	"testing"
)

// TestReloadOfPoolWithExternalReplica: the contract (reloadPool) says "A pool with external
// (URL) replicas cannot be reloaded by the daemon (409, reason not_reloadable)". A pool that
// mixes a managed replica and an external one was reloaded anyway: the pool then reported the
// new model_ref while its external replica still served the old model and stayed ready, so
// tasks asking for the new model were placed on it. It is refused now, and left unchanged.
func TestReloadOfPoolWithExternalReplica(t *testing.T) {
	spec := managedSpec
	spec.Managed = false
	spec.Replicas = []ReplicaSpec{{ID: "m/0", Managed: true}, {ID: "m/1", URL: "http://ext", Source: 1}}
	e := newEnv(t, spec)
	e.waitView(t, func(v View) bool {
		return len(v.Replicas) == 2 && v.Replicas[0].Ready() && v.Replicas[1].Ready()
	})
	v, err := e.reg.Reload(context.Background(), "m", "models/b.gguf")
	var re *ReloadError
	if !errors.Is(err, ErrNotReloadable) || !errors.As(err, &re) || re.Reason != ReasonNotReloadable {
		ext := replicaView(t, v, "m/1")
		t.Errorf("reload of a pool with an external replica: err %v, pool model_ref %q; external replica m/1 model_ref %q, state %s; "+
			"want 409 not_reloadable and the pool unchanged", err, v.ModelRef, ext.ModelRef, ext.State)
	}
}
