package impl

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/orchestratord/orchestratord/gen/api"
)

// JSONSerializer is echo's JSON serializer with a hand-written decoder for the one body the
// admission path decodes on every request: a TaskRequest that Validator's fast check has
// already walked and proved valid is decoded from the bytes JSONBody kept, without reflection,
// into what encoding/json would make of it (tests compare the two). Anything else, or anything
// the decoder does not know, is decoded by echo's default serializer as before.
type JSONSerializer struct{ echo.DefaultJSONSerializer }

// Deserialize decodes the request body into i.
func (s JSONSerializer) Deserialize(c echo.Context, i any) error {
	st := stateOf(c.Request().Context())
	if req, ok := i.(*api.TaskRequest); ok {
		if st != nil && st.checked {
			var v api.TaskRequest
			if decodeTaskRequest(st.raw, &v) {
				*req = v
				return nil
			}
		}
	}
	err := s.DefaultJSONSerializer.Deserialize(c, i)
	var ute *json.UnmarshalTypeError
	if err == nil || !errors.As(err, &ute) || !strings.HasPrefix(ute.Value, "number") {
		return err
	}
	// An integer written with a fraction or an exponent (600000.0, 6e5: what Python's
	// json.dumps writes for a float) is an integer to JSON Schema, and the validator passed
	// it; encoding/json refuses it for an int field. Decode it again with such numbers
	// written as integers: this runs only after that refusal.
	if st != nil && st.raw != nil {
		if b, ok := integralNumbers(st.raw); ok && json.Unmarshal(b, i) == nil {
			return nil
		}
	}
	want, ok := formatNames[ute.Type.Kind().String()] // int32, int64: the validator's words
	if !ok {
		want = "a " + ute.Type.String()
	}
	return Errorf("INVALID_PARAMS", "/%s: %s does not fit %s", strings.ReplaceAll(ute.Field, ".", "/"),
		strings.TrimPrefix(ute.Value, "number "), want)
}

// integralNumbers returns b with each number written with a fraction or an exponent whose value
// is a whole number (within ±2^53, where a float64 holds it exactly) written as an integer, and
// whether it changed any. Strings are left as they are.
func integralNumbers(b []byte) ([]byte, bool) {
	var out []byte
	last := 0 // b[:last] is in out (once out is made)
	for i := 0; i < len(b); {
		switch c := b[i]; {
		case c == '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			i++
		case c == '-' || '0' <= c && c <= '9':
			j := i
			for j < len(b) && strings.IndexByte("+-0123456789.eE", b[j]) >= 0 {
				j++
			}
			if lit := b[i:j]; bytes.ContainsAny(lit, ".eE") {
				if f, err := strconv.ParseFloat(string(lit), 64); err == nil && f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
					if out == nil {
						out = make([]byte, 0, len(b))
					}
					out = append(out, b[last:i]...)
					out = strconv.AppendInt(out, int64(f), 10)
					last = j
				}
			}
			i = j
		default:
			i++
		}
	}
	if out == nil {
		return b, false
	}
	return append(out, b[last:]...), true
}

// decodeTaskRequest decodes b, a body the fast check accepted, into r; false when it meets
// anything it does not know (a member added to the contract: encoding/json decodes it then).
func decodeTaskRequest(b []byte, r *api.TaskRequest) bool {
	d := decoder{scanner{b: b}}
	return d.object(func(key []byte) bool {
		switch string(key) {
		case "task_id":
			return d.uuid(&r.TaskId)
		case "session_id":
			return d.uuid(&r.SessionId)
		case "workload":
			s, ok := d.known(string(api.Completion), string(api.Chat), string(api.Embedding), string(api.Rerank))
			r.Workload = api.Workload(s)
			return ok
		case "model_ref":
			s, ok := d.str()
			r.ModelRef = s
			return ok
		case "engine":
			s, ok := d.known(string(api.Llamacpp), string(api.Vllm), string(api.Sglang), string(api.Tgi), string(api.Triton), string(api.Openai))
			r.Engine = api.Engine(s)
			return ok
		case "ctx":
			v, ok := d.int()
			r.Ctx = int32(v)
			return ok
		case "priority":
			s, ok := d.known(string(api.Interactive), string(api.Batch))
			r.Priority = api.Priority(s)
			return ok
		case "seed":
			v, ok := d.int()
			r.Seed = &v
			return ok
		case "determinism":
			s, ok := d.str()
			v := api.TaskRequestDeterminism(s)
			r.Determinism = &v
			return ok
		case "sampler_profile_version":
			s, ok := d.str()
			r.SamplerProfileVersion = &s
			return ok
		case "prompt":
			s, ok := d.str()
			r.Prompt = &s
			return ok
		case "inputs":
			v, ok := d.strs()
			r.Inputs = &v
			return ok
		case "max_tokens":
			v, ok := d.int()
			r.MaxTokens = int32(v)
			return ok
		case "deadline_ms":
			v, ok := d.int()
			r.DeadlineMs = v
			return ok
		case "on_disconnect":
			s, ok := d.str()
			v := api.TaskRequestOnDisconnect(s)
			r.OnDisconnect = &v
			return ok
		case "disconnect_grace_ms":
			v, ok := d.int()
			r.DisconnectGraceMs = &v
			return ok
		case "expected_tokens":
			v, ok := d.int()
			n := int32(v)
			r.ExpectedTokens = &n
			return ok
		case "kv_hint":
			s, ok := d.str()
			v := api.TaskRequestKvHint(s)
			r.KvHint = &v
			return ok
		case "placement":
			r.Placement = &api.PlacementOverrides{}
			return d.placement(r.Placement)
		}
		return false
	})
}

