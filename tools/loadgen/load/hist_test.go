package load

import (
	"math"
	"sync"
	"testing"
	"time"
)

func TestBucketsAreContiguousAndMonotonic(t *testing.T) {
	prevHi := uint64(0)
	for i := 0; i < histBuckets-1; i++ {
		lo, hi := bucketBounds(i)
		if i > 0 && lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHi)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d = [%d, %d] maps back to %d, %d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		if lo >= 2*subBuckets && float64(hi-lo+1)/float64(lo) > 1.0/subBuckets+1e-12 {
			t.Fatalf("bucket %d = [%d, %d] wider than 1/%d", i, lo, hi, subBuckets)
		}
		prevHi = hi
	}
	if prevHi < uint64(HistMax) {
		t.Fatalf("buckets end at %d, below HistMax", prevHi)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	tests := []struct {
		name   string
		values []time.Duration
		q      float64
		want   time.Duration
	}{
		{"single", []time.Duration{5 * time.Millisecond}, 0.5, 5 * time.Millisecond},
		{"p0 is min", []time.Duration{time.Microsecond, time.Second}, 0, time.Microsecond},
		{"p100 is max", []time.Duration{time.Microsecond, time.Second}, 1, time.Second},
		{"overflow reports max", []time.Duration{2 * time.Minute}, 0.5, 2 * time.Minute},
		{"small exact", []time.Duration{3, 7, 9}, 0.5, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHistogram()
			for _, v := range tt.values {
				h.Record(v)
			}
			if got := h.Quantile(tt.q); !within(got, tt.want, 1.0/subBuckets) {
				t.Fatalf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
			}
		})
	}
}

func TestHistogramUniformAccuracy(t *testing.T) {
	h := NewHistogram()
	var exact []time.Duration
	for i := 1; i <= 10000; i++ {
		d := time.Duration(i) * 37 * time.Microsecond
		h.Record(d)
		exact = append(exact, d)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := rankOf(exact, q)
		if got := h.Quantile(q); !within(got, want, 1.0/subBuckets) {
			t.Errorf("q%v = %v, exact %v", q, got, want)
		}
	}
	s := h.Summary()
	if s.Count != 10000 || s.Min != 0.037 || s.Max != 370 {
		t.Fatalf("summary %+v", s)
	}
}

func TestHistogramNegativeAndEmpty(t *testing.T) {
	h := NewHistogram()
	if h.Quantile(0.5) != 0 || h.Summary() != (Summary{}) {
		t.Fatal("empty histogram not zero")
	}
	h.Record(-time.Second)
	if h.Negative() != 1 || h.Count() != 1 || h.Quantile(0.5) != 0 {
		t.Fatalf("negative: %d, count %d, q %v", h.Negative(), h.Count(), h.Quantile(0.5))
	}
}

func TestHistogramConcurrentRecord(t *testing.T) {
	h := NewHistogram()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 1000 {
				h.Record(time.Duration(g*1000+i) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	if h.Count() != 4000 || h.Summary().Min != 0 || h.Summary().Max != 3.999 {
		t.Fatalf("count %d, summary %+v", h.Count(), h.Summary())
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		name string
		in   []time.Duration
		want Summary
	}{
		{"empty", nil, Summary{}},
		{"one", []time.Duration{1500 * time.Microsecond}, Summary{1, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5}},
		{"nearest rank", func() []time.Duration {
			var ds []time.Duration
			for i := 100; i >= 1; i-- {
				ds = append(ds, time.Duration(i)*time.Millisecond)
			}
			return ds
		}(), Summary{100, 50.5, 1, 50, 90, 99, 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summarize(tt.in); got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func within(got, want time.Duration, rel float64) bool {
	return math.Abs(float64(got-want)) <= rel*float64(want)+1
}
