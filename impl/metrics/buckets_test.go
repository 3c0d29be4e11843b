package metrics

import (
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// quantileOf is PromQL's histogram_quantile over one histogram: linear interpolation inside
// the bucket the rank falls in; a rank in the +Inf bucket gives the highest finite bound.
func quantileOf(h *dto.Histogram, q float64) float64 {
	rank := q * float64(h.GetSampleCount())
	prevBound, prevCount := 0.0, 0.0
	for _, b := range h.GetBucket() {
		if float64(b.GetCumulativeCount()) >= rank {
			n := float64(b.GetCumulativeCount()) - prevCount
			return prevBound + (b.GetUpperBound()-prevBound)*(rank-prevCount)/n
		}
		prevBound, prevCount = b.GetUpperBound(), float64(b.GetCumulativeCount())
	}
	return prevBound // +Inf bucket: histogram_quantile answers the highest finite bound
}

func histOf(t *testing.T, reg *prometheus.Registry, name string) *dto.Histogram {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram()
		}
	}
	t.Fatalf("no %s", name)
	return nil
}

// tenant_queue_wait_ms is the same quantity as queue_wait_ms, per key (dashboard panel "Queue
// wait per key (p95)"), with the same buckets: with the first-token buckets, which ended at
// 10 s, every longer wait was read as 10 s. A first token, which waits in the queue too, is
// bucketed as far.
func TestTenantQueueWaitBucketsCoverQueueWaits(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	for _, wait := range []float64{45000, 60000, 120000} { // queued 45 s, 1 min, 2 min
		m.QueueWait.WithLabelValues("llamacpp", "", "p1", "interactive").Observe(wait)
		m.TenantQueueWait.WithLabelValues("default").Observe(wait)
	}
	pool := quantileOf(histOf(t, reg, "queue_wait_ms"), 0.95)
	key := quantileOf(histOf(t, reg, "tenant_queue_wait_ms"), 0.95)
	if pool < 60000 {
		t.Fatalf("queue_wait_ms p95 = %v, want >= 60000 (test premise)", pool)
	}
	if key < 60000 || math.Abs(key-pool) > 1 {
		t.Errorf("tenant_queue_wait_ms p95 = %v ms, queue_wait_ms p95 = %v ms for the same waits (45 s, 60 s, 120 s): "+
			"the per-key histogram's buckets stop short", key, pool)
	}
	if last := FirstTokenBuckets[len(FirstTokenBuckets)-1]; last < QueueWaitBuckets[len(QueueWaitBuckets)-1] {
		t.Errorf("first-token buckets end at %v ms, before the queue waits' (%v)", last, QueueWaitBuckets[len(QueueWaitBuckets)-1])
	}
}
