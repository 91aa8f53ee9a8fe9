// C helpers for package llama (defined in helpers.c, not in the cgo
// preamble, because the package exports a Go callback).
#include <stdbool.h>
#include <stdint.h>
#include "llama.h"

void llmr_set_progress(struct llama_model_params *p, uintptr_t handle);
void llmr_set_quiet_log(void);
int llmr_lib_dir(char *buf, size_t n);
void llmr_batch_set(struct llama_batch *b, int i, llama_token tok, llama_pos pos, llama_seq_id seq, bool logits);
