package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "profile" {
		return runProfile(ctx, args[1:], stderr)
	}
	if len(args) > 0 && args[0] == "run" {
		args = args[1:]
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	planName := fs.String("plan", "short", "short (make bench) or full (make bench-full)")
	out := fs.String("out", "tmp/bench", "directory for <name>.json and <name>.md")
	name := fs.String("name", "", "result name (default: the plan's name)")
	scratch := fs.String("scratch", "", "directory for logs, configs and raw loadgen results (default: tmp/bench/scratch/<name>)")
	scenarios := fs.String("scenarios", "admission,relay,idle,queue,aiperf", "scenarios to run")
	contenders := fs.String("contenders", "direct,nginx,orchestratord,litellm", "contenders to run (orchestratord-info is added by -plan full; orchestratord-nosync, journal.sync none, and go-relay, a net/http reverse proxy, only when named)")
	rounds := fs.Int("rounds", 0, "override the plan's rounds")
	venv := fs.String("litellm-venv", ".tools/litellm-venv", "LiteLLM virtualenv (tools/bench/setup.sh creates it)")
	aiperfVenv := fs.String("aiperf-venv", ".tools/aiperf-venv", "aiperf virtualenv (tools/bench/setup.sh creates it)")
	litellmWorkers := fs.Int("litellm-workers", 1, "LiteLLM proxy worker processes (its default, 1; more start slowly and did not add throughput here)")
	setupDir := fs.String("setup-status", "", "directory where tools/bench/setup.sh wrote <contender>.reason files")
	skipBuild := fs.Bool("skip-build", false, "use the binaries already in <scratch>/bin")
	command := fs.String("command", "", "the command line to record in the report (default: this one)")
	baseOrchd := fs.String("base-orchd", "", "an orchestratord binary built before a change: adds the contender orchestratord-base")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	p, err := planFor(*planName)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	if *rounds > 0 {
		p.Rounds = *rounds
	}
	if *name == "" {
		*name = p.Name
	}
	if *scratch == "" {
		*scratch = filepath.Join("tmp", "bench", "scratch", *name)
	}
	if *command == "" {
		*command = "go run ./tools/bench " + strings.Join(args, " ")
	}
	b := &bench{
		plan: p, name: *name, out: *out, scratch: *scratch, venv: *venv, aiperfVenv: *aiperfVenv, litellmWorkers: *litellmWorkers,
		scenarios: splitSet(*scenarios), wanted: splitList(*contenders), command: *command,
		unavailable: map[string]string{}, maxRun: 3 * time.Hour,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	if p.InfoLogging && contains(b.wanted, cOrchd) && !contains(b.wanted, cOrchdInfo) {
		b.wanted = append(b.wanted, cOrchdInfo)
	}
	if *baseOrchd != "" {
		b.baseOrchd = *baseOrchd
		if !contains(b.wanted, cOrchdBase) {
			b.wanted = append(b.wanted, cOrchdBase)
		}
	}
	if err := b.prepare(ctx, *skipBuild, *setupDir); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	if err := b.runAll(ctx); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	return 0
}

// bench is one invocation's state.
type bench struct {
	plan           plan
	name           string
	out            string
	scratch        string
	venv           string
	aiperfVenv     string
	litellmWorkers int
	scenarios      map[string]bool
	wanted         []string
	command        string
	maxRun         time.Duration
	log            *slog.Logger

	nginxBin    string
	traceRun    bool // profile: an execution trace of the measured run
	litellmBin  string
	aiperfBin   string
	baseOrchd   string
	unavailable map[string]string // contender → why it did not run
	versions    map[string]string
	seq         int
	restarts    []string // relays that died between runs and were restarted
}

func (b *bench) binPath(name string) string { return filepath.Join(b.scratch, "bin", name) }
func (b *bench) logPath(name string) string { return filepath.Join(b.scratch, "logs", name+".log") }

// prepare creates the scratch directories, raises the open-file limit, builds the Go binaries
// and finds nginx and LiteLLM.
func (b *bench) prepare(ctx context.Context, skipBuild bool, setupDir string) error {
	for _, d := range []string{b.out, filepath.Join(b.scratch, "logs"), filepath.Join(b.scratch, "runs"), filepath.Join(b.scratch, "bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	raiseNoFile()
	if !skipBuild {
		b.log.Info("building orchestratord, enginesim, loadgen and gorelay")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(b.scratch, "bin")+"/",
			"./cmd/orchestratord", "./tools/enginesim", "./tools/loadgen", "./tools/gorelay")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build: %w", err)
		}
	}
	b.versions = map[string]string{}
	reason := func(c, fallback string) string {
		if setupDir != "" {
			if r, err := os.ReadFile(filepath.Join(setupDir, c+".reason")); err == nil && len(strings.TrimSpace(string(r))) > 0 {
				return strings.TrimSpace(string(r))
			}
		}
		return fallback
	}
	if contains(b.wanted, "nginx") {
		path, err := exec.LookPath("nginx")
		if err != nil {
			if _, serr := os.Stat("/usr/sbin/nginx"); serr == nil {
				path, err = "/usr/sbin/nginx", nil
			}
		}
		if err != nil {
			b.unavailable["nginx"] = reason("nginx", "nginx is not installed (tools/bench/setup.sh installs Debian's nginx with apt-get)")
		} else {
			b.nginxBin = path
			v, _ := exec.Command(path, "-v").CombinedOutput()
			b.versions["nginx"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(v)), "nginx version: "))
		}
	}
	if contains(b.wanted, "litellm") {
		bin := filepath.Join(b.venv, "bin", "litellm")
		if _, err := os.Stat(bin); err != nil {
			b.unavailable["litellm"] = reason("litellm", fmt.Sprintf("%s not found (tools/bench/setup.sh installs LiteLLM from PyPI)", bin))
		} else {
			abs, _ := filepath.Abs(bin)
			b.litellmBin = abs
			v, _ := exec.Command(filepath.Join(b.venv, "bin", "python"), "-c",
				"import importlib.metadata as m, sys; print(m.version('litellm'), sys.version.split()[0])").Output()
			if f := strings.Fields(string(v)); len(f) == 2 {
				b.versions["litellm"] = f[0]
				b.versions["python"] = f[1]
			}
		}
	}
	if b.scenarios["aiperf"] {
		bin := filepath.Join(b.aiperfVenv, "bin", "aiperf")
		if _, err := os.Stat(bin); err != nil {
			b.unavailable["aiperf"] = reason("aiperf", fmt.Sprintf("%s not found (tools/bench/setup.sh installs aiperf from PyPI)", bin))
		} else {
			abs, _ := filepath.Abs(bin)
			b.aiperfBin = abs
			v, _ := exec.Command(filepath.Join(b.aiperfVenv, "bin", "python"), "-c",
				"import importlib.metadata as m; print(m.version('aiperf'))").Output()
			b.versions["aiperf"] = strings.TrimSpace(string(v))
		}
	}
	if v, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		b.versions["go"] = strings.TrimSpace(string(v))
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func splitSet(s string) map[string]bool {
	m := map[string]bool{}
	for _, f := range splitList(s) {
		m[f] = true
	}
	return m
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// raiseNoFile raises the soft open-file limit to the hard one; the children inherit it (5,000
// streams need about 10,000 descriptors in a relay and as many in loadgen).
func raiseNoFile() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}
