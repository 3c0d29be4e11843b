package task

import (
	"bytes"
	"fmt"
	"math"
	"testing"

	"github.com/orchestratord/orchestratord/impl/sse"
)

// The metrics frame's sentence, written without fmt, is what fmt wrote.
func TestMetricsHumanMatchesSprintf(t *testing.T) {
	for _, c := range []struct {
		pool       string
		out, want  int
		tps, p     float64
		leftMs     int64
		wantSuffix string
	}{
		{"p1", 0, 1, 1, 0.5, 60000, ""},
		{"bench0", 12, 256, 183.49, 0.999, 1, ""},
		{`a "quoted" <pool> & \ é` + "\n\x01\u2028\xff", -1, -2, 0.5, 0.005, -7, ""},
		{"p", 1, 2, 1e21, 1e-9, 0, ""},
		{"p", 1, 2, math.Inf(1), math.Inf(-1), 0, ""},
		{"p", 1, 2, math.NaN(), math.Copysign(0, -1), 0, ""},
		{"p", 1, 2, 2.5, 0.125, 0, ""}, // rounding half to even, as fmt
	} {
		checkMetricsHuman(t, c.pool, c.out, c.want, c.tps, c.leftMs, c.p)
	}
}

func checkMetricsHuman(t *testing.T, pool string, out, want int, tps float64, leftMs int64, p float64) {
	t.Helper()
	got := appendMetricsHuman([]byte("x"), pool, out, want, tps, leftMs, p)
	exp := sse.AppendString([]byte("x"), fmt.Sprintf("decoding on pool %s: %d of up to %d tokens, %.0f tokens/s, %d ms left, on-time probability %.2f",
		pool, out, want, tps, leftMs, p))
	if !bytes.Equal(got, exp) {
		t.Fatalf("got  %s\nwant %s", got, exp)
	}
}

func FuzzMetricsHuman(f *testing.F) {
	f.Add("p1", 3, 256, 99.5, int64(100), 0.75)
	f.Add("\xff\"", -1, 0, math.Inf(1), int64(-1), math.NaN())
	f.Fuzz(func(t *testing.T, pool string, out, want int, tps float64, leftMs int64, p float64) {
		checkMetricsHuman(t, pool, out, want, tps, leftMs, p)
	})
}
