// Command ggufgen writes the tiny constructed llama-architecture GGUF model used by the
// project's end-to-end tests (see package gguf for what the model does).
//
//	go run ./tools/ggufgen -o tiny.gguf            # 583,552 bytes, ~3,000 tokens/s on one thread
//	go run ./tools/ggufgen -o tiny-eos.gguf -eos   # emits end-of-sequence after the sentence
//	go run ./tools/ggufgen -o slow.gguf -embd 512 -layers 8 -ff 1408 -heads 8   # ~105 MB, 5-24 ms/token
//	go run ./tools/ggufgen -o tiny.gguf -tokenizer tiny-tokenizer   # also its Hugging Face tokenizer files
//
// The output is byte-identical for the same flags.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/orchestratord/orchestratord/internal/gguf"
)

func main() {
	d := gguf.DefaultOptions()
	out := flag.String("o", "tiny.gguf", "output file")
	embd := flag.Int("embd", d.Embd, "embedding size")
	layers := flag.Int("layers", d.Layers, "layers")
	heads := flag.Int("heads", d.Heads, "heads")
	ff := flag.Int("ff", d.FF, "ffn size")
	eos := flag.Bool("eos", d.EOS, "emit EOS after the sentence")
	seed := flag.Int64("seed", d.Seed, "seed")
	noise := flag.Float64("noise", d.Noise, "std of random weights")
	tokDir := flag.String("tokenizer", "", "also write the vocabulary's Hugging Face tokenizer files (tokenizer.json, tokenizer_config.json) into this directory")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "ggufgen: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	opts := gguf.Options{Embd: *embd, Layers: *layers, Heads: *heads, FF: *ff, EOS: *eos, Seed: *seed, Noise: *noise}
	if err := gguf.WriteFile(*out, opts); err != nil {
		fmt.Fprintf(os.Stderr, "ggufgen: %v\n", err)
		os.Exit(1)
	}
	st, err := os.Stat(*out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ggufgen: %v\n", err)
		os.Exit(1)
	}
	if *tokDir != "" {
		if err := gguf.WriteHFTokenizer(*tokDir); err != nil {
			fmt.Fprintf(os.Stderr, "ggufgen: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("wrote the tokenizer into %s\n", *tokDir)
	}
	fmt.Printf("wrote %s: embd=%d layers=%d heads=%d ff=%d eos=%v bytes=%d\n", *out, opts.Embd, opts.Layers, opts.Heads, opts.FF, opts.EOS, st.Size())
}
