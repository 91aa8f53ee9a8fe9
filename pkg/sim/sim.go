// Package sim is a deterministic token simulator behind the Engine service:
// a load-testing backend for router tests and mesh benchmarks, like llm-d's
// inference simulator. It does no inference. It tokenizes bytes, "generates"
// words chosen by hashing the prompt, seed and position, and paces them with a
// configured time to first token and tokens per second, with a concurrency
// limit and a bounded queue like a real engine.
//
// Each next token is a function of the last few tokens of the context (and
// the seed), like a small Markov model: greedy (temperature 0) and seeded
// requests are reproducible, the same prompt gives the same output on every
// sim worker, and a generation resumed from the prompt plus its first tokens
// continues exactly as the uninterrupted one. All methods are safe for
// concurrent use.
package sim

import (
	"cmp"
	"context"
	"encoding/binary"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

// Vocabulary: ids 0-255 are bytes, EOG ends generation, then whole words.
const (
	EOG       = 256
	firstWord = 257
)

// words are the simulator's output vocabulary. "café" and "naïve" are emitted
// as a word piece followed by single-byte tokens that split their UTF-8
// characters, so clients see the holdback of incomplete characters.
var words = []string{
	" the", " router", " picks", " a", " worker", " and", " streams", " tokens", " to", " every",
	" client", ",", ".", " fast", " model", " cache", " prefix", " queue", " mesh", " trace",
	" caf", " na", " llama", " onnx", " decode", " batch", " latency", " quality", " cost", " load",
}

// splitWords are followed by these bytes, one token each.
var splitTails = map[string][]byte{" caf": []byte("é"), " na": []byte("ïve")}

// VocabSize is the number of token ids the simulator knows.
var VocabSize = firstWord + len(words)

// ModelConfig describes one simulated model.
type ModelConfig struct {
	Name            string
	ContextLength   int
	Quality         float64
	CostPer1KInput  float64
	CostPer1KOutput float64
	// OutputTokens is the natural answer length before EOG. Default 128.
	OutputTokens int
	// EmbeddingDim is the size of Embed vectors. Default 16.
	EmbeddingDim int
	// Capabilities, when set, is what the model advertises (the default
	// is logprobs only: random tokens follow no grammar).
	Capabilities *enginev1.Capabilities
}

// Config configures the simulator.
type Config struct {
	Models []ModelConfig
	// TTFT is the delay before the first token of each sequence (the
	// median when TTFTSigma is set).
	TTFT time.Duration
	// TTFTSigma, when positive, makes each sequence's delay log-normal:
	// TTFT × e^(σZ) with Z standard normal, drawn independently per
	// sequence.
	TTFTSigma float64
	// TTFTPerActive adds this much delay per sequence already running on
	// the backend when one starts: delay correlated with load.
	TTFTPerActive time.Duration
	// TokensPerSecond paces each sequence after its first token.
	TokensPerSecond float64
	// MaxConcurrency bounds sequences decoded at once. Default 64.
	MaxConcurrency int
	// QueueSize bounds requests waiting for a slot. Default 256.
	QueueSize int
}

// Backend is the simulator. Create it with New.
type Backend struct {
	cfg    Config
	slots  chan struct{}
	queued atomic.Int32

	mu     sync.Mutex
	models map[string]ModelConfig
	active map[string]int
	// waiting counts queued requests per model (queued is their sum).
	waiting map[string]int
	kvUsed  int
	// starts counts Start calls that named a known model.
	starts atomic.Int64

	rate enginehost.RateMeter
}

var _ enginehost.Backend = (*Backend)(nil)

// DefaultModel fills a model's zero fields.
func DefaultModel(m ModelConfig) ModelConfig {
	if m.ContextLength == 0 {
		m.ContextLength = 4096
	}
	if m.OutputTokens == 0 {
		m.OutputTokens = 128
	}
	if m.EmbeddingDim == 0 {
		m.EmbeddingDim = 16
	}
	return m
}

// New returns a simulator.
func New(cfg Config) *Backend {
	if cfg.MaxConcurrency <= 0 {
		cfg.MaxConcurrency = 64
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 256
	}
	b := &Backend{
		cfg: cfg, slots: make(chan struct{}, cfg.MaxConcurrency),
		models: map[string]ModelConfig{}, active: map[string]int{}, waiting: map[string]int{},
	}
	for _, m := range cfg.Models {
		b.models[m.Name] = DefaultModel(m)
	}
	return b
}

func (b *Backend) info(m ModelConfig) *enginev1.ModelInfo {
	return &enginev1.ModelInfo{
		Name: m.Name, Format: "sim", ContextLength: int32(m.ContextLength), Quality: m.Quality,
		CostPer_1KInput: m.CostPer1KInput, CostPer_1KOutput: m.CostPer1KOutput, Device: "cpu",
		MaxConcurrency: int32(b.cfg.MaxConcurrency), Architecture: "sim", Parameters: int64(VocabSize), Quantization: "none",
		Capabilities: cmp.Or(m.Capabilities, &enginev1.Capabilities{Logprobs: true}),
	}
}

// Models lists the simulated models.
func (b *Backend) Models() []*enginev1.ModelInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*enginev1.ModelInfo, 0, len(b.models))
	for _, m := range b.models {
		out = append(out, b.info(m))
	}
	slices.SortFunc(out, func(a, b *enginev1.ModelInfo) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out
}

