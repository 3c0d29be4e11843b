package gguf

import (
	"encoding/json"
	"testing"
)

// The Hugging Face tokenizer carries exactly the model's vocabulary, in order, with its scores,
// and names its special tokens by the ids the GGUF file declares.
func TestHFTokenizerMatchesVocab(t *testing.T) {
	files, err := HFTokenizerFiles()
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		Model struct {
			Type         string  `json:"type"`
			UnkID        int     `json:"unk_id"`
			Vocab        [][]any `json:"vocab"`
			ByteFallback bool    `json:"byte_fallback"`
		} `json:"model"`
		AddedTokens []struct {
			ID      int    `json:"id"`
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens"`
	}
	if err := json.Unmarshal(files["tokenizer.json"], &tok); err != nil {
		t.Fatal(err)
	}
	v := Vocab()
	if tok.Model.Type != "Unigram" || tok.Model.UnkID != 0 || !tok.Model.ByteFallback || len(tok.Model.Vocab) != len(v.Tokens) {
		t.Fatalf("model %s unk %d fallback %v, %d pieces (vocab %d)", tok.Model.Type, tok.Model.UnkID, tok.Model.ByteFallback, len(tok.Model.Vocab), len(v.Tokens))
	}
	for i, p := range tok.Model.Vocab {
		if p[0] != v.Tokens[i] || p[1] != float64(v.Scores[i]) {
			t.Fatalf("piece %d = %v, want %q %v", i, p, v.Tokens[i], v.Scores[i])
		}
	}
	want := map[int]string{0: "<unk>", 1: "<s>", 2: "</s>"}
	if len(tok.AddedTokens) != len(want) {
		t.Fatalf("added tokens %+v", tok.AddedTokens)
	}
	for _, a := range tok.AddedTokens {
		if want[a.ID] != a.Content || !a.Special {
			t.Errorf("added token %+v", a)
		}
	}
	var cfg map[string]any
	if err := json.Unmarshal(files["tokenizer_config.json"], &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg["tokenizer_class"] != "PreTrainedTokenizerFast" || cfg["bos_token"] != "<s>" || cfg["eos_token"] != "</s>" {
		t.Errorf("config %v", cfg)
	}
}
