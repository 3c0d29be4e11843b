package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// chunk is one decoded stream event, reduced to what the adapter uses.
type chunk struct {
	done         bool   // the "[DONE]" terminator
	text         string // choices[0].text or choices[0].delta.content
	hasChoice    bool
	finishReason string // choices[0].finish_reason ("" while generating)

	hasUsage         bool
	promptTokens     int
	completionTokens int
	cachedTokens     int

	hasError bool
	errCode  int // HTTP-like status of an in-stream error (0 when the engine gave none)
	errType  string
	errMsg   string
}

// wireChunk is the JSON shape of a chunk, for completions and chat alike.
type wireChunk struct {
	Object  string `json:"object"`
	Choices []struct {
		Text  *string `json:"text"`
		Delta *struct {
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens        int `json:"prompt_tokens"`
		CompletionTokens    int `json:"completion_tokens"`
		PromptTokensDetails *struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
	} `json:"usage"`
	Error *wireError `json:"error"`
	// vLLM's error object is the chunk itself: {"object":"error","message":..,"type":..,"code":400}.
	wireError
}

type wireError struct {
	Message string          `json:"message"`
	Type    string          `json:"type"`
	Code    json.RawMessage `json:"code"`
}

// decodeChunk decodes one event's data.
func decodeChunk(data []byte) (chunk, error) {
	var c chunk
	if string(bytes.TrimSpace(data)) == "[DONE]" {
		c.done = true
		return c, nil
	}
	var w wireChunk
	if err := json.Unmarshal(data, &w); err != nil {
		return c, fmt.Errorf("malformed chunk: %w", err)
	}
	switch {
	case w.Error != nil:
		c.hasError = true
		c.errCode, c.errType, c.errMsg = codeOf(w.Error.Code), w.Error.Type, w.Error.Message
		return c, nil
	case w.Object == "error":
		c.hasError = true
		c.errCode, c.errType, c.errMsg = codeOf(w.Code), w.Type, w.Message
		return c, nil
	}
	if len(w.Choices) > 0 {
		ch := w.Choices[0]
		c.hasChoice = true
		switch {
		case ch.Text != nil:
			c.text = *ch.Text
		case ch.Delta != nil && ch.Delta.Content != nil:
			c.text = *ch.Delta.Content
		}
		if ch.FinishReason != nil {
			c.finishReason = *ch.FinishReason
		}
	}
	if u := w.Usage; u != nil {
		c.hasUsage = true
		c.promptTokens, c.completionTokens = u.PromptTokens, u.CompletionTokens
		if u.PromptTokensDetails != nil {
			c.cachedTokens = u.PromptTokensDetails.CachedTokens
		}
	}
	return c, nil
}

// codeOf reads an error code that is a number ("code": 400) or a numeric string; other codes
// (OpenAI's "context_length_exceeded", null) give 0.
func codeOf(raw json.RawMessage) int {
	s := string(bytes.Trim(bytes.TrimSpace(raw), `"`))
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}
