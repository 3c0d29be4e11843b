package sim

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// FaultMode is a failure the simulator injects into every generation request (see Fault).
type FaultMode string

// Fault modes.
const (
	FaultNone FaultMode = ""
	// FaultOverload refuses each request the way the personality says "busy": llama.cpp and
	// OpenAI answer 429; TGI streams an error frame with error_type "overloaded".
	FaultOverload FaultMode = "overload"
	// FaultUnavailable answers 503 (the engine is up but cannot serve: loading, unhealthy).
	FaultUnavailable FaultMode = "unavailable"
	// FaultSlowFirstToken delays the first token by Fault.Delay more than FirstTokenDelay.
	FaultSlowFirstToken FaultMode = "slow-first-token"
	// FaultCut sends Fault.After tokens, then half of the next token's frame, and closes the
	// connection.
	FaultCut FaultMode = "cut"
	// FaultMalformed sends Fault.After tokens, then a frame whose data is not JSON, then ends
	// the stream.
	FaultMalformed FaultMode = "malformed"
	// FaultCrash sends Fault.After tokens, then closes the connection and calls Options.OnCrash
	// (the enginesim command exits, as a crashed engine process would).
	FaultCrash FaultMode = "crash"
	// FaultContextTooLong refuses each request with the personality's "context too long" client
	// error: llama.cpp 400 exceed_context_size_error, OpenAI 400 BadRequestError (vLLM's
	// message), TGI an error frame with error_type "validation".
	FaultContextTooLong FaultMode = "context-too-long"
)

// FaultModes lists every mode but FaultNone.
func FaultModes() []FaultMode {
	return []FaultMode{FaultOverload, FaultUnavailable, FaultSlowFirstToken, FaultCut, FaultMalformed, FaultCrash,
		FaultContextTooLong}
}

// ParseFaultMode accepts "" and every mode of FaultModes.
func ParseFaultMode(s string) (FaultMode, error) {
	if s == "" {
		return FaultNone, nil
	}
	for _, m := range FaultModes() {
		if string(m) == s {
			return m, nil
		}
	}
	names := make([]string, 0, 8)
	for _, m := range FaultModes() {
		names = append(names, string(m))
	}
	return FaultNone, fmt.Errorf("unknown fault %q (one of %s)", s, strings.Join(names, ", "))
}

// Fault is the failure injected into generation requests. The zero value injects nothing.
type Fault struct {
	Mode FaultMode
	// After is the number of tokens sent before a cut, malformed frame or crash.
	After int
	// Delay is the extra wait before the first token of FaultSlowFirstToken.
	Delay time.Duration
}

// SetFault replaces the injected fault; requests already streaming keep the one they started
// with.
func (s *Sim) SetFault(f Fault) { s.fault.Store(&f) }

// currentFault returns the fault a new request runs with.
func (s *Sim) currentFault() Fault {
	if f := s.fault.Load(); f != nil {
		return *f
	}
	return Fault{}
}

// personality says how each protocol words the injected refusals.
type personality struct {
	endpoint string
	// refuse answers a refusing fault (overload, unavailable, context too long) before any
	// token; ok is false when the fault does not refuse.
	refuse func(w http.ResponseWriter, f FaultMode, prompt, tokens, nCtx int) bool
	// malformed is a whole frame whose data is not JSON.
	malformed []byte
}

// refuseJSON answers llama.cpp's and OpenAI's error shape.
func refuseJSON(w http.ResponseWriter, f FaultMode, prompt, tokens, nCtx int, ctxType, ctxMsg string) bool {
	switch f {
	case FaultOverload:
		writeErrorType(w, http.StatusTooManyRequests, "the server is busy: too many requests", "rate_limit_error")
	case FaultUnavailable:
		writeErrorType(w, http.StatusServiceUnavailable, "Loading model", "unavailable_error")
	case FaultContextTooLong:
		writeErrorType(w, http.StatusBadRequest, fmt.Sprintf(ctxMsg, nCtx, prompt+tokens, prompt, tokens), ctxType)
	default:
		return false
	}
	return true
}

var (
	llamaPersonality = personality{
		endpoint: "/completion",
		refuse: func(w http.ResponseWriter, f FaultMode, prompt, tokens, nCtx int) bool {
			return refuseJSON(w, f, prompt, tokens, nCtx, "exceed_context_size_error",
				"the request exceeds the available context size (n_ctx %d, %d tokens: %d prompt, %d to predict)")
		},
		malformed: []byte("data: {\"content\":\"\x01 not json\n\n"),
	}
	openaiPersonality = personality{
		refuse: func(w http.ResponseWriter, f FaultMode, prompt, tokens, nCtx int) bool {
			return refuseJSON(w, f, prompt, tokens, nCtx, "BadRequestError",
				"This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the messages, %d in the completion).")
		},
		malformed: []byte("data: {\"choices\":[{\"text\n\n"),
	}
)

// writeErrorType answers {"error":{"code","message","type"}}.
func writeErrorType(w http.ResponseWriter, status int, msg, typ string) {
	b := fmt.Appendf(nil, `{"error":{"code":%d,"message":%q,"type":%q}}`, status, msg, typ)
	writeJSON(w, status, b)
}

// faultEmit wraps a stream's per-token emit with the fault's mid-stream failure: at token
// f.After, cut, malformed and crash write what they write and return errInjected, which ends
// the generation. Slow first token is applied by generate's schedule (see firstDelay).
func (s *Sim) faultEmit(w http.ResponseWriter, sw *sseWriter, f Fault, p *personality, emit func(i int, now time.Time) error) func(i int, now time.Time) error {
	switch f.Mode {
	case FaultCut, FaultMalformed, FaultCrash:
	default:
		return emit
	}
	return func(i int, now time.Time) error {
		if i < f.After {
			return emit(i, now)
		}
		switch f.Mode {
		case FaultMalformed:
			if err := sw.frame(p.malformed); err != nil {
				return err
			}
		case FaultCut:
			// Half a frame: the connection dies inside a token.
			_ = sw.frame([]byte(`data: {"tok`))
			abort(w)
		case FaultCrash:
			if s.opts.OnCrash != nil {
				s.opts.OnCrash()
			}
			abort(w)
		}
		return errInjected
	}
}

// abort closes the client's connection without ending the response (net/http's
// ErrAbortHandler does the same when panicked with; hijacking keeps the log quiet).
func abort(w http.ResponseWriter) {
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		_ = conn.Close()
		return
	}
	panic(http.ErrAbortHandler)
}

// errInjected ends a generation stopped by an injected fault.
var errInjected = fmt.Errorf("sim: injected fault")

// errRefused is a generation request refused by an injected fault, for Options.OnFinish.
var errRefused = fmt.Errorf("sim: refused by an injected fault")
