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
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
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
		out[name] += v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return out, nil
}

// LoadFromMetrics builds a Load from SumMetrics' result and the names of the running, waiting
// and KV usage series; a missing series is -1.
func LoadFromMetrics(m map[string]float64, running, waiting, kvUsage string) Load {
	l := Load{Running: -1, Waiting: -1, KVUsage: -1}
	if v, ok := m[running]; ok {
		l.Running = int(v)
	}
	if v, ok := m[waiting]; ok {
		l.Waiting = int(v)
	}
	if v, ok := m[kvUsage]; ok {
		l.KVUsage = v
	}
	return l
}
