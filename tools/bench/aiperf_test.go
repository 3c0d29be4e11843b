package main

import (
	"strings"
	"testing"
)

func TestParseAiperf(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    aiperfRecord
		wantErr string
	}{
		{"export", `{"request_throughput":{"unit":"requests/sec","avg":15.53},"output_token_throughput":{"avg":992.04},
			"time_to_first_token":{"avg":60,"p50":49.213},"inter_token_latency":{"p50":5.364},"request_latency":{"p50":425.1},
			"request_count":{"avg":64},"error_request_count":null}`,
			aiperfRecord{RequestsPerS: 15.5, OutputTokensPerS: 992, TTFTP50Ms: 49.21, ITLP50Ms: 5.36, LatencyP50Ms: 425.1, Completed: 64}, ""},
		{"errors counted", `{"request_throughput":{"avg":1},"request_count":{"avg":3},"error_request_count":{"avg":2}}`,
			aiperfRecord{RequestsPerS: 1, Completed: 3, Errors: 2}, ""},
		{"no throughput", `{"request_count":{"avg":3}}`, aiperfRecord{}, "no request_throughput"},
		{"not JSON", `Traceback`, aiperfRecord{}, "aiperf export"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got aiperfRecord
			err := parseAiperf([]byte(tt.in), &got)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %+v %v, want %+v", got, err, tt.want)
			}
		})
	}
}

func TestAiperfArgs(t *testing.T) {
	p, err := planFor("short")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(aiperfArgs("http://U", "K", "TOK", "OUT", p), " ")
	want := "profile --model sim --url http://U --endpoint-type chat --streaming --api-key K --tokenizer TOK " +
		"--use-server-token-count --request-count 64 --concurrency 8 --synthetic-input-tokens-mean 32 " +
		"--output-tokens-mean 64 --ui-type none --output-artifact-dir OUT"
	if got != want {
		t.Errorf("args\n%s\nwant\n%s", got, want)
	}
}
