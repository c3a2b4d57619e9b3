/*
 * Generates an answer with the bundled tiny model (or any LLaDA model directory) through the
 * C ABI, showing the denoising as it happens.
 *
 *   cargo build --release -p llada-ffi
 *   cc -std=c99 -Iinclude examples/c/generate.c -Ltarget/release -lllada -o generate
 *   LD_LIBRARY_PATH=target/release ./generate tests/fixtures/tiny-llada "reverse: apple river stone"
 */
#include <stdio.h>
#include <string.h>

#include "llada.h"

static bool on_step(const llada_step_event *event, void *user_data) {
    unsigned *steps = (unsigned *)user_data;
    *steps += 1;
    fprintf(stderr, "\rblock %u/%u step %u/%u: %s\x1b[K", event->block + 1, event->num_blocks,
            event->step + 1, event->steps_per_block, event->text);
    return true; /* false would cancel */
}

static int fail(const char *what, llada_status status) {
    fprintf(stderr, "%s failed: %s: %s\n", what, llada_status_str(status), llada_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL_DIR PROMPT\n", argv[0]);
        return 2;
    }
    if (llada_abi_version() != LLADA_ABI_VERSION) {
        fprintf(stderr, "header and library ABI versions differ\n");
        return 1;
    }

    llada_model *model = NULL;
    llada_model_params model_params = llada_model_default_params();
    llada_status status = llada_model_load(argv[1], &model_params, &model);
    if (status != LLADA_STATUS_OK) return fail("llada_model_load", status);

    llada_context *context = NULL;
    status = llada_context_new(model, NULL, &context);
    if (status != LLADA_STATUS_OK) {
        llada_model_free(model);
        return fail("llada_context_new", status);
    }

    /* The lengths the model declares (the bundled one: 16 tokens, 16 steps, blocks of 8),
     * else LLaDA's chat settings; set any field to override. */
    llada_generate_params params;
    status = llada_model_default_generate_params(model, &params);
    if (status != LLADA_STATUS_OK) {
        llada_context_free(context);
        llada_model_free(model);
        return fail("llada_model_default_generate_params", status);
    }

    llada_chat_message message = {"user", argv[2]};
    char answer[1024];
    size_t size = 0;
    unsigned steps = 0;
    status = llada_generate_chat(context, &message, 1, &params, on_step, &steps, answer,
                                 sizeof answer, &size);
    fprintf(stderr, "\n");
    int rc = 0;
    if (status == LLADA_STATUS_OK) {
        printf("%s\n", answer);
        fprintf(stderr, "%u steps\n", steps);
    } else {
        rc = fail("llada_generate_chat", status);
    }
    llada_context_free(context);
    llada_model_free(model);
    return rc;
}
