package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/orchestratord/orchestratord/internal/gguf"
)

// Scenario 5, aiperf: an independent benchmark client (NVIDIA's aiperf, PyPI, pinned by
// tools/bench/setup.sh into .tools/aiperf-venv) drives the OpenAI-compatible routes: the
// simulator's own (direct) and orchestratord's facade in front of the same simulator, streaming
// chat completions at a fixed concurrency. aiperf needs a Hugging Face tokenizer to build its
// synthetic prompts; the bench writes the one generated for the project's models
// (internal/gguf.WriteHFTokenizer) into the scratch directory, and aiperf counts tokens from the
// servers' `usage` (--use-server-token-count).

// aiperfRecord is one aiperf run.
type aiperfRecord struct {
	Contender        string  `json:"contender"`
	Endpoint         string  `json:"endpoint"`
	Concurrency      int     `json:"concurrency"`
	Requests         int     `json:"requests"`
	Completed        int     `json:"completed"`
	Errors           int     `json:"errors"`
	RequestsPerS     float64 `json:"requests_per_s"`
	OutputTokensPerS float64 `json:"output_tokens_per_s"`
	TTFTP50Ms        float64 `json:"ttft_p50_ms"`
	ITLP50Ms         float64 `json:"itl_p50_ms"`
	LatencyP50Ms     float64 `json:"latency_p50_ms"`
	Command          string  `json:"command"`
	Err              string  `json:"error,omitempty"`
}

// aiperfArgs is the aiperf command line for one run.
func aiperfArgs(url, key, tokenizer, outDir string, p plan) []string {
	return []string{"profile", "--model", simModel, "--url", url, "--endpoint-type", "chat", "--streaming",
		"--api-key", key, "--tokenizer", tokenizer, "--use-server-token-count",
		"--request-count", strconv.Itoa(p.AiperfRequests), "--concurrency", strconv.Itoa(p.AiperfConcurrency),
		"--synthetic-input-tokens-mean", "32", "--output-tokens-mean", strconv.Itoa(p.AiperfTokens),
		"--ui-type", "none", "--output-artifact-dir", outDir}
}

// aiperfExport is the part of aiperf's profile_export_aiperf.json the report uses.
type aiperfExport struct {
	RequestThroughput     aiperfStat `json:"request_throughput"`
	OutputTokenThroughput aiperfStat `json:"output_token_throughput"`
	TimeToFirstToken      aiperfStat `json:"time_to_first_token"`
	InterTokenLatency     aiperfStat `json:"inter_token_latency"`
	RequestLatency        aiperfStat `json:"request_latency"`
	RequestCount          aiperfStat `json:"request_count"`
	ErrorRequestCount     aiperfStat `json:"error_request_count"`
}

type aiperfStat struct {
	Unit string   `json:"unit"`
	Avg  *float64 `json:"avg"`
	P50  *float64 `json:"p50"`
}

func (s aiperfStat) avg() float64 {
	if s.Avg == nil {
		return 0
	}
	return math.Round(*s.Avg*10) / 10
}

func (s aiperfStat) p50() float64 {
	if s.P50 == nil {
		return 0
	}
	return math.Round(*s.P50*100) / 100
}

// parseAiperf reads aiperf's JSON export into rec.
func parseAiperf(b []byte, rec *aiperfRecord) error {
	var e aiperfExport
	if err := json.Unmarshal(b, &e); err != nil {
		return fmt.Errorf("aiperf export: %w", err)
	}
	if e.RequestThroughput.Avg == nil {
		return errors.New("aiperf export: no request_throughput")
	}
	rec.RequestsPerS = e.RequestThroughput.avg()
	rec.OutputTokensPerS = e.OutputTokenThroughput.avg()
	rec.TTFTP50Ms = e.TimeToFirstToken.p50()
	rec.ITLP50Ms = e.InterTokenLatency.p50()
	rec.LatencyP50Ms = e.RequestLatency.p50()
	rec.Completed = int(e.RequestCount.avg())
	rec.Errors = int(e.ErrorRequestCount.avg())
	return nil
}

// runAiperf runs scenario 5 against direct and orchestratord.
func (b *bench) runAiperf(ctx context.Context, rep *report) {
	if reason, ok := b.unavailable["aiperf"]; ok {
		b.log.Warn("aiperf unavailable", "reason", reason)
		return
	}
	p := b.plan
	tok := filepath.Join(b.scratch, "tokenizer")
	if err := gguf.WriteHFTokenizer(tok); err != nil {
		rep.Aiperf = append(rep.Aiperf, aiperfRecord{Contender: cOrchd, Err: err.Error()})
		return
	}
	sim, err := b.startSim(ctx, "sim-aiperf", p.RelayTokenDelay.D())
	if err != nil {
		rep.Aiperf = append(rep.Aiperf, aiperfRecord{Contender: cDirect, Err: err.Error()})
		return
	}
	defer sim.stop()
	orchd, err := b.startOrchd(ctx, "orchestratord-aiperf", sim, "warn", p.AiperfConcurrency)
	if err != nil {
		rep.Aiperf = append(rep.Aiperf, aiperfRecord{Contender: cOrchd, Err: err.Error()})
	} else {
		defer orchd.stop()
	}
	targets := []struct {
		name string
		svc  *service
	}{{cDirect, sim}, {cOrchd, orchd}}
	for _, tg := range targets {
		if tg.svc == nil || ctx.Err() != nil || !contains(b.wanted, tg.name) {
			continue
		}
		out := filepath.Join(b.scratch, "aiperf", tg.name)
		_ = os.RemoveAll(out)
		args := aiperfArgs(tg.svc.url, benchKey, tok, out, p)
		rec := aiperfRecord{Contender: tg.name, Endpoint: "/v1/chat/completions (stream)", Concurrency: p.AiperfConcurrency,
			Requests: p.AiperfRequests, Command: "aiperf " + strings.Join(args, " ")}
		b.log.Info("aiperf", "contender", tg.name, "requests", p.AiperfRequests, "concurrency", p.AiperfConcurrency)
		runCtx, cancel := context.WithTimeout(ctx, p.AiperfTimeout.D())
		cmd := exec.CommandContext(runCtx, b.aiperfBin, args...)
		logf, lerr := os.Create(b.logPath("aiperf-" + tg.name))
		if lerr == nil {
			cmd.Stdout, cmd.Stderr = logf, logf
		}
		err := cmd.Run()
		cancel()
		if logf != nil {
			_ = logf.Close()
		}
		if err != nil {
			rec.Err = fmt.Sprintf("%v (log: %s)", err, b.logPath("aiperf-"+tg.name))
		} else if raw, rerr := os.ReadFile(filepath.Join(out, "profile_export_aiperf.json")); rerr != nil {
			rec.Err = rerr.Error()
		} else if perr := parseAiperf(raw, &rec); perr != nil {
			rec.Err = perr.Error()
		}
		rep.Aiperf = append(rep.Aiperf, rec)
		b.settleSim(ctx, sim)
	}
}

// settleSim waits (bounded) until the simulator has no generation in flight.
func (b *bench) settleSim(ctx context.Context, sim *service) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		st, err := sim.simStats(ctx)
		if err != nil || st.Active == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
