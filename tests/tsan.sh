#!/usr/bin/env bash
# The shared-model thread test (tests/threads.rs) under ThreadSanitizer, with the nightly
# toolchain. Its std is not instrumented (no rust-src to rebuild it), so the races TSan cannot
# see ordered inside std's own primitives are suppressed by tests/tsan-suppressions.txt, each
# with its reason. Not part of the test command (nightly, and about ten minutes to build).
#
#   tests/tsan.sh            (ORT_DYLIB_PATH is not needed: the ndarray backend only)
set -euo pipefail
cd "$(dirname "$0")/.."
export TSAN_OPTIONS="suppressions=$PWD/tests/tsan-suppressions.txt halt_on_error=1"
export RUSTFLAGS="-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/tsan}"
exec cargo +nightly test --target "$(rustc -vV | sed -n 's/^host: //p')" \
    --no-default-features --features ndarray --test threads "$@"
