package app_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine/fake"
)

// TestIntegralNumbersAccepted: an integer member written with a fraction or an exponent
// (600000.0, 6e5: what Python's json.dumps writes for a float) is an integer to JSON Schema,
// and the request validator passes it. It was then refused by the body's decode with
// encoding/json's wording ("Unmarshal type error: expected=int64, got=number 600000.0,
// field=deadline_ms, offset=290"). It is admitted now, on the task API and the OpenAI route;
// a whole number too large for its member is refused naming the member.
func TestIntegralNumbersAccepted(t *testing.T) {
	d := startFakeDaemon(t, "", fake.Options{}, nil)
	for _, tc := range []struct{ from, to string }{
		{`"deadline_ms": 600000`, `"deadline_ms": 600000.0`},
		{`"deadline_ms": 600000`, `"deadline_ms": 6e5`},
		{`"max_tokens": 3`, `"max_tokens": 3.0`},
		{`"max_tokens": 3`, `"max_tokens": 30e-1`},
	} {
		t.Run(tc.to, func(t *testing.T) {
			body := strings.Replace(taskBody(uuid.New(), 3), tc.from, tc.to, 1)
			if !strings.Contains(body, tc.to) {
				t.Fatalf("the body has no %s to replace", tc.from)
			}
			res, err := d.do("POST", "/v1/tasks", body)
			if err != nil {
				t.Fatal(err)
			}
			if res.status != http.StatusAccepted {
				t.Fatalf("%s: %d %s, want 202", tc.to, res.status, res.body)
			}
		})
	}
	t.Run("openai max_tokens 2.0", func(t *testing.T) {
		res, err := d.do("POST", "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"hi"}],"max_tokens":2.0}`)
		if err != nil {
			t.Fatal(err)
		}
		if res.status != http.StatusOK {
			t.Fatalf("%d %s, want 200", res.status, res.body)
		}
	})
	t.Run("seed 2^63 with a fraction", func(t *testing.T) {
		body := strings.Replace(taskBody(uuid.New(), 3), `"ctx": 32768`, `"ctx": 32768, "seed": 9223372036854775808.0`, 1)
		res, err := d.do("POST", "/v1/tasks", body)
		if err != nil {
			t.Fatal(err)
		}
		var env envelopeBody
		_ = json.Unmarshal(res.body, &env)
		if res.status != http.StatusBadRequest || env.Code != "INVALID_PARAMS" || !strings.HasPrefix(env.Message, "/seed:") {
			t.Fatalf("%d %s, want 400 INVALID_PARAMS naming /seed", res.status, res.body)
		}
	})
}

// TestOutOfRangeIntegerIsNotCalledEmpty: a number out of its integer format's range (ctx
// 3000000000 for int32, seed 2^64 for int64) was reported "/ctx: is empty: it must be a
// int32": every value that was not a string was called empty.
func TestOutOfRangeIntegerIsNotCalledEmpty(t *testing.T) {
	d := startFakeDaemon(t, "", fake.Options{}, nil)
	for _, tc := range []struct{ to, want string }{
		{`"ctx": 3000000000`, "/ctx: must be a 32-bit integer"},
		{`"ctx": 32768, "seed": 18446744073709551616`, "/seed: must be a 64-bit integer"},
	} {
		t.Run(tc.to, func(t *testing.T) {
			body := strings.Replace(taskBody(uuid.New(), 3), `"ctx": 32768`, tc.to, 1)
			res, err := d.do("POST", "/v1/tasks", body)
			if err != nil {
				t.Fatal(err)
			}
			var env envelopeBody
			_ = json.Unmarshal(res.body, &env)
			if res.status != http.StatusBadRequest || env.Code != "INVALID_PARAMS" || !strings.Contains(env.Message, tc.want) ||
				strings.Contains(env.Message, "is empty") {
				t.Fatalf("%d %s, want 400 INVALID_PARAMS saying %q", res.status, res.body, tc.want)
			}
		})
	}
}
