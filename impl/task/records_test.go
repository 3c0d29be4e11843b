package task

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand"
	"reflect"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/placement"
)

// sameAsEncodingJSON fails t unless the hand-written encoder wrote what encoding/json writes.
func sameAsEncodingJSON(t testing.TB, v any, got []byte) {
	t.Helper()
	want, _ := json.Marshal(v) // nil where encoding/json refuses the value: the encoder too
	if !bytes.Equal(got, want) {
		t.Fatalf("hand-written encoding differs from encoding/json:\n got %s\nwant %s", got, want)
	}
}

func checkRecords(t testing.TB, spec Spec, tm time.Time, ei *ErrorInfo, reason, version string, kv int64) {
	t.Helper()
	a := admitRecord{Spec: spec, Pool: spec.Owner, Engine: spec.Engine, Version: version, KVBytes: kv, Created: tm}
	sameAsEncodingJSON(t, a, appendAdmitRecord(nil, &a))
	r := runningRecord{Started: tm}
	sameAsEncodingJSON(t, r, appendRunningRecord(nil, &r))
	for _, st := range []Status{Succeeded, Failed, Canceled} {
		f := finalRecord{Status: st, Finished: tm, TokensOut: spec.MaxTokens, Error: ei, CancelReason: reason}
		sameAsEncodingJSON(t, f, appendFinalRecord(nil, &f))
	}
	for i, p := range []*PlacementDecision{
		{PoolID: spec.Owner, ReplicaID: reason, Reason: "session"},
		{PoolID: "p", ReplicaID: "p/1", Reason: "least_loaded", Candidates: []placement.ReplicaScore{}},
		{PoolID: "p", ReplicaID: "p/1", Reason: "least_loaded", Candidates: []placement.ReplicaScore{
			{ReplicaID: reason, Score: -1.25, ExcludedBecause: "breaker open"}, {ReplicaID: "p/1", Score: 0.5}, {ReplicaID: "p/2", Score: 1e-7}}},
	} {
		f := finalRecord{Status: Succeeded, Finished: tm, TokensOut: 3, Migrations: i, Placement: p}
		sameAsEncodingJSON(t, f, appendFinalRecord(nil, &f))
	}
	// What Recover reads back (times in a parsed zone, invalid UTF-8 replaced) encodes alike too.
	if enc := appendAdmitRecord(nil, &a); len(enc) > 0 {
		var back admitRecord
		if err := json.Unmarshal(enc, &back); err != nil {
			t.Fatalf("the admission record does not decode: %v\n%s", err, enc)
		}
		sameAsEncodingJSON(t, back, appendAdmitRecord(nil, &back))
	}
}

func TestRecordsMatchEncodingJSON(t *testing.T) {
	seed := int64(-42)
	est := time.FixedZone("EST", -5*3600)
	odd := time.FixedZone("LMT", 3600+17) // seconds in the offset
	full := Spec{
		ID: "6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11", SessionID: "s<1>&", Workload: engine.WorkloadChat, ModelRef: "m",
		Engine: "llamacpp", Ctx: 4096, Priority: 1, Seed: &seed, Deterministic: true, Prompt: "a\"b\\c\n\t\b\f\x01\u2028é\xff",
		Messages:  []engine.Message{{Role: "user", Content: "hi <b>"}, {Role: "assistant", Content: ""}},
		MaxTokens: 256, Deadline: 90 * time.Second, ExpectedTokens: 12,
		Placement: Placement{Mode: "prefer", PinPool: "p1", PreferPools: []string{"a", "b"}, AvoidPools: []string{},
			AllowFallback: true, PinReplica: "r1", PreferReplicas: []string{"r2"}, AvoidReplicas: []string{"r3"}},
		Fingerprint: [32]byte{0, 1, 2, 255, 128}, CorrelationID: "c", Owner: "key", Grant: 100, SessionGrant: 50,
		StopAt: 40, Weight: 2.5, OnDisconnect: OnDisconnectGrace, DisconnectGrace: time.Second,
	}
	ei := &ErrorInfo{Class: ClassWorkerReset, Message: "boom <x>", Retriable: true, RetryAfterMs: 1000, Engine: "e", PoolID: "p"}
	for _, c := range []struct {
		name string
		spec Spec
		tm   time.Time
		ei   *ErrorInfo
	}{
		{"zero", Spec{}, time.Time{}, nil},
		{"full", full, time.Date(2026, 12, 1, 3, 4, 5, 123456789, time.UTC), ei},
		{"local zone", full, time.Date(2026, 1, 2, 3, 4, 5, 100, est), nil},
		{"offset with seconds", full, time.Date(2026, 1, 2, 3, 4, 5, 0, odd), nil},
		{"year 10000: refused by both", full, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), nil},
		{"year -1: refused by both", full, time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), nil},
		{"empty slices", Spec{Messages: []engine.Message{}, Placement: Placement{PreferPools: []string{}, PreferReplicas: []string{}}}, time.Unix(0, 1), nil},
		{"monotonic clock reading", full, time.Now(), ei},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkRecords(t, c.spec, c.tm, c.ei, "client", "b1234", 131072)
			checkRecords(t, c.spec, c.tm, c.ei, "", "", 0)
		})
	}
	for _, w := range []float64{0, math.Copysign(0, -1), 1, 0.1, 1e-6, 9.99e-7, 1e-7, 123456789, 1e20, 1e21, 1.5e300, -2.5e-300,
		5e-324, math.MaxFloat64, math.NaN(), math.Inf(1), math.Inf(-1)} {
		s := full
		s.Weight = w
		checkRecords(t, s, time.Unix(1700000000, 5), nil, "", "", 0)
	}
}

