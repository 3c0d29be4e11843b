package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func load(t *testing.T, yaml string, ov Overrides) (*Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	ov.ConfigFile = p
	return Load(ov)
}

const minimal = `
pools:
  - id: p1
    engine: llamacpp
    model_ref: /models/m.gguf
    ctx_max: 2048
    slots: 1
    replicas: [{url: "http://127.0.0.1:9"}]
`

func TestDefaultConfig(t *testing.T) {
	c, err := Load(Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	p := c.Pools[0]
	if c.Addr != "127.0.0.1:8080" || p.ID != "default" || p.ModelID != "tiny" || p.CtxMax != 4096 || p.Slots != 2 {
		t.Fatalf("default config = %+v / %+v", c, p)
	}
	if p.Replicas[0].Managed == nil || strings.Join(p.Replicas[0].Managed.Args, " ") != "-t 1 -tb 1" {
		t.Fatalf("default replica = %+v", p.Replicas[0])
	}
	if m := p.Replicas[0].Managed; m.StartTimeout.D() != time.Minute || m.RestartUnhealthyAfter.D() != time.Minute || m.LogMaxBytes != 64<<20 {
		t.Fatalf("managed defaults: start_timeout %v, restart_unhealthy_after %v, log_max_bytes %d; want 1m, 1m, 64 MiB",
			m.StartTimeout.D(), m.RestartUnhealthyAfter.D(), m.LogMaxBytes)
	}
	if c.Admission.Policy != "reject" || c.Sessions.TTL.D() != 10*time.Minute || c.Sessions.MaxTurns != 8 {
		t.Fatalf("defaults = %+v", c)
	}
	if s := c.Server; s.MaxConnections != 0 || s.ReadHeaderTimeout.D() != 10*time.Second || s.IdleTimeout.D() != 2*time.Minute ||
		s.BodyReadTimeout.D() != 10*time.Second || s.BodyMinBytesPerSecond != 32<<10 || c.Stream.WriteTimeout.D() != 30*time.Second {
		t.Fatalf("server defaults = %+v, stream = %+v", s, c.Stream)
	}
	if j := c.Journal; !j.EnabledOrDefault() || j.Dir != filepath.Join(".orchestratord", "journal") || j.Sync != "admission" || j.FsyncInterval != 0 {
		t.Fatalf("journal defaults = %+v", j)
	}
	if c.ReloadGrace.D() != 5*time.Minute || c.ShutdownGrace.D() != 30*time.Second {
		t.Fatalf("reload_grace %v, shutdown_grace %v; want 5m and 30s", c.ReloadGrace.D(), c.ShutdownGrace.D())
	}
	// A file that names no reload_grace gets the same default.
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := Load(Overrides{ConfigFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if m.ReloadGrace.D() != 5*time.Minute {
		t.Fatalf("reload_grace of a file without it: %v, want 5m", m.ReloadGrace.D())
	}
}

func TestJournalConfig(t *testing.T) {
	deprecated := []string{"journal.fsync_interval is deprecated and ignored"}
	tests := []struct {
		yaml     string
		enabled  bool
		dir      string
		sync     string
		warnings []string
		unsynced time.Duration // journal.max_unsynced (default 100ms)
		bytes    int64         // journal.max_unsynced_bytes (default 1 MiB)
	}{
		{"journal: {enabled: false}\n", false, "/s/journal", "admission", nil, 0, 0},
		{"journal: {dir: wal}\n", true, "/s/wal", "admission", nil, 0, 0},
		{"journal: {dir: /var/lib/orchd-journal}\n", true, "/var/lib/orchd-journal", "admission", nil, 0, 0},
		{"", true, "/s/journal", "admission", nil, 0, 0},
		{"journal: {sync: always}\n", true, "/s/journal", "always", nil, 0, 0},
		{"journal: {sync: none}\n", true, "/s/journal", "none", nil, 0, 0},
		{"journal: {max_unsynced: 1s, max_unsynced_bytes: 4096}\n", true, "/s/journal", "admission", nil, time.Second, 4096},
		// Configurations written for the interval timer still load, with a warning.
		{"journal: {fsync_interval: 2ms}\n", true, "/s/journal", "admission", deprecated, 0, 0},
		{"journal: {fsync_interval: 5s, sync: always}\n", true, "/s/journal", "always", deprecated, 0, 0},
	}
	for _, tt := range tests {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte(tt.yaml+minimal), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(Overrides{ConfigFile: p, StateDir: "/s"})
		if err != nil {
			t.Fatal(err)
		}
		if tt.unsynced == 0 {
			tt.unsynced, tt.bytes = 100*time.Millisecond, 1<<20
		}
		if c.Journal.EnabledOrDefault() != tt.enabled || c.Journal.Dir != tt.dir || c.Journal.Sync != tt.sync ||
			c.Journal.MaxUnsynced.D() != tt.unsynced || c.Journal.MaxUnsyncedBytes != tt.bytes {
			t.Fatalf("%q: journal = %+v", tt.yaml, c.Journal)
		}
		w := c.Warnings()
		if len(w) != len(tt.warnings) {
			t.Fatalf("%q: warnings %q, want %q", tt.yaml, w, tt.warnings)
		}
		for i := range w {
			if !strings.HasPrefix(w[i], tt.warnings[i]) {
				t.Fatalf("%q: warnings %q, want %q", tt.yaml, w, tt.warnings)
			}
		}
	}
	for _, bad := range []string{"journal: {max_unsynced: -1s}\n", "journal: {max_unsynced_bytes: -1}\n"} {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte(bad+minimal), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(Overrides{ConfigFile: p, StateDir: "/s"}); err == nil || !strings.Contains(err.Error(), "journal.max_unsynced") {
			t.Fatalf("%q: %v, want an error naming the key", bad, err)
		}
	}
}

func TestMetricsPublic(t *testing.T) {
	tests := []struct {
		yaml string
		want bool
	}{
		{"", true},
		{"auth: {metrics_public: true}\n", true},
		{"auth: {metrics_public: false}\n", false},
	}
	for _, tt := range tests {
		c, err := load(t, tt.yaml+minimal, Overrides{})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Auth.MetricsPublicOrDefault(); got != tt.want {
			t.Errorf("%q: metrics public %v, want %v", tt.yaml, got, tt.want)
		}
	}
	if c, err := Load(Overrides{}); err != nil || !c.Auth.MetricsPublicOrDefault() {
		t.Fatalf("the default config keeps /metrics public: %v", err)
	}
}

func TestOverridesWin(t *testing.T) {
	env := map[string]string{"ORCHD_ADDR": "127.0.0.1:9999", "ORCHD_STATE_DIR": "/env", "ORCHD_API_KEYS": "aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb"}
	ov := Overrides{StateDir: "/flag"}.Merge(FromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }))
	c, err := Load(ov)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:9999" || c.StateDir != "/flag" || len(c.APIKeys) != 2 {
		t.Fatalf("got addr=%s state=%s keys=%d", c.Addr, c.StateDir, len(c.APIKeys))
	}
}

