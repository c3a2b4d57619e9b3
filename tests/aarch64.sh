#!/usr/bin/env bash
# The ndarray backend's tests for aarch64 (phones, Apple Silicon, Arm servers), run under
# qemu-user on this x86-64 machine: `.ci/test` calls it. qemu gives correctness, not speed.
#
# The rustup toolchain has no aarch64 standard library and cannot fetch one here, so this
# installs Debian's (once; quick when already there): rustc-web with libstd-rust-web-dev:arm64
# and its clippy, the aarch64 linker, and qemu-user. Binaries run on the arm64 glibc that
# comes with it; a `-L /usr/aarch64-linux-gnu` prefix (the cross-compiler's older glibc) hangs
# in pthread_create.
#
# Two emulated CPUs, both selecting the NEON kernel (the tests assert it ran):
#   - `-cpu max`: every extension (dotprod, i8mm, fp16, sve): integer products with `sdot`;
#   - `-cpu cortex-a72`: plain ARMv8.0 NEON, as the oldest 64-bit phones have: integer
#     products with `smull`/`sadalp`.
# Three eval sets are shared between them, every task sampled (LLADA_EVAL_ITEMS=r%n): the
# bundled model in f32 (token for token against PyTorch, as on x86), its llama.cpp Q8_0 file
# and the second fixture's Q4_K_M file (token for token against the x86 run). All of them on
# both CPUs would take about 22 minutes under qemu on 2 cores; these parts take about 7.
#
# Usage: tests/aarch64.sh   (from anywhere; target/aarch64 holds the build)
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null \
    || [ ! -d /usr/lib/rustlib/$target/lib ] || [ ! -e /lib/ld-linux-aarch64.so.1 ] \
    || [ ! -x /usr/bin/clippy-driver ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo dpkg --add-architecture arm64
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
        rustc-web rust-web-clippy libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu \
        libc6-dev-arm64-cross qemu-user
    # The downloaded packages are not needed once installed: their disk goes to the build.
    $sudo apt-get clean
fi

export RUSTC=/usr/bin/rustc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-D warnings"
cargo_test() {
    cargo test --release --locked -p llada-ndarray --target $target --target-dir target/aarch64 "$@"
}
# Not `quantized`: it scores the eval set on four quantized models (over 10 minutes under
# qemu); `gguf` checks llama.cpp's quantized files against their dequantized weights, `int8`
# the integer products against the widened ones, and the lib's unit tests each integer kernel
# against its reference, bit for bit.
quick_tests=(--lib --test parity --test dream --test llada_moe --test llada2 --test kernel_choice --test no_alloc --test cache
    --test loading --test gguf --test int8)

# Clippy on the aarch64-only code (NEON kernels), which the x86-64 clippy run compiles out.
RUSTC_WORKSPACE_WRAPPER=/usr/bin/clippy-driver cargo check --locked -p llada-ndarray \
    --all-targets --target $target --target-dir target/aarch64
cargo_test --no-run
# The C ABI as a phone app links it: a static library with the ndarray backend only (no ONNX
# Runtime, no Python), linked into the C example.
cargo build --release --locked -p llada-ffi --no-default-features --target $target \
    --target-dir target/aarch64
lib=target/aarch64/$target/release
aarch64-linux-gnu-gcc -std=c99 -O2 -Iinclude examples/c/generate.c $lib/libllada.a \
    -lpthread -ldl -lm -o $lib/generate-c
for file in libllada.a libllada.so; do
    aarch64-linux-gnu-strip --strip-debug -o $lib/stripped-$file $lib/$file
    echo "$file for $target, debug info stripped: $(du -k $lib/stripped-$file | cut -f1) KiB"
done

for cpu in max cortex-a72; do
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu $cpu"
    echo "== aarch64 (qemu -cpu $cpu)"
    # The hostile-header test re-executes itself under `ulimit -v` through the host's shell,
    # which cannot exec an aarch64 binary without binfmt_misc; it runs on x86.
    cargo_test "${quick_tests[@]}" -- --skip hostile_headers
    case $cpu in
        max) f32=0%4 quantized=0%5 k_quants=0%12 ;;
        *) f32=1%4 quantized=1%5 k_quants=1%12 ;;
    esac
    LLADA_EVAL_ITEMS=$f32 cargo_test --test generate
    # Q8_0 items from one share, Q4_K_M from the other (the K-quant model is 3x slower).
    LLADA_EVAL_ITEMS=$quantized LLADA_EVAL_MODELS=tiny-llada-q8_0 cargo_test --test quantized_eval
    LLADA_EVAL_ITEMS=$k_quants LLADA_EVAL_MODELS=small-llada-q4_k_m cargo_test --test quantized_eval
    answer=$(qemu-aarch64 -cpu $cpu $lib/generate-c tests/fixtures/tiny-llada "reverse:pen,frog,rock" 2>/dev/null)
    if [ "$answer" != "rock,frog,pen" ]; then
        echo "the aarch64 C example answered '$answer', expected 'rock,frog,pen'" >&2
        exit 1
    fi
    echo "C example on the static library: $answer"
done
