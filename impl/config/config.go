// Package config loads orchestratord's configuration: the embedded default (default.yaml), or a
// YAML file, then environment variables, then command-line flags, each overriding the one
// before. Load validates everything once and names the offending field in its error; the rest of
// the daemon receives plain values and never reads the environment itself.
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/orchestratord/orchestratord/engine/drivers"
	"github.com/orchestratord/orchestratord/engine/process"
	"github.com/orchestratord/orchestratord/impl/internal/yamldoc"
	"github.com/orchestratord/orchestratord/impl/tenant"
)

//go:embed default.yaml
var defaultYAML []byte

// DefaultBodyLimitBytes is body_limit_bytes when the configuration sets none. The contract
// (openapi/orchestratord.yaml) bounds every request body but createArtifact's free-form content
// below it; contracts.TestSchemaValidBodiesFitTheDefaultLimit keeps the two in step.
const DefaultBodyLimitBytes int64 = 1 << 20

// MaxBodyLimitBytes bounds body_limit_bytes so that a task's admission always fits one journal
// record (journal.MaxRecordBytes, 64 MiB): the record holds the request's text up to twice (a
// chat's messages and their joined prompt), each byte escaped to at most six (\u003c).
const MaxBodyLimitBytes int64 = 5 << 20

// DefaultYAML returns the embedded default configuration file.
func DefaultYAML() []byte { return bytes.Clone(defaultYAML) }

// Config is the daemon's whole configuration.
type Config struct {
	Addr        string   `yaml:"addr"`
	StateDir    string   `yaml:"state_dir"`
	LogFormat   string   `yaml:"log_format"`
	LogLevel    string   `yaml:"log_level"`
	APIKeysFile string   `yaml:"api_keys_file"`
	APIKeys     []string `yaml:"-"` // from the keys file or ORCHD_API_KEYS; never from the YAML itself
	// KeysFile names the YAML keys file (names, scopes, weights, limits; see impl/tenant). A
	// relative path is relative to the config file's directory. It is read again on SIGHUP.
	KeysFile       string       `yaml:"keys_file"`
	Keys           []tenant.Key `yaml:"-"` // from KeysFile
	BodyLimitBytes int64        `yaml:"body_limit_bytes"`
	// ModelsDirs are the only directories managed engines may load models from (default
	// <state_dir>/models; relative entries are resolved against state_dir). See ResolveModel.
	ModelsDirs    []string  `yaml:"models_dirs"`
	Server        Server    `yaml:"server"`
	Auth          Auth      `yaml:"auth"`
	Admission     Admission `yaml:"admission"`
	Sessions      Sessions  `yaml:"sessions"`
	Tasks         Tasks     `yaml:"tasks"`
	Stream        Stream    `yaml:"stream"`
	Artifacts     Artifacts `yaml:"artifacts"`
	Journal       Journal   `yaml:"journal"`
	ShutdownGrace Duration  `yaml:"shutdown_grace"`
	// ReloadGrace bounds how long a reload leaves the replaced replica running for its
	// in-flight generations (default 5m): it is stopped once they end, or then.
	ReloadGrace Duration `yaml:"reload_grace"`
	// LlamaServer is the llama-server binary used by managed llama.cpp replicas (ORCHD_LLAMA_SERVER,
	// else "llama-server" from PATH). It is a shorthand for programs.llamacpp.
	LlamaServer string `yaml:"llama_server"`
	// Programs overrides, per engine name, the program a managed replica runs (the {program}
	// placeholder of the engine's command line). Absent: the engine driver's default.
	Programs map[string]string `yaml:"programs"`
	Pools    []Pool            `yaml:"pools"`
}

// Server bounds what one client can hold: connections, and how long the daemon waits for a
// request's headers and body.
type Server struct {
	// MaxConnections caps concurrent client connections; connections beyond it wait in the
	// listen backlog until one closes. 0: 10000, or half the open-file limit when that is lower.
	MaxConnections int `yaml:"max_connections"`
	// ReadHeaderTimeout bounds reading a request's headers, IdleTimeout a kept-alive connection
	// between requests.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	IdleTimeout       Duration `yaml:"idle_timeout"`
	// A request body must arrive within BodyReadTimeout plus its size (declared, else
	// body_limit_bytes) at BodyMinBytesPerSecond.
	BodyReadTimeout       Duration `yaml:"body_read_timeout"`
	BodyMinBytesPerSecond int64    `yaml:"body_min_bytes_per_second"`
	// MemoryLimitBytes is the Go runtime's soft memory limit (runtime/debug.SetMemoryLimit):
	// near it the collector runs more often instead of letting the heap grow to twice the live
	// data. 0: Go's default (none). GOMEMLIMIT in the environment wins over it.
	MemoryLimitBytes int64 `yaml:"memory_limit_bytes"`
	// GCPercent is the collector's target heap growth in percent (runtime/debug.SetGCPercent);
	// -1 turns the proportional collector off (then memory_limit_bytes is required). Absent: Go's
	// default (100). GOGC in the environment wins over it.
	GCPercent *int `yaml:"gc_percent"`
}

// RuntimeSettings returns the memory limit and GC percent to apply to the Go runtime at start,
// each with whether to apply it: configured, and not set in the environment (GOMEMLIMIT, GOGC),
// which the runtime has already applied and which an operator set on purpose.
func (s Server) RuntimeSettings(lookupEnv func(string) (string, bool)) (limit int64, setLimit bool, gcPercent int, setGC bool) {
	if _, ok := lookupEnv("GOMEMLIMIT"); !ok && s.MemoryLimitBytes > 0 {
		limit, setLimit = s.MemoryLimitBytes, true
	}
	if _, ok := lookupEnv("GOGC"); !ok && s.GCPercent != nil {
		gcPercent, setGC = *s.GCPercent, true
	}
	return limit, setLimit, gcPercent, setGC
}

