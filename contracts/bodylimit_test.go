package contracts

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/impl/config"
)

// The worst case of a schema-valid request body, in bytes: compact JSON (no insignificant
// whitespace, numbers in their shortest form) in which every character of every string (keys
// included) may be escaped. An escape is 6 bytes (\u0041) for a code point up to U+FFFF and 12 (a
// surrogate pair, \ud83d\ude00) above it; schemathesis sends exactly that (Python's json.dumps
// escapes every non-ASCII character).
const (
	escBMP   = 6  // bytes of the longest encoding of a code point up to U+FFFF
	escAstra = 12 // bytes of the longest encoding of a code point above U+FFFF
	uuidLen  = 36 // RFC 9562 text form, the only one format uuid accepts
)

// errUnbounded is returned for a schema that admits values of any size.
var errUnbounded = errors.New("unbounded")

// worstCase returns the largest compact encoding of a value that s admits. omit names
// properties left out of the top-level object (for rules written with `not`, which the walk
// does not evaluate).
func worstCase(s *openapi3.Schema, path string, omit ...string) (int, error) {
	if len(s.Enum) > 0 {
		n := 0
		for _, v := range s.Enum {
			str, ok := v.(string)
			if !ok {
				return 0, fmt.Errorf("%s: enum value %v is not a string", path, v)
			}
			n = max(n, quotedLen(str))
		}
		return n, nil
	}
	switch {
	case s.Type.Is(openapi3.TypeString):
		switch {
		case s.MaxLength != nil:
			return 2 + int(*s.MaxLength)*escAstra, nil
		case s.Format == "uuid":
			return 2 + uuidLen*escBMP, nil // hex digits and dashes: ASCII
		}
		return 0, fmt.Errorf("%s: string without maxLength: %w", path, errUnbounded)
	case s.Type.Is(openapi3.TypeBoolean):
		return len("false"), nil
	case s.Type.Is(openapi3.TypeInteger):
		if s.Min == nil || s.Max == nil {
			return 0, fmt.Errorf("%s: integer without minimum and maximum: %w", path, errUnbounded)
		}
		return max(len(strconv.FormatFloat(*s.Min, 'f', -1, 64)), len(strconv.FormatFloat(*s.Max, 'f', -1, 64))), nil
	case s.Type.Is(openapi3.TypeArray):
		if s.MaxItems == nil {
			return 0, fmt.Errorf("%s: array without maxItems: %w", path, errUnbounded)
		}
		item, err := worstCase(s.Items.Value, path+"/items")
		if err != nil {
			return 0, err
		}
		n := int(*s.MaxItems)
		return 2 + n*item + max(n-1, 0), nil
	case s.Type.Is(openapi3.TypeObject):
		if s.AdditionalProperties.Has == nil || *s.AdditionalProperties.Has {
			return 0, fmt.Errorf("%s: object that admits additional properties: %w", path, errUnbounded)
		}
		total, props := 2, 0
		for name, p := range s.Properties {
			if slices.Contains(omit, name) {
				continue
			}
			v, err := worstCase(p.Value, path+"/"+name)
			if err != nil {
				return 0, err
			}
			total += quotedLen(name) + 1 + v
			props++
		}
		return total + max(props-1, 0), nil
	}
	return 0, fmt.Errorf("%s: type %v: %w", path, s.Type.Slice(), errUnbounded)
}

// quotedLen is the length of s as a JSON string with every character escaped.
func quotedLen(s string) int {
	n := 2
	for _, r := range s {
		if r > 0xFFFF {
			n += escAstra
		} else {
			n += escBMP
		}
	}
	return n
}