func (b *Backend) model(name string) (ModelConfig, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m, ok := b.models[name]
	if !ok {
		return m, rpcerr.NotFound("model %q is not loaded", name)
	}
	return m, nil
}

// Tokenize maps bytes to ids; chat turns are rendered as "<|role|>\ncontent\n"
// followed by "<|assistant|>\n".
func (b *Backend) Tokenize(_ context.Context, _ string, p *generationv1.Prompt) ([]uint32, error) {
	switch k := p.GetKind().(type) {
	case *generationv1.Prompt_Tokens:
		for i, id := range k.Tokens.GetIds() {
			if int(id) >= VocabSize {
				return nil, rpcerr.InvalidArgument("prompt.tokens.ids[%d] = %d is outside the vocabulary of %d tokens", i, id, VocabSize)
			}
		}
		return slices.Clone(k.Tokens.GetIds()), nil
	case *generationv1.Prompt_Chat:
		var sb strings.Builder
		for _, m := range k.Chat.GetMessages() {
			role := strings.ToLower(strings.TrimPrefix(m.GetRole().String(), "ROLE_"))
			sb.WriteString("<|" + role + "|>\n" + m.GetContent() + "\n")
		}
		sb.WriteString("<|assistant|>\n")
		return bytesToIDs(sb.String()), nil
	default:
		return bytesToIDs(p.GetText()), nil
	}
}

func bytesToIDs(s string) []uint32 {
	ids := make([]uint32, len(s))
	for i := 0; i < len(s); i++ {
		ids[i] = uint32(s[i])
	}
	return ids
}

// Piece returns the bytes of a token id (any model).
func (b *Backend) Piece(_ string, id uint32) []byte { return Piece(id) }

// Piece returns the bytes of a token id.
func Piece(id uint32) []byte {
	switch {
	case id < 256:
		return []byte{byte(id)}
	case id == EOG || int(id) >= VocabSize:
		return nil
	default:
		return []byte(words[id-firstWord])
	}
}

func (b *Backend) wait(model string, d int) {
	b.mu.Lock()
	b.waiting[model] += d
	b.mu.Unlock()
}