// Auth configures which of the contract's optionally secured operations need a key.
type Auth struct {
	// MetricsPublic: /metrics answers without a key (default true). false: it needs a key with
	// the metrics scope (401 without a key, 403 with one lacking the scope).
	MetricsPublic *bool `yaml:"metrics_public"`
}

// MetricsPublicOrDefault reports whether /metrics is public (default true).
func (a Auth) MetricsPublicOrDefault() bool { return a.MetricsPublic == nil || *a.MetricsPublic }

// Admission configures the bounded queue.
type Admission struct {
	Capacity int    `yaml:"capacity"`
	Policy   string `yaml:"policy"` // reject | drop-lru
	// MaxBatchWait bounds how long a batch task waits while interactive tasks keep coming: once
	// it has waited that long it goes first. 0 (default): interactive always goes first.
	MaxBatchWait Duration `yaml:"max_batch_wait"`
}

// Sessions configures session metadata.
type Sessions struct {
	TTL         Duration `yaml:"ttl"`
	MaxTurns    int      `yaml:"max_turns"`
	MaxSessions int      `yaml:"max_sessions"`
	TokenBudget int64    `yaml:"token_budget"` // 0: no budget
}

// Tasks configures how long finished tasks stay visible.
type Tasks struct {
	Retention   Duration `yaml:"retention"`
	MaxRetained int      `yaml:"max_retained"`
}

// Stream configures SSE streams.
type Stream struct {
	Heartbeat          Duration `yaml:"heartbeat"`
	CancelOnDisconnect *bool    `yaml:"cancel_on_disconnect"`
	// WriteTimeout bounds each write of a stream: a client that stops reading for longer is
	// dropped, as if it had disconnected. Any other answer must be written within it from its
	// header on (impl.WriteDeadline).
	WriteTimeout Duration `yaml:"write_timeout"`
	// Hijack lets a task's event stream over HTTP/1.1 take its connection over from net/http
	// and write its chunks itself (default true); false keeps streams on net/http's response
	// writer (more memory and CPU per open stream, the same bytes on the wire but the
	// connection's keep-alive).
	Hijack *bool `yaml:"hijack"`
}

// Artifacts configures the artifact store.
type Artifacts struct {
	MaxBytes      int64 `yaml:"max_bytes"`       // one artifact's canonical size
	MaxTotalBytes int64 `yaml:"max_total_bytes"` // all stored artifact files together
	MaxCount      int64 `yaml:"max_count"`       // number of stored artifacts
}

// Default artifact store limits.
const (
	DefaultArtifactsMaxTotalBytes = 1 << 30
	DefaultArtifactsMaxCount      = 100_000
)

// Journal configures the crash-safe journal of admissions and stream events.
type Journal struct {
	// Enabled: nil means true.
	Enabled *bool `yaml:"enabled"`
	// Dir holds the journal's segments (default <state_dir>/journal; relative paths resolve
	// against state_dir).
	Dir string `yaml:"dir"`
	// Sync says what waits for the disk (default "admission"):
	//   - admission: a 202 waits for its admission record's fdatasync; a stream shows a frame
	//     once it is written to the kernel (a crash of the process loses nothing shown; a power
	//     loss may take back the frames of the last moments);
	//   - always: a stream frame waits for the disk too (each token pays one fdatasync);
	//   - none: a 202 waits only for the write (an acknowledged task survives a crash of the
	//     process, not of the machine).
	// The journal writes each batch at once. With always it fdatasyncs as soon as the previous
	// fdatasync ends; with admission and none, when an admission waits (one fdatasync covers
	// everything written so far) and otherwise within MaxUnsynced and MaxUnsyncedBytes.
	Sync string `yaml:"sync"`
	// MaxUnsynced bounds how long written data nobody waits for stays unsynced (sync: admission
	// or none; default 100ms): what a power loss or kernel crash may take back.
	MaxUnsynced Duration `yaml:"max_unsynced"`
	// MaxUnsyncedBytes bounds how many bytes of such data stay unsynced (default 1 MiB).
	MaxUnsyncedBytes int64 `yaml:"max_unsynced_bytes"`
	// FsyncInterval is deprecated and ignored (the journal no longer waits on a timer); the key
	// is still accepted so that existing configurations load, with a warning.
	FsyncInterval Duration `yaml:"fsync_interval"`
}

// Journal sync modes (journal.sync).
const (
	JournalSyncAdmission = "admission"
	JournalSyncAlways    = "always"
	JournalSyncNone      = "none"
)

// Warnings lists what the configuration uses that is deprecated; the daemon logs them and
// --check-config prints them, and neither refuses the configuration.
func (c *Config) Warnings() []string {
	var w []string
	if c.Journal.FsyncInterval != 0 {
		w = append(w, "journal.fsync_interval is deprecated and ignored: the journal writes each batch at once "+
			"and syncs when an admission waits or within journal.max_unsynced; journal.sync says what waits for the disk")
	}
	return w
}

// EnabledOrDefault reports whether the journal is on (default true).
func (j Journal) EnabledOrDefault() bool { return j.Enabled == nil || *j.Enabled }

// Pool is one model on one engine type.
type Pool struct {
	ID       string `yaml:"id"`
	Engine   string `yaml:"engine"`
	ModelRef string `yaml:"model_ref"`
	ModelID  string `yaml:"model_id"`
	// ModelIDDerived: model_id was not configured and comes from model_ref's file name, so a
	// reload to another file derives it again; a configured model_id survives reloads.
	ModelIDDerived  bool     `yaml:"-"`
	CtxMax          int      `yaml:"ctx_max"`
	Slots           int      `yaml:"slots"`
	KVBytesPerToken int64    `yaml:"kv_bytes_per_token"`
	PriorServiceMs  float64  `yaml:"prior_service_ms"`
	PriorTokensPerS float64  `yaml:"prior_tokens_per_s"`
	Workloads       []string `yaml:"workloads"`
	// EngineOptions are engine-specific settings (the keys the engine's driver lists, e.g.
	// Triton's tensor names); unknown keys are refused.
	EngineOptions map[string]string `yaml:"engine_options"`
	Replicas      []Replica         `yaml:"replicas"`
	// MigrateOnFailure: a task whose replica fails mid-stream continues on another replica
	// (default true).
	MigrateOnFailure *bool `yaml:"migrate_on_failure"`
	// Breaker sets when a replica's circuit breaker opens (default 3 consecutive replica
	// faults) and how long it stays open before one probe task (default 10s).
	Breaker *Breaker `yaml:"breaker"`
}

