package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand"
	"os"
)

// Options sizes the model. The zero value is not valid; start from DefaultOptions.
type Options struct {
	Embd   int     // embedding size (at least 11: one dimension per cycle word plus one)
	Layers int     // transformer blocks
	Heads  int     // attention heads; must divide Embd into an even head size
	FF     int     // feed-forward size
	EOS    bool    // emit end-of-sequence after the sentence instead of repeating it
	Seed   int64   // seed of the random attention/feed-forward weights
	Noise  float64 // standard deviation of the random weights (scaled by fan-in)
}

// DefaultOptions returns the options of the default tiny model (583,552 bytes).
func DefaultOptions() Options {
	return Options{Embd: 64, Layers: 2, Heads: 4, FF: 128, Seed: 1, Noise: 0.02}
}

// Sentence is the text the model continues, whatever the prompt; greedy decoding of n tokens
// yields the first n tokens of the endless cycle Sentence+Sentence+... (or, with Options.EOS,
// Sentence then end-of-sequence).
const Sentence = " The quick brown fox jumps over the lazy dog."

// ContextLength is the model's trained context length (llama.context_length).
const ContextLength = 4096

// words are the cycle's tokens in SentencePiece spelling ("▁" marks a leading space).
var words = []string{"\u2581The", "\u2581quick", "\u2581brown", "\u2581fox", "\u2581jumps", "\u2581over", "\u2581the", "\u2581lazy", "\u2581dog", "."}

// Tokens returns the cycle's tokens as the engine detokenizes them: " The", " quick", ...,
// " dog", ".".
func Tokens() []string {
	out := make([]string, len(words))
	for i, w := range words {
		if len(w) > len("\u2581") && w[:len("\u2581")] == "\u2581" {
			w = " " + w[len("\u2581"):]
		}
		out[i] = w
	}
	return out
}

// GGUF value types used here.
const (
	tUint32  = 4
	tInt32   = 5
	tFloat32 = 6
	tBool    = 7
	tString  = 8
	tArray   = 9
)

// alignment is general.alignment: tensor data offsets are multiples of it.
const alignment = 32

type kv struct {
	key string
	val any
}

type tensor struct {
	name string
	dims []uint64
	data []float32
}

// Validate reports whether o describes a model this package can build.
func (o Options) Validate() error {
	switch {
	case o.Embd < len(words)+1:
		return fmt.Errorf("gguf: embd %d too small (need at least %d)", o.Embd, len(words)+1)
	case o.Layers < 1:
		return fmt.Errorf("gguf: layers %d must be positive", o.Layers)
	case o.Heads < 1 || o.Embd%o.Heads != 0 || (o.Embd/o.Heads)%2 != 0:
		return fmt.Errorf("gguf: heads %d must divide embd %d into an even head size", o.Heads, o.Embd)
	case o.FF < 1:
		return fmt.Errorf("gguf: ff %d must be positive", o.FF)
	case o.Noise < 0 || math.IsNaN(o.Noise) || math.IsInf(o.Noise, 0):
		return fmt.Errorf("gguf: noise %v must be a finite non-negative number", o.Noise)
	}
	return nil
}

// Write writes the model described by opts to w and returns the first error met.
func Write(w io.Writer, opts Options) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	kvs, ts := build(opts)
	ew := &writer{b: bufio.NewWriterSize(w, 1<<16)}
	ew.bytes([]byte("GGUF"))
	ew.u32(3) // version
	ew.u64(uint64(len(ts)))
	ew.u64(uint64(len(kvs)))
	for _, k := range kvs {
		ew.str(k.key)
		switch v := k.val.(type) {
		case string:
			ew.u32(tString)
			ew.str(v)
		case uint32:
			ew.u32(tUint32)
			ew.u32(v)
		case float32:
			ew.u32(tFloat32)
			ew.u32(math.Float32bits(v))
		case bool:
			ew.u32(tBool)
			if v {
				ew.bytes([]byte{1})
			} else {
				ew.bytes([]byte{0})
			}
		case []string:
			ew.u32(tArray)
			ew.u32(tString)
			ew.u64(uint64(len(v)))
			for _, s := range v {
				ew.str(s)
			}
		case []float32:
			ew.u32(tArray)
			ew.u32(tFloat32)
			ew.u64(uint64(len(v)))
			ew.f32s(v)
		case []int32:
			ew.u32(tArray)
			ew.u32(tInt32)
			ew.u64(uint64(len(v)))
			for _, x := range v {
				ew.u32(uint32(x))
			}
		default:
			return fmt.Errorf("gguf: internal error: unsupported value type %T for %s", v, k.key)
		}
	}
	var off uint64
	for _, t := range ts {
		ew.str(t.name)
		ew.u32(uint32(len(t.dims)))
		for _, d := range t.dims {
			ew.u64(d)
		}
		ew.u32(0) // GGML type F32
		ew.u64(off)
		off += uint64(len(t.data) * 4)
		off = (off + alignment - 1) &^ (alignment - 1)
	}
	ew.pad()
	for _, t := range ts {
		ew.f32s(t.data)
		ew.pad()
	}
	if ew.err == nil {
		ew.err = ew.b.Flush()
	}
	return ew.err
}

