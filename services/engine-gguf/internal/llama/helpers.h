// C helpers for package llama (defined in helpers.c, not in the cgo
// preamble, because the package exports a Go callback).
#include <stdbool.h>
#include <stdint.h>
#include "llama.h"

void llmr_set_progress(struct llama_model_params *p, uintptr_t handle);
void llmr_set_quiet_log(void);
int llmr_lib_dir(char *buf, size_t n);
void llmr_batch_set(struct llama_batch *b, int i, llama_token tok, llama_pos pos, llama_seq_id seq, bool logits);
int32_t llmr_argmax(struct llama_context *ctx, int32_t idx, int32_t n_vocab);
int llmr_attach_threadpools(struct llama_context *ctx, int n_threads, int n_threads_batch, void **tp, void **tp_batch);
void llmr_free_threadpool(void *tp);
bool llmr_grammar_allows(struct llama_sampler *g, llama_token tok);
int32_t llmr_grammar_pick(struct llama_context *ctx, int32_t idx, struct llama_sampler *chain, struct llama_sampler *g, llama_token_data *buf, int32_t n_vocab, const int32_t *banned, int32_t n_banned);
void llmr_grammar_accept(struct llama_sampler *chain, struct llama_sampler *g, llama_token tok);