func TestModelIDDefault(t *testing.T) {
	c, err := load(t, minimal, Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Pools[0].ModelID != "m" {
		t.Fatalf("model_id = %q", c.Pools[0].ModelID)
	}
	// Only a model file's extension goes: an engine's model name keeps its version dots
	// (llama3.2 became llama3, and Qwen2.5-7B and Qwen2.5-32B both Qwen2).
	for ref, want := range map[string]string{"file:/a/b/tiny.gguf": "tiny", "models/x.y.gguf": "x.y", "hf:org/repo": "repo", "plain": "plain",
		"llama3.2": "llama3.2", "Qwen/Qwen2.5-7B-Instruct": "Qwen2.5-7B-Instruct", "hf:meta-llama/Llama-3.1-8B": "Llama-3.1-8B",
		"/models/M.SafeTensors": "M", "llama3.2:latest": "llama3.2:latest",
		// A model directory (vLLM, TGI) written with a trailing slash, or with dot elements, is
		// named by its last element as it resolves, never "", "." or "..".
		"models/Llama-3-8B/": "Llama-3-8B", "models/b.gguf/": "b", "models/x/.": "x", "models/x/..": "models",
		"/": "", "": "", "..": "", "/..": ""} {
		if got := ModelIDFromRef(ref); got != want {
			t.Errorf("ModelIDFromRef(%q) = %q, want %q", ref, got, want)
		}
	}
}

func TestInvalidConfigNamesField(t *testing.T) {
	tests := []struct {
		name, yaml, field string
		ov                Overrides
	}{
		{"unknown field", "bogus: 1\n" + minimal, "bogus", Overrides{}},
		{"bad policy", "admission: {policy: lifo}\n" + minimal, "admission.policy", Overrides{}},
		{"bad capacity", "admission: {capacity: -1}\n" + minimal, "admission.capacity", Overrides{}},
		{"bad duration", "sessions: {ttl: soon}\n" + minimal, "invalid duration", Overrides{}},
		{"no pools", "addr: 127.0.0.1:1\n", "pools", Overrides{}},
		{"non-loopback without key", minimal, "addr", Overrides{Addr: "0.0.0.0:8080"}},
		{"short key", minimal, "api_keys[0]", Overrides{APIKeys: "short"}},
		{"bad log format", minimal, "log_format", Overrides{LogFormat: "xml"}},
		{"bad pool id", strings.Replace(minimal, "id: p1", "id: P!", 1), "pools[0].id", Overrides{}},
		{"unregistered engine", strings.Replace(minimal, "engine: llamacpp", "engine: exllama", 1), "pools[0].engine: must be one of the registered engines (llamacpp, vllm, sglang, openai, tgi, triton)", Overrides{}},
		{"engine_options an engine does not take", strings.Replace(minimal, "slots: 1", "slots: 1\n    engine_options: {model: x}", 1),
			"pools[0].engine_options.model: engine llamacpp takes no engine_options", Overrides{}},
		{"unknown triton option", strings.Replace(strings.Replace(minimal, "engine: llamacpp", "engine: triton", 1), "slots: 1", "slots: 1\n    engine_options: {model: x, output: y}", 1),
			"pools[0].engine_options.output: engine triton takes model, text_input, text_output", Overrides{}},
		{"bad triton metrics_url", strings.Replace(strings.Replace(minimal, "engine: llamacpp", "engine: triton", 1), "slots: 1", "slots: 1\n    engine_options: {metrics_url: \"localhost:8002\"}", 1),
			"pools[0].engine_options.metrics_url: must be an http(s) URL", Overrides{}},
		{"ctx_max", strings.Replace(minimal, "ctx_max: 2048", "ctx_max: 0", 1), "pools[0].ctx_max", Overrides{}},
		{"slots", strings.Replace(minimal, "slots: 1", "slots: 0", 1), "pools[0].slots", Overrides{}},
		{"two replicas with one name", strings.Replace(minimal, `[{url: "http://127.0.0.1:9"}]`, `[{name: a, url: "http://a:1"}, {name: a, url: "http://b:1"}]`, 1), "pools[0].replicas", Overrides{}},
		{"bad replica name", strings.Replace(minimal, `[{url: "http://127.0.0.1:9"}]`, `[{name: "A/B", url: "http://a:1"}]`, 1), "pools[0].replicas[0].name", Overrides{}},
		{"device lists unlike count", strings.Replace(minimal, `[{url: "http://127.0.0.1:9"}]`, `[{managed: {count: 3, devices: [[0], [1]]}}]`, 1), "pools[0].replicas[0].managed.devices", Overrides{}},
		{"negative count", strings.Replace(minimal, `[{url: "http://127.0.0.1:9"}]`, `[{managed: {count: -1}}]`, 1), "pools[0].replicas[0].managed.count", Overrides{}},
		{"tiny restart_unhealthy_after", strings.Replace(minimal, `[{url: "http://127.0.0.1:9"}]`, `[{managed: {restart_unhealthy_after: 10ms}}]`, 1), "pools[0].replicas[0].managed.restart_unhealthy_after: must be at least 1s", Overrides{}},
		{"negative restart_unhealthy_after", strings.Replace(minimal, `[{url: "http://127.0.0.1:9"}]`, `[{managed: {restart_unhealthy_after: -1m}}]`, 1), "pools[0].replicas[0].managed.restart_unhealthy_after: must be at least 1s", Overrides{}},
		{"tiny log_max_bytes", strings.Replace(minimal, `[{url: "http://127.0.0.1:9"}]`, `[{managed: {log_max_bytes: 1000}}]`, 1), "pools[0].replicas[0].managed.log_max_bytes: must be at least 1048576", Overrides{}},
		{"negative nested device", strings.Replace(minimal, `[{url: "http://127.0.0.1:9"}]`, `[{managed: {count: 2, devices: [[0], [1, -1]]}}]`, 1), "pools[0].replicas[0].managed.devices[1][1]", Overrides{}},
		{"bad url", strings.Replace(minimal, "http://127.0.0.1:9", "ftp://x", 1), "pools[0].replicas[0].url", Overrides{}},
		{"managed without port", strings.Replace(minimal, `[{url: "http://127.0.0.1:9"}]`, `[{managed: {command: ["x"]}}]`, 1), "managed.command", Overrides{}},
		{"negative max_connections", "server: {max_connections: -1}\n" + minimal, "server.max_connections", Overrides{}},
		{"negative reload_grace", "reload_grace: -1s\n" + minimal, "reload_grace", Overrides{}},
		{"tiny memory limit", "server: {memory_limit_bytes: 1000}\n" + minimal, "server.memory_limit_bytes", Overrides{}},
		{"gc off without a memory limit", "server: {gc_percent: -1}\n" + minimal, "server.gc_percent", Overrides{}},
		{"bad gc_percent", "server: {gc_percent: -5, memory_limit_bytes: 1073741824}\n" + minimal, "server.gc_percent", Overrides{}},
		{"tiny body_read_timeout", "server: {body_read_timeout: 1ms}\n" + minimal, "server.body_read_timeout", Overrides{}},
		{"negative body rate", "server: {body_min_bytes_per_second: -5}\n" + minimal, "server.body_min_bytes_per_second", Overrides{}},
		{"tiny idle_timeout", "server: {idle_timeout: 1ms}\n" + minimal, "server.idle_timeout", Overrides{}},
		{"negative stream write_timeout", "stream: {write_timeout: -1s}\n" + minimal, "stream.write_timeout", Overrides{}},
		{"workload the engine does not serve", strings.Replace(minimal, "slots: 1", "slots: 1\n    workloads: [chat]", 1), "pools[0].workloads[0]: engine llamacpp serves completion", Overrides{}},
		{"external-only engine managed", strings.NewReplacer("engine: llamacpp", "engine: openai", `[{url: "http://127.0.0.1:9"}]`, `[{managed: {}}]`).Replace(minimal), "pools[0].replicas[0].managed: engine openai is external only", Overrides{}},
		{"hub name with a path", strings.NewReplacer("engine: llamacpp", "engine: vllm", "model_ref: /models/m.gguf", "model_ref: hf:../etc/passwd", `[{url: "http://127.0.0.1:9"}]`, `[{managed: {}}]`).Replace(minimal), "pools[0].model_ref", Overrides{}},
		{"negative device", strings.Replace(minimal, `[{url: "http://127.0.0.1:9"}]`, `[{managed: {devices: [0, -1]}}]`, 1), "pools[0].replicas[0].managed.devices[1]", Overrides{}},
		{"negative breaker faults", strings.Replace(minimal, "slots: 1", "slots: 1\n    breaker: {faults: -2}", 1), "pools[0].breaker.faults: must be from 1 to 1000", Overrides{}},
		{"negative breaker cooldown", strings.Replace(minimal, "slots: 1", "slots: 1\n    breaker: {cooldown: -5s}", 1), "pools[0].breaker.cooldown: must be positive", Overrides{}},
		// Written, 0 is no breaker to a reader, and was taken for the default (3, 10s).
		{"zero breaker faults", strings.Replace(minimal, "slots: 1", "slots: 1\n    breaker: {faults: 0}", 1), "pools[0].breaker.faults: must be from 1 to 1000", Overrides{}},
		{"zero breaker cooldown", strings.Replace(minimal, "slots: 1", "slots: 1\n    breaker: {cooldown: 0s}", 1), "pools[0].breaker.cooldown: must be positive", Overrides{}},
		{"breaker cooldown not a duration", strings.Replace(minimal, "slots: 1", "slots: 1\n    breaker: {cooldown: soon}", 1), `pools[0].breaker.cooldown: invalid duration "soon"`, Overrides{}},
		{"unknown breaker key", strings.Replace(minimal, "slots: 1", "slots: 1\n    breaker: {threshold: 2}", 1), "pools[0].breaker.threshold: unknown field", Overrides{}},
		{"unknown journal sync mode", "journal: {sync: sometimes}\n" + minimal, `journal.sync: must be admission, always or none, got "sometimes"`, Overrides{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.yaml, tt.ov)
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("err = %v, want it to name %q", err, tt.field)
			}
		})
	}
}

