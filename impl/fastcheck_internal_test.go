package impl

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/oapi-codegen/runtime"

	"github.com/orchestratord/orchestratord/gen/api"
)

// kinOracle validates requests with kin-openapi alone, configured as Validator configures it.
type kinOracle struct {
	router routers.Router
	ops    map[route]*opCheck
}

var (
	oracleOnce sync.Once
	oracle     kinOracle
	oracleErr  error
)

func theOracle(t testing.TB) kinOracle {
	t.Helper()
	oracleOnce.Do(func() {
		spec, err := api.GetSpec()
		if err != nil {
			oracleErr = err
			return
		}
		spec.Servers = nil
		oracle.router, oracleErr = gorillamux.NewRouter(spec)
		oracle.ops = compileOps(spec, map[string]func([]byte) bool{"uuid": uuidRFC9562})
	})
	if oracleErr != nil {
		t.Fatal(oracleErr)
	}
	return oracle
}

func postTask(body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/v1/tasks", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	return r
}

// kinValid validates r with kin-openapi and returns the body value it would hand on.
func (o kinOracle) kinValid(t testing.TB, r *http.Request) (bool, any) {
	t.Helper()
	rt, params, err := o.router.FindRoute(r)
	if err != nil {
		t.Fatal(err)
	}
	err = openapi3filter.ValidateRequest(context.Background(), &openapi3filter.RequestValidationInput{
		Request: r, PathParams: params, Route: rt,
		Options: &openapi3filter.Options{
			MultiError: true, KeepValidatedValue: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
			SchemaValidationOptions: []openapi3.SchemaValidationOption{
				openapi3.WithStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC9562)),
			},
		},
	})
	if err != nil {
		return false, nil
	}
	vb, ok := r.Body.(interface{ ValidatedValue() any })
	if !ok {
		t.Fatal("kin-openapi kept no validated value")
	}
	return true, vb.ValidatedValue()
}

// checkAgainstKin fails t when the fast check calls body valid and kin-openapi does not, or
// kin-openapi would hand the handler another TaskRequest than decoding the body does. It
// returns the fast check's verdict.
func checkAgainstKin(t *testing.T, body []byte, header http.Header) bool {
	t.Helper()
	o := theOracle(t)
	if singleJSONValue(body) != nil || len(bytes.TrimSpace(body)) == 0 {
		return false // JSONBody refuses it before validation
	}
	r := postTask(body)
	for k, v := range header {
		r.Header[k] = v
	}
	fast := o.ops[route{"POST", "/v1/tasks"}].valid(r, body)
	if !fast {
		return false
	}
	ok, value := o.kinValid(t, r)
	if !ok {
		t.Fatalf("the fast check accepts what kin-openapi refuses: %s", body)
	}
	var fromKin, decoded api.TaskRequest
	if err := runtime.BindJSONValue(value, &fromKin); err != nil {
		t.Fatalf("binding the validated value: %v", err)
	}
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&decoded); err != nil {
		t.Fatalf("the fast check accepts a body the handler cannot decode: %v: %s", err, body)
	}
	if !reflect.DeepEqual(fromKin, decoded) {
		t.Fatalf("the handler would see another request than kin-openapi's:\n kin:    %+v\n decode: %+v\n body: %s", fromKin, decoded, body)
	}
	var byHand api.TaskRequest
	if !decodeTaskRequest(body, &byHand) {
		t.Fatalf("decodeTaskRequest refuses a body the fast check accepts: %s", body)
	}
	if !reflect.DeepEqual(byHand, decoded) {
		t.Fatalf("decodeTaskRequest:\n got  %+v\n want %+v\n body: %s", byHand, decoded, body)
	}
	return true
}

const validTask = `{"task_id":"6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11","session_id":"0a9d7b6e-2f39-4f47-8f0e-8b1c0c0f7c22",` +
	`"workload":"completion","model_ref":"tiny","engine":"llamacpp","ctx":512,"priority":"interactive",` +
	`"prompt":"The quick brown fox","max_tokens":1,"deadline_ms":60000}`

