package engine

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/bpe"
	"github.com/llm-runner-router/llmrouter/pkg/onnx"
	"github.com/llm-runner-router/llmrouter/pkg/structured"
)

// spec is what the engine knows about a model directory before loading it:
// the graph's shapes (read from the ONNX file) and the tokenizer's
// settings.
type spec struct {
	dir, file   string
	arch        string
	layers      int
	kvHeads     int
	headDim     int
	vocab       int
	ctx         int // trained context length
	positionIDs bool
	lastOnly    bool     // logits hold only the last position: [batch, 1, vocab]
	cacheBranch bool     // a merged decoder's use_cache_branch input (true once there is a past)
	inputs      []string // in the order runs pass them
	outputs     []string
	tok         *bpe.Tokenizer
	eos         map[uint32]bool
	enc         *encoder // a sentence encoder (Embed only); nil for decoders

	vocabOnce    sync.Once
	tokens       *structured.Vocab // every token's bytes, for response formats
	bos          uint32
	addBOS       bool
	chatTemplate string
	eosText      string // tokenizer_config.json's eos_token, for templates
	fileBytes    int64
}

// hfConfig is the part of config.json the engine reads.
type hfConfig struct {
	ModelType  string          `json:"model_type"`
	MaxPos     int             `json:"max_position_embeddings"`
	NPositions int             `json:"n_positions"` // GPT-2's name for it
	BOSTokenID *uint32         `json:"bos_token_id"`
	EOSTokenID json.RawMessage `json:"eos_token_id"` // a number or a list
}

// hfTokConfig is the part of tokenizer_config.json the engine reads.
type hfTokConfig struct {
	BOSToken     json.RawMessage `json:"bos_token"` // a string or {"content": ...}
	EOSToken     json.RawMessage `json:"eos_token"`
	AddBOSToken  *bool           `json:"add_bos_token"`
	ChatTemplate string          `json:"chat_template"`
}

// readSpec checks a model directory (or a model.onnx path inside one) and
// reads its shapes and tokenizer. Errors name the missing or wrong piece.
func readSpec(path string) (*spec, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	s := &spec{dir: path, file: filepath.Join(path, "model.onnx")}
	if !st.IsDir() {
		s.dir, s.file = filepath.Dir(path), path
	}
	if isTFJS(s.dir) {
		return s, s.readEncoder(true)
	}
	fst, err := os.Stat(s.file)
	if err != nil {
		return nil, fmt.Errorf("no ONNX graph: %w", err)
	}
	// Weights may sit in an external data file beside the graph (the
	// exporters' names for it).
	s.fileBytes = fst.Size()
	for _, ext := range []string{"_data", ".data"} {
		if st, err := os.Stat(s.file + ext); err == nil {
			s.fileBytes += st.Size()
		}
	}
	info, err := onnx.ReadInfoFile(s.file)
	if err != nil {
		return nil, err
	}
	if isEncoderGraph(info) {
		return s, s.readEncoder(false)
	}
	if err := s.readGraph(info); err != nil {
		return nil, fmt.Errorf("%s: %w", s.file, err)
	}
	if s.tok, err = bpe.LoadHF(filepath.Join(s.dir, "tokenizer.json")); err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if s.tok.VocabSize() > s.vocab {
		return nil, fmt.Errorf("tokenizer has %d tokens but the graph's logits cover %d", s.tok.VocabSize(), s.vocab)
	}
	if err := s.readConfigs(); err != nil {
		return nil, err
	}
	return s, nil
}

