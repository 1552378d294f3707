#!/usr/bin/env bash
# Bounded fuzzing of the shorthand parser, the QMP frame decoder and the JSON
# renderer (issue 4).  Usage:
#
#     bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60; the targets default to all of them
# (shorthand, decoder, render).  Installs cargo-fuzz if it is missing.  The
# toolchain is stable, so RUSTC_BOOTSTRAP=1 unlocks the -Z flags cargo-fuzz
# needs.  The build goes to fuzz/target (its own workspace: the main build is
# not touched).  The committed seeds in fuzz/corpus/<target> are only read;
# inputs found during the run go to fuzz/target/corpus/<target>, crashes to
# fuzz/artifacts/<target>/.
#
# Environment: FUZZ_SANITIZER=address|none (default address).
#
# Exits non-zero if any target crashed, leaked, timed out or ran out of memory.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

secs=${1:-60}
shift || true
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(shorthand decoder render)
sanitizer=${FUZZ_SANITIZER:-address}

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=$root/fuzz/target

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# Pin the build to the host triple (cargo-fuzz needs it for the sanitizer).
triple=$(rustc -vV | sed -n 's/^host: //p')
build_flags=(--fuzz-dir fuzz -s "$sanitizer" -a --target "$triple")

echo "==> building fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build "${build_flags[@]}" "${targets[@]:0:1}" >/dev/null
for t in "${targets[@]:1}"; do
    cargo fuzz build "${build_flags[@]}" "$t" >/dev/null
done

status=0
summary=()
for t in "${targets[@]}"; do
    seeds=fuzz/corpus/$t
    work=fuzz/target/corpus/$t
    log=fuzz/target/fuzz-$t.log
    mkdir -p "$work" "fuzz/artifacts/$t"
    echo "==> fuzzing $t for ${secs}s (log: $log)"
    rc=0
    # The first corpus directory receives new inputs; the seeds are read only.
    cargo fuzz run "${build_flags[@]}" "$t" "$work" "$seeds" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" |
        awk '{ s += $1 } END { print s + 0 }')
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" |
        awk '{ s += $1 } END { print s + 0 }')
    units=$(find "$work" -type f | wc -l)
    if [ "$rc" -eq 0 ] && ! grep -q '^==[0-9]*== *ERROR\|^SUMMARY: \|panicked at' "$log"; then
        line="$t: ok, $runs runs in ${secs}s ($rate exec/s), corpus $units inputs"
    else
        status=1
        line="$t: FAILED (exit $rc) after $runs runs; see $log and fuzz/artifacts/$t/"
        grep -m 20 'panicked at\|ERROR\|SUMMARY\|Test unit written\|^Output of' "$log" >&2 || true
    fi
    echo "$line"
    summary+=("$line")
done

echo
echo "==> summary"
printf '%s\n' "${summary[@]}"
exit "$status"
