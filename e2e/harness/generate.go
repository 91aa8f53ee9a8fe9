package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
)

// Outcome is one generation as the client saw it.
type Outcome struct {
	TTFT   time.Duration // to the first token
	Tokens int
	End    *genv1.EndEvent
	Err    error
}

// Generate streams a greedy generation of up to maxTokens from a token-id
// prompt on an engine worker (model "m", as the benchmarks name it).
func Generate(ctx context.Context, cl enginev1.EngineServiceClient, prompt []uint32, maxTokens int) Outcome {
	start := time.Now()
	s, err := cl.Generate(ctx, &enginev1.GenerateRequest{Model: "m",
		Prompt:   &genv1.Prompt{Kind: &genv1.Prompt_Tokens{Tokens: &genv1.TokenIds{Ids: prompt}}},
		Sampling: &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: int32(maxTokens)}})
	if err != nil {
		return Outcome{Err: err}
	}
	var o Outcome
	for {
		msg, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return o
		}
		if err != nil {
			o.Err = err
			return o
		}
		if d := msg.GetDelta(); d != nil && len(d.GetTokenIds()) > 0 {
			if o.Tokens == 0 {
				o.TTFT = time.Since(start)
			}
			o.Tokens += len(d.GetTokenIds())
		}
		if e := msg.GetEnd(); e != nil {
			o.End = e
		}
	}
}

// RandomPrompt is n token ids drawn from GPT-2's vocabulary.
func RandomPrompt(r *rand.Rand, n int) []uint32 {
	ids := make([]uint32, n)
	for i := range ids {
		ids[i] = uint32(r.IntN(50000))
	}
	return ids
}

// Counts is a flag of comma-separated positive integers, such as stream
// counts ("1,4,16").
type Counts []int

func (c *Counts) String() string {
	parts := make([]string, len(*c))
	for i, n := range *c {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}

// Set parses the list, replacing the default.
func (c *Counts) Set(v string) error {
	var out Counts
	for _, s := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return fmt.Errorf("%q: want comma-separated positive integers", v)
		}
		out = append(out, n)
	}
	*c = out
	return nil
}
