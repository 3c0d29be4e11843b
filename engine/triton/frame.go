package triton

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// frame is one decoded response of the generate extension.
type frame struct {
	text      string // the output tensor's text ("" when the response has none)
	hasOutput bool
	model     string // model_name
	version   string // model_version

	hasError bool
	errMsg   string
}

// decodeFrame decodes one event's data: a JSON object holding model_name, model_version and
// one field per output tensor, or {"error": "..."}. The output named output is a string, or an
// array (nested for batched shapes) of strings, which are joined; any other type is an error.
func decodeFrame(data []byte, output string) (frame, error) {
	var f frame
	var w map[string]json.RawMessage
	if err := json.Unmarshal(data, &w); err != nil {
		return f, fmt.Errorf("malformed frame: %w", err)
	}
	if w == nil {
		return f, errors.New("malformed frame: null")
	}
	if raw, ok := w["error"]; ok {
		f.hasError = true
		var s string
		if json.Unmarshal(raw, &s) == nil {
			f.errMsg = s
		} else {
			f.errMsg = string(raw)
		}
		return f, nil
	}
	str := func(key string) string {
		var s string
		_ = json.Unmarshal(w[key], &s)
		return s
	}
	f.model, f.version = str("model_name"), str("model_version")
	raw, ok := w[output]
	if !ok || string(raw) == "null" {
		return f, nil
	}
	var b strings.Builder
	if err := joinText(&b, raw, 0); err != nil {
		return f, fmt.Errorf("output %q: %w", output, err)
	}
	f.text, f.hasOutput = b.String(), true
	return f, nil
}

// joinText appends a string, or the strings of a (nested) array, to b.
func joinText(b *strings.Builder, raw json.RawMessage, depth int) error {
	if depth > 8 {
		return errors.New("nested too deep")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		b.WriteString(s)
		return nil
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(raw, &arr); err != nil {
		return errors.New("not a string or an array of strings")
	}
	for _, e := range arr {
		if err := joinText(b, e, depth+1); err != nil {
			return err
		}
	}
	return nil
}
