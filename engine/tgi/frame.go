package tgi

import (
	"encoding/json"
	"fmt"
)

// frame is one decoded /generate_stream event, reduced to what the adapter uses.
type frame struct {
	text    string // token.text
	special bool   // token.special: a special token (e.g. the end-of-sequence token), not text
	hasText bool   // the frame carries a token

	final           bool   // generated_text or details is set: the last frame of the generation
	finishReason    string // details.finish_reason
	generatedTokens int    // details.generated_tokens
	inputLength     int    // details.input_length (TGI ≥ 2.1; 0 when absent)

	hasError bool
	errType  string // error_type: generation, incomplete_generation, overloaded, validation
	errMsg   string
}

// wireFrame is the JSON shape of a TGI stream event (StreamResponse, or ErrorResponse).
type wireFrame struct {
	Token *struct {
		ID      *int64  `json:"id"`
		Text    *string `json:"text"`
		Special bool    `json:"special"`
	} `json:"token"`
	GeneratedText *string `json:"generated_text"`
	Details       *struct {
		FinishReason    string `json:"finish_reason"`
		GeneratedTokens int    `json:"generated_tokens"`
		InputLength     int    `json:"input_length"`
	} `json:"details"`
	Error     *string `json:"error"`
	ErrorType string  `json:"error_type"`
}

// decodeFrame decodes one event's data. An object that is neither a token frame nor an error
// frame is an error, like a document that is not JSON.
func decodeFrame(data []byte) (frame, error) {
	var f frame
	var w wireFrame
	if err := json.Unmarshal(data, &w); err != nil {
		return f, fmt.Errorf("malformed frame: %w", err)
	}
	if w.Error != nil {
		f.hasError = true
		f.errType, f.errMsg = w.ErrorType, *w.Error
		return f, nil
	}
	if w.Token == nil || w.Token.Text == nil {
		return f, fmt.Errorf("frame without token.text: %.256s", data)
	}
	f.hasText, f.text, f.special = true, *w.Token.Text, w.Token.Special
	if w.GeneratedText != nil || w.Details != nil {
		f.final = true
	}
	if d := w.Details; d != nil {
		f.finishReason, f.generatedTokens, f.inputLength = d.FinishReason, d.GeneratedTokens, d.InputLength
	}
	return f, nil
}