// Breaker configures a pool's per-replica circuit breakers.
type Breaker struct {
	// Faults and Cooldown are nil when absent (the defaults); written, each must be positive.
	Faults   *int      `yaml:"faults"`
	Cooldown *Duration `yaml:"cooldown"`
}

// Settings are the breaker's faults and cooldown, 0 for each left to the registry's default.
func (b *Breaker) Settings() (faults int, cooldown time.Duration) {
	if b == nil {
		return 0, 0
	}
	if b.Faults != nil {
		faults = *b.Faults
	}
	if b.Cooldown != nil {
		cooldown = b.Cooldown.D()
	}
	return faults, cooldown
}

// MigrateOnFailureOrDefault reports whether mid-stream migration is on (default true).
func (p Pool) MigrateOnFailureOrDefault() bool {
	return p.MigrateOnFailure == nil || *p.MigrateOnFailure
}

// Replica is an engine endpoint: external (URL) or managed (a process the daemon runs).
type Replica struct {
	// Name is the replica's id in pool health, placement and metrics (default "<pool>/<n>";
	// with managed.count N > 1, "<name>-<i>").
	Name    string   `yaml:"name"`
	URL     string   `yaml:"url"`
	Managed *Managed `yaml:"managed"`
}

// ReplicaInstance is one replica of a pool after count expansion.
type ReplicaInstance struct {
	ID      string
	URL     string
	Managed *Managed
	Devices []int
	Source  int // index in Pool.Replicas
}

// Instances expands the pool's replica entries (managed.count) into replicas with stable ids.
func (p Pool) Instances() []ReplicaInstance {
	var out []ReplicaInstance
	for j, r := range p.Replicas {
		n := 1
		if r.Managed != nil && r.Managed.Count > 1 {
			n = r.Managed.Count
		}
		for i := range n {
			ri := ReplicaInstance{URL: r.URL, Managed: r.Managed, Source: j}
			switch {
			case r.Name != "" && n > 1:
				ri.ID = fmt.Sprintf("%s-%d", r.Name, i)
			case r.Name != "":
				ri.ID = r.Name
			default:
				ri.ID = fmt.Sprintf("%s/%d", p.ID, len(out))
			}
			if r.Managed != nil {
				ri.Devices = r.Managed.Devices.For(i)
			}
			out = append(out, ri)
		}
	}
	return out
}

// Managed is a replica the daemon starts, health-checks, restarts and stops.
type Managed struct {
	// Command is the full argv template. Placeholders: {program}, {model}, {model_id}, {port},
	// {slots}, {ctx_max}, {ctx_total}, {devices}, {api_key}, {api_key_file} (see
	// engine.ManagedTemplate). Empty: the engine's default command line plus Args.
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []string `yaml:"env"`
	// Count is how many replicas this entry runs (default 1).
	Count int `yaml:"count"`
	// Devices are the GPU indices a replica may use ({devices}, CUDA_VISIBLE_DEVICES): one
	// list for every replica ([0, 1]) or one list per replica ([[0], [1], [2, 3]]).
	Devices      DeviceSets `yaml:"devices"`
	StartTimeout Duration   `yaml:"start_timeout"`
	// RestartUnhealthyAfter is how long a running replica's health checks may keep failing
	// before the daemon takes its engine for hung and restarts it (default 1m).
	RestartUnhealthyAfter Duration `yaml:"restart_unhealthy_after"`
	// LogMaxBytes caps the replica's engine log file; past it the file moves to <file>.1
	// (default 64 MiB).
	LogMaxBytes int64 `yaml:"log_max_bytes"`
}

// MinManagedLogMaxBytes is the smallest managed log_max_bytes: a smaller cap would rotate at
// almost every write of a chatty engine.
const MinManagedLogMaxBytes = 1 << 20

// DeviceSets are the devices of a managed entry's replicas: one set shared by all, or one per
// replica.
type DeviceSets [][]int

// UnmarshalYAML takes a list of indices (one set) or a list of lists (one set per replica).
func (d *DeviceSets) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.SequenceNode && len(n.Content) > 0 && n.Content[0].Kind == yaml.SequenceNode {
		var nested [][]int
		if err := n.Decode(&nested); err != nil {
			return err
		}
		*d = nested
		return nil
	}
	var flat []int
	if err := n.Decode(&flat); err != nil {
		return err
	}
	*d = DeviceSets{flat}
	return nil
}

// For returns replica i's devices (nil: none configured).
func (d DeviceSets) For(i int) []int {
	switch {
	case len(d) == 0:
		return nil
	case len(d) == 1:
		return d[0]
	case i < len(d):
		return d[i]
	}
	return nil
}

// Duration is a time.Duration written as "10s", "5m" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q", s)
	}
	*d = Duration(v)
	return nil
}

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// HijackOrDefault reports whether task event streams take their connections over (default true).
func (s Stream) HijackOrDefault() bool { return s.Hijack == nil || *s.Hijack }

// CancelOnDisconnectOrDefault reports whether a stream's disconnect cancels its task (default true).
func (s Stream) CancelOnDisconnectOrDefault() bool {
	return s.CancelOnDisconnect == nil || *s.CancelOnDisconnect
}

