package triton

import (
	"testing"

	"github.com/orchestratord/orchestratord/engine"
)

// Errors a Triton backend reports and the fault they should have. Triton's scheduler refuses a
// request when the model's queue is full (max_queue_size) with Status UNAVAILABLE "Exceeds
// maximum queue size": HTTP 503 when refused at enqueue, or the same words in the response (a
// decoupled model's stream). Either way the replica is busy, not broken, and the task is not
// at fault. The vLLM backend (one of the two backends whose tensor names are the defaults)
// reports a prompt longer than the model's context with vLLM's words, "The decoder prompt
// (length N) is longer than the maximum model length of M.", inside the stream: the task's
// fault, which no other replica would serve either.
func TestTritonErrorFaults(t *testing.T) {
	const sse = "text/event-stream"
	tests := []struct {
		name   string
		status int
		ct     string
		frames []string
		fault  engine.Fault
	}{
		{"503 queue full", 503, "application/json", []string{`{"error":"Exceeds maximum queue size"}`}, engine.FaultOverload},
		{"queue full in the stream", 200, sse, []string{`data: {"error":"Exceeds maximum queue size"}` + "\n\n"}, engine.FaultOverload},
		{"vLLM backend: prompt longer than the model", 200, sse,
			[]string{`data: {"error":"Error generating stream: The decoder prompt (length 5000) is longer than the maximum model length of 4096. Make sure that max_model_len is no smaller than the number of text tokens."}` + "\n\n"},
			engine.FaultRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := server(t, tt.status, tt.ct, tt.frames, nil)
			r := New(Options{BaseURL: base, Model: "m"})
			_, err := r.Generate(t.Context(), engine.Request{Prompt: "p", MaxTokens: 5}, func(engine.Token) error { return nil })
			if k := engine.KindOf(err); err == nil || k.Fault() != tt.fault {
				t.Errorf("err %v (kind %v, fault %v), want fault %v", err, k, k.Fault(), tt.fault)
			}
		})
	}
}
