package impl

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/api"
	"github.com/orchestratord/orchestratord/impl/sse"
)

// fill sets every field of the value v points to (recursively) to something other than its zero
// value, so that a field an encoder does not know shows in a comparison with encoding/json.
func fill(v reflect.Value, r *rand.Rand) {
	strs := []string{"tiny", "<a&b>", "é\u2028\u2029\x01\b\f\n\r\t\"\\/", "\xff\xfe ok", "😀"}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Field(i).CanSet() {
				fill(v.Field(i), r)
			}
		}
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(p.Elem(), r)
		v.Set(p)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1+r.IntN(3), 3)
		for i := range s.Len() {
			fill(s.Index(i), r)
		}
		v.Set(s)
	case reflect.Array:
		if v.Type() == reflect.TypeFor[uuid.UUID]() {
			v.Set(reflect.ValueOf(uuid.New()))
		}
	case reflect.String:
		v.SetString(strs[r.IntN(len(strs))])
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(r.Int64N(1<<31) - 1<<30)
	case reflect.Bool:
		v.SetBool(r.IntN(2) == 0)
	case reflect.Float64:
		v.SetFloat(r.Float64() * 100)
	default:
		panic("fill: " + v.Kind().String())
	}
}

// TestEncodersKnowEveryField: with every field set, the hand-written encoders write what
// encoding/json writes (a field added to the contract fails here until the encoder writes it).
func TestEncodersKnowEveryField(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		var req api.TaskRequest
		fill(reflect.ValueOf(&req).Elem(), r)
		want, err := json.Marshal(&req)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendTaskRequest(nil, &req); !bytes.Equal(got, want) {
			t.Fatalf("TaskRequest:\n got  %s\n want %s", got, want)
		}
		var adm api.AdmissionResponse
		fill(reflect.ValueOf(&adm).Elem(), r)
		var buf bytes.Buffer
		if err := json.NewEncoder(&buf).Encode(adm); err != nil {
			t.Fatal(err)
		}
		if got := appendAdmission(nil, &adm); !bytes.Equal(got, buf.Bytes()) {
			t.Fatalf("AdmissionResponse:\n got  %s\n want %s", got, buf.Bytes())
		}
	}
}

func TestAppendTaskRequestOptionalFields(t *testing.T) {
	prompt := "hi"
	empty := []string{}
	for _, req := range []api.TaskRequest{
		{},
		{Prompt: &prompt, MaxTokens: 1, Ctx: 2, DeadlineMs: 3, Workload: api.Chat, TaskId: uuid.New()},
		{Inputs: &empty, Placement: &api.PlacementOverrides{}},
		{Inputs: new([]string), Placement: &api.PlacementOverrides{PreferPools: new([]string)}},
	} {
		want, err := json.Marshal(&req)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendTaskRequest(nil, &req); !bytes.Equal(got, want) {
			t.Errorf("got  %s\nwant %s", got, want)
		}
	}
}

// FuzzAppendJSONString: strings are quoted exactly as encoding/json quotes them.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "<&>", "\u2028\u2029", "\xff", "a\x00b\x1f", "😀é", `"\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := sse.AppendStringAsEncodingJSON(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("%q:\n got  %s\n want %s", s, got, want)
		}
	})
}

// TestAdmittedAsGenerated: the hand-written 202 has the generated one's status, headers and body.
func TestAdmittedAsGenerated(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 50 {
		var a admitted
		fill(reflect.ValueOf(&a.CreateTask202JSONResponse).Elem(), r)
		want := httptest.NewRecorder()
		if err := a.CreateTask202JSONResponse.VisitCreateTaskResponse(want); err != nil {
			t.Fatal(err)
		}
		got := httptest.NewRecorder()
		if err := a.VisitCreateTaskResponse(got); err != nil {
			t.Fatal(err)
		}
		if got.Code != want.Code || !reflect.DeepEqual(got.Header(), want.Header()) || got.Body.String() != want.Body.String() {
			t.Fatalf("got %d %v %s\nwant %d %v %s", got.Code, got.Header(), got.Body, want.Code, want.Header(), want.Body)
		}
	}
}

// TestDecodeTaskRequestKnowsEveryField: with every field set, decodeTaskRequest decodes what
// encoding/json decodes (a member added to the contract fails here until it decodes it).
func TestDecodeTaskRequestKnowsEveryField(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 200 {
		var req api.TaskRequest
		fill(reflect.ValueOf(&req).Elem(), r)
		b, err := json.Marshal(&req)
		if err != nil {
			t.Fatal(err)
		}
		var want, got api.TaskRequest
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		if !decodeTaskRequest(b, &got) {
			t.Fatalf("decodeTaskRequest refuses %s", b)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got  %+v\nwant %+v\nbody %s", got, want, b)
		}
	}
}
