package app_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine/fake"
)

// counterSum sums a counter family's series whose labels include want.
func (d *fakeDaemon) counterSum(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := d.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range want {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// A submission the key's rpm limit refuses (429 RATE_LIMITED) is a task refused, counted once
// in tasks_rejected_total by its code, as the task service counts its own refusals: the
// dashboard's "Admissions by outcome" panel draws rejections from it alone, and showed none
// while every client got 429.
func TestRateLimitedSubmissionCountsAsRejected(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.yaml")
	if err := os.WriteFile(keys, []byte("keys:\n  - {name: limited, key: "+testKey+", scopes: [tasks, control, metrics], rpm: 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startFakeDaemon(t, "keys_file: "+keys, fake.Options{}, nil)
	if res, err := d.do("POST", "/v1/tasks", taskBody(uuid.New(), 2)); err != nil || res.status != http.StatusAccepted {
		t.Fatalf("first submission: %v %d %s", err, res.status, res.body)
	}
	res, err := d.do("POST", "/v1/tasks", taskBody(uuid.New(), 2))
	if err != nil || res.status != http.StatusTooManyRequests {
		t.Fatalf("second submission: %v %d %s, want 429", err, res.status, res.body)
	}
	if got := d.counterSum(t, "tenant_rejections_total", map[string]string{"key": "limited"}); got != 1 {
		t.Fatalf("tenant_rejections_total{key=limited} = %v, want 1 (test premise)", got)
	}
	if got := d.counterSum(t, "tasks_rejected_total", map[string]string{"reason": "RATE_LIMITED"}); got != 1 {
		t.Errorf("tasks_rejected_total = %v after one 429 RATE_LIMITED refusal, want 1", got)
	}
}
