package metrics

// The Grafana dashboard (deploy/grafana/orchestratord.json) is checked against the exposition:
// every PromQL expression in it (panel targets and template variables) names only metric
// families the daemon exposes (the table, as exposition.golden records it, with _bucket, _sum
// and _count for histograms), and every label a selector matches on exists on that family.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

const dashboardPath = "../../deploy/grafana/orchestratord.json"

// exposed returns the series names /metrics shows with the label names each carries.
func exposed(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "exposition.golden"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(f)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for name, mf := range mfs {
		var labels []string
		if len(mf.GetMetric()) > 0 {
			for _, lp := range mf.GetMetric()[0].GetLabel() {
				labels = append(labels, lp.GetName())
			}
		}
		if mf.GetType().String() == "HISTOGRAM" {
			out[name+"_bucket"] = append(slices.Clone(labels), "le")
			out[name+"_sum"], out[name+"_count"] = labels, labels
			continue
		}
		out[name] = labels
	}
	return out
}

// selector is one metric name in an expression and the label names its braces match on.
type selector struct {
	name   string
	labels []string
}

var (
	promStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promMatcher  = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)`)
	promNumber   = regexp.MustCompile(`^(?:\d|\.\d)`)
	// Operators and modifiers that read like identifiers.
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"inf": true, "nan": true, "Inf": true, "NaN": true}
)

// selectors extracts the metric selectors of a PromQL expression: it drops string literals,
// range and subquery brackets and grouping clauses, then takes each identifier that is not a
// function call or keyword as a metric name, with the label names in the braces after it.
// A Grafana template variable ($pool, $__rate_interval) only appears in strings and ranges.
func selectors(expr string) []selector {
	s := promStrings.ReplaceAllString(expr, `""`)
	s = promRanges.ReplaceAllString(s, "")
	s = promGrouping.ReplaceAllString(s, "")
	var out []selector
	for i := 0; i < len(s); {
		loc := promIdent.FindStringIndex(s[i:])
		if loc == nil {
			break
		}
		start, end := i+loc[0], i+loc[1]
		word := s[start:end]
		i = end
		if start > 0 && (s[start-1] >= '0' && s[start-1] <= '9' || s[start-1] == '.') {
			continue // the exponent or unit of a number: 1e3, 5m
		}
		rest := strings.TrimLeft(s[end:], " \t\n")
		if strings.HasPrefix(rest, "(") || promKeywords[word] || promNumber.MatchString(word) {
			continue // a function or aggregation call, or a keyword
		}
		sel := selector{name: word}
		if strings.HasPrefix(rest, "{") {
			open := len(s) - len(rest)
			closeAt := strings.IndexByte(s[open:], '}')
			if closeAt < 0 {
				closeAt = len(s) - open - 1
			}
			for _, m := range promMatcher.FindAllStringSubmatch(s[open+1:open+closeAt], -1) {
				sel.labels = append(sel.labels, m[1])
			}
			i = open + closeAt + 1
		}
		out = append(out, sel)
	}
	return out
}

func TestSelectors(t *testing.T) {
	tests := []struct {
		expr string
		want string
	}{
		{`queue_depth`, `queue_depth[]`},
		{`sum by (pool_id, priority) (queue_depth{pool_id=~"$pool"})`, `queue_depth[pool_id]`},
		{`histogram_quantile(0.95, sum by (le, pool_id) (rate(latency_first_token_ms_bucket{pool_id=~"$pool", engine!="x"}[$__rate_interval])))`,
			`latency_first_token_ms_bucket[pool_id engine]`},
		{`sum(rate(a_total[5m])) / sum(rate(b_total{x="a b {c}"}[1h:1m])) * 1e3 > bool 2`, `a_total[] b_total[x]`},
		{`a and on (pool_id) b offset 5m`, `a[] b[]`},
		{`label_values(pool_ready, pool_id)`, `pool_ready[] pool_id[]`},
	}
	for _, tt := range tests {
		var got []string
		for _, s := range selectors(tt.expr) {
			got = append(got, s.name+"["+strings.Join(s.labels, " ")+"]")
		}
		if strings.Join(got, " ") != tt.want {
			t.Errorf("selectors(%q) = %q, want %q", tt.expr, strings.Join(got, " "), tt.want)
		}
	}
}

// dashboardQueries returns every PromQL expression of the dashboard: panel targets' expr
// (rows' nested panels included) and query variables' query, keyed by where they are.
func dashboardQueries(t *testing.T, raw []byte) map[string]string {
	t.Helper()
	type target struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	}
	type panel struct {
		Title   string   `json:"title"`
		Type    string   `json:"type"`
		Targets []target `json:"targets"`
		Panels  []panel  `json:"panels"`
	}
	var d struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	out := map[string]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				if tg.Expr == "" {
					t.Errorf("panel %q target %s has no expr", p.Title, tg.RefID)
				}
				out["panel "+p.Title+" "+tg.RefID] = tg.Expr
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil { // older dashboards: a plain string
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Fatalf("variable %s: query %s", v.Name, v.Query)
			}
		}
		// label_values(metric, label): the second argument is a label, not a series.
		expr := q.Query
		if m := regexp.MustCompile(`^label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)$`).FindStringSubmatch(expr); m != nil {
			expr = m[1]
		}
		out["variable "+v.Name] = expr
	}
	return out
}

func TestDashboardNamesExposedMetrics(t *testing.T) {
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	series := exposed(t)
	queries := dashboardQueries(t, raw)
	if len(queries) < 10 {
		t.Fatalf("only %d queries in %s", len(queries), dashboardPath)
	}
	used := map[string]bool{}
	keys := make([]string, 0, len(queries))
	for k := range queries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, where := range keys {
		expr := queries[where]
		sels := selectors(expr)
		if len(sels) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, s := range sels {
			labels, ok := series[s.name]
			if !ok {
				t.Errorf("%s: %q names %s, which /metrics does not expose", where, expr, s.name)
				continue
			}
			used[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(s.name, "_bucket"), "_sum"), "_count")] = true
			for _, l := range s.labels {
				if !slices.Contains(labels, l) {
					t.Errorf("%s: %s has no label %q (it has %v)", where, s.name, l, labels)
				}
			}
		}
	}
	// The dashboard covers what the issue asks for.
	for _, must := range []string{"queue_depth", "queue_wait_ms", "tasks_enqueued_total", "tasks_rejected_total",
		"tokens_out_total", "latency_first_token_ms", "latency_decode_ms", "pool_ready", "kv_cache_usage_ratio",
		"engine_errors_total", "daemon_overhead_seconds"} {
		if !used[must] {
			t.Errorf("the dashboard has no panel on %s", must)
		}
	}
}
