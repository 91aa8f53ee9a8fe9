#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "helpers.h"
#include "_cgo_export.h"

static bool progress_trampoline(float progress, void *user_data) {
	return goProgress(progress, (uintptr_t)user_data);
}

void llmr_set_progress(struct llama_model_params *p, uintptr_t handle) {
	p->progress_callback = progress_trampoline;
	p->progress_callback_user_data = (void *)handle;
}

// quiet_log forwards only warnings and errors to stderr.
static void quiet_log(enum ggml_log_level level, const char *text, void *user_data) {
	(void)user_data;
	if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) {
		fputs(text, stderr);
	}
}

void llmr_set_quiet_log(void) { llama_log_set(quiet_log, NULL); }

// llmr_lib_dir writes the directory of the loaded libllama into buf.
int llmr_lib_dir(char *buf, size_t n) {
	Dl_info info;
	if (dladdr((void *)llama_backend_init, &info) == 0 || info.dli_fname == NULL) return -1;
	const char *slash = strrchr(info.dli_fname, '/');
	if (slash == NULL) return -1;
	size_t len = (size_t)(slash - info.dli_fname);
	if (len + 1 > n) return -1;
	memcpy(buf, info.dli_fname, len);
	buf[len] = 0;
	return 0;
}

void llmr_batch_set(struct llama_batch *b, int i, llama_token tok, llama_pos pos, llama_seq_id seq, bool logits) {
	b->token[i] = tok;
	b->pos[i] = pos;
	b->n_seq_id[i] = 1;
	b->seq_id[i][0] = seq;
	b->logits[i] = logits;
}