// readGraph checks the inputs and outputs a decoder with a KV cache needs.
func (s *spec) readGraph(info *onnx.Info) error {
	in := map[string]onnx.ValueInfo{}
	for _, v := range info.Inputs {
		in[v.Name] = v
	}
	out := map[string]onnx.ValueInfo{}
	for _, v := range info.Outputs {
		out[v.Name] = v
	}
	var missing []string
	for _, n := range []string{"input_ids", "attention_mask"} {
		if v, ok := in[n]; !ok {
			missing = append(missing, "input "+n)
		} else if v.Elem != onnx.Int64 || len(v.Shape) != 2 {
			return fmt.Errorf("input %s must be a 2-D int64 tensor [batch, length]", n)
		}
	}
	logits, ok := out["logits"]
	if !ok {
		missing = append(missing, "output logits")
	}
	for l := 0; ; l++ {
		k, v := fmt.Sprintf("past_key_values.%d.key", l), fmt.Sprintf("past_key_values.%d.value", l)
		_, hasK := in[k]
		_, hasV := in[v]
		if !hasK && !hasV {
			break
		}
		s.layers++
		for _, name := range []string{k, v} {
			pv, ok := in[name]
			if !ok {
				missing = append(missing, "input "+name)
				continue
			}
			present := strings.Replace(name, "past_key_values", "present", 1)
			if _, ok := out[present]; !ok {
				missing = append(missing, "output "+present)
			}
			if pv.Elem != onnx.Float || len(pv.Shape) != 4 || pv.Shape[1].Value <= 0 || pv.Shape[3].Value <= 0 {
				return fmt.Errorf("input %s must be float32 [batch, kv_heads, past, head_dim] with fixed kv_heads and head_dim (the engine runs float32 graphs)", name)
			}
			if s.kvHeads == 0 {
				s.kvHeads, s.headDim = int(pv.Shape[1].Value), int(pv.Shape[3].Value)
			} else if s.kvHeads != int(pv.Shape[1].Value) || s.headDim != int(pv.Shape[3].Value) {
				return fmt.Errorf("input %s has a different KV shape from layer 0", name)
			}
		}
	}
	if s.layers == 0 {
		missing = append(missing, "inputs past_key_values.N.key/value (export with a KV cache, e.g. optimum's text-generation-with-past)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("not a decoder with a KV cache: missing %s", strings.Join(missing, ", "))
	}
	if logits.Elem != onnx.Float || len(logits.Shape) != 3 || logits.Shape[2].Value <= 0 {
		return errors.New("output logits must be float32 [batch, length, vocab] with a fixed vocab size")
	}
	s.vocab = int(logits.Shape[2].Value)
	s.lastOnly = logits.Shape[1].Value == 1
	_, s.positionIDs = in["position_ids"]
	s.inputs = []string{"input_ids", "attention_mask"}
	if s.positionIDs {
		s.inputs = append(s.inputs, "position_ids")
	}
	s.outputs = []string{"logits"}
	for l := range s.layers {
		for _, kv := range []string{"key", "value"} {
			s.inputs = append(s.inputs, fmt.Sprintf("past_key_values.%d.%s", l, kv))
			s.outputs = append(s.outputs, fmt.Sprintf("present.%d.%s", l, kv))
		}
	}
	// Merged decoders (optimum's default export) choose their with-past
	// branch by a boolean input.
	if v, ok := in["use_cache_branch"]; ok {
		if v.Elem != onnx.Bool || len(v.Shape) > 1 {
			return errors.New("input use_cache_branch must be a bool scalar or [1]")
		}
		s.cacheBranch = true
		s.inputs = append(s.inputs, "use_cache_branch")
	}
	if len(s.inputs) != len(info.Inputs) {
		var extra []string
		known := map[string]bool{}
		for _, n := range s.inputs {
			known[n] = true
		}
		for _, v := range info.Inputs {
			if !known[v.Name] {
				extra = append(extra, v.Name)
			}
		}
		return fmt.Errorf("the graph has inputs the engine cannot feed: %s", strings.Join(extra, ", "))
	}
	s.arch = info.Metadata["architecture"]
	if c, err := strconv.Atoi(info.Metadata["context_length"]); err == nil && c > 0 {
		s.ctx = c
	}
	return nil
}

// readConfigs reads config.json and tokenizer_config.json when present:
// context length, BOS/EOS, whether to add BOS, and the chat template.
func (s *spec) readConfigs() error {
	s.eos = map[uint32]bool{}
	var cfg hfConfig
	if err := readJSON(filepath.Join(s.dir, "config.json"), &cfg); err != nil {
		return err
	}
	if s.ctx == 0 {
		s.ctx = cmp.Or(cfg.MaxPos, cfg.NPositions)
	}
	if s.ctx <= 0 {
		return fmt.Errorf("%s: no context length (graph metadata context_length, or max_position_embeddings or n_positions in config.json)", s.dir)
	}
	if s.arch == "" {
		s.arch = cfg.ModelType
	}
	if cfg.BOSTokenID != nil {
		s.bos = *cfg.BOSTokenID
	}
	var one uint32
	var list []uint32
	if json.Unmarshal(cfg.EOSTokenID, &one) == nil {
		s.eos[one] = true
	} else if json.Unmarshal(cfg.EOSTokenID, &list) == nil {
		for _, id := range list {
			s.eos[id] = true
		}
	}
	var tc hfTokConfig
	if err := readJSON(filepath.Join(s.dir, "tokenizer_config.json"), &tc); err != nil {
		return err
	}
	s.chatTemplate = tc.ChatTemplate
	if tc.AddBOSToken != nil {
		s.addBOS = *tc.AddBOSToken
	}
	for _, t := range []struct {
		raw json.RawMessage
		eos bool
	}{{tc.EOSToken, true}, {tc.BOSToken, false}} {
		text := tokenText(t.raw)
		if text == "" {
			continue
		}
		id, ok := s.tok.TokenID(text)
		if !ok {
			return fmt.Errorf("tokenizer_config.json names token %q, which the tokenizer lacks", text)
		}
		if t.eos {
			s.eos[id] = true
			s.eosText = text
		} else {
			s.bos = id
		}
	}
	if len(s.eos) == 0 {
		return fmt.Errorf("%s: no end-of-sequence token (config.json eos_token_id or tokenizer_config.json eos_token)", s.dir)
	}
	return nil
}

func tokenText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.Content
	}
	return ""
}

// readJSON decodes path into v; a missing file leaves v unchanged.
func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// chatML is the one chat template family rendered without a template
// engine: <|im_start|>role\ncontent<|im_end|>\n per message, then the
// assistant's opening. Other templates are refused with FailedPrecondition.
func isChatML(template string) bool {
	return strings.Contains(template, "<|im_start|>") && strings.Contains(template, "<|im_end|>")
}

func renderChatML(msgs []*generationv1.ChatMessage) string {
	var b strings.Builder
	for _, m := range msgs {
		role := strings.ToLower(strings.TrimPrefix(m.GetRole().String(), "ROLE_"))
		b.WriteString("<|im_start|>" + role + "\n" + m.GetContent() + "<|im_end|>\n")
	}
	b.WriteString("<|im_start|>assistant\n")
	return b.String()
}

// tokenVocab is every token's bytes and end-of-generation flag, made on
// first use (for grammar-constrained sampling).
func (s *spec) tokenVocab() *structured.Vocab {
	s.vocabOnce.Do(func() {
		v := &structured.Vocab{Pieces: make([][]byte, s.vocab), EOG: make([]bool, s.vocab)}
		for id := range s.vocab {
			if id < s.tok.VocabSize() {
				v.Pieces[id] = s.tok.Decode([]uint32{uint32(id)})
			}
			v.EOG[id] = s.eos[uint32(id)]
		}
		s.tokens = v
	})
	return s.tokens
}