// TestRuntimeSettings: the configured memory limit and GC percent are applied unless the
// environment sets GOMEMLIMIT or GOGC (which the runtime applied already); absent, Go's
// defaults stay.
func TestRuntimeSettings(t *testing.T) {
	pct := func(n int) *int { return &n }
	tests := []struct {
		name     string
		server   Server
		env      map[string]string
		limit    int64
		setLimit bool
		gc       int
		setGC    bool
	}{
		{name: "defaults", server: Server{}},
		{name: "configured", server: Server{MemoryLimitBytes: 1 << 30, GCPercent: pct(200)}, limit: 1 << 30, setLimit: true, gc: 200, setGC: true},
		{name: "gc off with a limit", server: Server{MemoryLimitBytes: 1 << 30, GCPercent: pct(-1)}, limit: 1 << 30, setLimit: true, gc: -1, setGC: true},
		{name: "environment wins", server: Server{MemoryLimitBytes: 1 << 30, GCPercent: pct(200)}, env: map[string]string{"GOMEMLIMIT": "2GiB", "GOGC": "50"}},
		{name: "GOGC only", server: Server{MemoryLimitBytes: 1 << 30, GCPercent: pct(200)}, env: map[string]string{"GOGC": "50"}, limit: 1 << 30, setLimit: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			limit, setLimit, gc, setGC := tc.server.RuntimeSettings(env)
			if limit != tc.limit || setLimit != tc.setLimit || gc != tc.gc || setGC != tc.setGC {
				t.Errorf("RuntimeSettings = %d %v %d %v, want %d %v %d %v", limit, setLimit, gc, setGC, tc.limit, tc.setLimit, tc.gc, tc.setGC)
			}
		})
	}
	cfg, err := load(t, "server: {memory_limit_bytes: 536870912, gc_percent: 150}\n"+minimal, Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.MemoryLimitBytes != 512<<20 || cfg.Server.GCPercent == nil || *cfg.Server.GCPercent != 150 {
		t.Errorf("server = %+v", cfg.Server)
	}
}

