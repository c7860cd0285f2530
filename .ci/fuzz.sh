#!/usr/bin/env bash
# CI: the cargo-fuzz targets in fuzz/, each for FUZZ_SECONDS (default 15: a
# smoke pass that keeps CI under its 30 minutes; run longer by hand).
# Needs the nightly toolchain (libFuzzer's instrumentation flags are
# nightly-only); without it fuzzing is skipped, not failed. Installs
# cargo-fuzz from crates.io when it is missing. Seeds are committed in
# fuzz/seeds/<target>/; what a run discovers goes to fuzz/corpus/ and crashes
# to fuzz/artifacts/, both ignored by git. Fails if any target crashes.
#
#   FUZZ_SECONDS=300 .ci/fuzz.sh        # longer runs
#   FUZZ_TARGETS="split markdown" .ci/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-15}
toolchain=${FUZZ_TOOLCHAIN:-nightly}
# No sanitizer: the fuzzed code is safe Rust, where ASan finds nothing a panic
# would not, at twice the build and run time. Release mode, no debug
# assertions (what production runs), 16 codegen units (a faster build).
build_flags=(-O --sanitizer none --codegen-units 16)

start=$SECONDS

if ! command -v rustup >/dev/null 2>&1 || ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "== fuzzing SKIPPED: the Rust '$toolchain' toolchain is not installed (cargo-fuzz needs nightly: rustup toolchain install nightly)"
    exit 0
fi

echo "== cargo-fuzz"
t=$SECONDS
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version
install_s=$(($SECONDS - t))

echo "== build fuzz targets (cargo +$toolchain fuzz build ${build_flags[*]})"
t=$SECONDS
cargo "+$toolchain" fuzz build "${build_flags[@]}"
build_s=$(($SECONDS - t))

targets=${FUZZ_TARGETS:-$(cargo "+$toolchain" fuzz list)}

# Longest input per target: room for a few SSE frames or a request body; the
# splitter needs text longer than its largest limit (4096).
max_len() {
    case $1 in
        split) echo 12288 ;;
        sse_parser) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

failed=()
t=$SECONDS
for target in $targets; do
    echo "== fuzz $target for ${seconds}s"
    mkdir -p "fuzz/corpus/$target"
    if ! cargo "+$toolchain" fuzz run "${build_flags[@]}" "$target" \
        "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len="$(max_len "$target")" \
        -timeout=10 -print_final_stats=1 2>&1 |
        { grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' || true; }; then
        failed+=("$target")
    fi
done
run_s=$(($SECONDS - t))

echo "== fuzzing time: install ${install_s}s, build ${build_s}s, runs ${run_s}s, total $(($SECONDS - start))s"
if ((${#failed[@]})); then
    echo "== FUZZING FOUND CRASHES in: ${failed[*]}"
    echo "   inputs: fuzz/artifacts/<target>/; reproduce: cargo +$toolchain fuzz run ${build_flags[*]} <target> <file>"
    ls -l fuzz/artifacts/*/ 2>/dev/null || true
    exit 1
fi
echo "== fuzzing: no crashes"
