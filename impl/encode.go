package impl

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/api"
	"github.com/orchestratord/orchestratord/impl/sse"
)

// Hand-written JSON encoders for the admission path, byte for byte what encoding/json writes for
// the same generated structs (tests compare them, and check that they know every field), without
// reflection: the request fingerprint and the 202 body.

// appendTaskRequest appends json.Marshal(b): the request as the idempotency fingerprint hashes it.
func appendTaskRequest(dst []byte, b *api.TaskRequest) []byte {
	dst = append(dst, `{"ctx":`...)
	dst = strconv.AppendInt(dst, int64(b.Ctx), 10)
	dst = append(dst, `,"deadline_ms":`...)
	dst = strconv.AppendInt(dst, b.DeadlineMs, 10)
	if b.Determinism != nil {
		dst = append(dst, `,"determinism":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, string(*b.Determinism))
	}
	if b.DisconnectGraceMs != nil {
		dst = append(dst, `,"disconnect_grace_ms":`...)
		dst = strconv.AppendInt(dst, *b.DisconnectGraceMs, 10)
	}
	dst = append(dst, `,"engine":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, string(b.Engine))
	if b.ExpectedTokens != nil {
		dst = append(dst, `,"expected_tokens":`...)
		dst = strconv.AppendInt(dst, int64(*b.ExpectedTokens), 10)
	}
	if b.Inputs != nil {
		dst = append(dst, `,"inputs":`...)
		dst = sse.AppendStringsAsEncodingJSON(dst, *b.Inputs)
	}
	if b.KvHint != nil {
		dst = append(dst, `,"kv_hint":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, string(*b.KvHint))
	}
	dst = append(dst, `,"max_tokens":`...)
	dst = strconv.AppendInt(dst, int64(b.MaxTokens), 10)
	dst = append(dst, `,"model_ref":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, b.ModelRef)
	if b.OnDisconnect != nil {
		dst = append(dst, `,"on_disconnect":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, string(*b.OnDisconnect))
	}
	if b.Placement != nil {
		dst = append(dst, `,"placement":`...)
		dst = appendPlacement(dst, b.Placement)
	}
	dst = append(dst, `,"priority":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, string(b.Priority))
	if b.Prompt != nil {
		dst = append(dst, `,"prompt":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, *b.Prompt)
	}
	if b.SamplerProfileVersion != nil {
		dst = append(dst, `,"sampler_profile_version":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, *b.SamplerProfileVersion)
	}
	if b.Seed != nil {
		dst = append(dst, `,"seed":`...)
		dst = strconv.AppendInt(dst, *b.Seed, 10)
	}
	if b.SessionId != uuid.Nil {
		dst = append(dst, `,"session_id":`...)
		dst = appendUUID(dst, b.SessionId)
	}
	if b.TaskId != uuid.Nil {
		dst = append(dst, `,"task_id":`...)
		dst = appendUUID(dst, b.TaskId)
	}
	dst = append(dst, `,"workload":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, string(b.Workload))
	return append(dst, '}')
}

func appendPlacement(dst []byte, p *api.PlacementOverrides) []byte {
	dst = append(dst, '{')
	first := true
	key := func(name string) {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, '"')
		dst = append(dst, name...)
		dst = append(dst, '"', ':')
	}
	if p.AllowFallback != nil {
		key("allow_fallback")
		dst = strconv.AppendBool(dst, *p.AllowFallback)
	}
	if p.AvoidPools != nil {
		key("avoid_pools")
		dst = sse.AppendStringsAsEncodingJSON(dst, *p.AvoidPools)
	}
	if p.AvoidReplicas != nil {
		key("avoid_replicas")
		dst = sse.AppendStringsAsEncodingJSON(dst, *p.AvoidReplicas)
	}
	if p.Mode != nil {
		key("mode")
		dst = sse.AppendStringAsEncodingJSON(dst, string(*p.Mode))
	}
	if p.PinPoolId != nil {
		key("pin_pool_id")
		dst = sse.AppendStringAsEncodingJSON(dst, *p.PinPoolId)
	}
	if p.PinReplicaId != nil {
		key("pin_replica_id")
		dst = sse.AppendStringAsEncodingJSON(dst, *p.PinReplicaId)
	}
	if p.PreferPools != nil {
		key("prefer_pools")
		dst = sse.AppendStringsAsEncodingJSON(dst, *p.PreferPools)
	}
	if p.PreferReplicas != nil {
		key("prefer_replicas")
		dst = sse.AppendStringsAsEncodingJSON(dst, *p.PreferReplicas)
	}
	if p.RequireDeviceMask != nil {
		key("require_device_mask")
		dst = sse.AppendStringAsEncodingJSON(dst, *p.RequireDeviceMask)
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// appendUUID appends a UUID as encoding/json writes it (its text form, quoted).
func appendUUID(dst []byte, u uuid.UUID) []byte {
	dst = append(dst, '"')
	dst = appendUUIDText(dst, u)
	return append(dst, '"')
}

// appendUUIDText appends a UUID's text form (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx).
func appendUUIDText(dst []byte, u uuid.UUID) []byte {
	for i, c := range u {
		switch i {
		case 4, 6, 8, 10:
			dst = append(dst, '-')
		}
		dst = append(dst, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return dst
}

// appendAdmission appends what json.NewEncoder(w).Encode(r) writes: the JSON and a newline.
func appendAdmission(dst []byte, r *api.AdmissionResponse) []byte {
	dst = append(dst, `{"backoff_ms":`...)
	dst = strconv.AppendInt(dst, r.BackoffMs, 10)
	if r.PoolId != nil {
		dst = append(dst, `,"pool_id":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, *r.PoolId)
	}
	dst = append(dst, `,"predicted_start_ms":`...)
	dst = strconv.AppendInt(dst, r.PredictedStartMs, 10)
	dst = append(dst, `,"queue_position":`...)
	dst = strconv.AppendInt(dst, int64(r.QueuePosition), 10)
	dst = append(dst, `,"session_id":`...)
	dst = appendUUID(dst, r.SessionId)
	if r.Streams != nil {
		dst = append(dst, `,"streams":{"sse":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, r.Streams.Sse)
		dst = append(dst, `,"sse_verbose":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, r.Streams.SseVerbose)
		dst = append(dst, '}')
	}
	dst = append(dst, `,"task_id":`...)
	dst = appendUUID(dst, r.TaskId)
	return append(dst, '}', '\n')
}

// admitted is the 202 of CreateTask, written as api.CreateTask202JSONResponse writes it (status,
// headers, body) with the body encoded by hand. It holds what the response points to, so that
// the whole answer is one allocation.
type admitted struct {
	api.CreateTask202JSONResponse
	pool     string
	timeLeft int64
	streams  struct {
		Sse        string `json:"sse"`
		SseVerbose string `json:"sse_verbose"`
	}
}

func (r *admitted) VisitCreateTaskResponse(w http.ResponseWriter) error {
	buf := admissionBufs.Get().(*[]byte)
	defer admissionBufs.Put(buf)
	*buf = appendAdmission((*buf)[:0], &r.Body)
	// The header values share one array (Header.Set allocates one per value); the keys are
	// canonical already.
	vals := make([]string, 0, 5)
	set := func(h http.Header, k, v string) {
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	h := w.Header()
	set(h, "Content-Type", "application/json")
	if v := r.Headers.XBudgetCostRemaining; v != nil {
		set(h, "X-Budget-Cost-Remaining", fmt.Sprint(*v))
	}
	if v := r.Headers.XBudgetTimeRemainingMs; v != nil {
		set(h, "X-Budget-Time-Remaining-Ms", strconv.FormatInt(*v, 10))
	}
	if v := r.Headers.XBudgetTokensRemaining; v != nil {
		set(h, "X-Budget-Tokens-Remaining", strconv.FormatInt(*v, 10))
	}
	if v := h["X-Correlation-Id"]; len(v) != 1 || v[0] != r.Headers.XCorrelationId { // Correlation set it already
		set(h, "X-Correlation-Id", r.Headers.XCorrelationId)
	}
	w.WriteHeader(http.StatusAccepted)
	_, err := w.Write(*buf) // copied by the writer: the buffer goes back to the pool
	return err
}

// admissionBufs holds the buffers 202 bodies are encoded into.
var admissionBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}
