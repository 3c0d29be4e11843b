package load

import (
	"strings"
	"testing"
	"time"
)

func TestNormalizeDefaults(t *testing.T) {
	tests := []struct {
		name       string
		in         Options
		wantTokens int
		wantStream bool
	}{
		{"admit", Options{Target: TargetOrchdAdmit}, 1, false},
		{"orchd stream", Options{Target: TargetOrchdStream}, DefaultStreamTokens, true},
		{"llama stream", Options{Target: TargetLlamaCppStream}, DefaultStreamTokens, true},
		{"openai non-stream", Options{Target: TargetOpenAIStream, NoStream: true}, 1, false},
		{"explicit tokens", Options{Target: TargetOpenAIStream, Tokens: 5}, 5, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.in
			o.URL = "http://127.0.0.1:1"
			if err := o.Normalize(); err != nil {
				t.Fatal(err)
			}
			if o.Tokens != tt.wantTokens || o.IsStream() != tt.wantStream {
				t.Fatalf("tokens %d stream %v", o.Tokens, o.IsStream())
			}
			if o.Requests != DefaultRequests || o.Duration != DefaultDuration || o.Concurrency != DefaultConcurrency ||
				o.Sessions != DefaultConcurrency || o.Timeout != DefaultTimeout || o.Grace != DefaultGrace || o.Logger == nil {
				t.Fatalf("defaults not applied: %+v", o)
			}
		})
	}
}

func TestNormalizeRejects(t *testing.T) {
	valid := func() Options { return Options{URL: "http://127.0.0.1:8080", Target: TargetOrchdAdmit} }
	tests := []struct {
		name   string
		mutate func(*Options)
		want   string
	}{
		{"unknown target", func(o *Options) { o.Target = "nope" }, "unknown target"},
		{"non-loopback", func(o *Options) { o.URL = "http://192.168.1.1:8080" }, "only loopback"},
		{"hostname", func(o *Options) { o.URL = "http://example.com" }, "only loopback"},
		{"bad scheme", func(o *Options) { o.URL = "ftp://127.0.0.1" }, "scheme"},
		{"empty url", func(o *Options) { o.URL = "" }, "scheme"},
		{"too many requests", func(o *Options) { o.Requests = MaxRequests + 1 }, "requests"},
		{"negative requests", func(o *Options) { o.Requests = -1 }, "requests"},
		{"too long", func(o *Options) { o.Duration = 2 * MaxDuration }, "duration"},
		{"negative duration", func(o *Options) { o.Duration = -time.Second }, "duration"},
		{"concurrency", func(o *Options) { o.Concurrency = MaxConcurrency + 1 }, "concurrency"},
		{"rate", func(o *Options) { o.Rate = -1 }, "rate"},
		{"no-stream orchd", func(o *Options) { o.NoStream = true }, "stream=false"},
		{"tokens", func(o *Options) { o.Tokens = -3 }, "tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := valid()
			tt.mutate(&o)
			err := o.Normalize()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestParseLoopbackURL(t *testing.T) {
	tests := []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8080", true},
		{"http://127.1.2.3", true},
		{"https://localhost:443/x", true},
		{"http://LOCALHOST", true},
		{"http://[::1]:80", true},
		{"http://0.0.0.0:80", false},
		{"http://[::]:80", false},
		{"http://10.0.0.1", false},
		{"http://localhost.example.com", false},
		{"http://127.0.0.1.nip.io", false},
		{"unix:///tmp/x", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			if _, err := ParseLoopbackURL(tt.url); (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

// TestTransportRefusesNonLoopback checks the dialer's guard; it fails before any packet is sent
// (the check runs before connect).
func TestTransportRefusesNonLoopback(t *testing.T) {
	tr := NewLoopbackTransport(1)
	defer tr.CloseIdleConnections()
	_, err := tr.DialContext(t.Context(), "tcp", "192.0.2.1:80") // TEST-NET-1, never routed
	if err == nil || !strings.Contains(err.Error(), "non-loopback") {
		t.Fatalf("err = %v", err)
	}
}
