package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// reportSchema is report.Schema; it changes when a field changes meaning or is removed.
const reportSchema = 1

// report is the JSON result of one invocation.
type report struct {
	Schema    int       `json:"schema"`
	Name      string    `json:"name"`
	Command   string    `json:"command"`
	StartedAt time.Time `json:"started_at"`
	WallS     float64   `json:"wall_s"`
	Machine   machine   `json:"machine"`
	Plan      plan      `json:"plan"`
	// Contenders lists every contender asked for; Unavailable says why one did not run.
	Contenders  []string          `json:"contenders"`
	Unavailable map[string]string `json:"unavailable,omitempty"`
	Versions    map[string]string `json:"versions"`
	Notes       []string          `json:"notes"`
	// Restarts lists relays that died between runs (killed from outside) and were restarted.
	Restarts []string `json:"restarts,omitempty"`

	Runs         []runRecord   `json:"runs"`
	Idle         []idleRecord  `json:"idle"`
	Queue        []queueRecord `json:"queue"`
	QueueCommand string        `json:"queue_command,omitempty"`
	QueueError   string        `json:"queue_error,omitempty"`
	Summary      []summaryRow  `json:"summary"`
	// Aiperf is scenario 5: the independent aiperf client against the OpenAI-compatible routes.
	Aiperf []aiperfRecord `json:"aiperf,omitempty"`
}

// machine describes where the run happened.
type machine struct {
	CPU        string  `json:"cpu"`
	Cores      int     `json:"cores"`
	MemoryGiB  float64 `json:"memory_gib"`
	Kernel     string  `json:"kernel"`
	OS         string  `json:"os"`
	LoadBefore string  `json:"loadavg_before"`
	LoadAfter  string  `json:"loadavg_after"`
	NoFile     string  `json:"nofile_limit"`
}

