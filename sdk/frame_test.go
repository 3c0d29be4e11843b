package sdk

import (
	"bufio"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestReadFrame(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []frame
		wantErr error // after the frames
		proto   bool  // wantErr is a protocol error
	}{
		{name: "one frame", in: "id: 0\nevent: started\ndata: {}\n\n", want: []frame{{0, "started", "{}"}}, wantErr: io.EOF},
		{name: "crlf and no space", in: "id:1\r\nevent:token\r\ndata:{\"t\":\"a\"}\r\n\r\n", want: []frame{{1, "token", `{"t":"a"}`}}, wantErr: io.EOF},
		{name: "comments skipped", in: ": keep-alive\n\n: x\nid: 2\nevent: end\ndata: {}\n\n: keep-alive\n\n", want: []frame{{2, "end", "{}"}}, wantErr: io.EOF},
		{name: "multi-line data", in: "id: 3\nevent: token\ndata: a\ndata: b\n\n", want: []frame{{3, "token", "a\nb"}}, wantErr: io.EOF},
		{name: "cut inside a frame", in: "id: 0\nevent: started\ndata: {}\n\nid: 1\nevent: tok", want: []frame{{0, "started", "{}"}}, wantErr: io.ErrUnexpectedEOF},
		{name: "cut before the blank line", in: "id: 0\nevent: started\ndata: {}\n", wantErr: io.ErrUnexpectedEOF},
		{name: "no id", in: "event: token\ndata: {}\n\n", proto: true},
		{name: "bad id", in: "id: -1\nevent: token\ndata: {}\n\n", proto: true},
		{name: "id too long", in: "id: 1234567890\nevent: token\ndata: {}\n\n", proto: true},
		{name: "no event", in: "id: 1\ndata: {}\n\n", proto: true},
		{name: "no data", in: "id: 1\nevent: end\n\n", proto: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tt.in), 16)
			var got []frame
			var err error
			for {
				var f frame
				if f, err = readFrame(br); err != nil {
					break
				}
				got = append(got, f)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("frames %+v, want %+v", got, tt.want)
			}
			var perr *protocolError
			if tt.proto != errors.As(err, &perr) || (!tt.proto && !errors.Is(err, tt.wantErr)) {
				t.Errorf("err = %v, want %v (protocol error: %v)", err, tt.wantErr, tt.proto)
			}
		})
	}
}

func TestReadFrameBoundsItsSize(t *testing.T) {
	in := "id: 1\nevent: token\ndata: " + strings.Repeat("x", maxFrameBytes) + "\n\n"
	_, err := readFrame(bufio.NewReader(strings.NewReader(in)))
	var perr *protocolError
	if !errors.As(err, &perr) {
		t.Fatalf("err = %v, want a protocol error for an oversized frame", err)
	}
}

// FuzzReadFrame: the parser never panics, and every frame it returns has an id, an event and
// data taken from the input.
func FuzzReadFrame(f *testing.F) {
	for _, s := range []string{
		"id: 0\nevent: started\ndata: {\"queue_position\":0,\"predicted_start_ms\":0}\n\n",
		": keep-alive\n\nid: 1\r\nevent: token\r\ndata: {\"t\":\" The\",\"i\":0}\r\n\r\n",
		"id: 2\nevent: end\ndata: a\ndata: b\n\nid:",
		"data\n\n", "id: 99999999999\n\n", "\n\n\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		br := bufio.NewReaderSize(strings.NewReader(in), 16)
		for range len(in) + 1 {
			fr, err := readFrame(br)
			if err != nil {
				return
			}
			if fr.id < 0 || fr.id > 999999999 || !strings.Contains(in, fr.event) || !strings.Contains(in, strings.Split(fr.data, "\n")[0]) {
				t.Fatalf("frame %+v not from %q", fr, in)
			}
		}
		t.Fatalf("readFrame returned more frames than the input has bytes: %q", in)
	})
}

func TestDecodeEvent(t *testing.T) {
	tests := []struct {
		f    frame
		want Event
	}{
		{frame{0, "started", `{"queue_position":2,"predicted_start_ms":40,"pool_id":"p","engine":"llamacpp"}`}, &Started{ID: 0, QueuePosition: 2, PredictedStartMs: 40, PoolID: "p", Engine: "llamacpp"}},
		{frame{1, "token", `{"t":" The","i":0}`}, &Token{ID: 1, Text: " The", Index: 0}},
		{frame{5, "end", `{"tokens_out":3,"decode_ms":1,"decode_time_ms":1,"canceled":true,"stop_reason":"canceled"}`}, &End{ID: 5, TokensOut: 3, DecodeMs: 1, DecodeTimeMs: 1, Canceled: true, StopReason: "canceled"}},
		{frame{6, "error", `{"code":"WORKER_RESET","message":"m","retriable":true}`}, &ErrorEvent{ID: 6, Code: "WORKER_RESET", Message: "m", Retriable: true}},
	}
	for _, tt := range tests {
		got, err := decodeEvent(tt.f)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("decodeEvent(%+v) = %+v, %v; want %+v", tt.f, got, err, tt.want)
		}
	}
	if ev, err := decodeEvent(frame{1, "tokens", "{}"}); ev != nil || err != nil {
		t.Errorf("an unknown event gave %v, %v; want it skipped", ev, err)
	}
	if _, err := decodeEvent(frame{1, "token", "not json"}); err == nil {
		t.Error("a malformed token decoded")
	}
}
