package app

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/orchestratord/orchestratord/impl/journal"
	"github.com/orchestratord/orchestratord/impl/metrics"
)

// The journal's compaction reports become metrics: both outcomes' series from the start, the
// writers' hold observed for the compactions that switched.
func TestCompactionMetrics(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	report := compactionMetrics(m)
	want := func(stage, done, failed string) {
		t.Helper()
		exp := `# HELP journal_compactions_total Compactions of the journal's segment that ended, by outcome: done, failed (retried after a back-off).
# TYPE journal_compactions_total counter
journal_compactions_total{outcome="done"} ` + done + `
journal_compactions_total{outcome="failed"} ` + failed + "\n"
		if err := testutil.CollectAndCompare(m.JournalCompactions, strings.NewReader(exp)); err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
	}
	want("start-up", "0", "0")
	report(journal.Compaction{Err: errors.New("no space left on device"), Took: time.Second})
	report(journal.Compaction{Took: time.Second, WritersHeld: 3 * time.Millisecond, BytesBefore: 100, BytesAfter: 40})
	report(journal.Compaction{Took: time.Second, WritersHeld: 30 * time.Millisecond, BytesBefore: 100, BytesAfter: 40})
	want("after reports", "2", "1")
	if n := testutil.CollectAndCount(m.JournalCompactionHold); n != 1 {
		t.Fatalf("hold histogram: %d series", n)
	}
	exp := `# HELP journal_compaction_writers_held_seconds Seconds each journal compaction held the journal's writers to switch segments: every stream's next frame waited that long (the rewrite itself runs beside the writers).
# TYPE journal_compaction_writers_held_seconds histogram
journal_compaction_writers_held_seconds_bucket{le="5e-05"} 0
journal_compaction_writers_held_seconds_bucket{le="0.0001"} 0
journal_compaction_writers_held_seconds_bucket{le="0.00025"} 0
journal_compaction_writers_held_seconds_bucket{le="0.0005"} 0
journal_compaction_writers_held_seconds_bucket{le="0.001"} 0
journal_compaction_writers_held_seconds_bucket{le="0.0025"} 0
journal_compaction_writers_held_seconds_bucket{le="0.005"} 1
journal_compaction_writers_held_seconds_bucket{le="0.01"} 1
journal_compaction_writers_held_seconds_bucket{le="0.025"} 1
journal_compaction_writers_held_seconds_bucket{le="0.05"} 2
journal_compaction_writers_held_seconds_bucket{le="0.1"} 2
journal_compaction_writers_held_seconds_bucket{le="0.25"} 2
journal_compaction_writers_held_seconds_bucket{le="1"} 2
journal_compaction_writers_held_seconds_bucket{le="+Inf"} 2
journal_compaction_writers_held_seconds_sum 0.033
journal_compaction_writers_held_seconds_count 2
`
	if err := testutil.CollectAndCompare(m.JournalCompactionHold, strings.NewReader(exp)); err != nil {
		t.Fatal(err)
	}
}
