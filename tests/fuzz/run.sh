#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each (default 600), two at a time, with
# allocation bombs (-malloc_limit_mb) and hangs (-timeout) counted as findings. The seed
# corpora (corpus/<target>) stay as committed; what the fuzzer learns goes to
# tests/fuzz/target/evolved/<target> (git-ignored); findings go to tests/fuzz/artifacts/<target>/,
# to be minimised (`cargo +nightly fuzz tmin --fuzz-dir tests/fuzz`) into
# tests/fuzz/regressions/<target>/ with a fix.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../.."
F=tests/fuzz
seconds="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(gguf safetensors config chat c_abi sampler)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for t in "${targets[@]}"; do cargo +nightly fuzz build --fuzz-dir "$F" -O "$t" 2>&1 | tail -1; done
run() {
    local t="$1"
    mkdir -p "$F/target/evolved/$t" "$F/artifacts/$t"
    cargo +nightly fuzz run --fuzz-dir "$F" -O "$t" "$F/target/evolved/$t" "$F/corpus/$t" -- \
        -max_total_time="$seconds" -malloc_limit_mb=512 -rss_limit_mb=1024 -timeout=10 \
        -max_len=65536 -artifact_prefix="$F/artifacts/$t/" -print_final_stats=1 \
        >"$F/target/$t.log" 2>&1 || true
    echo "== $t: $(grep -E 'stat::number_of_executed_units|cov:' "$F/target/$t.log" | tail -2 | tr '\n' ' ')"
    ls "$F/artifacts/$t" 2>/dev/null | sed "s|^|   finding: $F/artifacts/$t/|"
}
for ((i = 0; i < ${#targets[@]}; i += 2)); do
    run "${targets[i]}" &
    if [ $((i + 1)) -lt ${#targets[@]} ]; then run "${targets[i + 1]}" & fi
    wait
done
