/* The header included twice in one translation unit (include guard) ... */
#include "llada.h"
#include "llada.h"

unsigned abi_from_b(void);

int main(void) { return llada_abi_version() == abi_from_b() && abi_from_b() == LLADA_ABI_VERSION ? 0 : 1; }