// Every schema-valid request body fits under the default body limit, so that the daemon never
// answers 413 to a request the contract calls valid. The exceptions are free-form by design:
// createArtifact's `content` and `metadata`, and the OpenAI-compatible createChatCompletion and
// createCompletion, which admit additional properties. No schema keyword can bound them; the body
// limit does, and their descriptions say so.
func TestSchemaValidBodiesFitTheDefaultLimit(t *testing.T) {
	t.Parallel()
	c := mustContract(t)
	limit := config.DefaultBodyLimitBytes
	// Free-form by design: an artifact's content, and the OpenAI-compatible bodies, which admit
	// the fields OpenAI clients send beyond those listed.
	unboundedByDesign := map[string]bool{"createArtifact": true, "createChatCompletion": true, "createCompletion": true}
	// TaskRequest: exactly one of prompt or inputs (a `not` rule): the worst case is the larger
	// of the two bodies that leave one of them out.
	exclusive := map[string][][]string{"createTask": {{"inputs"}, {"prompt"}}}

	seen := 0
	for path, item := range c.spec.Paths.Map() {
		for method, op := range item.Operations() {
			if op.RequestBody == nil {
				continue
			}
			seen++
			if op.Responses.Status(http.StatusRequestEntityTooLarge) == nil {
				t.Errorf("%s (%s %s) takes a body but does not declare 413", op.OperationID, method, path)
			}
			media := op.RequestBody.Value.Content.Get("application/json")
			if media == nil {
				t.Errorf("%s: no application/json body", op.OperationID)
				continue
			}
			variants := exclusive[op.OperationID]
			if variants == nil {
				variants = [][]string{nil}
			}
			worst := 0
			var err error
			for _, omit := range variants {
				var n int
				if n, err = worstCase(media.Schema.Value, op.OperationID, omit...); err != nil {
					break
				}
				if len(variants) > 1 {
					t.Logf("%s without %v: %d bytes", op.OperationID, omit, n)
				}
				worst = max(worst, n)
			}
			switch {
			case unboundedByDesign[op.OperationID]:
				if !errors.Is(err, errUnbounded) {
					t.Errorf("%s: bounded now (%d bytes, err %v): take it off the unbounded list", op.OperationID, worst, err)
				}
				if !strings.Contains(op.Description, "body_limit_bytes") {
					t.Errorf("%s: free-form body, but its description does not say that body_limit_bytes bounds it", op.OperationID)
				}
			case err != nil:
				t.Errorf("%s: %v", op.OperationID, err)
			case int64(worst) > limit:
				t.Errorf("%s: a schema-valid body can be %d bytes, over the default body limit of %d", op.OperationID, worst, limit)
			default:
				t.Logf("%s: worst-case body %d bytes (limit %d)", op.OperationID, worst, limit)
			}
		}
	}
	if seen < 4 {
		t.Fatalf("found %d operations with a body, want at least 4 (createTask, createArtifact, drainPool, reloadPool)", seen)
	}
}

// The walk above, checked against a real body: a createTask at the prompt's maxLength, every
// character outside the BMP and escaped, with every optional field at its largest, is within
// the computed worst case and is not refused as too large by the daemon.
func TestLargestTaskBodyIsAdmitted(t *testing.T) {
	t.Parallel()
	c := mustContract(t)
	h := newHarness(t)
	h.fake.SetGated(true)

	task := c.spec.Components.Schemas["TaskRequest"].Value
	maxLen := func(s *openapi3.Schema) int {
		if s.MaxLength == nil {
			t.Fatalf("schema %v has no maxLength", s.Type.Slice())
		}
		return int(*s.MaxLength)
	}
	promptLen := maxLen(task.Properties["prompt"].Value)
	placement := task.Properties["placement"].Value
	poolIDLen := maxLen(c.spec.Components.Schemas["PoolIdValue"].Value)
	pools := func(n int) string {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = escapeAll(strconv.Itoa(i%10) + strings.Repeat("z", poolIDLen-1))
		}
		return "[" + strings.Join(ids, ",") + "]"
	}
	fields := []string{
		`"task_id":` + escapeAll(uuid.NewString()),
		`"session_id":` + escapeAll(uuid.NewString()),
		`"workload":"completion"`,
		`"model_ref":` + escapeAll(modelID),
		`"engine":"llamacpp"`,
		`"ctx":2048`,
		`"priority":"interactive"`,
		`"seed":4294967295`,
		`"determinism":"best_effort"`,
		`"sampler_profile_version":` + escapeAll(strings.Repeat("\U0001F600", maxLen(task.Properties["sampler_profile_version"].Value))),
		`"prompt":` + escapeAll(strings.Repeat("\U0001F600", promptLen)),
		`"max_tokens":16`,
		`"deadline_ms":86400000`,
		`"expected_tokens":32768`,
		`"kv_hint":"reuse"`,
		`"placement":{"mode":"prefer","prefer_pools":` + pools(int(*placement.Properties["prefer_pools"].Value.MaxItems)) +
			`,"avoid_pools":` + pools(int(*placement.Properties["avoid_pools"].Value.MaxItems)) + `,"allow_fallback":true}`,
	}
	body := "{" + strings.Join(fields, ",") + "}"

	worst, err := worstCase(task, "TaskRequest", "inputs")
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > worst {
		t.Fatalf("a real body of %d bytes is larger than the computed worst case %d", len(body), worst)
	}
	if int64(len(body)) <= config.DefaultBodyLimitBytes*3/4 {
		t.Fatalf("the body is %d bytes; want one close to the limit %d for this test to mean something", len(body), config.DefaultBodyLimitBytes)
	}
	resp, out := h.do(t, http.MethodPost, "/v1/tasks", strings.NewReader(body),
		http.Header{"X-Api-Key": {testKey}, "Content-Type": {"application/json"}})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("a %d-byte schema-valid createTask: %d %s, want 202", len(body), resp.StatusCode, truncate(out, 300))
	}
}

// escapeAll writes s as a JSON string with every character escaped (\uXXXX, surrogate pairs
// above U+FFFF): the longest encoding of s.
func escapeAll(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		if r > 0xFFFF {
			r -= 0x10000
			fmt.Fprintf(&b, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
			continue
		}
		fmt.Fprintf(&b, `\u%04x`, r)
	}
	b.WriteByte('"')
	return b.String()
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}
