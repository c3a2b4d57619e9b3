/*
 * A LLaDA2.x model through the C ABI: its default parameters are LLaDA2's block diffusion
 * (LLADA_GRID_ABSOLUTE, LLADA_COMMIT_LLADA2 at 0.95, the prefix cache, the stop at end of
 * text), and LLaDA2.1's editing is reachable. Prints the generated ids of the chat-formatted
 * prompt on one line with the model's defaults, then on a second line with editing (0.9, at
 * most 16 edit-only passes, one token per pass below the threshold: steps = block_length).
 *
 *   llada2 MODEL PROMPT
 */
#include <stdio.h>

#include "llada.h"

static int print_ids(llada_context *context, const uint32_t *prompt, size_t prompt_len,
                     const llada_generate_params *params) {
    uint32_t out[256];
    size_t out_len = 0;
    llada_status status = llada_generate_ids(context, prompt, prompt_len, params, NULL, NULL, out,
                                             sizeof out / sizeof out[0], &out_len);
    if (status != LLADA_STATUS_OK) {
        fprintf(stderr, "llada_generate_ids: %s: %s\n", llada_status_str(status), llada_last_error());
        return 1;
    }
    for (size_t j = 0; j < out_len; j++) printf(j ? " %u" : "%u", (unsigned)out[j]);
    printf("\n");
    return 0;
}

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
    if (status != LLADA_STATUS_OK) {
        fprintf(stderr, "%s: %s\n", llada_status_str(status), llada_last_error());
    } else if (params.block_grid != LLADA_GRID_ABSOLUTE || params.commit_rule != LLADA_COMMIT_LLADA2 ||
               params.commit_value != 0.95 || params.cache != LLADA_CACHE_PREFIX ||
               !params.stop_at_eos || params.editing || params.eot_id != params.eos_id) {
        fprintf(stderr, "the defaults are not LLaDA2's: grid %u, rule %u (%g), cache %u\n",
                (unsigned)params.block_grid, (unsigned)params.commit_rule, params.commit_value,
                (unsigned)params.cache);
    } else {
        rc = print_ids(context, prompt, prompt_len, &params);
        params.editing = true;
        params.editing_threshold = 0.9;
        params.max_post_steps = 16;
        params.steps = params.block_length;
        params.stop_at_eos = false;
        if (rc == 0) rc = print_ids(context, prompt, prompt_len, &params);
    }
    llada_context_free(context);
    llada_model_free(model);
    return rc;
}
