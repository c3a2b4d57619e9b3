/*
 * A GGUF file made by llama.cpp is a whole model through the C ABI: loaded from its path
 * alone (tokenizer, chat template and special ids from its metadata), it answers a prompt.
 * llama.cpp's converter declares no decoding lengths, so the bundled model's are set here.
 *
 *   gguf MODEL.gguf PROMPT
 */
#include <stdio.h>

#include "llada.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.gguf PROMPT\n", argv[0]);
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
    int rc = 1;
    if (status == LLADA_STATUS_OK) {
        params.gen_length = 16;
        params.steps = 16;
        params.block_length = 8;
        llada_chat_message message = {"user", argv[2]};
        char answer[256];
        size_t size = 0;
        status = llada_generate_chat(context, &message, 1, &params, NULL, NULL, answer,
                                     sizeof answer, &size);
        if (status == LLADA_STATUS_OK) {
            printf("%s\n", answer);
            rc = 0;
        }
    }
    if (status != LLADA_STATUS_OK) {
        fprintf(stderr, "%s: %s\n", llada_status_str(status), llada_last_error());
    }
    llada_context_free(context);
    llada_model_free(model);
    return rc;
}
