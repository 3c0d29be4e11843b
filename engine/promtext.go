package engine

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// SumMetrics reads a Prometheus text exposition and returns, for each of names, the sum of its
// samples over all label sets (a name absent from the exposition is absent from the map).
// Comments, other names and samples that are not finite numbers are skipped; a line longer
// than 1 MiB is an error.
func SumMetrics(r io.Reader, names ...string) (map[string]float64, error) {
	m, err := ReadMetrics(r, names...)
	if err != nil {
		return nil, err
	}
	out := make(map[string]float64, len(m))
	for n, v := range m {
		out[n] = v.Sum
	}
	return out, nil
}

// Samples are a metric's samples over its label sets: their sum and how many there were.
type Samples struct {
	Sum float64
	N   int
}

// Mean is the samples' mean.
func (s Samples) Mean() float64 { return s.Sum / float64(max(s.N, 1)) }

// ReadMetrics is SumMetrics with the number of samples of each name, for a ratio that an engine
// reports once per label set (vLLM's KV cache usage, one series per data-parallel engine): its
// mean, not its sum.
func ReadMetrics(r io.Reader, names ...string) (map[string]Samples, error) {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := map[string]Samples{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ \t"); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if !want[name] {
			continue
		}
		if strings.HasPrefix(rest, "{") {
			// Label values may hold '}' inside quotes: find the closing brace outside quotes.
			end, inq, esc := -1, false, false
			for i := 1; i < len(rest) && end < 0; i++ {
				switch c := rest[i]; {
				case esc:
					esc = false
				case c == '\\' && inq:
					esc = true
				case c == '"':
					inq = !inq
				case c == '}' && !inq:
					end = i
				}
			}
			if end < 0 {
				continue
			}
			rest = rest[end+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		sm := out[name]
		sm.Sum += v
		sm.N++
		out[name] = sm
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return out, nil
}

// LoadFromMetrics builds a Load from ReadMetrics' result and the names of the running, waiting
// and KV usage series; a missing series is -1. Requests add up over an engine's label sets;
// the KV usage, a ratio per engine, is their mean.
func LoadFromMetrics(m map[string]Samples, running, waiting, kvUsage string) Load {
	l := Load{Running: -1, Waiting: -1, KVUsage: -1}
	if v, ok := m[running]; ok {
		l.Running = int(v.Sum)
	}
	if v, ok := m[waiting]; ok {
		l.Waiting = int(v.Sum)
	}
	if v, ok := m[kvUsage]; ok {
		l.KVUsage = v.Mean()
	}
	return l
}
