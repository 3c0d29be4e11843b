package load

import (
	"math"
	"math/bits"
	"slices"
	"sync/atomic"
	"time"
)

// HistMax is the largest value a Histogram resolves; larger ones are counted in an overflow
// bucket (and still set the exact maximum).
const HistMax = 60 * time.Second

const (
	subBits    = 4 // 16 sub-buckets per power of two: at most 1/16 relative bucket width
	subBuckets = 1 << subBits
)

// histBuckets is the number of buckets needed for values up to HistMax nanoseconds, plus one
// for overflow.
var histBuckets = bucketOf(uint64(HistMax)) + 2

// Histogram is a fixed-size, log-bucketed latency histogram from 0 to HistMax (HDR-like: 16
// linear sub-buckets per power of two of nanoseconds, about 530 buckets in all, so a quantile
// is within 1/16 of the true value). It is
// safe for concurrent use; Record is lock-free. Exact count, sum, minimum and maximum are kept
// besides the buckets. Negative values are counted in Negative and recorded as 0.
type Histogram struct {
	buckets  []atomic.Uint64
	count    atomic.Uint64
	sum      atomic.Int64
	min      atomic.Int64
	max      atomic.Int64
	negative atomic.Uint64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	h := &Histogram{buckets: make([]atomic.Uint64, histBuckets)}
	h.min.Store(math.MaxInt64)
	return h
}

// bucketOf maps a value in nanoseconds to its bucket index.
func bucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	exp := bits.Len64(v) - subBits - 1 // v>>exp is in [16, 32)
	return exp*subBuckets + int(v>>exp)
}

// bucketBounds returns the smallest and largest value of bucket i.
func bucketBounds(i int) (lo, hi uint64) {
	if i < 2*subBuckets {
		return uint64(i), uint64(i)
	}
	exp := i/subBuckets - 1
	m := uint64(i - exp*subBuckets)
	return m << exp, (m+1)<<exp - 1
}

// Record adds one value.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		h.negative.Add(1)
		d = 0
	}
	v := uint64(d)
	i := len(h.buckets) - 1
	if d <= HistMax {
		i = bucketOf(v)
	}
	h.buckets[i].Add(1)
	h.count.Add(1)
	h.sum.Add(int64(d))
	for {
		m := h.min.Load()
		if int64(d) >= m || h.min.CompareAndSwap(m, int64(d)) {
			break
		}
	}
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			break
		}
	}
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.count.Load() }

// Negative returns how many recorded values were negative (recorded as 0).
func (h *Histogram) Negative() uint64 { return h.negative.Load() }

// Quantile returns the value at quantile q in [0, 1]: the midpoint of the bucket holding the
// ceil(q×count)-th smallest value, clamped to the exact minimum and maximum. It returns 0 for
// an empty histogram. It must not race with Record for an exact answer.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.count.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	lo, hi := time.Duration(h.min.Load()), time.Duration(h.max.Load())
	var seen uint64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen < rank {
			continue
		}
		if i == len(h.buckets)-1 {
			return hi
		}
		blo, bhi := bucketBounds(i)
		mid := time.Duration(blo + (bhi-blo)/2)
		return min(max(mid, lo), hi)
	}
	return hi
}

// Summary returns the histogram's figures in milliseconds.
func (h *Histogram) Summary() Summary {
	n := h.count.Load()
	if n == 0 {
		return Summary{}
	}
	return Summary{
		Count: int64(n),
		Mean:  ms(time.Duration(h.sum.Load() / int64(n))),
		Min:   ms(time.Duration(h.min.Load())),
		P50:   ms(h.Quantile(0.50)),
		P90:   ms(h.Quantile(0.90)),
		P99:   ms(h.Quantile(0.99)),
		Max:   ms(time.Duration(h.max.Load())),
	}
}

// summarize returns exact figures for a set of durations; it sorts ds.
func summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return Summary{
		Count: int64(len(ds)),
		Mean:  ms(sum / time.Duration(len(ds))),
		Min:   ms(ds[0]),
		P50:   ms(rankOf(ds, 0.50)),
		P90:   ms(rankOf(ds, 0.90)),
		P99:   ms(rankOf(ds, 0.99)),
		Max:   ms(ds[len(ds)-1]),
	}
}

// rankOf returns the nearest-rank quantile q of sorted ds.
func rankOf(ds []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// ms converts to fractional milliseconds, rounded to the microsecond.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}