// TestEnginesFromRegistry: every registered engine is accepted with the workloads its driver
// declares, managed where the driver has a command line.
func TestEnginesFromRegistry(t *testing.T) {
	tests := []struct {
		engine, workloads, replica string
	}{
		{"llamacpp", "[completion]", "{managed: {}}"},
		{"vllm", "[completion, chat]", "{managed: {devices: [0, 1]}}"},
		{"sglang", "[chat]", "{managed: {}}"},
		{"openai", "[completion, chat]", `{url: "http://127.0.0.1:9/"}`},
	}
	for _, tt := range tests {
		t.Run(tt.engine, func(t *testing.T) {
			doc := strings.NewReplacer("engine: llamacpp", "engine: "+tt.engine, "model_ref: /models/m.gguf", "model_ref: models/m.gguf",
				"slots: 1", "slots: 1\n    workloads: "+tt.workloads,
				`[{url: "http://127.0.0.1:9"}]`, "["+tt.replica+"]").Replace(minimal)
			if _, err := load(t, doc, Overrides{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestHubModelRef(t *testing.T) {
	doc := strings.NewReplacer("engine: llamacpp", "engine: vllm", "model_ref: /models/m.gguf", "model_ref: hf:meta-llama/Llama-3.1-8B-Instruct",
		`[{url: "http://127.0.0.1:9"}]`, "[{managed: {}}]").Replace(minimal)
	c, err := load(t, doc, Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if name, ok := HubModel(c.Pools[0].ModelRef); !ok || name != "meta-llama/Llama-3.1-8B-Instruct" || c.Pools[0].ModelID != "Llama-3.1-8B-Instruct" {
		t.Errorf("HubModel = %q, %v; model_id %q", name, ok, c.Pools[0].ModelID)
	}
	for _, ref := range []string{"models/m.gguf", "hf:../x", "hf:a/..", "hf:/etc/passwd", "hf:a/b/c", "hf:a"} {
		if _, ok := HubModel(ref); ok {
			t.Errorf("HubModel(%q) accepted", ref)
		}
	}
}

func TestLlamaServerIsProgramsShorthand(t *testing.T) {
	c, err := load(t, minimal, Overrides{LlamaServer: "/opt/llama-server"})
	if err != nil || c.Programs["llamacpp"] != "/opt/llama-server" {
		t.Fatalf("programs = %v, %v", c.Programs, err)
	}
	c, err = load(t, "programs: {llamacpp: /x}\n"+minimal, Overrides{LlamaServer: "/opt/llama-server"})
	if err != nil || c.Programs["llamacpp"] != "/x" {
		t.Fatalf("programs.llamacpp must win: %v, %v", c.Programs, err)
	}
}

func TestNonLoopbackWithKey(t *testing.T) {
	if _, err := load(t, minimal, Overrides{Addr: "0.0.0.0:8080", APIKeys: "0123456789abcdef"}); err != nil {
		t.Fatal(err)
	}
}

func TestAPIKeysFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(p, []byte("# comment\n0123456789abcdef\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := load(t, minimal, Overrides{APIKeysFile: p})
	if err != nil || len(c.APIKeys) != 1 || c.APIKeys[0] != "0123456789abcdef" {
		t.Fatalf("keys = %v, %v", c, err)
	}
}

// FuzzParse: any document either parses or errors; it never panics, and when it parses and
// validates, validation is stable.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add(DefaultYAML())
	f.Add([]byte("admission: {capacity: 3, policy: drop-lru}\n"))
	f.Add([]byte("pools: [{id: a, replicas: [{managed: {}}]}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		c.APIKeys = nil
		_ = c.complete()
	})
}

// TestReplicaInstances: managed.count expands an entry into replicas with stable ids
// ("<pool>/<n>", or "<name>-<i>" for a named entry), each with its own devices.
func TestReplicaInstances(t *testing.T) {
	y := strings.Replace(minimal, `[{url: "http://127.0.0.1:9"}]`,
		`[{managed: {count: 3, devices: [[0], [1], [2, 3]]}}, {url: "http://10.0.0.2:8080"}, {name: gpu-box, managed: {count: 2, devices: [4]}}]`, 1)
	c, err := Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	got := c.Pools[0].Instances()
	type want struct {
		id      string
		devices []int
		url     string
	}
	wants := []want{{"p1/0", []int{0}, ""}, {"p1/1", []int{1}, ""}, {"p1/2", []int{2, 3}, ""},
		{"p1/3", nil, "http://10.0.0.2:8080"}, {"gpu-box-0", []int{4}, ""}, {"gpu-box-1", []int{4}, ""}}
	if len(got) != len(wants) {
		t.Fatalf("%d replicas, want %d: %+v", len(got), len(wants), got)
	}
	for i, w := range wants {
		if got[i].ID != w.id || !slices.Equal(got[i].Devices, w.devices) || got[i].URL != w.url {
			t.Errorf("replica %d = %+v, want %+v", i, got[i], w)
		}
	}
	if s := c.Summary(); !strings.Contains(s, "6 replicas") {
		t.Errorf("summary %q does not count 6 replicas", s)
	}
	if !c.Pools[0].MigrateOnFailureOrDefault() {
		t.Error("migrate_on_failure is on by default")
	}
}

// A relative api_keys_file in a configuration file is relative to that file (as keys_file
// is), not to the daemon's working directory; one given as a flag stays relative to it.
func TestAPIKeysFileRelativeToTheConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keys.txt"), []byte("key-from-beside-the-config-0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(p, []byte("api_keys_file: keys.txt\n"+minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(Overrides{ConfigFile: p})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.APIKeys) != 1 || c.APIKeys[0] != "key-from-beside-the-config-0123" {
		t.Fatalf("keys %q", c.APIKeys)
	}
	if _, err := Load(Overrides{ConfigFile: p, APIKeysFile: "keys.txt"}); err == nil {
		t.Fatal("--api-keys-file keys.txt read the file beside the config, not in the working directory")
	}
}
