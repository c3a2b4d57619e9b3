// The header compiles as C++17 and its functions link with C linkage.
#include "llada.h"

#include <cstdio>

int main() {
    llada_generate_params p = llada_generate_default_params();
    std::printf("%s %u %u\n", llada_version(), llada_abi_version(), p.steps);
    return llada_abi_version() == LLADA_ABI_VERSION ? 0 : 1;
}
