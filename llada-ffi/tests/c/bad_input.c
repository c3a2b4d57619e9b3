/*
 * Every bad input gets its documented status, outputs stay untouched, and nothing leaks
 * (run under AddressSanitizer / valgrind by tests/c_abi.rs). Exit 0 when all checks pass.
 */
#include <stdio.h>
#include <string.h>

#include "llada.h"

static int failures = 0;

#define EXPECT(cond)                                                             \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: check failed: %s (last error: %s)\n",        \
                    __FILE__, __LINE__, #cond, llada_last_error());              \
            failures++;                                                          \
        }                                                                        \
    } while (0)

static bool cancel_at_second_step(const llada_step_event *event, void *user_data) {
    unsigned *calls = (unsigned *)user_data;
    *calls += 1;
    (void)event;
    return *calls < 2;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    llada_model *model = (llada_model *)0x1; /* canary: must stay untouched on failure */

    /* NULL arguments. */
    EXPECT(llada_model_load(NULL, NULL, &model) == LLADA_STATUS_NULL_ARG);
    EXPECT(model == (llada_model *)0x1);
    EXPECT(llada_model_load(dir, NULL, NULL) == LLADA_STATUS_NULL_ARG);
    EXPECT(strstr(llada_last_error(), "out_model") != NULL);
    llada_model_free(NULL);
    llada_context_free(NULL);

    /* A missing model directory names the path. */
    EXPECT(llada_model_load("/no/such/model", NULL, &model) == LLADA_STATUS_IO);
    EXPECT(strstr(llada_last_error(), "/no/such/model") != NULL);
    EXPECT(model == (llada_model *)0x1);

    /* Invalid parameters. */
    llada_model_params mp = llada_model_default_params();
    mp.backend = 7;
    EXPECT(llada_model_load(dir, &mp, &model) == LLADA_STATUS_INVALID_ARG);
    mp = llada_model_default_params();
    mp.quantize = 99;
    EXPECT(llada_model_load(dir, &mp, &model) == LLADA_STATUS_INVALID_ARG);
    EXPECT(strstr(llada_last_error(), "quantization") != NULL);

    /* Quantized while loading: a model that loads and tokenizes like the other. */
    mp = llada_model_default_params();
    mp.quantize = LLADA_QUANTIZE_Q8_0;
    llada_model *quantized = NULL;
    EXPECT(llada_model_load(dir, &mp, &quantized) == LLADA_STATUS_OK);
    llada_model_free(quantized);

    /* The ORT backend with a runtime that does not exist (the test runs this program without
     * ORT_DYLIB_PATH): a backend failure, not a model one, naming the path tried and how to
     * get the library, after what failed. */
    mp = llada_model_default_params();
    mp.backend = LLADA_BACKEND_ORT;
    mp.ort_library = "/no/such/libonnxruntime.so";
    llada_model *ort_model = (llada_model *)0x1;
    EXPECT(llada_model_load(dir, &mp, &ort_model) == LLADA_STATUS_BACKEND);
    EXPECT(ort_model == (llada_model *)0x1);
    EXPECT(strstr(llada_last_error(), "the ort backend could not load the model: ") == llada_last_error());
    EXPECT(strstr(llada_last_error(), "/no/such/libonnxruntime.so") != NULL);
    EXPECT(strstr(llada_last_error(), "pip install onnxruntime") != NULL);

    /* The ABI this program was compiled against is the library's. */
    EXPECT(llada_abi_version() == LLADA_ABI_VERSION);

    /* Statuses are names, unknown values too. */
    EXPECT(strcmp(llada_status_str(LLADA_STATUS_BUFFER_TOO_SMALL), "buffer too small") == 0);
    EXPECT(strcmp(llada_status_str(9999), "unknown status") == 0);

    /* The last error, copied into a buffer too small, then large enough. */
    llada_model_load("/no/such/model", NULL, &model);
    char small[4] = {'x', 'x', 'x', 'x'};
    size_t needed = 0;
    EXPECT(llada_last_error_copy(small, sizeof small, &needed) == LLADA_STATUS_BUFFER_TOO_SMALL);
    EXPECT(needed == strlen(llada_last_error()) + 1);
    EXPECT(small[0] == 'x');
    char big[512];
    EXPECT(llada_last_error_copy(big, sizeof big, &needed) == LLADA_STATUS_OK);
    EXPECT(strcmp(big, llada_last_error()) == 0);

    /* A real model for the remaining checks. */
    model = NULL;
    if (llada_model_load(dir, NULL, &model) != LLADA_STATUS_OK) {
        fprintf(stderr, "cannot load %s: %s\n", dir, llada_last_error());
        return 1;
    }
    llada_context *context = NULL;
    EXPECT(llada_context_new(NULL, NULL, &context) == LLADA_STATUS_NULL_ARG);
    /* A thread count no context runs is refused before anything is sized by it. */
    llada_context_params huge = llada_context_default_params();
    huge.threads = 4000000000u;
    EXPECT(llada_context_new(model, &huge, &context) == LLADA_STATUS_INVALID_ARG);
    EXPECT(context == NULL);
    EXPECT(strstr(llada_last_error(), "4000000000 threads") != NULL);
    EXPECT(llada_context_new(model, NULL, &context) == LLADA_STATUS_OK);

    /* Tokenize into a buffer that is too small: the size needed comes back, nothing else. */
    uint32_t ids[2] = {12345, 12345};
    size_t n = 0;
    EXPECT(llada_tokenize(model, "copy: pen frog rock", ids, 2, &n) == LLADA_STATUS_BUFFER_TOO_SMALL);
    EXPECT(n > 2);
    EXPECT(ids[0] == 12345 && ids[1] == 12345);
    uint32_t enough[64];
    size_t count = 0;
    EXPECT(llada_tokenize(model, "copy: pen frog rock", enough, 64, &count) == LLADA_STATUS_OK);
    EXPECT(count == n);
    EXPECT(llada_tokenize(model, "\xff\xfe", enough, 64, &count) == LLADA_STATUS_INVALID_UTF8);

    /* Detokenize with a small buffer. */
    char text[3] = {'z', 'z', 'z'};
    size_t size = 0;
    EXPECT(llada_detokenize(model, enough, count, text, sizeof text, &size, true) == LLADA_STATUS_BUFFER_TOO_SMALL);
    EXPECT(size > sizeof text && text[0] == 'z');

    /* The model's own lengths (the bundled model declares 16/16/8), its special ids. */
    llada_generate_params declared;
    EXPECT(llada_model_default_generate_params(NULL, &declared) == LLADA_STATUS_NULL_ARG);
    EXPECT(llada_model_default_generate_params(model, NULL) == LLADA_STATUS_NULL_ARG);
    EXPECT(llada_model_default_generate_params(model, &declared) == LLADA_STATUS_OK);
    EXPECT(declared.gen_length == 16 && declared.steps == 16 && declared.block_length == 8);
    uint32_t mask_id = 0;
    EXPECT(llada_model_special_tokens(model, &mask_id, NULL, NULL, NULL, NULL) == LLADA_STATUS_OK);
    EXPECT(declared.mask_id == mask_id);
    EXPECT(declared.commit_rule == LLADA_COMMIT_SCHEDULE && !declared.stop_at_eos);

    /* Invalid generation parameters. */
    uint32_t out[64];
    size_t out_len = 777;
    llada_generate_params gp = llada_generate_default_params();
    gp.gen_length = 16;
    gp.steps = 16;
    gp.block_length = 5;
    EXPECT(llada_generate_ids(context, enough, count, &gp, NULL, NULL, out, 64, &out_len) == LLADA_STATUS_INVALID_ARG);
    EXPECT(strstr(llada_last_error(), "block_length") != NULL);
    gp.block_length = 8;
    gp.remasking = 42;
    EXPECT(llada_generate_ids(context, enough, count, &gp, NULL, NULL, out, 64, &out_len) == LLADA_STATUS_INVALID_ARG);
    gp.remasking = LLADA_REMASKING_LOW_CONFIDENCE;
    gp.top_p = 0.0f;
    EXPECT(llada_generate_ids(context, enough, count, &gp, NULL, NULL, out, 64, &out_len) == LLADA_STATUS_INVALID_ARG);
    gp.top_p = 1.0f;
    gp.commit_rule = LLADA_COMMIT_ENTROPY_BOUNDED;
    gp.commit_value = -1.0;
    EXPECT(llada_generate_ids(context, enough, count, &gp, NULL, NULL, out, 64, &out_len) == LLADA_STATUS_INVALID_ARG);
    EXPECT(strstr(llada_last_error(), "gamma") != NULL);
    gp.commit_rule = 99;
    EXPECT(llada_generate_ids(context, enough, count, &gp, NULL, NULL, out, 64, &out_len) == LLADA_STATUS_INVALID_ARG);
    gp.commit_rule = LLADA_COMMIT_SCHEDULE;
    gp.gen_length = 4096;
    gp.block_length = 4096;
    EXPECT(llada_generate_ids(context, enough, count, &gp, NULL, NULL, out, 64, &out_len) == LLADA_STATUS_INVALID_ARG);
    gp.gen_length = 16;
    gp.block_length = 8;
    EXPECT(llada_generate_ids(context, NULL, 3, &gp, NULL, NULL, out, 64, &out_len) == LLADA_STATUS_NULL_ARG);
    EXPECT(out_len == 777);

    /* A too-small output buffer reports the size needed and is left as it was. */
    for (int i = 0; i < 64; i++) out[i] = 0xC0FFEEu;
    EXPECT(llada_generate_ids(context, enough, count, &gp, NULL, NULL, out, 4, &out_len) == LLADA_STATUS_BUFFER_TOO_SMALL);
    EXPECT(out_len == 16);
    int untouched = 1;
    for (int i = 0; i < 64; i++) untouched &= out[i] == 0xC0FFEEu;
    EXPECT(untouched);

    /* A callback that cancels: nothing of the partial answer reaches the buffers. */
    unsigned calls = 0;
    out_len = 777;
    EXPECT(llada_generate_ids(context, enough, count, &gp, cancel_at_second_step, &calls, out, 64, &out_len) ==
           LLADA_STATUS_CANCELLED);
    EXPECT(calls == 2);
    EXPECT(out_len == 777);
    untouched = 1;
    for (int i = 0; i < 64; i++) untouched &= out[i] == 0xC0FFEEu;
    EXPECT(untouched);
    char answer[128];
    memset(answer, 'x', sizeof answer);
    size_t answer_size = 777;
    calls = 0;
    EXPECT(llada_generate_text(context, "reverse:pen,frog,rock", &gp, cancel_at_second_step, &calls, answer,
                               sizeof answer, &answer_size) == LLADA_STATUS_CANCELLED);
    EXPECT(answer_size == 777);
    untouched = 1;
    for (size_t i = 0; i < sizeof answer; i++) untouched &= answer[i] == 'x';
    EXPECT(untouched);

    /* And a generation that works. */
    EXPECT(llada_generate_ids(context, enough, count, &gp, NULL, NULL, out, 64, &out_len) == LLADA_STATUS_OK);
    EXPECT(out_len == 16);
    double ll = 1.0;
    llada_likelihood_params lp = llada_likelihood_default_params();
    lp.mc_samples = 4;
    lp.batch = 3;
    EXPECT(llada_log_likelihood(context, enough, count, out, 2, &lp, &ll) == LLADA_STATUS_INVALID_ARG);
    lp.batch = 2;
    EXPECT(llada_log_likelihood(context, enough, count, out, 2, &lp, &ll) == LLADA_STATUS_OK);
    EXPECT(ll <= 0.0);

    llada_context_free(context);
    llada_model_free(model);
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("all bad-input checks passed\n");
    return 0;
}
