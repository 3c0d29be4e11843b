package app_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/pool"
)

// TestExternalReplicaGetsNoLocalGPUSeries: an external replica on another host (here
// http://10.0.0.5:8000, as README's --check-config example "gpu: vllm external
// http://10.0.0.5:8000") runs on GPUs the daemon cannot see, and placement treats its devices
// as unknown. /metrics labelled every local GPU's utilisation and VRAM with that replica's id,
// so the dashboard showed the remote replica using the daemon host's GPUs, and a sum over
// replicas counted each local GPU once per external replica. It now exports no gpu_utilization
// or vram_used_bytes series for it (an external replica on a loopback URL, this host, keeps
// them).
func TestExternalReplicaGetsNoLocalGPUSeries(t *testing.T) {
	gpus := dgxh200.New()
	gpus.ShutdownFunc = func() nvml.Return { return nvml.SUCCESS }
	f := fake.New(fake.Options{})
	addr, _ := serveApp(t, `shutdown_grace: 50ms
pools:
  - id: p1
    engine: vllm
    model_ref: org/model
    model_id: model
    ctx_max: 4096
    slots: 1
    replicas:
      - url: http://10.0.0.5:8000
      - url: http://10.0.0.6:8000
`, app.Options{NVML: gpus, NewReplica: func(pool.Spec, pool.Endpoint) engine.Replica { return f }})
	var body string
	eventually(t, "the pool ready in /metrics", func() bool {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+addr+"/metrics", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return strings.Contains(body, `pool_ready{pool_id="p1"} 1`)
	})
	var bad []string
	for _, line := range strings.Split(body, "\n") {
		if (strings.HasPrefix(line, "gpu_utilization{") || strings.HasPrefix(line, "vram_used_bytes{")) && strings.Contains(line, `pool_id="p1"`) {
			bad = append(bad, line)
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d GPU series of the daemon host's GPUs are labelled with external replicas on 10.0.0.5/10.0.0.6, e.g.\n  %s\n  %s\nwant none (their devices are unknown)",
			len(bad), bad[0], bad[len(bad)-1])
	}
}
