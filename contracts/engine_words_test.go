package contracts

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/gen/client"
)

// What engines say in their own words reaches clients only inside the contract: a finish
// reason outside stop_reason's enum, an error text longer than an error message's maxLength.
// (The stream's frames and every answer are validated against the contract by the harness.)

// TestEngineOwnFinishReason: an OpenAI-compatible server may end a generation with a finish
// reason of its own (content_filter, tool_calls); TGI and llama.cpp may add new ones. The end
// frame's stop_reason stays in its enum (eos: the engine ended the generation itself), and
// the engine's word is engine_stop_reason.
func TestEngineOwnFinishReason(t *testing.T) {
	t.Parallel()
	tests := []struct {
		engine     engine.StopReason
		stop, word string
	}{
		{"content_filter", "eos", "content_filter"},
		{engine.StopWord, "word", ""},
		{engine.StopReason(strings.Repeat("r", 100)), "eos", strings.Repeat("r", 64)},
	}
	h := newHarness(t)
	for _, tt := range tests {
		h.fake.SetEnding(tt.engine, nil)
		id := h.submit(t, taskReq(uuid.New())).JSON202.TaskId
		end := final(t, h.openStream(t, id, streamOpts{}).rest())
		word, _ := end.Data["engine_stop_reason"].(string)
		if end.Event != "end" || end.Data["stop_reason"] != tt.stop || word != tt.word {
			t.Errorf("engine stop %.20q: final frame %s %s, want end with stop_reason %q, engine_stop_reason %q",
				tt.engine, end.Event, end.Raw, tt.stop, tt.word)
		}
	}
}

// TestLongEngineErrorMessage: an engine that refuses a request with a long text (its JSON
// error body is read up to 64 KiB) fails the task with a message cut to the contract's 2048,
// at a character boundary, in the error frame and in GET's error.
func TestLongEngineErrorMessage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	long := strings.Repeat("é", 3000) // 6000 bytes; a cut at byte 2048 alone would split one
	h.fake.SetEnding("", engine.Errorf(engine.KindInvalidRequest, "%s", long))
	id := h.submit(t, taskReq(uuid.New())).JSON202.TaskId
	end := final(t, h.openStream(t, id, streamOpts{}).rest())
	msg, _ := end.Data["message"].(string)
	if end.Event != "error" || len(msg) > 2048 || len(msg) < 2040 || !utf8.ValidString(msg) {
		t.Errorf("final frame %s with a message of %d bytes (valid UTF-8: %v), want error with 2040-2048 bytes of it",
			end.Event, len(msg), utf8.ValidString(msg))
	}
	st := h.state(t, id) // validated: ErrorEnvelope.message has maxLength 2048
	if st.State != client.Failed || st.Error == nil || st.Error.Message != msg {
		t.Errorf("getTask: state %s, error %+v; want failed with the frame's message", st.State, st.Error)
	}
}

// TestOpenAIContentFilter: a text an engine's content filter ended (an OpenAI-compatible
// server's finish_reason content_filter) keeps that word on the OpenAI facade, whose clients
// check for it; any other engine word is "stop" there.
func TestOpenAIContentFilter(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for _, tt := range []struct {
		engine engine.StopReason
		want   string
	}{{"content_filter", "content_filter"}, {"tool_calls", "stop"}} {
		h.fake.SetEnding(tt.engine, nil)
		body := `{"model":"` + modelID + `","messages":[{"role":"user","content":"Hi"}]}`
		resp, b := h.do(t, http.MethodPost, "/v1/chat/completions", strings.NewReader(body), bearer(testKey))
		var got struct {
			Choices []struct {
				FinishReason string `json:"finish_reason"`
			} `json:"choices"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &got) != nil || len(got.Choices) != 1 || got.Choices[0].FinishReason != tt.want {
			t.Errorf("engine %q: %d %s, want finish_reason %q", tt.engine, resp.StatusCode, b, tt.want)
		}

		req, _ := http.NewRequestWithContext(h.ctx(t), http.MethodPost, h.url+"/v1/chat/completions",
			strings.NewReader(`{"model":"`+modelID+`","stream":true,"messages":[{"role":"user","content":"Hi"}]}`))
		req.Header = bearer(testKey)
		sr, err := h.raw.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		cs, _ := readChunks(t, sr.Body)
		_ = sr.Body.Close()
		var last string
		for _, c := range cs {
			if len(c.Choices) > 0 && c.Choices[0].FinishReason != nil {
				last = *c.Choices[0].FinishReason
			}
		}
		if last != tt.want {
			t.Errorf("engine %q, streamed: finish_reason %q, want %q", tt.engine, last, tt.want)
		}
	}
}
