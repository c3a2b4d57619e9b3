// The C ABI from C++: RAII handles over llada.h, found through CMake's find_package(llada).
//
//   cmake -S examples/cpp -B build/cpp -DCMAKE_PREFIX_PATH=<prefix where llada is installed>
//   cmake --build build/cpp && build/cpp/llada_cpp_example tests/fixtures/tiny-llada "copy: pen frog"
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <llada.h>

namespace {

struct ModelDeleter {
    void operator()(llada_model *m) const noexcept { llada_model_free(m); }
};
struct ContextDeleter {
    void operator()(llada_context *c) const noexcept { llada_context_free(c); }
};
using Model = std::unique_ptr<llada_model, ModelDeleter>;
using Context = std::unique_ptr<llada_context, ContextDeleter>;

void check(llada_status status, const char *what) {
    if (status != LLADA_STATUS_OK) {
        throw std::runtime_error(std::string(what) + ": " + llada_status_str(status) + ": " +
                                 llada_last_error());
    }
}

// Generates an answer, growing the output buffer if the library asks for more room.
std::string answer(llada_context *context, const std::string &prompt, const llada_generate_params &params) {
    llada_chat_message message{"user", prompt.c_str()};
    std::vector<char> out(16);
    size_t size = 0;
    llada_status status =
        llada_generate_chat(context, &message, 1, &params, nullptr, nullptr, out.data(), out.size(), &size);
    if (status == LLADA_STATUS_BUFFER_TOO_SMALL) {
        out.resize(size);
        status = llada_generate_chat(context, &message, 1, &params, nullptr, nullptr, out.data(), out.size(), &size);
    }
    check(status, "llada_generate_chat");
    return std::string(out.data());
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s MODEL_DIR PROMPT\n", argv[0]);
        return 2;
    }
    try {
        llada_model *raw_model = nullptr;
        check(llada_model_load(argv[1], nullptr, &raw_model), "llada_model_load");
        Model model(raw_model);
        llada_context *raw_context = nullptr;
        check(llada_context_new(model.get(), nullptr, &raw_context), "llada_context_new");
        Context context(raw_context);

        // The lengths the model declares, else LLaDA's chat settings.
        llada_generate_params params;
        check(llada_model_default_generate_params(model.get(), &params),
              "llada_model_default_generate_params");
        std::printf("%s\n", answer(context.get(), argv[2], params).c_str());
        std::fprintf(stderr, "llada %s (ABI %u)\n", llada_version(), llada_abi_version());
    } catch (const std::exception &e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
