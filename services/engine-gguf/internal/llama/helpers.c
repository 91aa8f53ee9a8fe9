#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <math.h>
#include <string.h>
#include "helpers.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
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

// llmr_argmax is greedy sampling without building llama.cpp's candidate
// array: one pass over the logits row.
int32_t llmr_argmax(struct llama_context *ctx, int32_t idx, int32_t n_vocab) {
	const float *l = llama_get_logits_ith(ctx, idx);
	if (l == NULL) return -1;
	int32_t best = 0;
	for (int32_t i = 1; i < n_vocab; i++) {
		if (l[i] > l[best]) best = i;
	}
	return best;
}

// The CPU backend is loaded at run time, so its threadpool functions are
// looked up through the backend registry (as llama-bench does).
static void *cpu_proc(const char *name) {
	ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
	if (dev == NULL) return NULL;
	return ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(dev), name);
}

// llmr_attach_threadpools gives the context persistent worker threads for
// decoding and for batches; without them ggml starts threads for every graph.
int llmr_attach_threadpools(struct llama_context *ctx, int n_threads, int n_threads_batch, void **tp, void **tp_batch) {
	struct ggml_threadpool *(*newfn)(struct ggml_threadpool_params *) = cpu_proc("ggml_threadpool_new");
	if (newfn == NULL) return -1;
	struct ggml_threadpool_params p = ggml_threadpool_params_default(n_threads);
	*tp = newfn(&p);
	if (*tp == NULL) return -1;
	*tp_batch = NULL;
	if (n_threads_batch != n_threads) {
		struct ggml_threadpool_params pb = ggml_threadpool_params_default(n_threads_batch);
		*tp_batch = newfn(&pb);
		if (*tp_batch == NULL) {
			llmr_free_threadpool(*tp);
			*tp = NULL;
			return -1;
		}
	}
	llama_attach_threadpool(ctx, *tp, *tp_batch);
	return 0;
}

void llmr_free_threadpool(void *tp) {
	void (*freefn)(struct ggml_threadpool *) = cpu_proc("ggml_threadpool_free");
	if (freefn != NULL && tp != NULL) freefn(tp);
}

// llmr_grammar_allows reports whether grammar g accepts token tok next
// (applying it to a one-token candidate array leaves the logit finite).
bool llmr_grammar_allows(struct llama_sampler *g, llama_token tok) {
	llama_token_data d = {tok, 0.0f, 0.0f};
	llama_token_data_array a = {&d, 1, -1, false};
	llama_sampler_apply(g, &a);
	return d.logit != -INFINITY;
}

// llmr_grammar_pick picks the token at batch index idx with the chain,
// constrained by grammar g, without accepting it: the chain's own pick is
// kept when the grammar allows it (the common case; without top-k, top-p
// or min-p exactly the constrained distribution p(t)/p(allowed));
// otherwise the grammar masks the whole vocabulary first and the chain
// picks again. Tokens in banned
// (n_banned of them) are never picked. -1: nothing is allowed. buf is
// scratch of n_vocab entries.
int32_t llmr_grammar_pick(struct llama_context *ctx, int32_t idx, struct llama_sampler *chain, struct llama_sampler *g,
		llama_token_data *buf, int32_t n_vocab, const int32_t *banned, int32_t n_banned) {
	const float *l = llama_get_logits_ith(ctx, idx);
	if (l == NULL) return -1;
	for (int pass = 0; pass < 2; pass++) {
		for (int32_t i = 0; i < n_vocab; i++) buf[i] = (llama_token_data){i, l[i], 0.0f};
		for (int32_t i = 0; i < n_banned; i++) buf[banned[i]].logit = -INFINITY;
		llama_token_data_array a = {buf, (size_t)n_vocab, -1, false};
		if (pass == 1) {
			llama_sampler_apply(g, &a);
			bool any = false;
			for (int32_t i = 0; i < n_vocab && !any; i++) any = buf[i].logit != -INFINITY;
			if (!any) return -1;
		}
		llama_sampler_apply(chain, &a);
		llama_token tok = a.selected >= 0 ? a.data[a.selected].id : -1;
		if (tok >= 0 && a.data[a.selected].logit != -INFINITY && llmr_grammar_allows(g, tok)) return tok;
	}
	return -1;
}

// llmr_grammar_accept records a picked token in the grammar and the chain.
void llmr_grammar_accept(struct llama_sampler *chain, struct llama_sampler *g, llama_token tok) {
	llama_sampler_accept(g, tok);
	llama_sampler_accept(chain, tok);
}
