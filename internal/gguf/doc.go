// Package gguf writes a tiny llama-architecture GGUF model whose weights are constructed, not
// trained, so that tests can run a real inference engine (llama.cpp's llama-server) and assert
// exact output text.
//
// The model is a real transformer (RMS norm, attention, SwiGLU feed-forward, all F32) whose
// attention and feed-forward weights are small seeded random noise, while the token embedding
// and output matrices are built so that, whatever the prompt, the most likely next token
// continues the cycle " The quick brown fox jumps over the lazy dog." (and, with Options.EOS,
// emits end-of-sequence after the full stop). The cycle's logits dominate the noise, so the
// text is the same under greedy decoding and ordinary sampling temperatures.
//
// The vocabulary is SentencePiece-style (tokenizer.ggml.model "llama"): <unk>, <s>, </s>, the
// 256 byte tokens, the printable ASCII characters with and without the "▁" word marker, and the
// prefixes of each cycle word so the tokenizer can merge them. At the defaults (DefaultOptions)
// the file is 583,552 bytes: embedding 64, 2 layers, 4 heads, feed-forward 128, vocabulary
// 474, context length 4096.
//
// Write is deterministic: the same Options produce byte-identical output (the weights come
// from math/rand with a fixed seed, whose sequence the Go 1 compatibility promise keeps
// stable). Write holds no global state and is safe for concurrent use.
package gguf
