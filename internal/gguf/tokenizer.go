package gguf

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// HFTokenizerFiles returns the Hugging Face tokenizer files of the generated models' vocabulary:
// tokenizer.json (the `tokenizers` library's format: a Unigram model over Vocab's pieces and
// scores with byte fallback, SentencePiece's "▁" word marker, the special tokens <unk>, <s>,
// </s>) and tokenizer_config.json (PreTrainedTokenizerFast). Benchmark clients that count tokens
// with transformers (aiperf, guidellm) load the directory offline. The counts are close to, not
// always equal to, llama.cpp's: llama.cpp merges SentencePiece pieces by score, Unigram picks the
// best-scoring segmentation.
func HFTokenizerFiles() (map[string][]byte, error) {
	v := Vocab()
	type piece [2]any
	pieces := make([]piece, len(v.Tokens))
	var added []map[string]any
	for i, t := range v.Tokens {
		pieces[i] = piece{t, v.Scores[i]}
		if v.Types[i] == 2 || v.Types[i] == 3 { // unknown, control
			added = append(added, map[string]any{"id": i, "content": t, "single_word": false, "lstrip": false,
				"rstrip": false, "normalized": false, "special": true})
		}
	}
	str := func(s string) map[string]any { return map[string]any{"String": s} }
	tok := map[string]any{
		"version":    "1.0",
		"truncation": nil, "padding": nil,
		"added_tokens": added,
		"normalizer": map[string]any{"type": "Sequence", "normalizers": []any{
			map[string]any{"type": "Prepend", "prepend": "\u2581"},
			map[string]any{"type": "Replace", "pattern": str(" "), "content": "\u2581"},
		}},
		"pre_tokenizer":  nil,
		"post_processor": nil,
		"model":          map[string]any{"type": "Unigram", "unk_id": 0, "vocab": pieces, "byte_fallback": true},
		"decoder": map[string]any{"type": "Sequence", "decoders": []any{
			map[string]any{"type": "Replace", "pattern": str("\u2581"), "content": " "},
			map[string]any{"type": "ByteFallback"},
			map[string]any{"type": "Fuse"},
			map[string]any{"type": "Strip", "content": " ", "start": 1, "stop": 0},
		}},
	}
	cfg := map[string]any{
		"tokenizer_class": "PreTrainedTokenizerFast",
		"bos_token":       v.Tokens[1], "eos_token": v.Tokens[2], "unk_token": v.Tokens[0],
		"model_max_length":             ContextLength,
		"clean_up_tokenization_spaces": false,
	}
	out := map[string][]byte{}
	for name, doc := range map[string]any{"tokenizer.json": tok, "tokenizer_config.json": cfg} {
		b, err := json.MarshalIndent(doc, "", " ")
		if err != nil {
			return nil, fmt.Errorf("gguf: %s: %w", name, err)
		}
		out[name] = append(b, '\n')
	}
	return out, nil
}

// WriteHFTokenizer writes HFTokenizerFiles into dir (created when missing).
func WriteHFTokenizer(dir string) error {
	files, err := HFTokenizerFiles()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
