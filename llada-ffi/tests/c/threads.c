/*
 * Two threads generating with two contexts over one model give the same tokens as one thread
 * generating both answers in turn. Exit 0 when they agree.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "llada.h"

struct job {
    llada_model *model;
    const char *prompt;
    uint32_t out[64];
    size_t len;
    llada_status status;
};

static llada_generate_params params(void) {
    llada_generate_params p = llada_generate_default_params();
    p.steps = 16;
    p.gen_length = 16;
    p.block_length = 8;
    return p;
}

static void generate(llada_context *context, struct job *job) {
    uint32_t ids[256];
    size_t n = 0;
    job->status = llada_tokenize(job->model, job->prompt, ids, 256, &n);
    if (job->status != LLADA_STATUS_OK) return;
    llada_generate_params p = params();
    job->status = llada_generate_ids(context, ids, n, &p, NULL, NULL, job->out, 64, &job->len);
}

static void *run(void *arg) {
    struct job *job = (struct job *)arg;
    llada_context *context = NULL;
    llada_context_params cp = llada_context_default_params();
    cp.threads = 1;
    job->status = llada_context_new(job->model, &cp, &context);
    if (job->status == LLADA_STATUS_OK) generate(context, job);
    llada_context_free(context);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL_DIR PROMPT_A PROMPT_B\n", argv[0]);
        return 2;
    }
    llada_model *model = NULL;
    if (llada_model_load(argv[1], NULL, &model) != LLADA_STATUS_OK) {
        fprintf(stderr, "load: %s\n", llada_last_error());
        return 1;
    }
    struct job sequential[2] = {{model, argv[2], {0}, 0, 0}, {model, argv[3], {0}, 0, 0}};
    struct job parallel[2] = {{model, argv[2], {0}, 0, 0}, {model, argv[3], {0}, 0, 0}};

    llada_context *context = NULL;
    if (llada_context_new(model, NULL, &context) != LLADA_STATUS_OK) return 1;
    generate(context, &sequential[0]);
    generate(context, &sequential[1]);
    llada_context_free(context);

    pthread_t threads[2];
    for (int i = 0; i < 2; i++) pthread_create(&threads[i], NULL, run, &parallel[i]);
    for (int i = 0; i < 2; i++) pthread_join(threads[i], NULL);

    int rc = 0;
    for (int i = 0; i < 2; i++) {
        if (sequential[i].status != LLADA_STATUS_OK || parallel[i].status != LLADA_STATUS_OK) {
            fprintf(stderr, "job %d failed: %s / %s\n", i, llada_status_str(sequential[i].status),
                    llada_status_str(parallel[i].status));
            rc = 1;
        } else if (sequential[i].len != parallel[i].len ||
                   memcmp(sequential[i].out, parallel[i].out, sequential[i].len * sizeof(uint32_t)) != 0) {
            fprintf(stderr, "job %d: the threaded tokens differ from the sequential ones\n", i);
            rc = 1;
        }
    }
    llada_model_free(model);
    if (rc == 0) printf("two threads agree with one\n");
    return rc;
}