// Overrides are the values given by flags or the environment; empty strings mean "not given".
type Overrides struct {
	ConfigFile  string
	Addr        string
	StateDir    string
	APIKeysFile string
	APIKeys     string // comma-separated
	LogFormat   string
	LogLevel    string
	LlamaServer string
}

// FromEnv reads the ORCHD_* variables into Overrides. lookup is os.LookupEnv in production.
func FromEnv(lookup func(string) (string, bool)) Overrides {
	get := func(k string) string { v, _ := lookup(k); return strings.TrimSpace(v) }
	return Overrides{
		ConfigFile:  get("ORCHD_CONFIG"),
		Addr:        get("ORCHD_ADDR"),
		StateDir:    get("ORCHD_STATE_DIR"),
		APIKeysFile: get("ORCHD_API_KEYS_FILE"),
		APIKeys:     get("ORCHD_API_KEYS"),
		LogFormat:   get("ORCHD_LOG_FORMAT"),
		LogLevel:    get("ORCHD_LOG_LEVEL"),
		LlamaServer: get("ORCHD_LLAMA_SERVER"),
	}
}

// Merge returns o with every empty field taken from lower (o wins).
func (o Overrides) Merge(lower Overrides) Overrides {
	pick := func(a, b string) string {
		if a != "" {
			return a
		}
		return b
	}
	return Overrides{
		ConfigFile:  pick(o.ConfigFile, lower.ConfigFile),
		Addr:        pick(o.Addr, lower.Addr),
		StateDir:    pick(o.StateDir, lower.StateDir),
		APIKeysFile: pick(o.APIKeysFile, lower.APIKeysFile),
		APIKeys:     pick(o.APIKeys, lower.APIKeys),
		LogFormat:   pick(o.LogFormat, lower.LogFormat),
		LogLevel:    pick(o.LogLevel, lower.LogLevel),
		LlamaServer: pick(o.LlamaServer, lower.LlamaServer),
	}
}

