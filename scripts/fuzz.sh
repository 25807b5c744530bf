#!/usr/bin/env bash
# `make fuzz`: runs every fuzz target (or those named in FUZZ_TARGETS) for FUZZ_SECONDS each
# (default 60) on the nightly toolchain, starting from the committed seeds in fuzz/seeds/<target>
# and the local corpus libFuzzer grows in fuzz/corpus/<target> (not committed). Each target's
# log is target/fuzz/<target>.log; the last lines give its executions and coverage. A crash
# stops the run with the input saved under fuzz/artifacts/<target>/ (reproduce it with
# `cargo +nightly fuzz run <target> <file>`).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${FUZZ_SECONDS:-60}
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "make fuzz needs the nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
TARGETS=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
cargo +nightly fuzz build
mkdir -p target/fuzz
printf '%-16s %12s %8s %8s\n' target executions cov ft
for target in $TARGETS; do
  mkdir -p "fuzz/corpus/$target" "fuzz/seeds/$target"
  log=target/fuzz/$target.log
  # -timeout: an input that takes over 10 s is a hang, reported as a crash.
  if ! cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz target $target failed: see $log and fuzz/artifacts/$target/" >&2
    exit 1
  fi
  final=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$final")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$final")
  printf '%-16s %12s %8s %8s\n' "$target" "$execs" "$cov" "$ft"
done