// Start waits for a slot (bounded queue) and returns a paced sequence.
func (b *Backend) Start(ctx context.Context, model string, prompt []uint32, s enginehost.Sampling) (enginehost.Sequence, error) {
	m, err := b.model(model)
	if err != nil {
		return nil, err
	}
	b.starts.Add(1)
	if s.Grammar != nil {
		return nil, rpcerr.InvalidArgument("model %q is simulated (engine-sim): it cannot constrain its output to a response_format", model)
	}
	entered := time.Now()
	select {
	case b.slots <- struct{}{}:
	default:
		if int(b.queued.Add(1)) > b.cfg.QueueSize {
			b.queued.Add(-1)
			return nil, rpcerr.ResourceExhausted(time.Second, "model %q is at capacity: %d running and %d queued; retry later", model, b.cfg.MaxConcurrency, b.cfg.QueueSize)
		}
		b.wait(model, 1)
		select {
		case b.slots <- struct{}{}:
			b.queued.Add(-1)
			b.wait(model, -1)
		case <-ctx.Done():
			b.queued.Add(-1)
			b.wait(model, -1)
			return nil, ctx.Err()
		}
	}
	var seed uint64
	switch {
	case s.SeedSet:
		seed = s.Seed * 0x9E3779B97F4A7C15
	case s.Temperature > 0:
		seed = rand.Uint64()
	}
	b.mu.Lock()
	b.active[model]++
	running := b.active[model]
	b.kvUsed += len(prompt)
	b.mu.Unlock()
	window := slices.Clone(prompt[max(0, len(prompt)-contextWindow):])
	now := time.Now()
	ttft := b.firstTokenDelay(len(b.slots) - 1)
	seq := &sequence{b: b, model: m, prompt: len(prompt), seed: seed, window: window, start: now, ttft: ttft,
		stats: enginehost.SeqStats{QueueWait: now.Sub(entered), Prefill: ttft, PrefillTokens: len(prompt), BatchMax: running}}
	return seq, nil
}

// firstTokenDelay draws a new sequence's delay before its first token,
// with others sequences already running on the backend.
func (b *Backend) firstTokenDelay(others int) time.Duration {
	d := float64(b.cfg.TTFT)
	if b.cfg.TTFTSigma > 0 {
		d *= math.Exp(b.cfg.TTFTSigma * rand.NormFloat64())
	}
	return time.Duration(d) + time.Duration(max(others, 0))*b.cfg.TTFTPerActive
}

func hashIDs(ids []uint32) uint64 {
	h := fnv.New64a()
	var buf [4]byte
	for _, id := range ids {
		binary.LittleEndian.PutUint32(buf[:], id)
		h.Write(buf[:])
	}
	return h.Sum64()
}

// contextWindow is how many trailing tokens decide the next one.
const contextWindow = 32

type sequence struct {
	b      *Backend
	model  ModelConfig
	prompt int
	seed   uint64
	window []uint32 // the last contextWindow tokens of the context
	start  time.Time
	ttft   time.Duration // this sequence's delay before its first token
	n      int
	timer  *time.Timer
	closed bool
	// stats: the slot wait measured; the simulated prefill (TTFT); the
	// model's sequences running when this one started as its batch.
	stats enginehost.SeqStats
}

var _ enginehost.StatsReporter = (*sequence)(nil)

// Stats reports the simulated run.
func (q *sequence) Stats() enginehost.SeqStats { return q.stats }

// due is when token n is ready: its TTFT, then one token per 1/TokensPerSecond.
func (q *sequence) due() time.Time {
	t := q.start.Add(q.ttft)
	if q.n > 0 && q.b.cfg.TokensPerSecond > 0 {
		t = t.Add(time.Duration(float64(q.n) / q.b.cfg.TokensPerSecond * float64(time.Second)))
	}
	return t
}

func (q *sequence) Next(ctx context.Context) (enginehost.Token, error) {
	if q.closed {
		return enginehost.Token{}, rpcerr.Unavailable("sequence is closed")
	}
	if wait := time.Until(q.due()); wait > 0 {
		if q.timer == nil {
			q.timer = time.NewTimer(wait)
		} else {
			q.timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			q.timer.Stop()
			return enginehost.Token{}, ctx.Err()
		case <-q.timer.C:
		}
	} else if err := ctx.Err(); err != nil {
		return enginehost.Token{}, err
	}
	tok := q.next()
	q.n++
	q.b.rate.Add(1)
	q.b.mu.Lock()
	q.b.kvUsed++
	q.b.mu.Unlock()
	return tok, nil
}

func (q *sequence) next() enginehost.Token {
	id, ok := q.tail()
	if !ok {
		if q.n >= q.model.OutputTokens {
			return enginehost.Token{ID: EOG, EOG: true}
		}
		h := hashIDs(q.window) ^ q.seed
		h ^= h >> 29
		h *= 0xbf58476d1ce4e5b9
		h ^= h >> 32
		id = uint32(firstWord + int(h%uint64(len(words))))
	}
	q.window = append(q.window, id)
	if len(q.window) > contextWindow {
		q.window = q.window[1:]
	}
	return q.token(id)
}