// WriteFile writes the model to path (created or truncated, mode 0644).
func WriteFile(path string, opts Options) (err error) {
	if err := opts.Validate(); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	return Write(f, opts)
}

// Vocabulary is the model's SentencePiece-style vocabulary, as written into the file.
type Vocabulary struct {
	Tokens []string
	Scores []float32
	// Types: 1 normal, 2 unknown, 3 control, 6 byte.
	Types []int32
}

// Vocab returns the vocabulary every generated model has (it does not depend on Options):
// <unk>, <s>, </s>, the 256 byte tokens, the printable ASCII characters with and without the
// "▁" word marker, and the prefixes of each cycle word.
func Vocab() Vocabulary {
	var toks []string
	var types []int32
	var scores []float32
	add := func(s string, t int32, sc float32) {
		toks = append(toks, s)
		types = append(types, t)
		scores = append(scores, sc)
	}
	// token types: 1 normal, 2 unknown, 3 control, 6 byte
	add("<unk>", 2, 0)
	add("<s>", 3, 0)
	add("</s>", 3, 0)
	for i := range 256 {
		add(fmt.Sprintf("<0x%02X>", i), 6, 0)
	}
	add("\u2581", 1, -1)
	for c := 0x21; c < 0x7f; c++ {
		add(string(rune(c)), 1, -2)
		add("\u2581"+string(rune(c)), 1, -1.5)
	}
	// prefixes of each cycle word, so SentencePiece merges can build whole words
	seen := make(map[string]bool, len(toks))
	for _, t := range toks {
		seen[t] = true
	}
	for _, wd := range words {
		r := []rune(wd)
		for i := 2; i <= len(r); i++ {
			p := string(r[:i])
			if !seen[p] {
				seen[p] = true
				add(p, 1, float32(i)) // longer pieces score higher
			}
		}
	}
	return Vocabulary{Tokens: toks, Scores: scores, Types: types}
}

