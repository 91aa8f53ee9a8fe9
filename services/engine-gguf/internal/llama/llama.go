// Package llama is the only package of engine-gguf that imports "C": a small
// Go API over llama.cpp's C API (llama.h) for models, contexts, batched
// decoding, samplers, KV-cache operations, embeddings and quantization.
//
// No C pointer leaves this package: callers hold Go values with unexported C
// pointers and must call Close. A Model may be shared by several goroutines
// for read-only calls (Tokenize, Piece, chat templates); a Context and its
// Samplers belong to one goroutine at a time.
//
// Build flags (include and library paths, library names, rpath) come from
// CGO_CFLAGS and CGO_LDFLAGS, which the Makefile exports for the pinned
// llama.cpp build or for a user's own (LLAMA_CPP_DIR).
package llama

/*
#include <stdlib.h>
#include "llama.h"
#include "ggml-backend.h"
#include "helpers.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime/cgo"
	"sync"
	"unicode/utf8"
	"unsafe"
)

// Sentinel errors of llama_decode.
var (
	// ErrNoKVSlot: the KV cache has no room for the batch (decode returned 1).
	ErrNoKVSlot = errors.New("llama: no KV cache slot for the batch")
	// ErrAborted: decoding was aborted (decode returned 2).
	ErrAborted = errors.New("llama: decode aborted")
)

var (
	initOnce sync.Once
	libDir   string
)

// Init loads the ggml backends that sit next to libllama (the CPU variant
// for this processor, CUDA where present) and initialises llama.cpp. It is
// idempotent; every constructor calls it.
func Init() {
	initOnce.Do(func() {
		C.llmr_set_quiet_log()
		var buf [4096]C.char
		if C.llmr_lib_dir(&buf[0], C.size_t(len(buf))) == 0 {
			libDir = C.GoString(&buf[0])
			cdir := C.CString(libDir)
			C.ggml_backend_load_all_from_path(cdir)
			C.free(unsafe.Pointer(cdir))
		} else {
			C.ggml_backend_load_all()
		}
		C.llama_backend_init()
	})
}

// LibDir is where libllama was loaded from ("" if unknown).
func LibDir() string { Init(); return libDir }

// Devices lists the backend devices llama.cpp can use, e.g. "CPU", "CUDA0".
func Devices() []string {
	Init()
	var out []string
	for i := 0; i < int(C.ggml_backend_dev_count()); i++ {
		out = append(out, C.GoString(C.ggml_backend_dev_name(C.ggml_backend_dev_get(C.size_t(i)))))
	}
	return out
}

// ModelParams configure LoadModel.
type ModelParams struct {
	// GPULayers to offload; -1 offloads all, 0 none.
	GPULayers int
	// NoMmap reads the file into memory instead of mapping it.
	NoMmap bool
	// VocabOnly loads only the vocabulary (tokenizer files, tests).
	VocabOnly bool
	// Progress, when set, is called with 0..1 during loading; returning
	// false aborts the load.
	Progress func(float32) bool
}

//export goProgress
func goProgress(p C.float, h C.uintptr_t) C._Bool {
	f := cgo.Handle(h).Value().(func(float32) bool)
	return C._Bool(f(float32(p)))
}

// Model is a loaded model.
type Model struct {
	c      *C.struct_llama_model
	vocab  *C.struct_llama_vocab
	pieces [][]byte // token id -> bytes, cached at load
	eog    []bool
}

// LoadModel loads a GGUF model. Validate the file first (package gguf):
// llama.cpp aborts the process on some malformed files.
func LoadModel(path string, p ModelParams) (*Model, error) {
	Init()
	mp := C.llama_model_default_params()
	mp.n_gpu_layers = C.int32_t(p.GPULayers)
	if p.NoMmap {
		mp.load_mode = C.LLAMA_LOAD_MODE_NONE
	}
	mp.vocab_only = C._Bool(p.VocabOnly)
	var h cgo.Handle
	if p.Progress != nil {
		h = cgo.NewHandle(p.Progress)
		defer h.Delete()
		C.llmr_set_progress(&mp, C.uintptr_t(h))
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	cm := C.llama_model_load_from_file(cpath, mp)
	if cm == nil {
		return nil, fmt.Errorf("llama.cpp could not load %s (see its log above)", path)
	}
	m := &Model{c: cm, vocab: C.llama_model_get_vocab(cm)}
	n := int(C.llama_vocab_n_tokens(m.vocab))
	m.pieces = make([][]byte, n)
	m.eog = make([]bool, n)
	buf := make([]byte, 256)
	for i := range n {
		k := C.llama_token_to_piece(m.vocab, C.llama_token(i), (*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)), 0, C._Bool(true))
		if k < 0 { // a longer piece: -k bytes
			buf = make([]byte, -k)
			k = C.llama_token_to_piece(m.vocab, C.llama_token(i), (*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)), 0, C._Bool(true))
		}
		if k > 0 {
			m.pieces[i] = append([]byte(nil), buf[:k]...)
		}
		m.eog[i] = bool(C.llama_vocab_is_eog(m.vocab, C.llama_token(i)))
	}
	return m, nil
}

// Close frees the model. Contexts made from it must be closed first.
func (m *Model) Close() {
	if m.c != nil {
		C.llama_model_free(m.c)
		m.c = nil
	}
}

// NVocab is the vocabulary size.
func (m *Model) NVocab() int { return len(m.pieces) }

// NCtxTrain is the context length the model was trained with.
func (m *Model) NCtxTrain() int { return int(C.llama_model_n_ctx_train(m.c)) }

// NEmbd is the embedding size.
func (m *Model) NEmbd() int { return int(C.llama_model_n_embd(m.c)) }

// NLayer is the number of layers.
func (m *Model) NLayer() int { return int(C.llama_model_n_layer(m.c)) }

// NParams is the number of parameters.
func (m *Model) NParams() uint64 { return uint64(C.llama_model_n_params(m.c)) }

// Size is the total size of the tensors in bytes.
func (m *Model) Size() uint64 { return uint64(C.llama_model_size(m.c)) }

// Desc is llama.cpp's short description, e.g. "llama ?B F16".
func (m *Model) Desc() string {
	var buf [256]C.char
	C.llama_model_desc(m.c, &buf[0], C.size_t(len(buf)))
	return C.GoString(&buf[0])
}

// Meta returns a metadata value as a string, or "".
func (m *Model) Meta(key string) string {
	ck := C.CString(key)
	defer C.free(unsafe.Pointer(ck))
	buf := make([]byte, 1024)
	n := C.llama_model_meta_val_str(m.c, ck, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	if n < 0 {
		return ""
	}
	return string(buf[:min(int(n), len(buf)-1)])
}

// Piece returns a token's bytes (possibly part of a UTF-8 character).
func (m *Model) Piece(tok int32) []byte {
	if tok < 0 || int(tok) >= len(m.pieces) {
		return nil
	}
	return m.pieces[tok]
}

// IsEOG reports whether tok ends generation.
func (m *Model) IsEOG(tok int32) bool { return tok >= 0 && int(tok) < len(m.eog) && m.eog[tok] }

// Tokenize converts text to tokens. addSpecial adds BOS where the model
// wants it; parseSpecial lets text spell special tokens.
func (m *Model) Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	if text == "" {
		return nil, nil
	}
	ct := C.CString(text)
	defer C.free(unsafe.Pointer(ct))
	out := make([]int32, len(text)+8)
	n := C.llama_tokenize(m.vocab, ct, C.int32_t(len(text)), (*C.llama_token)(unsafe.Pointer(&out[0])), C.int32_t(len(out)), C._Bool(addSpecial), C._Bool(parseSpecial))
	if n < 0 {
		out = make([]int32, -n)
		n = C.llama_tokenize(m.vocab, ct, C.int32_t(len(text)), (*C.llama_token)(unsafe.Pointer(&out[0])), C.int32_t(len(out)), C._Bool(addSpecial), C._Bool(parseSpecial))
		if n < 0 {
			return nil, fmt.Errorf("tokenize: needs %d tokens", -n)
		}
	}
	return out[:n], nil
}

// ChatTemplate is the model's Jinja chat template (tokenizer.chat_template),
// or "" when it has none.
func (m *Model) ChatTemplate() string {
	t := C.llama_model_chat_template(m.c, nil)
	if t == nil {
		return ""
	}
	return C.GoString(t)
}

// EOSText is the text of the model's end-of-sequence token, or "".
func (m *Model) EOSText() string {
	eos := C.llama_vocab_eos(m.vocab)
	if eos < 0 || int(eos) >= len(m.pieces) {
		return ""
	}
	return C.GoString(C.llama_vocab_get_text(m.vocab, eos))
}

// ChatMessage is one turn for ApplyChatTemplate.
type ChatMessage struct{ Role, Content string }

// ApplyChatTemplate renders messages with the model's chat template (or
// the named built-in template when tmpl is not empty) and, with addAssistant,
// the start of the assistant's reply.
func (m *Model) ApplyChatTemplate(tmpl string, msgs []ChatMessage, addAssistant bool) (string, error) {
	var ctmpl *C.char
	if tmpl != "" {
		ctmpl = C.CString(tmpl)
		defer C.free(unsafe.Pointer(ctmpl))
	} else {
		ctmpl = C.llama_model_chat_template(m.c, nil)
		if ctmpl == nil {
			return "", errors.New("model has no chat template")
		}
	}
	cmsgs := (*[1 << 20]C.struct_llama_chat_message)(C.malloc(C.size_t(len(msgs)) * C.size_t(unsafe.Sizeof(C.struct_llama_chat_message{}))))[:len(msgs):len(msgs)]
	defer C.free(unsafe.Pointer(&cmsgs[0]))
	total := 0
	for i, msg := range msgs {
		cmsgs[i].role = C.CString(msg.Role)
		cmsgs[i].content = C.CString(msg.Content)
		total += len(msg.Role) + len(msg.Content)
	}
	defer func() {
		for i := range cmsgs {
			C.free(unsafe.Pointer(cmsgs[i].role))
			C.free(unsafe.Pointer(cmsgs[i].content))
		}
	}()
	buf := make([]byte, 2*total+256)
	n := C.llama_chat_apply_template(ctmpl, &cmsgs[0], C.size_t(len(msgs)), C._Bool(addAssistant), (*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)))
	if n < 0 {
		return "", errors.New("llama.cpp does not support this model's chat template")
	}
	if int(n) > len(buf) {
		buf = make([]byte, n)
		n = C.llama_chat_apply_template(ctmpl, &cmsgs[0], C.size_t(len(msgs)), C._Bool(addAssistant), (*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)))
	}
	return string(buf[:n]), nil
}

// ContextParams configure NewContext.
type ContextParams struct {
	// NCtx is the total KV capacity in tokens (0: the model's).
	NCtx int
	// NBatch is the most tokens one Decode may carry.
	NBatch int
	// NSeqMax is the number of parallel sequences.
	NSeqMax int
	// Threads for decoding and for batch (prompt) processing.
	Threads, ThreadsBatch int
	// KVUnified shares one KV buffer across sequences: any sequence may use
	// up to NCtx tokens and prefixes can be copied between sequences, at the
	// price of attention over the shared buffer. Off, each sequence owns
	// NCtx/NSeqMax tokens.
	KVUnified bool
	// Embeddings makes the context output pooled (mean) embeddings.
	Embeddings bool
}

// Context is an inference context with a reusable batch.
type Context struct {
	c      *C.struct_llama_context
	pools  [2]unsafe.Pointer // persistent ggml threadpools (decode, batch), if any
	mem    C.llama_memory_t
	model  *Model
	batch  C.struct_llama_batch
	nBatch int
	nVocab int
}

// NewContext creates a context for m.
func NewContext(m *Model, p ContextParams) (*Context, error) {
	cp := C.llama_context_default_params()
	cp.n_ctx = C.uint32_t(p.NCtx)
	if p.NBatch > 0 {
		cp.n_batch = C.uint32_t(p.NBatch)
		cp.n_ubatch = C.uint32_t(min(p.NBatch, 512))
	}
	cp.n_seq_max = C.uint32_t(max(p.NSeqMax, 1))
	if p.Threads > 0 {
		cp.n_threads = C.int32_t(p.Threads)
	}
	if p.ThreadsBatch > 0 {
		cp.n_threads_batch = C.int32_t(p.ThreadsBatch)
	}
	cp.kv_unified = C._Bool(p.KVUnified)
	cp.no_perf = C._Bool(true)
	if p.Embeddings {
		cp.embeddings = C._Bool(true)
		cp.pooling_type = C.LLAMA_POOLING_TYPE_MEAN
	}
	cc := C.llama_init_from_model(m.c, cp)
	if cc == nil {
		return nil, errors.New("llama.cpp could not create a context (out of memory, or n_ctx too large?)")
	}
	nb := int(C.llama_n_batch(cc))
	c := &Context{
		c: cc, mem: C.llama_get_memory(cc), model: m, nBatch: nb, nVocab: m.NVocab(),
		batch: C.llama_batch_init(C.int32_t(nb), 0, 1),
	}
	// Persistent worker threads: without them ggml starts and joins threads
	// for every decode, which costs a large share of a small model's step.
	// Where no CPU threadpool API exists (other backends), run without.
	if C.llmr_attach_threadpools(cc, cp.n_threads, cp.n_threads_batch, &c.pools[0], &c.pools[1]) != 0 {
		c.pools = [2]unsafe.Pointer{}
	}
	return c, nil
}

// Close frees the context.
func (c *Context) Close() {
	if c.c != nil {
		C.llama_batch_free(c.batch)
		C.llama_free(c.c)
		c.c = nil
		for i, p := range c.pools {
			C.llmr_free_threadpool(p)
			c.pools[i] = nil
		}
	}
}

// NCtx is the total KV capacity; NCtxSeq the capacity of one sequence.
func (c *Context) NCtx() int    { return int(C.llama_n_ctx(c.c)) }
func (c *Context) NCtxSeq() int { return int(C.llama_n_ctx_seq(c.c)) }

// NBatch is the most tokens one batch holds.
func (c *Context) NBatch() int { return c.nBatch }

// NSeqMax is the number of parallel sequences.
func (c *Context) NSeqMax() int { return int(C.llama_n_seq_max(c.c)) }

// BatchClear empties the batch.
func (c *Context) BatchClear() { c.batch.n_tokens = 0 }

// BatchLen is the number of tokens in the batch.
func (c *Context) BatchLen() int { return int(c.batch.n_tokens) }

// BatchAdd appends a token of sequence seq at position pos; logits asks for
// its output. It returns the token's index in the batch.
func (c *Context) BatchAdd(tok int32, pos int, seq int, logits bool) int {
	i := int(c.batch.n_tokens)
	if i >= c.nBatch {
		panic("llama: batch overflow") // a caller bug: callers size batches by NBatch
	}
	C.llmr_batch_set(&c.batch, C.int(i), C.llama_token(tok), C.llama_pos(pos), C.llama_seq_id(seq), C._Bool(logits))
	c.batch.n_tokens++
	return i
}

// Decode runs the batch.
func (c *Context) Decode() error {
	switch r := C.llama_decode(c.c, c.batch); {
	case r == 0:
		return nil
	case r == 1:
		return ErrNoKVSlot
	case r == 2:
		return ErrAborted
	default:
		return fmt.Errorf("llama_decode failed with %d", int(r))
	}
}

// Logits copies the logits of batch index i into dst (len NVocab).
func (c *Context) Logits(i int, dst []float32) []float32 {
	p := C.llama_get_logits_ith(c.c, C.int32_t(i))
	if p == nil {
		return nil
	}
	if cap(dst) < c.nVocab {
		dst = make([]float32, c.nVocab)
	}
	dst = dst[:c.nVocab]
	copy(dst, unsafe.Slice((*float32)(unsafe.Pointer(p)), c.nVocab))
	return dst
}

// Embedding copies the pooled embedding of sequence seq.
func (c *Context) Embedding(seq int) []float32 {
	p := C.llama_get_embeddings_seq(c.c, C.llama_seq_id(seq))
	if p == nil {
		return nil
	}
	n := int(C.llama_model_n_embd_out(c.model.c))
	return append([]float32(nil), unsafe.Slice((*float32)(unsafe.Pointer(p)), n)...)
}

// SeqRm removes positions [p0, p1) of seq from the KV cache (p1 < 0: to the
// end). It reports false if the cache cannot remove a partial range.
func (c *Context) SeqRm(seq, p0, p1 int) bool {
	return bool(C.llama_memory_seq_rm(c.mem, C.llama_seq_id(seq), C.llama_pos(p0), C.llama_pos(p1)))
}

// SeqCp copies positions [p0, p1) of src to dst. Partial copies need a
// unified KV cache; without one llama.cpp aborts, so this refuses them.
func (c *Context) SeqCp(src, dst, p0, p1 int, unified bool) error {
	if !unified && (p0 > 0 || p1 >= 0) {
		return errors.New("llama: partial sequence copy needs a unified KV cache")
	}
	C.llama_memory_seq_cp(c.mem, C.llama_seq_id(src), C.llama_seq_id(dst), C.llama_pos(p0), C.llama_pos(p1))
	return nil
}

// SeqPosMax is the largest position of seq in the cache, -1 if empty.
func (c *Context) SeqPosMax(seq int) int {
	return int(C.llama_memory_seq_pos_max(c.mem, C.llama_seq_id(seq)))
}

// ClearMemory empties the KV cache.
func (c *Context) ClearMemory() { C.llama_memory_clear(c.mem, C._Bool(true)) }

// SamplerParams configure a sampler chain.
type SamplerParams struct {
	Temperature   float32 // 0: greedy
	TopK          int
	TopP          float32
	MinP          float32
	RepeatPenalty float32 // 1: off
	// FrequencyPenalty and PresencePenalty: llama.cpp's penalty_freq and
	// penalty_present; 0: off.
	FrequencyPenalty float32
	PresencePenalty  float32
	RepeatLastN      int
	// LogitBias is added to the logits of its token ids (in the vocabulary).
	LogitBias map[uint32]float32
	// Grammar, in GBNF with a root rule, constrains the sampled tokens
	// (llama.cpp's grammar sampler); empty: none.
	Grammar string
	Seed    uint32
}

// Sampler is a llama.cpp sampler chain, or plain argmax for greedy
// decoding without penalties (llama.cpp's chain builds a candidate array of
// the whole vocabulary for every token, which costs more than the argmax).
type Sampler struct {
	c       *C.struct_llama_sampler
	grammar *C.struct_llama_sampler
	buf     []C.llama_token_data // candidates scratch, with a grammar
	banned  []int32              // tokens refused at this step (UTF-8)
	partial []byte               // an unfinished character at the output's end
	argmax  bool
}

// NewSampler builds: logit bias, the repeat, frequency and presence
// penalties, then greedy at temperature 0, else top-k, top-p, min-p,
// temperature and a seeded draw; with a grammar, sampled tokens are
// constrained by it. A grammar llama.cpp cannot parse is an error.
func NewSampler(m *Model, p SamplerParams) (*Sampler, error) {
	repeat := p.RepeatPenalty
	if repeat == 0 {
		repeat = 1
	}
	penalty := repeat != 1 || p.FrequencyPenalty != 0 || p.PresencePenalty != 0
	if p.Temperature <= 0 && !penalty && len(p.LogitBias) == 0 && p.Grammar == "" {
		return &Sampler{argmax: true}, nil
	}
	var grammar *C.struct_llama_sampler
	if p.Grammar != "" {
		gs, root := C.CString(p.Grammar), C.CString("root")
		grammar = C.llama_sampler_init_grammar(m.vocab, gs, root)
		C.free(unsafe.Pointer(gs))
		C.free(unsafe.Pointer(root))
		if grammar == nil {
			return nil, errors.New("llama: the grammar does not parse")
		}
	}
	s := &Sampler{grammar: grammar}
	if grammar != nil {
		s.buf = make([]C.llama_token_data, m.NVocab())
	}
	chain := C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
	if len(p.LogitBias) > 0 {
		bias := make([]C.llama_logit_bias, 0, len(p.LogitBias))
		for id, b := range p.LogitBias {
			bias = append(bias, C.llama_logit_bias{token: C.llama_token(id), bias: C.float(b)})
		}
		// The sampler copies the array.
		C.llama_sampler_chain_add(chain, C.llama_sampler_init_logit_bias(C.int32_t(m.NVocab()), C.int32_t(len(bias)), &bias[0]))
	}
	if penalty {
		last := p.RepeatLastN
		if last == 0 {
			last = 64
		}
		C.llama_sampler_chain_add(chain, C.llama_sampler_init_penalties(C.int32_t(m.NVocab()), C.int32_t(last), C.float(repeat), C.float(p.FrequencyPenalty), C.float(p.PresencePenalty)))
	}
	s.c = chain
	if p.Temperature <= 0 {
		C.llama_sampler_chain_add(chain, C.llama_sampler_init_greedy())
		return s, nil
	}
	if p.TopK > 0 {
		C.llama_sampler_chain_add(chain, C.llama_sampler_init_top_k(C.int32_t(p.TopK)))
	}
	if p.TopP > 0 && p.TopP < 1 {
		C.llama_sampler_chain_add(chain, C.llama_sampler_init_top_p(C.float(p.TopP), 1))
	}
	if p.MinP > 0 {
		C.llama_sampler_chain_add(chain, C.llama_sampler_init_min_p(C.float(p.MinP), 1))
	}
	C.llama_sampler_chain_add(chain, C.llama_sampler_init_temp(C.float(p.Temperature)))
	C.llama_sampler_chain_add(chain, C.llama_sampler_init_dist(C.uint32_t(p.Seed)))
	return s, nil
}

// ErrGrammarStuck: the grammar allows no token (not even end of
// generation).
var ErrGrammarStuck = errors.New("llama: the grammar allows no next token")

// Sample picks a token from the logits at batch index i and accepts it.
func (s *Sampler) Sample(c *Context, i int) (int32, error) {
	switch {
	case s.argmax:
		return int32(C.llmr_argmax(c.c, C.int32_t(i), C.int32_t(c.nVocab))), nil
	case s.grammar != nil:
		return s.sampleGrammar(c, i)
	}
	return int32(C.llama_sampler_sample(s.c, c.c, C.int32_t(i))), nil
}

// sampleGrammar picks a token the grammar allows that also keeps the output
// well-formed UTF-8: llama.cpp's grammar decodes UTF-8 without checking it,
// so a token that would make the bytes invalid (a stray continuation byte,
// an overlong or out-of-range sequence, ASCII after an unfinished
// character) is banned for this step and another one picked.
func (s *Sampler) sampleGrammar(c *Context, i int) (int32, error) {
	s.banned = s.banned[:0]
	for range 256 {
		var banned *C.int32_t
		if len(s.banned) > 0 {
			banned = (*C.int32_t)(unsafe.Pointer(&s.banned[0]))
		}
		tok := int32(C.llmr_grammar_pick(c.c, C.int32_t(i), s.c, s.grammar, &s.buf[0], C.int32_t(len(s.buf)), banned, C.int32_t(len(s.banned))))
		if tok < 0 {
			return 0, ErrGrammarStuck
		}
		next, ok := utf8Continue(s.partial, c.model.pieces[tok])
		if !ok && !c.model.eog[tok] {
			s.banned = append(s.banned, tok)
			continue
		}
		s.partial = next
		C.llmr_grammar_accept(s.c, s.grammar, C.llama_token(tok))
		return tok, nil
	}
	return 0, ErrGrammarStuck
}

// utf8Continue reports whether partial (the unfinished character at the
// end of the output so far) followed by piece is a prefix of well-formed
// UTF-8, and returns the new unfinished tail.
func utf8Continue(partial, piece []byte) ([]byte, bool) {
	b := piece // read only: a model's piece, or a fresh copy below
	if len(partial) > 0 {
		b = append(partial[:len(partial):len(partial)], piece...)
	}
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r != utf8.RuneError || n > 1 {
			b = b[n:]
			continue
		}
		if !utf8.FullRune(b) && validPrefix(b) {
			return b, true // an unfinished character, so far well-formed
		}
		return nil, false
	}
	return nil, true
}

// validPrefix reports whether b (shorter than its character) can begin a
// well-formed UTF-8 sequence.
func validPrefix(b []byte) bool {
	lo, hi := byte(0x80), byte(0xBF)
	switch c := b[0]; {
	case c >= 0xC2 && c <= 0xDF:
	case c == 0xE0:
		lo = 0xA0
	case c == 0xED:
		hi = 0x9F
	case c >= 0xE1 && c <= 0xEF:
	case c == 0xF0:
		lo = 0x90
	case c >= 0xF1 && c <= 0xF3:
	case c == 0xF4:
		hi = 0x8F
	default:
		return false
	}
	for i, c := range b[1:] {
		if i == 0 && (c < lo || c > hi) || i > 0 && (c < 0x80 || c > 0xBF) {
			return false
		}
	}
	return true
}

// Accept records a token the sampler did not pick (prompt tokens for the
// penalties); the grammar does not see it.
func (s *Sampler) Accept(tok int32) {
	if !s.argmax {
		C.llama_sampler_accept(s.c, C.llama_token(tok))
	}
}

// AcceptOutput advances the grammar over a token of output generated
// elsewhere (a failover's continuation), or reports that the grammar does
// not allow it.
func (s *Sampler) AcceptOutput(m *Model, tok int32) bool {
	if s.grammar == nil {
		return true
	}
	if !C.llmr_grammar_allows(s.grammar, C.llama_token(tok)) {
		return false
	}
	next, ok := utf8Continue(s.partial, m.pieces[tok])
	if !ok {
		return false
	}
	s.partial = next
	C.llama_sampler_accept(s.grammar, C.llama_token(tok))
	return true
}

// Close frees the sampler.
func (s *Sampler) Close() {
	if s.c != nil {
		C.llama_sampler_free(s.c)
		s.c = nil
	}
	if s.grammar != nil {
		C.llama_sampler_free(s.grammar)
		s.grammar = nil
	}
}

// QuantizeType names a quantization target.
type QuantizeType string

// Supported quantization targets.
const (
	QuantF16  QuantizeType = "F16"
	QuantQ8_0 QuantizeType = "Q8_0"
	QuantQ4_0 QuantizeType = "Q4_0"
)

// Quantize writes in's weights to out as typ with llama_model_quantize.
func Quantize(in, out string, typ QuantizeType, threads int) error {
	Init()
	qp := C.llama_model_quantize_default_params()
	qp.nthread = C.int32_t(threads)
	switch typ {
	case QuantF16:
		qp.ftype = C.LLAMA_FTYPE_MOSTLY_F16
	case QuantQ8_0:
		qp.ftype = C.LLAMA_FTYPE_MOSTLY_Q8_0
	case QuantQ4_0:
		qp.ftype = C.LLAMA_FTYPE_MOSTLY_Q4_0
	default:
		return fmt.Errorf("quantize: unsupported type %q (want F16, Q8_0 or Q4_0)", typ)
	}
	cin, cout := C.CString(in), C.CString(out)
	defer C.free(unsafe.Pointer(cin))
	defer C.free(unsafe.Pointer(cout))
	if r := C.llama_model_quantize(cin, cout, &qp); r != 0 {
		return fmt.Errorf("llama_model_quantize %s -> %s (%s) failed with %d", in, out, typ, int(r))
	}
	return nil
}
