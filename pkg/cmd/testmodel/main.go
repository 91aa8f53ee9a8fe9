// Command testmodel writes a deterministic llama-architecture test model as
// GGUF, and optionally the same weights as an ONNX model directory.
//
//	testmodel -preset tiny -vocab ggml-vocab-gpt-2.gguf -o tiny.gguf
//	testmodel -preset bench -type f16 -vocab ggml-vocab-gpt-2.gguf -o bench-124m-f16.gguf
//	testmodel -preset tiny -vocab ggml-vocab-gpt-2.gguf -o tiny.gguf -onnx tiny-onnx -gpt2 GPT2_DIR
//	testmodel -preset kjv -kjv kjv.txt -gpt2 GPT2_DIR -vocab ggml-vocab-gpt-2.gguf -o kjv-bigram.gguf
//
// The kjv preset is the demo model: a counted bigram model of the King James
// Bible (the text tools/install.sh kjv fetches; tools/install.sh --kjv
// prints its path), factorised into a llama GGUF's embeddings and output.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/llm-runner-router/llmrouter/pkg/bpe"
	"github.com/llm-runner-router/llmrouter/pkg/gguf"
	"github.com/llm-runner-router/llmrouter/pkg/testmodel"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "testmodel:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("testmodel", flag.ContinueOnError)
	preset := fs.String("preset", "tiny", "tiny, bench or kjv")
	kjv := fs.String("kjv", "", "the King James text, for -preset kjv (tools/install.sh --kjv)")
	vocab := fs.String("vocab", "", "vocabulary-only GGUF (e.g. ggml-vocab-gpt-2.gguf from the llama.cpp bundle)")
	out := fs.String("o", "", "output file")
	typ := fs.String("type", "", "f32 or f16 (default: the preset's)")
	seed := fs.Uint64("seed", 0, "weight seed (default: the preset's)")
	peak := fs.Float64("peak", 0, "output sharpening factor; 1 = raw random weights (default: the preset's)")
	ctx := fs.Int("ctx", 0, "context length (default: the preset's)")
	onnxDir := fs.String("onnx", "", "also write the model as an ONNX directory (model.onnx, tokenizer.json, configs) here")
	gpt2 := fs.String("gpt2", "", "directory with GPT-2's encoder.json and vocab.bpe, for -onnx (tools/install.sh --gpt2)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var c testmodel.Config
	switch *preset {
	case "tiny":
		c = testmodel.Tiny
	case "bench":
		c = testmodel.Bench
	case "kjv":
		if *kjv == "" || *gpt2 == "" {
			return fmt.Errorf("-preset kjv needs -kjv and -gpt2")
		}
		f, err := os.Open(*kjv)
		if err != nil {
			return err
		}
		defer f.Close()
		tok, err := bpe.Load(filepath.Join(*gpt2, "encoder.json"), filepath.Join(*gpt2, "vocab.bpe"))
		if err != nil {
			return err
		}
		if c, _, err = testmodel.KJVBigram(f, tok); err != nil {
			return err
		}
	default:
		return fmt.Errorf("-preset %q: want tiny, bench or kjv", *preset)
	}
	switch strings.ToLower(*typ) {
	case "":
	case "f32":
		c.Type = gguf.F32
	case "f16":
		c.Type = gguf.F16
	default:
		return fmt.Errorf("-type %q: want f32 or f16", *typ)
	}
	if *seed != 0 {
		c.Seed = *seed
	}
	if *peak != 0 {
		c.Peak = float32(*peak)
	}
	if *ctx != 0 {
		c.Context = *ctx
	}
	if *vocab == "" || *out == "" {
		return fmt.Errorf("-vocab and -o are required")
	}
	if *onnxDir != "" && *gpt2 == "" {
		return fmt.Errorf("-onnx needs -gpt2")
	}
	if err := testmodel.WriteFile(*out, c, *vocab); err != nil {
		return err
	}
	if *onnxDir != "" {
		return testmodel.WriteONNXDir(*onnxDir, c, *gpt2)
	}
	return nil
}