// Load reads the config file named by ov.ConfigFile (the embedded default when empty), applies
// the overrides, reads API keys, fills defaults and validates.
func Load(ov Overrides) (*Config, error) {
	data := defaultYAML
	if ov.ConfigFile != "" {
		b, err := os.ReadFile(ov.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		data = b
	}
	c, err := Parse(data)
	if err != nil {
		return nil, err
	}
	if ov.ConfigFile != "" && c.StateDir == "" {
		c.StateDir = ".orchestratord"
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	// A relative api_keys_file in the configuration file is relative to that file, as
	// keys_file is; one from the flag or the environment is relative to the working directory.
	if c.APIKeysFile != "" && !filepath.IsAbs(c.APIKeysFile) && ov.ConfigFile != "" {
		c.APIKeysFile = filepath.Join(filepath.Dir(ov.ConfigFile), c.APIKeysFile)
	}
	set(&c.Addr, ov.Addr)
	set(&c.StateDir, ov.StateDir)
	set(&c.APIKeysFile, ov.APIKeysFile)
	set(&c.LogFormat, ov.LogFormat)
	set(&c.LogLevel, ov.LogLevel)
	set(&c.LlamaServer, ov.LlamaServer)
	if c.APIKeysFile != "" {
		b, err := os.ReadFile(c.APIKeysFile)
		if err != nil {
			return nil, fmt.Errorf("config: api_keys_file: %w", err)
		}
		c.APIKeys = append(c.APIKeys, splitKeys(string(b), "\n")...)
	}
	if ov.APIKeys != "" {
		c.APIKeys = append(c.APIKeys, splitKeys(ov.APIKeys, ",")...)
	}
	if c.KeysFile != "" {
		if !filepath.IsAbs(c.KeysFile) && ov.ConfigFile != "" {
			c.KeysFile = filepath.Join(filepath.Dir(ov.ConfigFile), c.KeysFile)
		}
		keys, err := tenant.ParseFile(c.KeysFile)
		if err != nil {
			return nil, fmt.Errorf("config: keys_file: %w", err)
		}
		c.Keys = keys
	}
	if err := c.complete(); err != nil {
		return nil, err
	}
	return c, nil
}

func splitKeys(s, sep string) []string {
	var out []string
	for _, k := range strings.Split(s, sep) {
		k = strings.TrimSpace(k)
		if k != "" && !strings.HasPrefix(k, "#") {
			out = append(out, k)
		}
	}
	return out
}

// Parse decodes a YAML document strictly (unknown fields are errors). It does not fill defaults
// or validate; Load does.
func Parse(data []byte) (*Config, error) {
	var c Config
	// The walk names the YAML path of any problem; the decoder's own messages name Go types.
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("config: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if err := checkNode(&doc, reflect.TypeFor[Config](), ""); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	// An empty document (io.EOF) is a valid, empty config.
	switch err := yamldoc.Decode(data, &c); {
	case errors.Is(err, yamldoc.ErrSeveralDocuments):
		return nil, fmt.Errorf("config: %w", err)
	case err != nil && !errors.Is(err, io.EOF):
		return nil, fmt.Errorf("config: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return &c, nil
}

var (
	poolIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	// hubNameRe is a model hub name ("hf:org/name"), which a managed engine that downloads
	// models (vLLM, SGLang) receives as it is instead of a file in models_dirs.
	hubNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$`)
)

func (c *Config) complete() error {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8080"
	}
	if c.StateDir == "" {
		c.StateDir = ".orchestratord"
	}
	if c.LogFormat == "" {
		c.LogFormat = "text"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.BodyLimitBytes == 0 {
		c.BodyLimitBytes = DefaultBodyLimitBytes
	}
	if c.Server.ReadHeaderTimeout == 0 {
		c.Server.ReadHeaderTimeout = Duration(10 * time.Second)
	}
	if c.Server.IdleTimeout == 0 {
		c.Server.IdleTimeout = Duration(120 * time.Second)
	}
	if c.Server.BodyReadTimeout == 0 {
		c.Server.BodyReadTimeout = Duration(10 * time.Second)
	}
	if c.Server.BodyMinBytesPerSecond == 0 {
		c.Server.BodyMinBytesPerSecond = 32 << 10
	}
	if c.Stream.WriteTimeout == 0 {
		c.Stream.WriteTimeout = Duration(30 * time.Second)
	}
	if c.Admission.Capacity == 0 {
		c.Admission.Capacity = 64
	}
	if c.Admission.Policy == "" {
		c.Admission.Policy = "reject"
	}
	if c.Sessions.TTL == 0 {
		c.Sessions.TTL = Duration(10 * time.Minute)
	}
	if c.Sessions.MaxTurns == 0 {
		c.Sessions.MaxTurns = 8
	}
	if c.Sessions.MaxSessions == 0 {
		c.Sessions.MaxSessions = 10000
	}
	if c.Tasks.Retention == 0 {
		c.Tasks.Retention = Duration(10 * time.Minute)
	}
	if c.Tasks.MaxRetained == 0 {
		c.Tasks.MaxRetained = 1024
	}
	if c.Stream.Heartbeat == 0 {
		c.Stream.Heartbeat = Duration(15 * time.Second)
	}
	if c.Artifacts.MaxBytes == 0 {
		c.Artifacts.MaxBytes = 1 << 20
	}
	if c.Artifacts.MaxTotalBytes == 0 {
		c.Artifacts.MaxTotalBytes = DefaultArtifactsMaxTotalBytes
	}
	if c.Artifacts.MaxCount == 0 {
		c.Artifacts.MaxCount = DefaultArtifactsMaxCount
	}
	if len(c.ModelsDirs) == 0 {
		c.ModelsDirs = []string{"models"}
	}
	for i, d := range c.ModelsDirs {
		if d != "" && !filepath.IsAbs(d) {
			d = filepath.Join(c.StateDir, d)
		}
		c.ModelsDirs[i] = filepath.Clean(d)
	}
	if c.ReloadGrace == 0 {
		c.ReloadGrace = Duration(5 * time.Minute)
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = Duration(30 * time.Second)
	}
	if c.Journal.Dir == "" {
		c.Journal.Dir = "journal"
	}
	if !filepath.IsAbs(c.Journal.Dir) {
		c.Journal.Dir = filepath.Join(c.StateDir, c.Journal.Dir)
	}
	if c.Journal.MaxUnsynced == 0 {
		c.Journal.MaxUnsynced = Duration(100 * time.Millisecond)
	}
	if c.Journal.MaxUnsyncedBytes == 0 {
		c.Journal.MaxUnsyncedBytes = 1 << 20
	}
	if c.Journal.Sync == "" {
		c.Journal.Sync = JournalSyncAdmission
	}
	if c.LlamaServer != "" {
		if c.Programs == nil {
			c.Programs = map[string]string{}
		}
		if _, set := c.Programs["llamacpp"]; !set {
			c.Programs["llamacpp"] = c.LlamaServer
		}
	}
	for i := range c.Pools {
		p := &c.Pools[i]
		if p.ModelID == "" && p.ModelRef != "" {
			p.ModelID = ModelIDFromRef(p.ModelRef)
			p.ModelIDDerived = true
		}
		if len(p.Workloads) == 0 {
			p.Workloads = []string{"completion"}
		}
		if p.PriorServiceMs == 0 {
			p.PriorServiceMs = 1000
		}
		if p.PriorTokensPerS == 0 {
			p.PriorTokensPerS = 50
		}
		for j := range p.Replicas {
			if m := p.Replicas[j].Managed; m != nil {
				if m.StartTimeout == 0 {
					m.StartTimeout = Duration(60 * time.Second)
				}
				if m.RestartUnhealthyAfter == 0 {
					m.RestartUnhealthyAfter = Duration(process.DefaultRestartUnhealthyAfter)
				}
				if m.LogMaxBytes == 0 {
					m.LogMaxBytes = process.DefaultLogMaxBytes
				}
			}
		}
	}
	return c.validate()
}

// ModelIDFromRef is the default short model id: the reference's last path element, without
// a model file's extension (tiny.gguf: tiny). Other dots are the name's: an engine's model
// name (llama3.2, Qwen2.5-7B-Instruct) keeps its version.
func ModelIDFromRef(ref string) string {
	ref = strings.TrimPrefix(strings.TrimPrefix(ref, "file:"), "hf:")
	if ref != "" {
		ref = path.Clean(ref) // a directory's trailing slash, dot elements
	}
	if i := strings.LastIndexByte(ref, '/'); i >= 0 {
		ref = ref[i+1:]
	}
	if ref == "." || ref == ".." {
		return ""
	}
	if ext := filepath.Ext(ref); modelFileExts[strings.ToLower(ext)] {
		ref = strings.TrimSuffix(ref, ext)
	}
	return ref
}

// modelFileExts are the extensions of model files that ModelIDFromRef leaves out.
var modelFileExts = map[string]bool{".gguf": true, ".ggml": true, ".bin": true, ".safetensors": true,
	".pt": true, ".pth": true, ".onnx": true, ".plan": true, ".engine": true}

func (c *Config) validate() error {
	fail := func(field, format string, args ...any) error {
		return fmt.Errorf("config: %s: %s", field, fmt.Sprintf(format, args...))
	}
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fail("addr", "%v", err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil { // a number (0–65535) or a service name
		return fail("addr", "port %q is not a number from 0 to 65535 nor a service name", port)
	}
	for name := range c.Programs {
		if _, ok := drivers.Registry().Lookup(name); !ok {
			return fail("programs."+name, "no such engine (engines: %s)", strings.Join(drivers.Registry().Names(), ", "))
		}
	}
	if len(c.APIKeys) == 0 && len(c.Keys) == 0 && !IsLoopback(host) {
		return fail("addr", "%q is not a loopback address and no API key is configured (set keys_file, api_keys_file or ORCHD_API_KEYS)", c.Addr)
	}
	for i, k := range c.APIKeys {
		if len(k) < 16 {
			return fail(fmt.Sprintf("api_keys[%d]", i), "too short (at least 16 characters)")
		}
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fail("log_format", "must be text or json, got %q", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fail("log_level", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	if c.BodyLimitBytes < 1024 || c.BodyLimitBytes > MaxBodyLimitBytes {
		return fail("body_limit_bytes", "must be from 1024 to %d (a task's admission must fit one journal record), got %d",
			MaxBodyLimitBytes, c.BodyLimitBytes)
	}
	if c.Server.MaxConnections < 0 {
		return fail("server.max_connections", "must not be negative (0: the default)")
	}
	if c.Server.MemoryLimitBytes != 0 && c.Server.MemoryLimitBytes < 64<<20 {
		return fail("server.memory_limit_bytes", "must be at least 64 MiB (0: no limit)")
	}
	if p := c.Server.GCPercent; p != nil && (*p == 0 || *p < -1 || (*p == -1 && c.Server.MemoryLimitBytes == 0)) {
		return fail("server.gc_percent", "must be at least 1, or -1 (off) with server.memory_limit_bytes")
	}
	for _, d := range []struct {
		field string
		v     Duration
	}{
		{"server.read_header_timeout", c.Server.ReadHeaderTimeout},
		{"server.idle_timeout", c.Server.IdleTimeout},
		{"server.body_read_timeout", c.Server.BodyReadTimeout},
		{"stream.write_timeout", c.Stream.WriteTimeout},
	} {
		if d.v.D() < 10*time.Millisecond {
			return fail(d.field, "must be at least 10ms")
		}
	}
	if c.Server.BodyMinBytesPerSecond < 1 {
		return fail("server.body_min_bytes_per_second", "must be positive")
	}
	if c.Admission.Capacity < 1 || c.Admission.Capacity > 1_000_000 {
		return fail("admission.capacity", "must be between 1 and 1000000, got %d", c.Admission.Capacity)
	}
	switch c.Admission.Policy {
	case "reject", "drop-lru":
	default:
		return fail("admission.policy", "must be reject or drop-lru, got %q", c.Admission.Policy)
	}
	if c.Admission.MaxBatchWait < 0 {
		return fail("admission.max_batch_wait", "must not be negative")
	}
	if c.Sessions.TTL.D() < time.Second {
		return fail("sessions.ttl", "must be at least 1s")
	}
	if c.Sessions.MaxTurns < 1 {
		return fail("sessions.max_turns", "must be at least 1")
	}
	if c.Sessions.MaxSessions < 1 {
		return fail("sessions.max_sessions", "must be at least 1")
	}
	if c.Sessions.TokenBudget < 0 {
		return fail("sessions.token_budget", "must not be negative")
	}
	if c.Tasks.Retention.D() < time.Second {
		return fail("tasks.retention", "must be at least 1s")
	}
	if c.Tasks.MaxRetained < 1 {
		return fail("tasks.max_retained", "must be at least 1")
	}
	if c.Stream.Heartbeat.D() < 10*time.Millisecond {
		return fail("stream.heartbeat", "must be at least 10ms")
	}
	if c.Artifacts.MaxBytes < 64 {
		return fail("artifacts.max_bytes", "must be at least 64")
	}
	if c.Artifacts.MaxTotalBytes < c.Artifacts.MaxBytes {
		return fail("artifacts.max_total_bytes", "must be at least artifacts.max_bytes (%d), got %d", c.Artifacts.MaxBytes, c.Artifacts.MaxTotalBytes)
	}
	if c.Artifacts.MaxCount < 1 {
		return fail("artifacts.max_count", "must be at least 1, got %d", c.Artifacts.MaxCount)
	}
	// The state directory holds the generated API key: no models directory may contain it.
	state, err := filepath.Abs(c.StateDir)
	if err != nil {
		return fail("state_dir", "%v", err)
	}
	for i, d := range c.ModelsDirs {
		root, err := filepath.Abs(d)
		if err != nil {
			return fail(fmt.Sprintf("models_dirs[%d]", i), "%v", err)
		}
		if rel, ok := below(root, state); ok || rel == "." {
			return fail(fmt.Sprintf("models_dirs[%d]", i), "%q contains the state directory (which holds the API key): name a directory that holds only models", d)
		}
	}
	switch c.Journal.Sync {
	case JournalSyncAdmission, JournalSyncAlways, JournalSyncNone:
	default:
		return fail("journal.sync", "must be admission, always or none, got %q", c.Journal.Sync)
	}
	if c.Journal.MaxUnsynced.D() < 0 {
		return fail("journal.max_unsynced", "must not be negative")
	}
	if c.Journal.MaxUnsyncedBytes < 0 {
		return fail("journal.max_unsynced_bytes", "must not be negative")
	}
	if c.ReloadGrace.D() < 0 {
		return fail("reload_grace", "must not be negative")
	}
	if c.ShutdownGrace.D() < 0 {
		return fail("shutdown_grace", "must not be negative")
	}
	if len(c.Pools) == 0 {
		return fail("pools", "at least one pool is required")
	}
	seen := map[string]bool{}
	for i, p := range c.Pools {
		f := func(name string) string { return fmt.Sprintf("pools[%d].%s", i, name) }
		if !poolIDRe.MatchString(p.ID) {
			return fail(f("id"), "%q must match %s", p.ID, poolIDRe)
		}
		if seen[p.ID] {
			return fail(f("id"), "duplicate pool id %q", p.ID)
		}
		seen[p.ID] = true
		drv, ok := drivers.Registry().Lookup(p.Engine)
		if err := drivers.Err(); err != nil {
			return fail(f("engine"), "the engine drivers built in are invalid: %v", err)
		}
		if !ok {
			return fail(f("engine"), "must be one of the registered engines (%s), got %q",
				strings.Join(drivers.Registry().Names(), ", "), p.Engine)
		}
		for _, k := range slices.Sorted(maps.Keys(p.EngineOptions)) {
			if !slices.Contains(drv.Options, k) {
				if len(drv.Options) == 0 {
					return fail(f("engine_options."+k), "engine %s takes no engine_options", drv.Name)
				}
				return fail(f("engine_options."+k), "engine %s takes %s", drv.Name, strings.Join(drv.Options, ", "))
			}
		}
		if drv.CheckOptions != nil {
			if k, err := drv.CheckOptions(p.EngineOptions); err != nil {
				return fail(f("engine_options."+k), "%v", err)
			}
		}
		if p.ModelRef == "" {
			return fail(f("model_ref"), "is required")
		}
		if p.ModelID == "" {
			return fail(f("model_id"), "is required (could not derive it from model_ref)")
		}
		if p.CtxMax < 1 || p.CtxMax > 1<<20 {
			return fail(f("ctx_max"), "must be between 1 and 1048576, got %d", p.CtxMax)
		}
		if p.Slots < 1 || p.Slots > 1024 {
			return fail(f("slots"), "must be between 1 and 1024, got %d", p.Slots)
		}
		if p.KVBytesPerToken < 0 {
			return fail(f("kv_bytes_per_token"), "must not be negative")
		}
		if !(p.PriorServiceMs > 0) || math.IsInf(p.PriorServiceMs, 0) { // NaN and +Inf too: the queue refuses them
			return fail(f("prior_service_ms"), "must be a positive number, got %v", p.PriorServiceMs)
		}
		if !(p.PriorTokensPerS > 0) || math.IsInf(p.PriorTokensPerS, 0) {
			return fail(f("prior_tokens_per_s"), "must be a positive number, got %v", p.PriorTokensPerS)
		}
		if b := p.Breaker; b != nil {
			if b.Faults != nil && (*b.Faults < 1 || *b.Faults > 1000) {
				return fail(f("breaker.faults"), "must be from 1 to 1000 (absent: 3), got %d", *b.Faults)
			}
			if b.Cooldown != nil && (*b.Cooldown <= 0 || b.Cooldown.D() > time.Hour) {
				return fail(f("breaker.cooldown"), "must be positive and at most 1h (absent: 10s), got %s", b.Cooldown.D())
			}
		}
		for j, w := range p.Workloads {
			if !slices.Contains(drv.Workloads, w) {
				return fail(fmt.Sprintf("pools[%d].workloads[%d]", i, j), "engine %s serves %s, got %q",
					drv.Name, strings.Join(drv.Workloads, ", "), w)
			}
		}
		if len(p.Replicas) == 0 {
			return fail(f("replicas"), "at least one replica is required")
		}
		names := map[string]bool{}
		for _, ri := range p.Instances() {
			if names[ri.ID] {
				return fail(f("replicas"), "replica id %q is used twice", ri.ID)
			}
			names[ri.ID] = true
		}
		if len(names) > 256 {
			return fail(f("replicas"), "at most 256 replicas per pool, got %d", len(names))
		}
		for j, r := range p.Replicas {
			rf := fmt.Sprintf("pools[%d].replicas[%d]", i, j)
			if r.Name != "" && !poolIDRe.MatchString(r.Name) {
				return fail(rf+".name", "must match %s, got %q", poolIDRe.String(), r.Name)
			}
			switch {
			case r.URL != "" && r.Managed != nil:
				return fail(rf, "set either url or managed, not both")
			case r.URL != "":
				u, err := url.Parse(r.URL)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return fail(rf+".url", "must be an http(s) URL, got %q", r.URL)
				}
			case r.Managed != nil:
				if drv.Managed == nil && len(r.Managed.Command) == 0 {
					return fail(rf+".managed", "engine %s is external only here (no default command line): set url, or managed.command", drv.Name)
				}
				if r.Managed.Count < 0 || r.Managed.Count > 256 {
					return fail(rf+".managed.count", "must be between 1 and 256, got %d", r.Managed.Count)
				}
				if n := max(r.Managed.Count, 1); len(r.Managed.Devices) > 1 && len(r.Managed.Devices) != n {
					return fail(rf+".managed.devices", "has %d device lists for %d replicas (managed.count): give one list, or one per replica",
						len(r.Managed.Devices), n)
				}
				for k, set := range r.Managed.Devices {
					for l, d := range set {
						if d < 0 {
							at := fmt.Sprintf("%s.managed.devices[%d][%d]", rf, k, l)
							if len(r.Managed.Devices) == 1 { // written as one flat list
								at = fmt.Sprintf("%s.managed.devices[%d]", rf, l)
							}
							return fail(at, "must not be negative, got %d", d)
						}
					}
				}
				if len(r.Managed.Command) > 0 && len(r.Managed.Args) > 0 {
					return fail(rf+".managed", "set either command or args, not both")
				}
				if r.Managed.StartTimeout.D() < time.Second {
					return fail(rf+".managed.start_timeout", "must be at least 1s")
				}
				if r.Managed.RestartUnhealthyAfter.D() < time.Second {
					return fail(rf+".managed.restart_unhealthy_after", "must be at least 1s")
				}
				if r.Managed.LogMaxBytes < MinManagedLogMaxBytes {
					return fail(rf+".managed.log_max_bytes", "must be at least %d (1 MiB), got %d", MinManagedLogMaxBytes, r.Managed.LogMaxBytes)
				}
				if len(r.Managed.Command) > 0 && !containsPlaceholder(r.Managed.Command, "{port}") {
					return fail(rf+".managed.command", "must contain the {port} placeholder")
				}
				// The file may not exist yet (make run generates it), so only where the reference
				// points is checked here; ResolveModel checks the file itself at each start.
				if name, hub := strings.CutPrefix(p.ModelRef, "hf:"); hub {
					if !hubNameRe.MatchString(name) || strings.Contains(name, "..") {
						return fail(f("model_ref"), "%q is not a hub model name (hf:org/name)", p.ModelRef)
					}
				} else if _, err := c.modelPath(p.ModelRef); err != nil {
					return fail(f("model_ref"), "%v", err)
				}
			default:
				return fail(rf, "set url or managed")
			}
		}
	}
	return nil
}

func containsPlaceholder(argv []string, ph string) bool {
	for _, a := range argv {
		if strings.Contains(a, ph) {
			return true
		}
	}
	return false
}

// IsLoopback reports whether host (from host:port) is a loopback name or address.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// HubModel returns the hub name of a reference "hf:org/name", which config validation checked;
// ok is false for any other reference (a file: see ResolveModel).
func HubModel(ref string) (name string, ok bool) {
	name, ok = strings.CutPrefix(ref, "hf:")
	return name, ok && hubNameRe.MatchString(name) && !strings.Contains(name, "..")
}

// ErrModelRef is returned by ResolveModel for a reference that does not name a model file
// inside the models directories.
var ErrModelRef = errors.New("invalid model reference")

// ResolveModel maps a managed pool's model reference (a config model_ref or a reload's
// new_model_ref) to the file an engine may load, or fails with ErrModelRef.
//
// A reference is a file path, optionally prefixed with "file:". A relative path is resolved
// against state_dir, like every other relative path of the configuration (so the default
// "models/tiny.gguf" names <state_dir>/models/tiny.gguf). After filepath.Clean the path must lie
// inside one of ModelsDirs, which refuses ".." escapes and absolute paths elsewhere without
// looking at the file system. Then every symbolic link is resolved (filepath.EvalSymlinks) and
// the result must still lie inside one of ModelsDirs (themselves resolved), and be a regular
// file: a link in a models directory that points outside it is refused. The returned path is
// the resolved one, so the engine opens exactly the file that was checked (a directory writer
// who swaps a path component for a link afterwards is outside this threat model: models_dirs
// must be writable only by the operator).
func (c *Config) ResolveModel(ref string) (string, error) {
	p, err := c.modelPath(ref)
	if err != nil {
		return "", err
	}
	resolved, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("%w: %q: no such model file in models_dirs (%s)", ErrModelRef, ref, strings.Join(c.ModelsDirs, ", "))
	}
	if !c.insideModelsDirs(resolved, true) {
		return "", fmt.Errorf("%w: %q resolves (through a symbolic link) outside models_dirs (%s)", ErrModelRef, ref, strings.Join(c.ModelsDirs, ", "))
	}
	fi, err := os.Stat(resolved)
	if err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w: %q is not a regular file in models_dirs (%s)", ErrModelRef, ref, strings.Join(c.ModelsDirs, ", "))
	}
	return resolved, nil
}

// modelPath is the lexical part of ResolveModel: the cleaned absolute path, inside ModelsDirs.
func (c *Config) modelPath(ref string) (string, error) {
	p := strings.TrimPrefix(ref, "file:")
	if p == "" || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%w: %q is not a file path in models_dirs (%s)", ErrModelRef, ref, strings.Join(c.ModelsDirs, ", "))
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(c.StateDir, p)
	}
	p, err := filepath.Abs(p) // cleans
	if err != nil {
		return "", fmt.Errorf("%w: %q: %w (models_dirs: %s)", ErrModelRef, ref, err, strings.Join(c.ModelsDirs, ", "))
	}
	if !c.insideModelsDirs(p, false) {
		return "", fmt.Errorf("%w: %q is outside models_dirs (%s)", ErrModelRef, ref, strings.Join(c.ModelsDirs, ", "))
	}
	return p, nil
}

// insideModelsDirs reports whether the absolute, clean path p lies strictly below one of
// ModelsDirs (resolved through symbolic links when resolve is set; a directory that does not
// exist then holds nothing).
func (c *Config) insideModelsDirs(p string, resolve bool) bool {
	for _, d := range c.ModelsDirs {
		root, err := filepath.Abs(d)
		if err != nil {
			continue
		}
		if resolve {
			if root, err = filepath.EvalSymlinks(root); err != nil {
				continue
			}
		}
		if _, ok := below(root, p); ok {
			return true
		}
	}
	return false
}

// below reports whether the absolute, clean path p lies strictly below root, with p relative
// to root ("." when they are equal).
func below(root, p string) (string, bool) {
	rel, err := filepath.Rel(root, p)
	if err != nil {
		return "", false
	}
	return rel, rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// Summary is a one-line description of the pools: count, replicas, engines, and each pool's
// engine and kind of replica, e.g. "2 pools, 2 replicas, engines llamacpp, vllm (default:
// llamacpp managed; gpu: vllm external http://10.0.0.5:8000)".
func (c *Config) Summary() string {
	var engines, pools []string
	replicas := 0
	for _, p := range c.Pools {
		if !slices.Contains(engines, p.Engine) {
			engines = append(engines, p.Engine)
		}
		replicas += len(p.Instances())
		var kinds []string
		for _, r := range p.Instances() {
			if r.Managed != nil {
				kinds = append(kinds, "managed")
			} else {
				kinds = append(kinds, "external "+r.URL)
			}
		}
		pools = append(pools, fmt.Sprintf("%s: %s %s", p.ID, p.Engine, strings.Join(kinds, ", ")))
	}
	plural := func(n int, s string) string {
		if n == 1 {
			return fmt.Sprintf("%d %s", n, s)
		}
		return fmt.Sprintf("%d %ss", n, s)
	}
	return fmt.Sprintf("%s, %s, engines %s (%s)", plural(len(c.Pools), "pool"), plural(replicas, "replica"),
		strings.Join(engines, ", "), strings.Join(pools, "; "))
}
