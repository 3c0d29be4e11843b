package main

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/orchestratord/orchestratord/impl/config"
)

func TestOrderRotatesAndReverses(t *testing.T) {
	names := []string{"a", "b", "c", "d"}
	want := [][]string{
		{"a", "b", "c", "d"},
		{"a", "d", "c", "b"}, // rotated by 1 (b c d a), reversed
		{"c", "d", "a", "b"},
		{"c", "b", "a", "d"},
	}
	for r, w := range want {
		if got := order(names, r); !slices.Equal(got, w) {
			t.Errorf("round %d: %v, want %v", r, got, w)
		}
	}
	// Over rounds 0..n-1 every contender runs first and last at least once.
	firsts, lasts := map[string]bool{}, map[string]bool{}
	for r := range len(names) {
		o := order(names, r)
		firsts[o[0]], lasts[o[len(o)-1]] = true, true
	}
	if len(firsts) < 2 || len(lasts) < 2 {
		t.Errorf("order does not vary: firsts %v lasts %v", firsts, lasts)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median(nil) is not NaN")
	}
}

func TestParseQueueBench(t *testing.T) {
	out := []byte(`goos: linux
BenchmarkEnqueue/depth=10-2         	   70890	      1861 ns/op	       0 B/op	       0 allocs/op
BenchmarkEnqueue/depth=10-2         	   70890	      1901 ns/op	       0 B/op	       0 allocs/op
BenchmarkEnqueue/depth=10-2         	   70890	      1700 ns/op	       8 B/op	       1 allocs/op
BenchmarkDispatch/depth=100000-2    	   26674	      7051 ns/op	      24 B/op	       0 allocs/op
BenchmarkEnqueueDispatch/depth=1000-2         	   20000	       437.8 ns/op	       0 B/op	       0 allocs/op
BenchmarkEnqueueDispatch/tenants=1000/depth=1000-2       	   20000	      1110 ns/op	       0 B/op	       0 allocs/op
BenchmarkEnqueueDispatch/tenants=1000/depth=1000-2       	   20000	      1050 ns/op	       0 B/op	       0 allocs/op
BenchmarkEnqueueDispatch/tenants=1000/depth=1000-2       	   20000	      1027 ns/op	       0 B/op	       0 allocs/op
PASS
`)
	got := parseQueueBench(out)
	if len(got) != 4 {
		t.Fatalf("got %d records: %+v", len(got), got)
	}
	if q := got[0]; q.Op != "Enqueue" || q.Depth != 10 || q.NsPerOp != 1861 || q.BytesPerOp != 0 || len(q.Samples) != 3 {
		t.Errorf("enqueue: %+v", q)
	}
	if q := got[1]; q.Op != "Dispatch" || q.Depth != 100000 || q.Tenants != 0 || q.NsPerOp != 7051 || q.BytesPerOp != 24 {
		t.Errorf("dispatch: %+v", q)
	}
	// The tenants=N level is a dimension of its own: not merged with the one-tenant line.
	if q := got[2]; q.Op != "EnqueueDispatch" || q.Depth != 1000 || q.Tenants != 0 || q.NsPerOp != 437.8 {
		t.Errorf("enqueue+dispatch, one tenant: %+v", q)
	}
	if q := got[3]; q.Op != "EnqueueDispatch" || q.Depth != 1000 || q.Tenants != 1000 || q.NsPerOp != 1050 || len(q.Samples) != 3 {
		t.Errorf("enqueue+dispatch, 1000 tenants: %+v", q)
	}
}