func (d *decoder) placement(p *api.PlacementOverrides) bool {
	return d.object(func(key []byte) bool {
		switch string(key) {
		case "mode":
			s, ok := d.str()
			v := api.PlacementOverridesMode(s)
			p.Mode = &v
			return ok
		case "pin_pool_id":
			s, ok := d.str()
			p.PinPoolId = &s
			return ok
		case "prefer_pools":
			v, ok := d.strs()
			p.PreferPools = &v
			return ok
		case "avoid_pools":
			v, ok := d.strs()
			p.AvoidPools = &v
			return ok
		case "pin_replica_id":
			s, ok := d.str()
			p.PinReplicaId = &s
			return ok
		case "prefer_replicas":
			v, ok := d.strs()
			p.PreferReplicas = &v
			return ok
		case "avoid_replicas":
			v, ok := d.strs()
			p.AvoidReplicas = &v
			return ok
		case "allow_fallback":
			v, ok := d.bool()
			p.AllowFallback = &v
			return ok
		case "require_device_mask":
			s, ok := d.str()
			p.RequireDeviceMask = &s
			return ok
		}
		return false
	})
}

// decoder reads the values of a JSON text already checked to be valid.
type decoder struct{ scanner }

// object calls member for each member of the object at the cursor, positioned on its value.
func (d *decoder) object(member func(key []byte) bool) bool {
	d.space()
	if d.i >= len(d.b) || d.b[d.i] != '{' {
		return false
	}
	d.i++
	d.space()
	if d.i < len(d.b) && d.b[d.i] == '}' {
		d.i++
		return true
	}
	for {
		d.space()
		key, _, escaped, ok := d.scanner.str()
		if !ok || escaped {
			return false
		}
		d.space()
		if d.i >= len(d.b) || d.b[d.i] != ':' {
			return false
		}
		d.i++
		d.space()
		if !member(key) {
			return false
		}
		d.space()
		if d.i >= len(d.b) {
			return false
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case '}':
			d.i++
			return true
		default:
			return false
		}
	}
}

// str decodes a string as encoding/json does; one with escapes or invalid UTF-8 is left to
// encoding/json itself.
func (d *decoder) str() (string, bool) {
	start := d.i
	raw, _, escaped, ok := d.scanner.str()
	if !ok {
		return "", false
	}
	if !escaped && utf8.Valid(raw) {
		return string(raw), true
	}
	var s string
	if err := json.Unmarshal(d.b[start:d.i], &s); err != nil {
		return "", false
	}
	return s, true
}

// known is str for a value that is usually one of values: that constant, not a new string.
func (d *decoder) known(values ...string) (string, bool) {
	start := d.i
	raw, _, escaped, ok := d.scanner.str()
	if ok && !escaped {
		for _, v := range values {
			if v == string(raw) {
				return v, true
			}
		}
	}
	d.i = start
	return d.str()
}

func (d *decoder) strs() ([]string, bool) {
	if d.i >= len(d.b) || d.b[d.i] != '[' {
		return nil, false
	}
	d.i++
	out := []string{}
	d.space()
	if d.i < len(d.b) && d.b[d.i] == ']' {
		d.i++
		return out, true
	}
	for {
		d.space()
		s, ok := d.str()
		if !ok {
			return nil, false
		}
		out = append(out, s)
		d.space()
		if d.i >= len(d.b) {
			return nil, false
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case ']':
			d.i++
			return out, true
		default:
			return nil, false
		}
	}
}

func (d *decoder) int() (int64, bool) { return d.integer() }

func (d *decoder) bool() (bool, bool) {
	switch {
	case len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "true":
		d.i += 4
		return true, true
	case len(d.b)-d.i >= 5 && string(d.b[d.i:d.i+5]) == "false":
		d.i += 5
		return false, true
	}
	return false, false
}

func (d *decoder) uuid(u *uuid.UUID) bool {
	raw, _, escaped, ok := d.scanner.str()
	if !ok || escaped {
		return false
	}
	v, err := uuid.ParseBytes(raw)
	if err != nil {
		return false
	}
	*u = v
	return true
}
