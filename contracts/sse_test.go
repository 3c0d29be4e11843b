package contracts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/impl/sse"
)

// frame is one validated SSE frame.
type frame struct {
	ID    int
	Event string
	Data  map[string]any
	Raw   string
}

// sseChecker validates a stream frame by frame against x-sse-events and the ordering rules of
// streamTask. It is pure (no I/O) so that it can itself be tested on synthetic streams.
type sseChecker struct {
	schemas map[string]*openapi3.Schema

	firstID   int  // expected id of the first frame: 0, or Last-Event-ID + 1
	resumed   bool // started with Last-Event-ID: no started frame may follow
	nextToken int  // expected i of the next token; -1: learn it from the first token (resume)

	frames   int
	lastID   int
	final    string // "end" or "error" once seen
	finalObj map[string]any

	canceled          bool
	tokensAtCancel    int
	tokensAfterCancel int
	tokens            int
}

func newSSEChecker(schemas map[string]*openapi3.Schema) *sseChecker {
	return &sseChecker{schemas: schemas, lastID: -1}
}

// resumeAfter configures the checker for a stream opened with Last-Event-ID: last. tokenBase is
// the i of the first token expected (-1 when unknown).
func (c *sseChecker) resumeAfter(last, tokenBase int) {
	c.firstID, c.resumed, c.lastID, c.nextToken = last+1, true, last, tokenBase
}

// markCanceled records that a cancel was acknowledged (204) now.
func (c *sseChecker) markCanceled() {
	c.canceled = true
	c.tokensAtCancel = c.tokens
}

// add validates one frame.
func (c *sseChecker) add(ev sse.Event) (frame, []string) {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	f := frame{Event: ev.Event, Raw: ev.Data}

	if c.final != "" {
		bad("frame %q (id %s) after the final %s", ev.Event, ev.ID, c.final)
	}
	id, err := strconv.Atoi(ev.ID)
	switch {
	case err != nil || ev.ID == "" || strconv.Itoa(id) != ev.ID:
		bad("id %q is not a decimal event id", ev.ID)
	case c.frames == 0 && id != c.firstID:
		bad("first id %d, want %d", id, c.firstID)
	case c.frames > 0 && id <= c.lastID:
		bad("id %d does not increase (previous %d)", id, c.lastID)
	}
	f.ID = id
	c.lastID = id

	schema, known := c.schemas[ev.Event]
	if !known {
		bad("event %q is not declared in x-sse-events", ev.Event)
	}
	if strings.Contains(ev.Data, "\n") {
		bad("data spans several lines")
	}
	var doc any
	if err := json.Unmarshal([]byte(ev.Data), &doc); err != nil {
		bad("event %s: data is not JSON: %v: %q", ev.Event, err, ev.Data)
	} else {
		f.Data, _ = doc.(map[string]any)
		if f.Data == nil {
			bad("event %s: data is not a JSON object: %q", ev.Event, ev.Data)
		}
		if known {
			if err := schema.VisitJSON(doc, append(schemaOpts, openapi3.VisitAsResponse())...); err != nil {
				bad("event %s: data %s does not match its schema: %v", ev.Event, ev.Data, err)
			}
		}
	}

	switch ev.Event {
	case "started":
		if c.frames != 0 || c.resumed {
			bad("started is not the first frame of the stream")
		}
	case "token":
		i, ok := f.Data["i"].(float64)
		switch {
		case !ok:
		case c.nextToken < 0:
			c.nextToken = int(i)
		case int(i) != c.nextToken:
			bad("token i %v, want %d (contiguous from 0)", i, c.nextToken)
		}
		c.nextToken = int(i) + 1
		c.tokens++
		if c.canceled {
			c.tokensAfterCancel++
		}
	case "end", "error":
		if c.final == "" {
			c.final, c.finalObj = ev.Event, f.Data
		}
	}
	if c.frames == 0 && !c.resumed && ev.Event != "started" {
		bad("first frame is %q, want started", ev.Event)
	}
	c.frames++
	return f, problems
}

// finish validates the end of the stream.
func (c *sseChecker) finish() []string {
	var problems []string
	if c.final == "" {
		problems = append(problems, "the stream ended without an end or error frame")
	}
	if c.canceled {
		if c.final != "end" {
			problems = append(problems, fmt.Sprintf("a canceled task's stream ended with %q, want end", c.final))
		} else if v, _ := c.finalObj["canceled"].(bool); !v {
			problems = append(problems, "a canceled task's end frame lacks canceled: true")
		}
	}
	return problems
}