func readMachine() machine {
	m := machine{Cores: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
				m.MemoryGiB = math.Round(kb/(1<<20)*10) / 10
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	m.LoadBefore = loadavg()
	if out, err := exec.Command("bash", "-c", "ulimit -n").Output(); err == nil {
		m.NoFile = strings.TrimSpace(string(out))
	}
	return m
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return ""
}

// runAll runs the selected scenarios and writes the report.
func (b *bench) runAll(ctx context.Context) error {
	start := time.Now()
	rep := &report{Schema: reportSchema, Name: b.name, Command: b.command, StartedAt: start.UTC(), Machine: readMachine(),
		Plan: b.plan, Contenders: b.wanted}
	var errs []string
	if b.scenarios["queue"] {
		if err := b.runQueue(ctx, rep); err != nil {
			rep.QueueError = err.Error()
			errs = append(errs, err.Error())
		}
	}
	if b.scenarios["admission"] || b.scenarios["relay"] {
		if err := b.runLoadPhase(ctx, rep); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if b.scenarios["idle"] && ctx.Err() == nil {
		b.runIdle(ctx, rep)
	}
	if b.scenarios["aiperf"] && ctx.Err() == nil {
		b.runAiperf(ctx, rep)
	}
	rep.WallS = time.Since(start).Seconds()
	rep.Machine.LoadAfter = loadavg()
	rep.Unavailable = b.unavailable
	rep.Versions = b.versions
	rep.Notes = b.notes()
	rep.Restarts = b.restarts
	rep.Summary = summarize(rep)
	if err := b.write(rep); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func (b *bench) notes() []string {
	p := b.plan
	return []string{
		"Admission: orchestratord's POST /v1/tasks only admits (auth, schema validation, placement, queue) and answers 202; " +
			"the task then runs against the simulator in the background, on the same cores. direct, nginx and LiteLLM have no " +
			"admission step, so their comparable request is a whole 1-token non-stream completion (loadgen -stream=false).",
		fmt.Sprintf("Relay: the simulator emits a token every %v (first token at once); each stream asks %d tokens. "+
			"direct and nginx speak llama.cpp's /completion, orchestratord is POST /v1/tasks then GET its SSE stream, "+
			"LiteLLM is OpenAI /v1/completions routed to the simulator's /v1/completions. Added per-token latency is "+
			"client receive time minus the simulator's emission stamp carried in each token's text.", p.RelayTokenDelay, p.RelayTokens),
		fmt.Sprintf("Idle: streams whose tokens come every %v; RSS is VmRSS summed over the relay's process group "+
			"(nginx: master and workers), sampled after every stream reached the simulator; direct is the simulator's own growth.",
			p.IdleTokenDelay),
		"CPU columns are user+system time of the relay's process group during the run (/proc/PID/stat), per successful request or per 1,000 tokens received.",
		"Ratios are orchestratord ÷ the other contender, of medians over the rounds: above 1 means orchestratord's number is larger " +
			"(better for throughput, worse for latency, CPU and memory).",
		fmt.Sprintf("aiperf: %d streaming chat completions of %d tokens at concurrency %d, synthetic prompts of about 32 tokens "+
			"built with the tokenizer generated for the project's models, token counts from the servers' usage; direct is the "+
			"simulator's /v1/chat/completions, orchestratord its OpenAI-compatible facade (each request a task) in front of the "+
			"same simulator.", p.AiperfRequests, p.AiperfTokens, p.AiperfConcurrency),
		fmt.Sprintf("LiteLLM runs with %d worker process(es); orchestratord runs with log_level warn unless noted "+
			"(orchestratord-info: log_level info, text to a file; orchestratord-nosync: journal.sync none, a 202 "+
			"waits for the admission record's write but not its fdatasync).", b.litellmWorkers),
	}
}

// metricDef describes one summarized metric.
type metricDef struct {
	Key, Label   string
	HigherBetter bool
}

var metricDefs = map[string][]metricDef{
	"admission": {
		{"rps", "throughput (req/s)", true},
		{"p50_ms", "latency p50 (ms)", false},
		{"p99_ms", "latency p99 (ms)", false},
		{"cpu_us_per_req", "relay CPU (µs/request)", false},
	},
	"relay": {
		{"tokens_per_s", "aggregate tokens/s", true},
		{"added_p50_ms", "added per-token latency p50 (ms)", false},
		{"added_p99_ms", "added per-token latency p99 (ms)", false},
		{"ttft_p50_ms", "time to first token p50 (ms)", false},
		{"cpu_ms_per_1k_tokens", "relay CPU (ms per 1k tokens)", false},
		{"completed_pct", "streams completed (%)", true},
	},
	"idle": {
		{"kib_per_stream", "RSS per open stream (KiB)", false},
		{"base_rss_mib", "RSS before (MiB)", false},
		{"open_rss_mib", "RSS with the streams open (MiB)", false},
		{"open", "streams open at the sample", true},
	},
}

// summaryRow is the median of one metric for every contender, and orchestratord's ratios.
type summaryRow struct {
	Scenario string               `json:"scenario"`
	Param    int                  `json:"param"`
	Metric   string               `json:"metric"`
	Label    string               `json:"label"`
	Median   map[string]float64   `json:"median"`
	Samples  map[string][]float64 `json:"samples"`
	// Ratios: "orchestratord/direct" etc.
	Ratios map[string]float64 `json:"ratios,omitempty"`
}

// summarize computes medians and ratios from the runs.
func summarize(rep *report) []summaryRow {
	type key struct {
		scenario string
		param    int
		metric   string
	}
	samples := map[key]map[string][]float64{}
	add := func(k key, c string, v float64) {
		if samples[k] == nil {
			samples[k] = map[string][]float64{}
		}
		samples[k][c] = append(samples[k][c], v)
	}
	for _, r := range rep.Runs {
		for m, v := range r.Metrics {
			add(key{r.Scenario, r.Param, m}, r.Contender, v)
		}
	}
	for _, r := range rep.Idle {
		if r.Err != "" {
			continue
		}
		k := func(m string) key { return key{"idle", r.Streams, m} }
		add(k("kib_per_stream"), r.Contender, r.PerStream/1024)
		add(k("base_rss_mib"), r.Contender, float64(r.BaseRSS)/(1<<20))
		add(k("open_rss_mib"), r.Contender, float64(r.OpenRSS)/(1<<20))
		add(k("open"), r.Contender, float64(r.Open))
	}
	var rows []summaryRow
	for _, scenario := range []string{"admission", "relay", "idle"} {
		var params []int
		for k := range samples {
			if k.scenario == scenario && !slices.Contains(params, k.param) {
				params = append(params, k.param)
			}
		}
		sort.Ints(params)
		for _, p := range params {
			for _, md := range metricDefs[scenario] {
				s := samples[key{scenario, p, md.Key}]
				if len(s) == 0 {
					continue
				}
				row := summaryRow{Scenario: scenario, Param: p, Metric: md.Key, Label: md.Label,
					Median: map[string]float64{}, Samples: s, Ratios: map[string]float64{}}
				for c, vs := range s {
					row.Median[c] = median(vs)
				}
				if o, ok := row.Median[cOrchd]; ok {
					for c, v := range row.Median {
						if c != cOrchd && v != 0 {
							row.Ratios[cOrchd+"/"+c] = o / v
						}
					}
				}
				rows = append(rows, row)
			}
		}
	}
	return rows
}

// median of vs (the mean of the middle two for an even count); NaN for none.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// write stores <out>/<name>.json and <out>/<name>.md.
func (b *bench) write(rep *report) error {
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	jp := filepath.Join(b.out, b.name+".json")
	if err := os.WriteFile(jp, append(js, '\n'), 0o644); err != nil {
		return err
	}
	mp := filepath.Join(b.out, b.name+".md")
	if err := os.WriteFile(mp, []byte(markdown(rep)), 0o644); err != nil {
		return err
	}
	b.log.Info("results written", "json", jp, "markdown", mp, "wall_s", round1(rep.WallS))
	return nil
}

// columns are the contenders in display order, and the ratio columns.
var (
	displayOrder = []string{cDirect, cNginx, cGoRelay, cOrchd, cLiteLLM, cOrchdInfo, cOrchdBase, cOrchdNoSync}
	ratioCols    = []string{cDirect, cNginx, cGoRelay, cLiteLLM, cOrchdInfo, cOrchdBase, cOrchdNoSync}
)

// markdown renders the report's tables.
func markdown(rep *report) string {
	var sb strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&sb, format, a...) }
	w("# Benchmark results: %s\n\n", rep.Name)
	w("Generated by `tools/bench` on %s, %.0f s wall. Command: `%s`.\n\n", rep.StartedAt.Format(time.RFC3339), rep.WallS, rep.Command)
	m := rep.Machine
	w("Machine: %s, %d cores, %.1f GiB, %s, kernel %s; load average %s before, %s after; open files limit %s.\n\n",
		m.CPU, m.Cores, m.MemoryGiB, m.OS, m.Kernel, m.LoadBefore, m.LoadAfter, m.NoFile)
	var vs []string
	for _, k := range sortedKeys(rep.Versions) {
		vs = append(vs, k+" "+rep.Versions[k])
	}
	w("Versions: %s. Plan %q: %d round(s), contenders interleaved (rotated, reversed on odd rounds); every number is the median over the rounds.\n\n",
		strings.Join(vs, ", "), rep.Plan.Name, rep.Plan.Rounds)
	if len(rep.Unavailable) > 0 {
		w("Contenders that did not run:\n\n")
		for _, k := range sortedKeys(rep.Unavailable) {
			w("- **%s**: %s\n", k, oneLine(rep.Unavailable[k]))
		}
		w("\n")
	}
	if len(rep.Restarts) > 0 {
		w("Relays restarted between runs:\n\n")
		for _, r := range rep.Restarts {
			w("- %s\n", strings.ReplaceAll(r, "|", "\\|"))
		}
		w("\n")
	}
	present := map[string]bool{}
	for _, r := range rep.Summary {
		for c := range r.Median {
			present[c] = true
		}
	}
	var cols, rcols []string
	for _, c := range displayOrder {
		if present[c] {
			cols = append(cols, c)
		}
	}
	for _, c := range ratioCols {
		if present[c] && present[cOrchd] {
			rcols = append(rcols, c)
		}
	}
	titles := map[string]string{
		"admission": "1. Admission: 1-token requests, closed loop (param: concurrency)",
		"relay":     fmt.Sprintf("2. Stream relay: %d-token streams (param: concurrent streams)", rep.Plan.RelayTokens),
		"idle":      "3. Idle streams: resident memory (param: concurrent slow streams)",
	}
	for _, scenario := range []string{"admission", "relay", "idle"} {
		var rows []summaryRow
		for _, r := range rep.Summary {
			if r.Scenario == scenario {
				rows = append(rows, r)
			}
		}
		if len(rows) == 0 {
			continue
		}
		w("## %s\n\n", titles[scenario])
		w("| param | metric |")
		for _, c := range cols {
			w(" %s |", c)
		}
		for _, c := range rcols {
			w(" orchd/%s |", short(c))
		}
		w("\n|---|---|")
		for range len(cols) + len(rcols) {
			w("---:|")
		}
		w("\n")
		for _, r := range rows {
			w("| %d | %s |", r.Param, r.Label)
			for _, c := range cols {
				if v, ok := r.Median[c]; ok {
					w(" %s |", num(v))
				} else {
					w(" — |")
				}
			}
			for _, c := range rcols {
				if v, ok := r.Ratios[cOrchd+"/"+c]; ok {
					w(" %.2f |", v)
				} else {
					w(" — |")
				}
			}
			w("\n")
		}
		w("\n")
		if errs := runErrors(rep, scenario); errs != "" {
			w("Errors (all rounds): %s\n\n", errs)
		}
	}
	if len(rep.Queue) > 0 {
		w("## 4. Queue: `%s` (median of %d)\n\n", rep.QueueCommand, rep.Plan.QueueCount)
		w("| op | tenants | depth | ns/op | B/op | allocs/op |\n|---|---:|---:|---:|---:|---:|\n")
		for _, q := range rep.Queue {
			w("| %s | %d | %d | %s | %s | %s |\n", q.Op, max(q.Tenants, 1), q.Depth, num(q.NsPerOp), num(q.BytesPerOp), num(q.AllocsPerOp))
		}
		w("\n")
	} else if rep.QueueError != "" {
		w("## 4. Queue\n\nFailed: %s\n\n", oneLine(rep.QueueError))
	}
	if len(rep.Aiperf) > 0 {
		w("## 5. aiperf: an independent client on the OpenAI-compatible routes\n\n")
		w("| contender | endpoint | concurrency | completed / requests | errors | req/s | output tok/s | TTFT p50 ms | ITL p50 ms | latency p50 ms |\n")
		w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, a := range rep.Aiperf {
			if a.Err != "" {
				w("| %s | %s | %d | failed: %s | | | | | | |\n", a.Contender, a.Endpoint, a.Concurrency, oneLine(a.Err))
				continue
			}
			w("| %s | %s | %d | %d / %d | %d | %s | %s | %s | %s | %s |\n", a.Contender, a.Endpoint, a.Concurrency,
				a.Completed, a.Requests, a.Errors, num(a.RequestsPerS), num(a.OutputTokensPerS), num(a.TTFTP50Ms),
				num(a.ITLP50Ms), num(a.LatencyP50Ms))
		}
		w("\n")
	} else if r, ok := rep.Unavailable["aiperf"]; ok {
		w("## 5. aiperf\n\nNot run: %s\n\n", oneLine(r))
	}
	w("## Notes\n\n")
	for _, n := range rep.Notes {
		w("- %s\n", n)
	}
	return sb.String()
}

// runErrors lists the error classes of a scenario's runs, by contender and param.
func runErrors(rep *report, scenario string) string {
	var parts []string
	for _, r := range rep.Runs {
		if r.Scenario != scenario || (len(r.Errors) == 0 && r.Err == "") {
			continue
		}
		var es []string
		for _, k := range sortedKeys(r.Errors) {
			es = append(es, fmt.Sprintf("%s=%d", k, r.Errors[k]))
		}
		if r.Err != "" {
			es = append(es, "run failed: "+oneLine(r.Err))
		}
		parts = append(parts, fmt.Sprintf("%s@%d r%d: %s of %d", r.Contender, r.Param, r.Round+1, strings.Join(es, " "), r.Requests))
	}
	if scenario == "idle" {
		for _, r := range rep.Idle {
			if r.Err != "" {
				parts = append(parts, fmt.Sprintf("%s@%d r%d: %s", r.Contender, r.Streams, r.Round+1, oneLine(r.Err)))
			}
		}
	}
	return strings.Join(parts, "; ")
}

func short(c string) string {
	switch c {
	case cOrchdInfo:
		return "orchd-info"
	case cOrchdBase:
		return "base"
	case cOrchdNoSync:
		return "nosync"
	case cLiteLLM:
		return "LiteLLM"
	}
	return c
}

// num formats a metric with about 3 significant digits.
func num(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "—"
	case a >= 1000:
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return strings.ReplaceAll(s, "|", "\\|")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