// fastCases: bodies and whether the fast check must prove them valid (false: kin-openapi
// decides, whatever it says).
var fastCases = []struct {
	name string
	body string
	fast bool
}{
	{"minimal", validTask, true},
	{"no ids", `{"workload":"chat","model_ref":"m","engine":"vllm","ctx":1,"priority":"batch","inputs":["a","b","c"],"max_tokens":1,"deadline_ms":1}`, true},
	{"spaces", " {\n \"workload\" : \"completion\" ,\"model_ref\":\"tiny\",\"engine\":\"llamacpp\",\"ctx\":512,\"priority\":\"interactive\",\"prompt\":\"x\",\"max_tokens\":1,\"deadline_ms\":1 }\n", true},
	{"escaped prompt", strings.Replace(validTask, `The quick`, `line\nnext \u00e9 \ud83d\ude00 \"q\" \\ \/ \ud800 \udc00x`, 1), true},
	{"unicode prompt", strings.Replace(validTask, `The quick`, `héllo 😀`, 1), true},
	{"every field", `{"task_id":"6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11","workload":"completion","model_ref":"tiny","engine":"llamacpp","ctx":512,` +
		`"priority":"interactive","seed":4294967295,"determinism":"strict","sampler_profile_version":"v1","prompt":"p","max_tokens":32768,` +
		`"deadline_ms":86400000,"on_disconnect":"grace","disconnect_grace_ms":600000,"expected_tokens":0,"kv_hint":"cold",` +
		`"placement":{"mode":"pin","pin_pool_id":"p0","pin_replica_id":"p0/0","allow_fallback":false,"prefer_pools":["a"],"avoid_pools":[],"prefer_replicas":["r"],"avoid_replicas":[]}}`, true},
	{"detach", strings.Replace(validTask, `"max_tokens"`, `"on_disconnect":"detach","max_tokens"`, 1), true},
	{"longest prompt, escaped", strings.Replace(validTask, `"The quick brown fox"`, `"`+strings.Repeat("a", 65533)+`\ud83d\ude00\ud800\n"`, 1), true},
	{"longest inputs", strings.Replace(validTask, `"prompt":"The quick brown fox"`, `"inputs":["`+strings.Repeat("é", 4096)+`"]`, 1), true},
	// Left to kin-openapi.
	{"prompt too long, escaped", strings.Replace(validTask, `"The quick brown fox"`, `"`+strings.Repeat("a", 65534)+`\ud83d\ude00\ud800\n"`, 1), false},
	{"input too long", strings.Replace(validTask, `"prompt":"The quick brown fox"`, `"inputs":["`+strings.Repeat("é", 4097)+`"]`, 1), false},
	{"placement default left out", strings.Replace(validTask, `"max_tokens"`, `"placement":{"mode":"auto"},"max_tokens"`, 1), false},
	{"null", strings.Replace(validTask, `"ctx":512`, `"ctx":null`, 1), false},
	{"float", strings.Replace(validTask, `"ctx":512`, `"ctx":512.0`, 1), false},
	{"exponent", strings.Replace(validTask, `"ctx":512`, `"ctx":5e2`, 1), false},
	{"duplicate", strings.Replace(validTask, `"ctx":512`, `"ctx":512,"ctx":513`, 1), false},
	{"other case", strings.Replace(validTask, `"ctx":512`, `"Ctx":512`, 1), false},
	{"unknown member", strings.Replace(validTask, `"ctx":512`, `"ctx":512,"x":1`, 1), false},
	{"escaped enum", strings.Replace(validTask, `"completion"`, `"completio\u006e"`, 1), false},
	{"escaped key", strings.Replace(validTask, `"ctx":512`, `"ct\u0078":512`, 1), false},
	{"both prompt and inputs", strings.Replace(validTask, `"max_tokens"`, `"inputs":["a"],"max_tokens"`, 1), false},
	{"neither", strings.Replace(validTask, `"prompt":"The quick brown fox",`, ``, 1), false},
	{"grace without ms", strings.Replace(validTask, `"max_tokens"`, `"on_disconnect":"grace","max_tokens"`, 1), false},
	{"ms without grace", strings.Replace(validTask, `"max_tokens"`, `"disconnect_grace_ms":5,"max_tokens"`, 1), false},
	{"nil uuid", strings.Replace(validTask, `6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11`, `00000000-0000-0000-0000-000000000000`, 1), false},
	{"bad uuid", strings.Replace(validTask, `6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11`, `6f1c5e1a3c1e4b0e9a570d8d2b6c9a11`, 1), false},
	{"ctx too big", strings.Replace(validTask, `"ctx":512`, `"ctx":1048577`, 1), false},
	{"max_tokens 0", strings.Replace(validTask, `"max_tokens":1`, `"max_tokens":0`, 1), false},
	{"empty prompt", strings.Replace(validTask, `"The quick brown fox"`, `""`, 1), false},
	{"pin without pool", strings.Replace(validTask, `"max_tokens"`, `"placement":{"mode":"pin","allow_fallback":true},"max_tokens"`, 1), false},
	{"bad pool id", strings.Replace(validTask, `"max_tokens"`, `"placement":{"pin_pool_id":"P!","allow_fallback":true},"max_tokens"`, 1), false},
	{"too many inputs", strings.Replace(validTask, `"prompt":"The quick brown fox"`, `"inputs":["1","2","3","4","5","6","7","8","9","10","11","12","13","14","15","16","17"]`, 1), false},
	{"array body", `[1]`, false},
	{"string for int", strings.Replace(validTask, `"ctx":512`, `"ctx":"512"`, 1), false},
	{"leading zero", strings.Replace(validTask, `"ctx":512`, `"ctx":0512`, 1), false},
}