// Every field of the records, with generated values: a field added to Spec, Placement, Message
// or ErrorInfo that the encoder does not write fails here.
func TestRecordsMatchEncodingJSONGenerated(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	for range 3000 {
		var spec Spec
		fill(reflect.ValueOf(&spec).Elem(), rnd)
		var ei *ErrorInfo
		fill(reflect.ValueOf(&ei).Elem(), rnd)
		var reason, version string
		fill(reflect.ValueOf(&reason).Elem(), rnd)
		fill(reflect.ValueOf(&version).Elem(), rnd)
		zone := time.FixedZone("z", (rnd.Intn(48*60)-24*60+1)*60)
		tm := time.Unix(rnd.Int63n(253402300799), rnd.Int63n(1e9)).In(zone)
		checkRecords(t, spec, tm, ei, reason, version, rnd.Int63()-rnd.Int63())
	}
}

// fill sets v, and every field of it, to a random value: zero values (nil, "", 0) about a
// quarter of the time, so that omitempty and null are exercised too.
func fill(v reflect.Value, rnd *rand.Rand) {
	if rnd.Intn(4) == 0 {
		v.SetZero()
		return
	}
	switch v.Kind() {
	case reflect.String:
		pieces := []string{"a", "<", ">", "&", "\"", "\\", "\n", "\x01", "\x7f", "é", "\u2028", "\u2029", "\xff", "🙂", " "}
		var b []byte
		for range rnd.Intn(8) {
			b = append(b, pieces[rnd.Intn(len(pieces))]...)
		}
		v.SetString(string(b))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(rnd.Int63() >> rnd.Intn(63) * int64(1-2*rnd.Intn(2)))
		if v.OverflowInt(v.Int()) {
			v.SetInt(int64(rnd.Intn(100)))
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(rnd.Intn(256)))
	case reflect.Float64:
		fs := []float64{0.5, 1, 2.25, 1e-7, 3e21, 1e20, 123456.789, -4}
		v.SetFloat(fs[rnd.Intn(len(fs))] * (1 + rnd.Float64()))
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), rnd)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), rnd.Intn(3), 3))
		for i := range v.Len() {
			fill(v.Index(i), rnd)
		}
	case reflect.Array:
		for i := range v.Len() {
			fill(v.Index(i), rnd)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i), rnd)
		}
	default:
		panic("fill: no generator for " + v.Type().String())
	}
}

func FuzzRecords(f *testing.F) {
	f.Add("id", "prompt <&>", "role", "content\x00", 1.5, int64(7), 1700000000, int64(123), true)
	f.Add("", "\xff\xfe", "", "\u2028", 1e-7, int64(-1), 0, int64(0), false)
	f.Fuzz(func(t *testing.T, id, prompt, role, content string, weight float64, n int64, sec int, nsec int64, b bool) {
		seed := n
		spec := Spec{ID: id, SessionID: content, Prompt: prompt, Seed: &seed, Deterministic: b, Weight: weight,
			MaxTokens: int(n), Deadline: time.Duration(n), SessionGrant: int(n % 3),
			Messages:  []engine.Message{{Role: role, Content: content}},
			Placement: Placement{PreferPools: []string{role}, PinReplica: prompt, AvoidReplicas: []string{id, content}}}
		var ei *ErrorInfo
		if b {
			ei = &ErrorInfo{Message: prompt, RetryAfterMs: n, Engine: role}
		}
		checkRecords(t, spec, time.Unix(int64(sec), nsec), ei, content, role, n)
	})
}

// BenchmarkRecords prices the three records every task writes, by hand and by encoding/json.
//
//	go test -run XXX -bench Records -benchmem ./impl/task
func BenchmarkRecords(b *testing.B) {
	seed := int64(7)
	now := time.Now()
	a := admitRecord{Spec: Spec{ID: "6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11", SessionID: "0d8d2b6c-3c1e-4b0e-9a57-6f1c5e1a9a11",
		Workload: "completion", ModelRef: "sim", Engine: "llamacpp", Ctx: 512, Seed: &seed, Prompt: "The quick brown fox",
		MaxTokens: 1, Deadline: time.Minute, CorrelationID: "7f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11", Owner: "bench", Weight: 1},
		Pool: "bench0", Engine: "llamacpp", Created: now}
	r := runningRecord{Started: now}
	f := finalRecord{Status: Succeeded, Finished: now, TokensOut: 1}
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			buf := getRecordBuf()
			*buf = appendAdmitRecord(*buf, &a)
			*buf = appendRunningRecord((*buf)[:0], &r)
			*buf = appendFinalRecord((*buf)[:0], &f)
			putRecordBuf(buf)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			_, _ = json.Marshal(a)
			_, _ = json.Marshal(r)
			_, _ = json.Marshal(f)
		}
	})
}
