// Command gguf-quantize converts a GGUF model to F16, Q8_0 or Q4_0 with
// llama.cpp's llama_model_quantize.
//
//	gguf-quantize -type Q4_0 in.gguf out.gguf
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/llm-runner-router/llmrouter/services/engine-gguf/internal/llama"
)

func main() {
	typ := flag.String("type", "Q8_0", "F16, Q8_0 or Q4_0")
	threads := flag.Int("threads", 0, "threads (0: all cores)")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: gguf-quantize -type Q4_0 in.gguf out.gguf")
		os.Exit(2)
	}
	if err := llama.Quantize(flag.Arg(0), flag.Arg(1), llama.QuantizeType(strings.ToUpper(*typ)), *threads); err != nil {
		fmt.Fprintln(os.Stderr, "gguf-quantize:", err)
		os.Exit(1)
	}
}