// build constructs the metadata and tensors. The order of random draws is part of the format:
// changing it changes every weight.
func build(o Options) ([]kv, []tensor) {
	rng := rand.New(rand.NewSource(o.Seed))

	voc := Vocab()
	toks, types, scores := voc.Tokens, voc.Types, voc.Scores
	id := make(map[string]int, len(toks))
	for i, t := range toks {
		id[t] = i
	}
	nVocab := len(toks)
	E := o.Embd
	K := len(words)

	// Embedding dimensions: 0 = "some other token", 1..K = cycle word k-1.
	embd := make([]float32, nVocab*E)
	outw := make([]float32, nVocab*E)
	for t := range nVocab {
		for j := range E {
			embd[t*E+j] = float32(rng.NormFloat64() * o.Noise * math.Sqrt(64/float64(E)))
		}
		embd[t*E+0]++
	}
	for k, wd := range words {
		t := id[wd]
		embd[t*E+0]--
		embd[t*E+1+k]++
	}
	first := id[words[0]]
	outw[first*E+0] = 1 // any other token -> first word
	for k := range K {
		var next int
		switch {
		case k+1 < K:
			next = id[words[k+1]]
		case o.EOS:
			next = 2 // </s>
		default:
			next = first
		}
		outw[next*E+1+k] = 1
	}
	ones := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = 1
		}
		return v
	}
	rnd := func(fanIn, n int) []float32 {
		sd := o.Noise * math.Sqrt(64/float64(fanIn))
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * sd)
		}
		return v
	}

	e, v, ff := uint64(E), uint64(nVocab), uint64(o.FF)
	ts := []tensor{{"token_embd.weight", []uint64{e, v}, embd}}
	for l := range o.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		// Evaluation order (left to right) fixes the order of random draws.
		ts = append(ts,
			tensor{p + "attn_norm.weight", []uint64{e}, ones(E)},
			tensor{p + "attn_q.weight", []uint64{e, e}, rnd(E, E*E)},
			tensor{p + "attn_k.weight", []uint64{e, e}, rnd(E, E*E)},
			tensor{p + "attn_v.weight", []uint64{e, e}, rnd(E, E*E)},
			tensor{p + "attn_output.weight", []uint64{e, e}, rnd(E, E*E)},
			tensor{p + "ffn_norm.weight", []uint64{e}, ones(E)},
			tensor{p + "ffn_gate.weight", []uint64{e, ff}, rnd(E, E*o.FF)},
			tensor{p + "ffn_up.weight", []uint64{e, ff}, rnd(E, E*o.FF)},
			tensor{p + "ffn_down.weight", []uint64{ff, e}, rnd(o.FF, E*o.FF)},
		)
	}
	ts = append(ts,
		tensor{"output_norm.weight", []uint64{e}, ones(E)},
		tensor{"output.weight", []uint64{e, v}, outw},
	)

	kvs := []kv{
		{"general.architecture", "llama"},
		{"general.name", "tiny-constructed"},
		{"general.alignment", uint32(alignment)},
		{"llama.context_length", uint32(ContextLength)},
		{"llama.embedding_length", uint32(E)},
		{"llama.block_count", uint32(o.Layers)},
		{"llama.feed_forward_length", uint32(o.FF)},
		{"llama.attention.head_count", uint32(o.Heads)},
		{"llama.attention.head_count_kv", uint32(o.Heads)},
		{"llama.rope.dimension_count", uint32(E / o.Heads)},
		{"llama.attention.layer_norm_rms_epsilon", float32(1e-5)},
		{"llama.vocab_size", uint32(nVocab)},
		{"tokenizer.ggml.model", "llama"},
		{"tokenizer.ggml.tokens", toks},
		{"tokenizer.ggml.scores", scores},
		{"tokenizer.ggml.token_type", types},
		{"tokenizer.ggml.bos_token_id", uint32(1)},
		{"tokenizer.ggml.eos_token_id", uint32(2)},
		{"tokenizer.ggml.unknown_token_id", uint32(0)},
		{"tokenizer.ggml.add_bos_token", true},
		{"tokenizer.ggml.add_eos_token", false},
	}
	return kvs, ts
}

// writer is a little-endian writer that tracks the offset and keeps the first error.
type writer struct {
	b       *bufio.Writer
	off     int64
	err     error
	scratch [8]byte
}

func (w *writer) bytes(p []byte) {
	if w.err != nil {
		return
	}
	n, err := w.b.Write(p)
	w.off += int64(n)
	if err == nil && n != len(p) {
		err = io.ErrShortWrite
	}
	w.err = err
}

func (w *writer) u32(v uint32) {
	binary.LittleEndian.PutUint32(w.scratch[:4], v)
	w.bytes(w.scratch[:4])
}

func (w *writer) u64(v uint64) {
	binary.LittleEndian.PutUint64(w.scratch[:8], v)
	w.bytes(w.scratch[:8])
}

func (w *writer) str(s string) {
	w.u64(uint64(len(s)))
	if w.err == nil {
		n, err := w.b.WriteString(s)
		w.off += int64(n)
		w.err = err
	}
}

func (w *writer) f32s(v []float32) {
	var buf [4096]byte
	for len(v) > 0 && w.err == nil {
		n := min(len(v), len(buf)/4)
		for i, f := range v[:n] {
			binary.LittleEndian.PutUint32(buf[i*4:], math.Float32bits(f))
		}
		w.bytes(buf[:n*4])
		v = v[n:]
	}
}

func (w *writer) pad() {
	var zero [alignment]byte
	if r := w.off % alignment; r != 0 {
		w.bytes(zero[:alignment-r])
	}
}