func TestFastCheckAgainstKin(t *testing.T) {
	for _, tc := range fastCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkAgainstKin(t, []byte(tc.body), nil); got != tc.fast {
				t.Errorf("fast check: %v, want %v", got, tc.fast)
			}
		})
	}
}

func TestFastCheckHeaders(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header http.Header
		fast   bool
	}{
		{"correlation id", http.Header{"X-Correlation-Id": {"abc-123"}}, true},
		{"ill-formed correlation id", http.Header{"X-Correlation-Id": {"a b"}}, false},
		{"two correlation ids", http.Header{"X-Correlation-Id": {"a", "b"}}, false},
		{"media type with charset", http.Header{"Content-Type": {"application/json; charset=utf-8"}}, true},
		{"media type in capitals", http.Header{"Content-Type": {"Application/JSON"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkAgainstKin(t, []byte(validTask), tc.header); got != tc.fast {
				t.Errorf("fast check: %v, want %v", got, tc.fast)
			}
		})
	}
}

// TestFastCheckAllocations: the fast check of a valid body allocates nothing.
func TestFastCheckAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	oc := theOracle(t).ops[route{"POST", "/v1/tasks"}]
	body := []byte(fastCases[5].body)
	r := postTask(body)
	if n := testing.AllocsPerRun(100, func() {
		if !oc.valid(r, body) {
			t.Fatal("not valid")
		}
	}); n != 0 {
		t.Errorf("%v allocations per check, want 0", n)
	}
}

// FuzzFastCheck: whatever the body, the fast check never calls valid what kin-openapi refuses,
// nor a body that kin-openapi would hand on changed.
func FuzzFastCheck(f *testing.F) {
	for _, tc := range fastCases {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkAgainstKin(t, body, nil)
	})
}

// FuzzUUIDFormat: uuidRFC9562 matches exactly what the validator's uuid format matches.
func FuzzUUIDFormat(f *testing.F) {
	re := regexp.MustCompile(openapi3.FormatOfStringForUUIDOfRFC9562)
	for _, s := range []string{"6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11", "6F1C5E1A-3C1E-4B0E-9A57-0D8D2B6C9A11",
		"00000000-0000-0000-0000-000000000000", "ffffffff-FFFF-ffff-ffff-ffffffffffff", "6f1c5e1a-3c1e-9b0e-9a57-0d8d2b6c9a11",
		"6f1c5e1a-3c1e-4b0e-ca57-0d8d2b6c9a11", "6f1c5e1a3c1e4b0e9a570d8d2b6c9a11", "6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a1g",
		"00000000-0000-0000-0000-00000000000f", "6f1c5e1a-3c1e-0b0e-9a57-0d8d2b6c9a11", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := uuidRFC9562(b), re.Match(b); got != want {
			t.Fatalf("%q: %v, the format's expression says %v", b, got, want)
		}
	})
}

// TestUUIDFormatMutations: every one-byte change of UUIDs of each kind is judged as the format's
// expression judges it.
func TestUUIDFormatMutations(t *testing.T) {
	re := regexp.MustCompile(openapi3.FormatOfStringForUUIDOfRFC9562)
	for _, s := range []string{"6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11", "00000000-0000-0000-0000-000000000000",
		"ffffffff-FFFF-ffff-ffff-ffffffffffff", "6F1C5E1A-3C1E-8B0E-BA57-0D8D2B6C9A11"} {
		for i := range len(s) {
			for c := range 256 {
				b := []byte(s)
				b[i] = byte(c)
				if got, want := uuidRFC9562(b), re.Match(b); got != want {
					t.Fatalf("%q: %v, the format's expression says %v", b, got, want)
				}
			}
		}
	}
}

// BenchmarkFastCheck: the fast check of a typical task body.
func BenchmarkFastCheck(b *testing.B) {
	oc := theOracle(b).ops[route{"POST", "/v1/tasks"}]
	body := []byte(validTask)
	r := postTask(body)
	b.ReportAllocs()
	for b.Loop() {
		if !oc.valid(r, body) {
			b.Fatal("not valid")
		}
	}
}

// BenchmarkKinCheck: kin-openapi's validation of the same body, for comparison.
func BenchmarkKinCheck(b *testing.B) {
	o := theOracle(b)
	body := []byte(validTask)
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := o.kinValid(b, postTask(body)); !ok {
			b.Fatal("not valid")
		}
	}
}