// ---------------------------------------------------------------------------------------------
// Reading a live stream.

// stream is an open streamTask response read frame by frame through an sseChecker.
type stream struct {
	t      testing.TB
	resp   *http.Response
	rd     *sse.Reader
	chk    *sseChecker
	cancel context.CancelFunc
	frames []frame
	done   bool
}

type streamOpts struct {
	lastEventID *int
	tokenBase   int
	verbose     bool
	key         string // "": the harness's test key
}

// openStream opens a task's stream through the generated client and requires a 200
// text/event-stream response. Closing the stream (or the end of the test) disconnects.
func (h *harness) openStream(t testing.TB, id uuid.UUID, o streamOpts) *stream {
	t.Helper()
	// The bound only keeps a broken daemon from hanging the suite.
	ctx, cancel := context.WithTimeout(h.ctx(t), 30*time.Second)
	params := &client.StreamTaskParams{}
	if o.verbose {
		params.Verbose = ptr(true)
	}
	chk := newSSEChecker(h.c.events)
	if o.lastEventID != nil {
		params.LastEventID = ptr(strconv.Itoa(*o.lastEventID))
		chk.resumeAfter(*o.lastEventID, o.tokenBase)
	}
	cl := h.client
	if o.key != "" {
		cl = h.as(t, o.key)
	}
	resp, err := cl.StreamTask(ctx, id, params)
	if err != nil {
		cancel()
		t.Fatalf("streamTask: %v", err)
	}
	s := &stream{t: t, resp: resp, rd: sse.NewReader(resp.Body, 0), chk: chk, cancel: cancel}
	t.Cleanup(s.close)
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || mt != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("streamTask: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return s
}

// close disconnects.
func (s *stream) close() {
	s.cancel()
	_ = s.resp.Body.Close()
}

// next reads and validates the next frame; false at the end of the stream (which is then
// validated too).
func (s *stream) next() (frame, bool) {
	s.t.Helper()
	if s.done {
		return frame{}, false
	}
	ev, err := s.rd.Next()
	if errors.Is(err, io.EOF) {
		s.done = true
		if p := s.chk.finish(); len(p) > 0 {
			s.t.Errorf("SSE contract violation at the end of the stream:\n  %s\nframes: %s", strings.Join(p, "\n  "), s.dump())
		}
		return frame{}, false
	}
	if err != nil {
		s.done = true
		s.t.Fatalf("reading the stream after %d frames: %v\nframes: %s", len(s.frames), err, s.dump())
	}
	f, p := s.chk.add(ev)
	s.frames = append(s.frames, f)
	if len(p) > 0 {
		s.t.Errorf("SSE contract violation at frame id %s (%s):\n  %s", ev.ID, ev.Event, strings.Join(p, "\n  "))
	}
	return f, true
}

// until reads frames until pred holds for one and returns it.
func (s *stream) until(what string, pred func(frame) bool) frame {
	s.t.Helper()
	for {
		f, ok := s.next()
		if !ok {
			s.t.Fatalf("the stream ended before %s; frames: %s", what, s.dump())
		}
		if pred(f) {
			return f
		}
	}
}

// rest reads the stream to its end and returns every frame read since it was opened.
func (s *stream) rest() []frame {
	s.t.Helper()
	for {
		if _, ok := s.next(); !ok {
			return s.frames
		}
	}
}

func (s *stream) dump() string {
	var b strings.Builder
	for _, f := range s.frames {
		fmt.Fprintf(&b, "\n    %d %s %s", f.ID, f.Event, f.Raw)
	}
	return b.String()
}

// isToken matches the token frame with index i.
func isToken(i int) func(frame) bool {
	return func(f frame) bool { return f.Event == "token" && f.Data["i"] == float64(i) }
}

// text concatenates the tokens of frames.
func text(frames []frame) string {
	var b strings.Builder
	for _, f := range frames {
		if f.Event == "token" {
			s, _ := f.Data["t"].(string)
			b.WriteString(s)
		}
	}
	return b.String()
}

// final returns the last frame, which must be end or error.
func final(t testing.TB, frames []frame) frame {
	t.Helper()
	if len(frames) == 0 {
		t.Fatal("no frames")
	}
	return frames[len(frames)-1]
}

func count(frames []frame, event string) int {
	n := 0
	for _, f := range frames {
		if f.Event == event {
			n++
		}
	}
	return n
}

// ---------------------------------------------------------------------------------------------
// The checker itself must catch what it claims to catch.

func TestSSECheckerCatchesViolations(t *testing.T) {
	c := mustContract(t)
	started := `{"queue_position":0,"predicted_start_ms":0}`
	tok := func(i int) string { return fmt.Sprintf(`{"t":"x","i":%d}`, i) }
	end := `{"tokens_out":1,"decode_ms":1,"decode_time_ms":1}`
	type ev = [3]string // id, event, data
	tests := []struct {
		name     string
		frames   []ev
		resume   *int
		cancelAt int // mark canceled after this many frames (-1: never)
		want     string
	}{
		{name: "valid", frames: []ev{{"0", "started", started}, {"1", "token", tok(0)}, {"2", "end", end}}, cancelAt: -1},
		{name: "first not started", frames: []ev{{"0", "token", tok(0)}, {"1", "end", end}}, cancelAt: -1, want: "want started"},
		{name: "first id not 0", frames: []ev{{"1", "started", started}, {"2", "end", end}}, cancelAt: -1, want: "first id 1"},
		{name: "id not increasing", frames: []ev{{"0", "started", started}, {"0", "end", end}}, cancelAt: -1, want: "does not increase"},
		{name: "token gap", frames: []ev{{"0", "started", started}, {"1", "token", tok(1)}, {"2", "end", end}}, cancelAt: -1, want: "contiguous"},
		{name: "missing final", frames: []ev{{"0", "started", started}, {"1", "token", tok(0)}}, cancelAt: -1, want: "without an end"},
		{name: "after final", frames: []ev{{"0", "started", started}, {"1", "end", end}, {"2", "token", tok(0)}}, cancelAt: -1, want: "after the final"},
		{name: "two finals", frames: []ev{{"0", "started", started}, {"1", "end", end}, {"2", "error", `{"code":"INTERNAL","message":"x","retriable":false}`}}, cancelAt: -1, want: "after the final"},
		{name: "schema", frames: []ev{{"0", "started", `{"queue_position":-1,"predicted_start_ms":0}`}, {"1", "end", end}}, cancelAt: -1, want: "does not match its schema"},
		{name: "unknown event", frames: []ev{{"0", "started", started}, {"1", "bogus", `{}`}, {"2", "end", end}}, cancelAt: -1, want: "not declared"},
		{name: "not json", frames: []ev{{"0", "started", "nope"}, {"1", "end", end}}, cancelAt: -1, want: "not JSON"},
		{name: "resume ok", resume: ptr(1), frames: []ev{{"2", "token", tok(1)}, {"3", "end", end}}, cancelAt: -1},
		{name: "resume wrong first id", resume: ptr(1), frames: []ev{{"3", "end", end}}, cancelAt: -1, want: "first id 3, want 2"},
		{name: "started after resume", resume: ptr(1), frames: []ev{{"2", "started", started}, {"3", "end", end}}, cancelAt: -1, want: "not the first frame"},
		{name: "cancel then end canceled", frames: []ev{{"0", "started", started}, {"1", "end", `{"tokens_out":0,"decode_ms":0,"decode_time_ms":0,"canceled":true}`}}, cancelAt: 1},
		{name: "cancel then plain end", frames: []ev{{"0", "started", started}, {"1", "end", end}}, cancelAt: 1, want: "canceled: true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chk := newSSEChecker(c.events)
			if tt.resume != nil {
				chk.resumeAfter(*tt.resume, 1)
			}
			var all []string
			for i, f := range tt.frames {
				if i == tt.cancelAt {
					chk.markCanceled()
				}
				_, p := chk.add(sse.Event{ID: f[0], Event: f[1], Data: f[2]})
				all = append(all, p...)
			}
			all = append(all, chk.finish()...)
			got := strings.Join(all, "; ")
			if tt.want == "" && got != "" {
				t.Fatalf("valid stream reported: %s", got)
			}
			if tt.want != "" && !strings.Contains(got, tt.want) {
				t.Fatalf("want a problem containing %q, got %q", tt.want, got)
			}
		})
	}
}

// The x-sse-events extension names a schema for every event the daemon writes.
func TestSSEEventsDeclared(t *testing.T) {
	c := mustContract(t)
	for _, name := range []string{"started", "token", "metrics", "end", "error"} {
		if c.events[name] == nil {
			t.Errorf("x-sse-events lacks %q", name)
		}
	}
}
