package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/orchestratord/orchestratord/tools/enginesim/sim"
	"github.com/orchestratord/orchestratord/tools/loadgen/load"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func noEnv(string) string { return "" }

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, c config)
	}{
		{"minimal", []string{"-url", "http://127.0.0.1:1", "-target", "orchd-admit"}, nil, "", func(t *testing.T, c config) {
			if c.opts.Requests != load.DefaultRequests || c.opts.Duration != load.DefaultDuration || c.opts.Tokens != 1 {
				t.Fatalf("defaults %+v", c.opts)
			}
		}},
		{"all", []string{"-url", "http://localhost:1", "-target", "openai-stream", "-concurrency", "3", "-rate", "10",
			"-requests", "50", "-duration", "5s", "-tokens", "7", "-stream=false", "-api-key", "sk", "-model", "m",
			"-prompt", "p", "-json", "-", "-label", "L", "-timeout", "2s", "-grace", "1s"}, nil, "", func(t *testing.T, c config) {
			o := c.opts
			if o.Concurrency != 3 || o.Rate != 10 || o.Requests != 50 || o.Tokens != 7 || !o.NoStream || o.APIKey != "sk" ||
				o.Model != "m" || o.Prompt != "p" || o.Label != "L" || c.jsonPath != "-" {
				t.Fatalf("parsed %+v", o)
			}
		}},
		{"api key from env", []string{"-url", "http://127.0.0.1:1", "-target", "orchd-stream"},
			map[string]string{"LOADGEN_API_KEY": "envkey"}, "", func(t *testing.T, c config) {
				if c.opts.APIKey != "envkey" || c.opts.Tokens != load.DefaultStreamTokens {
					t.Fatalf("parsed %+v", c.opts)
				}
			}},
		{"missing url", []string{"-target", "orchd-admit"}, nil, "required", nil},
		{"missing target", []string{"-url", "http://127.0.0.1:1"}, nil, "required", nil},
		{"non-loopback", []string{"-url", "http://203.0.113.5:80", "-target", "orchd-admit"}, nil, "loopback", nil},
		{"unknown target", []string{"-url", "http://127.0.0.1:1", "-target", "x"}, nil, "unknown target", nil},
		{"no-stream orchd", []string{"-url", "http://127.0.0.1:1", "-target", "orchd-stream", "-stream=false"}, nil, "stream=false", nil},
		{"requests bound", []string{"-url", "http://127.0.0.1:1", "-target", "orchd-admit", "-requests", "0"}, nil, "", nil},
		{"too many requests", []string{"-url", "http://127.0.0.1:1", "-target", "orchd-admit", "-requests", "2000000"}, nil, "requests", nil},
		{"extra args", []string{"-url", "http://127.0.0.1:1", "-target", "orchd-admit", "x"}, nil, "unexpected", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFlags(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if tt.check != nil {
					tt.check(t, c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestRunWritesJSONAndSummary(t *testing.T) {
	ts := httptest.NewServer(sim.NewHandler(sim.Options{}))
	defer ts.Close()
	path := filepath.Join(t.TempDir(), "result.json")
	var stdout, stderr strings.Builder
	code := run(context.Background(), []string{"-url", ts.URL, "-target", "llamacpp-stream", "-requests", "5",
		"-concurrency", "2", "-tokens", "3", "-json", path, "-label", "direct"}, noEnv, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "direct (llamacpp-stream)") {
		t.Fatalf("summary %q", stdout.String())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var res load.Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Succeeded != 5 || res.TokensReceived != 15 || res.Label != "direct" || res.TokenLatencyMs == nil {
		t.Fatalf("result %s", b)
	}
}

func TestRunExitCodes(t *testing.T) {
	ts := httptest.NewServer(sim.NewHandler(sim.Options{}))
	defer ts.Close()
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"usage", []string{"-target", "orchd-admit"}, exitUsage},
		{"help", []string{"-h"}, exitOK},
		{"no success", []string{"-url", ts.URL, "-target", "orchd-admit", "-requests", "2"}, exitNoSuccess},
		{"json to stdout", []string{"-url", ts.URL, "-target", "openai-stream", "-stream=false", "-requests", "2", "-json", "-"}, exitOK},
		{"unwritable json", []string{"-url", ts.URL, "-target", "openai-stream", "-requests", "1", "-json", filepath.Join(t.TempDir(), "no", "such", "dir.json")}, exitFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			if got := run(context.Background(), tt.args, noEnv, &stdout, &stderr); got != tt.want {
				t.Fatalf("exit %d, want %d; stderr %s", got, tt.want, stderr.String())
			}
			if tt.name == "json to stdout" {
				var res load.Result
				if err := json.Unmarshal([]byte(stdout.String()), &res); err != nil || res.Succeeded != 2 {
					t.Fatalf("stdout is not the JSON result: %v %q", err, stdout.String())
				}
			}
		})
	}
}
