// Package enginehost implements the Engine gRPC service once, over a small
// Backend interface that each worker kind (simulator, llama.cpp, ONNX
// Runtime, hosted APIs) provides.
//
// The host owns request validation, prompt-length checks against the model's
// context, stop sequences, UTF-8-safe text deltas, cancellation, usage, timing
// and cost accounting, and the conversion of errors to gRPC statuses. A
// backend only tokenizes and produces tokens. Host methods are safe for
// concurrent use; each Generate call drives its own Sequence.
package enginehost

import (
	"context"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/structured"
)

// Backend is what a worker kind implements. Errors made with package rpcerr
// keep their code; other errors become Internal.
type Backend interface {
	// Models lists the hosted models with their metadata.
	Models() []*enginev1.ModelInfo
	// Tokenize renders and tokenizes a prompt for model (the chat template
	// applies to chat prompts). Token-id prompts arrive here too, so the
	// backend can check the ids against its vocabulary.
	Tokenize(ctx context.Context, model string, p *generationv1.Prompt) ([]uint32, error)
	// Piece returns a token's bytes (for replaying a continuation's text).
	Piece(model string, id uint32) []byte
	// Start admits a sequence, waiting for a free slot while ctx allows. A
	// full queue returns an rpcerr.ResourceExhausted error.
	Start(ctx context.Context, model string, prompt []uint32, s Sampling) (Sequence, error)
	// Embed returns one vector per input and the number of tokens consumed.
	Embed(ctx context.Context, model string, inputs []string) ([][]float32, int, error)
	// Status reports live load.
	Status() *enginev1.GetStatusResponse
	// Load makes a model available under name; source is backend-specific.
	Load(ctx context.Context, name, source string) (*enginev1.ModelInfo, error)
	// Unload removes a model; running sequences on it may finish.
	Unload(ctx context.Context, name string) error
}

// Sequence is one admitted generation. One goroutine calls Next and then
// Close, which frees the slot. A sequence that reused cached prompt tokens
// may also implement CachedTokens() int; usage reports it.
type Sequence interface {
	// Next blocks until the next token or until ctx ends.
	Next(ctx context.Context) (Token, error)
	// Close releases the sequence's slot. It is idempotent.
	Close()
}

// SeqStats is what a sequence reports about its own run, for the trace of
// its request (the Generate span's llm.* timing attributes).
type SeqStats struct {
	// QueueWait is from submission to a decoding slot.
	QueueWait time.Duration
	// Prefill is from the slot to the first generated token: the prompt's
	// forward passes (PrefillTokens of them; cached prompt tokens are not
	// computed again).
	Prefill       time.Duration
	PrefillTokens int
	// BatchMax is the most sequences decoded together in one step while
	// this one ran.
	BatchMax int
}

// StatsReporter is a Sequence that reports SeqStats once it has ended.
type StatsReporter interface {
	Stats() SeqStats
}

// Token is one generated token.
type Token struct {
	ID uint32
	// Piece is the token's bytes, which may end inside a UTF-8 character.
	Piece []byte
	// EOG marks the model's end-of-generation token; its piece is not shown.
	EOG bool
	// Logprob and Top are set when Sampling.Logprobs is.
	Logprob float32
	Top     []Alternative
}

// Alternative is a candidate token with its log-probability.
type Alternative struct {
	ID      uint32
	Piece   []byte
	Logprob float32
}

// Sampling is the validated sampling configuration with defaults applied.
type Sampling struct {
	Temperature   float32 // 0: greedy
	TopK          int
	TopP          float32 // 1: off
	MinP          float32
	RepeatPenalty float32 // 1: off
	// FrequencyPenalty and PresencePenalty follow OpenAI (and llama.cpp's
	// penalty_freq, penalty_present); 0: off.
	FrequencyPenalty float32
	PresencePenalty  float32
	// LogitBias maps token ids to a bias added to their logits; the engine
	// checks the ids against its vocabulary (CheckLogitBias).
	LogitBias map[uint32]float32
	// Format is the requested response format (nil: free text), and
	// Grammar its compiled grammar, which engines that host models must
	// enforce (nil: unconstrained).
	Format  *generationv1.ResponseFormat
	Grammar *structured.Grammar
	// Continued is how many tokens at the end of the prompt are output
	// already generated (a failover's continuation): a grammar must accept
	// them before sampling.
	Continued   int
	Seed        uint64
	SeedSet     bool
	Logprobs    bool
	TopLogprobs int
}