// tail continues a split word: after " caf" come the bytes of "é", one token
// each, whatever the seed.
func (q *sequence) tail() (uint32, bool) {
	for j := len(q.window) - 1; j >= 0; j-- {
		id := q.window[j]
		if id < firstWord {
			continue // a byte: maybe part of a tail
		}
		t := splitTails[words[id-firstWord]]
		done := len(q.window) - 1 - j
		if done >= len(t) {
			return 0, false
		}
		for k := range done {
			if q.window[j+1+k] != uint32(t[k]) {
				return 0, false
			}
		}
		return uint32(t[done]), true
	}
	return 0, false
}

// token attaches deterministic pseudo log-probabilities (a simulator has no
// distribution; these only exercise the wire format).
func (q *sequence) token(id uint32) enginehost.Token {
	t := enginehost.Token{ID: id, Piece: Piece(id), Logprob: -float32(q.n%5+1) / 10}
	for i := range 3 {
		alt := uint32(firstWord + (int(id)+i+1)%len(words))
		t.Top = append(t.Top, enginehost.Alternative{ID: alt, Piece: Piece(alt), Logprob: t.Logprob - float32(i+1)})
	}
	return t
}

func (q *sequence) Close() {
	if q.closed {
		return
	}
	q.closed = true
	if q.timer != nil {
		q.timer.Stop()
	}
	q.b.mu.Lock()
	q.b.active[q.model.Name]--
	q.b.kvUsed -= q.prompt + q.n
	q.b.mu.Unlock()
	<-q.b.slots
}

// Embed returns a bag-of-words embedding of each input: the unit-length
// sum of a pseudo-random vector per case-folded word (punctuation
// dropped), so texts sharing most words are close, as with a real encoder,
// and texts with the same words are identical.
func (b *Backend) Embed(_ context.Context, model string, inputs []string) ([][]float32, int, error) {
	m, err := b.model(model)
	if err != nil {
		return nil, 0, err
	}
	out := make([][]float32, len(inputs))
	tokens := 0
	for i, in := range inputs {
		tokens += len(in)
		v := make([]float32, m.EmbeddingDim)
		for w := range strings.FieldsFuncSeq(strings.ToLower(in), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }) {
			r := rand.New(rand.NewPCG(hashIDs(bytesToIDs(w)), 1))
			for j := range v {
				v[j] += float32(r.NormFloat64())
			}
		}
		var norm float64
		for _, x := range v {
			norm += float64(x) * float64(x)
		}
		for j := range v {
			if norm > 0 {
				v[j] /= float32(math.Sqrt(norm))
			}
		}
		out[i] = v
	}
	return out, tokens, nil
}

// Started is the number of generations asked of the simulator (Start
// calls for a known model, admitted or not).
func (b *Backend) Started() int64 { return b.starts.Load() }

// Status reports active sequences, queue depth, KV use and token rate.
func (b *Backend) Status() *enginev1.GetStatusResponse {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := &enginev1.GetStatusResponse{QueueDepth: b.queued.Load(), TokensPerSecond: b.rate.PerSecond()}
	capacity := 0
	names := make([]string, 0, len(b.models))
	for n, m := range b.models {
		names = append(names, n)
		capacity = max(capacity, m.ContextLength*b.cfg.MaxConcurrency)
	}
	slices.Sort(names)
	for _, n := range names {
		st.ActiveSequences += int32(b.active[n])
		st.Models = append(st.Models, &enginev1.ModelLoad{Model: n, ActiveSequences: int32(b.active[n]), QueueDepth: int32(b.waiting[n])})
	}
	if capacity > 0 {
		st.KvCacheUsage = float64(b.kvUsed) / float64(capacity)
	}
	return st
}

// Load adds a simulated model named name with default settings; source is
// ignored.
func (b *Backend) Load(_ context.Context, name, _ string) (*enginev1.ModelInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.models[name]; ok {
		return nil, rpcerr.FailedPrecondition("model %q is already loaded", name)
	}
	m := DefaultModel(ModelConfig{Name: name})
	b.models[name] = m
	return b.info(m), nil
}

// Unload removes a model; running sequences finish.
func (b *Backend) Unload(_ context.Context, name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.models[name]; !ok {
		return rpcerr.NotFound("model %q is not loaded", name)
	}
	delete(b.models, name)
	return nil
}
