/*
 * A Dream model through the C ABI: its directory or its GGUF file loads like LLaDA's, its
 * default parameters are Dream's own rule (LLADA_COMMIT_TIMESTEPS with its eps), and each of
 * Dream's algorithms is reachable. For each (origin, maskgit_plus, topk_margin, entropy) the
 * 16 generated ids (16 steps, one block, temperature 0) of the chat-formatted prompt are
 * printed on a line.
 *
 *   dream MODEL PROMPT
 */
#include <stdio.h>

#include "llada.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL PROMPT\n", argv[0]);
        return 2;
    }
    llada_model *model = NULL;
    llada_model_params model_params = llada_model_default_params();
    llada_status status = llada_model_load(argv[1], &model_params, &model);
    if (status != LLADA_STATUS_OK) {
        fprintf(stderr, "llada_model_load: %s: %s\n", llada_status_str(status), llada_last_error());
        return 1;
    }
    llada_context *context = NULL;
    status = llada_context_new(model, NULL, &context);
    llada_generate_params params;
    if (status == LLADA_STATUS_OK) status = llada_model_default_generate_params(model, &params);
    char text[1024];
    size_t text_size = 0;
    uint32_t prompt[512];
    size_t prompt_len = 0;
    llada_chat_message message = {"user", argv[2]};
    if (status == LLADA_STATUS_OK)
        status = llada_chat_apply_template(model, &message, 1, text, sizeof text, &text_size, true);
    if (status == LLADA_STATUS_OK)
        status = llada_tokenize(model, text, prompt, sizeof prompt / sizeof prompt[0], &prompt_len);
    int rc = 1;
    if (status == LLADA_STATUS_OK && params.commit_rule != LLADA_COMMIT_TIMESTEPS) {
        fprintf(stderr, "the default rule is %u, not Dream's\n", (unsigned)params.commit_rule);
    } else if (status == LLADA_STATUS_OK) {
        const uint32_t algorithms[] = {LLADA_REMASKING_ORIGIN, LLADA_REMASKING_LOW_CONFIDENCE,
                                       LLADA_REMASKING_MARGIN, LLADA_REMASKING_ENTROPY};
        params.gen_length = 16;
        params.steps = 16;
        params.block_length = 16;
        params.temperature = 0.0f;
        rc = 0;
        for (size_t i = 0; i < sizeof algorithms / sizeof algorithms[0] && rc == 0; i++) {
            params.remasking = algorithms[i];
            uint32_t out[16];
            size_t out_len = 0;
            status = llada_generate_ids(context, prompt, prompt_len, &params, NULL, NULL, out,
                                        16, &out_len);
            if (status != LLADA_STATUS_OK) {
                rc = 1;
                break;
            }
            for (size_t j = 0; j < out_len; j++) printf(j ? " %u" : "%u", (unsigned)out[j]);
            printf("\n");
        }
    }
    if (status != LLADA_STATUS_OK) {
        fprintf(stderr, "%s: %s\n", llada_status_str(status), llada_last_error());
    }
    llada_context_free(context);
    llada_model_free(model);
    return rc;
}
