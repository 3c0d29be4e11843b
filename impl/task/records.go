package task

import (
	"encoding/json"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/sse"
)

// Hand-written encoders of the journal's records, byte for byte what encoding/json writes for
// admitRecord, runningRecord and finalRecord (records_test.go compares them over generated
// values of every field, so a field added to Spec fails the test until it is written here too),
// without reflection: every admitted task writes one of each. Recover still decodes them with
// encoding/json, and journals written before read the same.

// recordBufs holds the buffers records are encoded into: Journal.Append does not retain its
// arguments.
var recordBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func getRecordBuf() *[]byte { return recordBufs.Get().(*[]byte) }

func putRecordBuf(b *[]byte) {
	if cap(*b) > 64<<10 { // one huge prompt does not pin its buffer
		return
	}
	*b = (*b)[:0]
	recordBufs.Put(b)
}

// appendAdmitRecord appends json.Marshal(r).
func appendAdmitRecord(dst []byte, r *admitRecord) []byte {
	if !encodable(r.Created) || !finite(r.Spec.Weight) {
		return appendMarshaled(dst, *r) // what encoding/json does with them: refuse, as before
	}
	dst = append(dst, `{"spec":`...)
	dst = appendSpec(dst, &r.Spec)
	dst = append(dst, `,"pool":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, r.Pool)
	dst = append(dst, `,"engine":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, r.Engine)
	if r.Version != "" {
		dst = append(dst, `,"version":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, r.Version)
	}
	if r.KVBytes != 0 {
		dst = append(dst, `,"kv_bytes":`...)
		dst = strconv.AppendInt(dst, r.KVBytes, 10)
	}
	dst = append(dst, `,"created":`...)
	dst = appendTime(dst, r.Created)
	return append(dst, '}')
}

func appendSpec(dst []byte, s *Spec) []byte {
	dst = append(dst, `{"ID":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, s.ID)
	dst = append(dst, `,"SessionID":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, s.SessionID)
	dst = append(dst, `,"Workload":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, s.Workload)
	dst = append(dst, `,"ModelRef":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, s.ModelRef)
	dst = append(dst, `,"Engine":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, s.Engine)
	dst = append(dst, `,"Ctx":`...)
	dst = strconv.AppendInt(dst, int64(s.Ctx), 10)
	dst = append(dst, `,"Priority":`...)
	dst = strconv.AppendUint(dst, uint64(s.Priority), 10)
	dst = append(dst, `,"Seed":`...)
	if s.Seed == nil {
		dst = append(dst, "null"...)
	} else {
		dst = strconv.AppendInt(dst, *s.Seed, 10)
	}
	dst = append(dst, `,"Deterministic":`...)
	dst = strconv.AppendBool(dst, s.Deterministic)
	dst = append(dst, `,"Prompt":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, s.Prompt)
	dst = append(dst, `,"Messages":`...)
	dst = appendMessages(dst, s.Messages)
	dst = append(dst, `,"MaxTokens":`...)
	dst = strconv.AppendInt(dst, int64(s.MaxTokens), 10)
	if s.OpenEnded {
		dst = append(dst, `,"OpenEnded":true`...)
	}
	dst = append(dst, `,"Deadline":`...)
	dst = strconv.AppendInt(dst, int64(s.Deadline), 10)
	dst = append(dst, `,"ExpectedTokens":`...)
	dst = strconv.AppendInt(dst, int64(s.ExpectedTokens), 10)
	dst = append(dst, `,"Placement":`...)
	dst = appendPlacement(dst, &s.Placement)
	dst = append(dst, `,"Fingerprint":[`...)
	for i, b := range s.Fingerprint {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendUint(dst, uint64(b), 10)
	}
	dst = append(dst, `],"CorrelationID":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, s.CorrelationID)
	dst = append(dst, `,"Owner":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, s.Owner)
	dst = append(dst, `,"Grant":`...)
	dst = strconv.AppendInt(dst, int64(s.Grant), 10)
	if s.SessionGrant != 0 {
		dst = append(dst, `,"SessionGrant":`...)
		dst = strconv.AppendInt(dst, int64(s.SessionGrant), 10)
	}
	dst = append(dst, `,"StopAt":`...)
	dst = strconv.AppendInt(dst, int64(s.StopAt), 10)
	dst = append(dst, `,"Weight":`...)
	dst = appendFloat(dst, s.Weight)
	dst = append(dst, `,"OnDisconnect":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, s.OnDisconnect)
	dst = append(dst, `,"DisconnectGrace":`...)
	dst = strconv.AppendInt(dst, int64(s.DisconnectGrace), 10)
	if s.Transient {
		dst = append(dst, `,"Transient":true`...)
	}
	return append(dst, '}')
}

func appendPlacement(dst []byte, p *Placement) []byte {
	dst = append(dst, `{"Mode":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, p.Mode)
	dst = append(dst, `,"PinPool":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, p.PinPool)
	dst = append(dst, `,"PreferPools":`...)
	dst = sse.AppendStringsAsEncodingJSON(dst, p.PreferPools)
	dst = append(dst, `,"AvoidPools":`...)
	dst = sse.AppendStringsAsEncodingJSON(dst, p.AvoidPools)
	dst = append(dst, `,"AllowFallback":`...)
	dst = strconv.AppendBool(dst, p.AllowFallback)
	if p.PinReplica != "" {
		dst = append(dst, `,"PinReplica":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, p.PinReplica)
	}
	if len(p.PreferReplicas) > 0 {
		dst = append(dst, `,"PreferReplicas":`...)
		dst = sse.AppendStringsAsEncodingJSON(dst, p.PreferReplicas)
	}
	if len(p.AvoidReplicas) > 0 {
		dst = append(dst, `,"AvoidReplicas":`...)
		dst = sse.AppendStringsAsEncodingJSON(dst, p.AvoidReplicas)
	}
	return append(dst, '}')
}

func appendMessages(dst []byte, ms []engine.Message) []byte {
	if ms == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for i, m := range ms {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"Role":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, m.Role)
		dst = append(dst, `,"Content":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, m.Content)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}

// appendRunningRecord appends json.Marshal(r).
func appendRunningRecord(dst []byte, r *runningRecord) []byte {
	if !encodable(r.Started) {
		return appendMarshaled(dst, *r)
	}
	dst = append(dst, `{"started":`...)
	dst = appendTime(dst, r.Started)
	return append(dst, '}')
}

// appendFinalRecord appends json.Marshal(r).
func appendFinalRecord(dst []byte, r *finalRecord) []byte {
	if !encodable(r.Finished) {
		return appendMarshaled(dst, *r)
	}
	dst = append(dst, `{"status":`...)
	dst = strconv.AppendInt(dst, int64(r.Status), 10)
	dst = append(dst, `,"finished":`...)
	dst = appendTime(dst, r.Finished)
	dst = append(dst, `,"tokens_out":`...)
	dst = strconv.AppendInt(dst, int64(r.TokensOut), 10)
	if e := r.Error; e != nil {
		dst = append(dst, `,"error":{"Class":`...)
		dst = strconv.AppendUint(dst, uint64(e.Class), 10)
		dst = append(dst, `,"Message":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, e.Message)
		dst = append(dst, `,"Retriable":`...)
		dst = strconv.AppendBool(dst, e.Retriable)
		dst = append(dst, `,"RetryAfterMs":`...)
		dst = strconv.AppendInt(dst, e.RetryAfterMs, 10)
		dst = append(dst, `,"Engine":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, e.Engine)
		dst = append(dst, `,"PoolID":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, e.PoolID)
		dst = append(dst, '}')
	}
	if r.CancelReason != "" {
		dst = append(dst, `,"cancel_reason":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, r.CancelReason)
	}
	if r.Migrations != 0 {
		dst = append(dst, `,"migrations":`...)
		dst = strconv.AppendInt(dst, int64(r.Migrations), 10)
	}
	if p := r.Placement; p != nil {
		dst = append(dst, `,"placement":{"PoolID":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, p.PoolID)
		dst = append(dst, `,"ReplicaID":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, p.ReplicaID)
		dst = append(dst, `,"Reason":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, p.Reason)
		dst = append(dst, `,"Candidates":`...)
		if p.Candidates == nil {
			dst = append(dst, "null"...)
		} else {
			dst = append(dst, '[')
			for i, c := range p.Candidates {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = append(dst, `{"ReplicaID":`...)
				dst = sse.AppendStringAsEncodingJSON(dst, c.ReplicaID)
				dst = append(dst, `,"Score":`...)
				dst = appendFloat(dst, c.Score)
				dst = append(dst, `,"ExcludedBecause":`...)
				dst = sse.AppendStringAsEncodingJSON(dst, c.ExcludedBecause)
				dst = append(dst, '}')
			}
			dst = append(dst, ']')
		}
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// appendMarshaled appends json.Marshal(v) (nothing where it fails). v is a copy: a pointer
// given to encoding/json would make every record the encoders are given escape to the heap.
func appendMarshaled(dst []byte, v any) []byte {
	b, _ := json.Marshal(v)
	return append(dst, b...)
}

// encodable reports whether time.Time's MarshalJSON accepts t: a four-digit year and a zone
// offset of whole minutes under 24 hours (RFC 3339).
func encodable(t time.Time) bool {
	_, off := t.Zone()
	return t.Year() >= 0 && t.Year() <= 9999 && off%60 == 0 && off > -24*3600 && off < 24*3600
}

// appendTime appends an encodable t as time.Time's MarshalJSON does: RFC 3339 with nanoseconds.
func appendTime(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// appendFloat appends a finite f as encoding/json writes a float64: like ES6, 'f' format
// except for very small and very large magnitudes, whose exponent has no leading zero.
func appendFloat(dst []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1] // e-09 → e-9
			dst = dst[:n-1]
		}
	}
	return dst
}
