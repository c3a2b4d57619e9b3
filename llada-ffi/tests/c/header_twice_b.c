/* ... and again in a second translation unit linked with the first. */
#include "llada.h"
#include "llada.h"

unsigned abi_from_b(void) { return llada_abi_version(); }