func TestSummarizeRatios(t *testing.T) {
	rep := &report{Runs: []runRecord{
		{Scenario: "admission", Param: 16, Contender: cDirect, Metrics: map[string]float64{"rps": 1000}},
		{Scenario: "admission", Param: 16, Contender: cDirect, Metrics: map[string]float64{"rps": 3000}},
		{Scenario: "admission", Param: 16, Contender: cOrchd, Metrics: map[string]float64{"rps": 500}},
		{Scenario: "admission", Param: 16, Contender: cNginx, Metrics: map[string]float64{"rps": 0}},
	}, Idle: []idleRecord{
		{Streams: 1000, Contender: cNginx, Open: 1000, PerStream: 10 * 1024, BaseRSS: 1 << 20, OpenRSS: 11 << 20},
		{Streams: 1000, Contender: cOrchd, Open: 1000, PerStream: 30 * 1024, BaseRSS: 1 << 20, OpenRSS: 31 << 20},
		{Streams: 1000, Contender: cGoRelay, Open: 1000, PerStream: 60 * 1024, BaseRSS: 1 << 20, OpenRSS: 61 << 20},
		{Streams: 5000, Contender: cOrchd, Err: "boom"},
	}}
	rows := summarize(rep)
	var rps, kib *summaryRow
	for i := range rows {
		switch {
		case rows[i].Scenario == "admission" && rows[i].Metric == "rps":
			rps = &rows[i]
		case rows[i].Scenario == "idle" && rows[i].Metric == "kib_per_stream":
			kib = &rows[i]
		}
	}
	if rps == nil || kib == nil {
		t.Fatalf("missing rows: %+v", rows)
	}
	if rps.Median[cDirect] != 2000 || rps.Ratios[cOrchd+"/"+cDirect] != 0.25 {
		t.Errorf("rps row: %+v", rps)
	}
	if _, ok := rps.Ratios[cOrchd+"/"+cNginx]; ok {
		t.Error("a ratio to a zero median was computed")
	}
	if kib.Ratios[cOrchd+"/"+cNginx] != 3 || kib.Ratios[cOrchd+"/"+cGoRelay] != 0.5 {
		t.Errorf("idle row: %+v", kib)
	}
	for _, r := range rows {
		if r.Scenario == "idle" && r.Param == 5000 {
			t.Errorf("a failed idle measurement was summarized: %+v", r)
		}
	}
	md := markdown(&report{Name: "t", Plan: plan{Name: "short", Rounds: 1}, Summary: rows,
		Unavailable: map[string]string{cLiteLLM: "pip | failed"}})
	for _, want := range []string{"| 16 | throughput (req/s) | 2000 |", "orchd/direct", "**litellm**: pip \\| failed"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

// The generated daemon configuration must stay valid as the config schema evolves.
func TestOrchdConfLoads(t *testing.T) {
	for _, streams := range []int{1, 1000, 5000} {
		dir := t.TempDir()
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(orchdConf(filepath.Join(dir, "state"), 18080, "http://127.0.0.1:18081", "warn", "", streams)), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(config.Overrides{ConfigFile: p, APIKeys: benchKey})
		if err != nil {
			t.Fatalf("streams %d: %v", streams, err)
		}
		slots := 0
		for _, pl := range cfg.Pools {
			slots += pl.Slots
			if pl.ModelRef != simModel || pl.Replicas[0].URL != "http://127.0.0.1:18081" {
				t.Errorf("pool %+v", pl)
			}
		}
		if slots < streams {
			t.Errorf("streams %d: only %d slots", streams, slots)
		}
		if cfg.Admission.Capacity < streams || cfg.Sessions.MaxSessions < streams {
			t.Errorf("streams %d: admission %d, sessions %d", streams, cfg.Admission.Capacity, cfg.Sessions.MaxSessions)
		}
		if cfg.Journal.Sync != config.JournalSyncAdmission || !cfg.Journal.EnabledOrDefault() {
			t.Errorf("streams %d: journal %+v, want the default (enabled, sync admission)", streams, cfg.Journal)
		}
	}
}

// orchestratord-nosync differs from orchestratord in journal.sync alone.
func TestOrchdConfJournalSync(t *testing.T) {
	for _, sync := range []string{config.JournalSyncNone, config.JournalSyncAlways} {
		dir := t.TempDir()
		p := filepath.Join(dir, "c.yaml")
		conf := orchdConf(filepath.Join(dir, "state"), 18080, "http://127.0.0.1:18081", "warn", sync, 100)
		if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(config.Overrides{ConfigFile: p, APIKeys: benchKey})
		if err != nil {
			t.Fatalf("%s: %v", sync, err)
		}
		if cfg.Journal.Sync != sync || !cfg.Journal.EnabledOrDefault() {
			t.Errorf("journal %+v, want enabled with sync %s", cfg.Journal, sync)
		}
		def := orchdConf(filepath.Join(dir, "state"), 18080, "http://127.0.0.1:18081", "warn", "", 100)
		if strings.Replace(conf, "journal: {sync: "+sync+"}\n", "", 1) != def {
			t.Errorf("%s: the configuration differs from the default in more than journal.sync:\n%s", sync, conf)
		}
	}
}

// -journal-sync off turns the journal off, and changes nothing else.
func TestOrchdConfJournalOff(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	conf := orchdConf(filepath.Join(dir, "state"), 18080, "http://127.0.0.1:18081", "warn", "off", 100)
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.Overrides{ConfigFile: p, APIKeys: benchKey})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Journal.EnabledOrDefault() {
		t.Errorf("journal %+v, want disabled", cfg.Journal)
	}
	def := orchdConf(filepath.Join(dir, "state"), 18080, "http://127.0.0.1:18081", "warn", "", 100)
	if strings.Replace(conf, "journal: {enabled: false}\n", "", 1) != def {
		t.Errorf("the configuration differs from the default in more than the journal:\n%s", conf)
	}
}

func TestNginxConfDisablesBuffering(t *testing.T) {
	c := nginxConf("/p", 1000, 2000)
	for _, want := range []string{"proxy_buffering off;", "proxy_request_buffering off;", "listen 127.0.0.1:1000", "server 127.0.0.1:2000;", "access_log off;"} {
		if !strings.Contains(c, want) {
			t.Errorf("nginx conf lacks %q", want)
		}
	}
}

func TestLoadArgs(t *testing.T) {
	for _, c := range []struct {
		name, scenario, want string
	}{
		{cDirect, "admission", "-target llamacpp-stream -url U -stream=false"},
		{cNginx, "relay", "-target llamacpp-stream -url U"},
		{cGoRelay, "admission", "-target llamacpp-stream -url U -stream=false"},
		{cOrchd, "admission", "-target orchd-admit -url U -api-key " + benchKey + " -model sim"},
		{cOrchdInfo, "relay", "-target orchd-stream -url U -api-key " + benchKey + " -model sim"},
		{cOrchdNoSync, "admission", "-target orchd-admit -url U -api-key " + benchKey + " -model sim"},
		{cLiteLLM, "admission", "-target openai-stream -url U -api-key " + benchKey + " -model sim -stream=false"},
	} {
		if got := strings.Join(loadArgs(&contender{name: c.name, url: "U"}, c.scenario), " "); got != c.want {
			t.Errorf("%s/%s: %q, want %q", c.name, c.scenario, got, c.want)
		}
	}
}

func TestNum(t *testing.T) {
	for v, want := range map[float64]string{12345.6: "12346", 123.4: "123", 12.34: "12.3", 1.234: "1.23", 0.1234: "0.123"} {
		if got := num(v); got != want {
			t.Errorf("num(%v) = %q, want %q", v, got, want)
		}
	}
	if num(math.NaN()) != "—" {
		t.Error("NaN")
	}
}

// TestStartTrace: the profile's execution trace is a Go trace file once stopped; a second
// trace cannot start while one runs, and a path that cannot be created is an error.
func TestStartTrace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.out")
	stop, err := startTrace(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := startTrace(filepath.Join(t.TempDir(), "second.out")); err == nil {
		t.Error("a second trace started while one runs")
	}
	done := make(chan struct{})
	go func() { close(done) }()
	<-done
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "go 1.") {
		t.Fatalf("trace file starts %q, want a Go execution trace header", b[:min(len(b), 16)])
	}
	if _, err := startTrace(filepath.Join(t.TempDir(), "missing", "trace.out")); err == nil {
		t.Fatal("a trace into a missing directory started")
	}
}
