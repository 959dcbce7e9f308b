#!/usr/bin/env bash
# Runs the fuzz targets for a bounded time each, from a seed corpus built out of the
# project's own traffic, queries and files; reports executions and coverage per target;
# on a crash prints the reproducing input (hex) and its path, and exits non-zero.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     default: 60 seconds, every target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and the stable toolchain: the
# sanitizer flags cargo-fuzz passes are unstable, RUSTC_BOOTSTRAP=1 lets stable take
# them (a nightly toolchain works too: RUSTUP_TOOLCHAIN=nightly fuzz/run.sh).
#
# The targets are built once (release, debug assertions, AddressSanitizer) into
# fuzz/target/. The corpus each target grows is kept in fuzz/corpus/<target>/ and reused
# by the next run; seeds are rewritten in target/fuzz-seeds/<target>/ on every run;
# crashes go to fuzz/artifacts/<target>/ and the runs' logs to target/fuzz-logs/.
# Extra libFuzzer flags: FUZZ_ARGS="-jobs=2 -workers=2" fuzz/run.sh 600 decode.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
[[ $secs =~ ^[0-9]+$ ]] || { echo "usage: fuzz/run.sh [SECONDS] [TARGET...]" >&2; exit 2; }
shift || true
export RUSTC_BOOTSTRAP=1

cargo fuzz --version >/dev/null 2>&1 || {
  echo "fuzz/run.sh: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 1
}
all=$(cargo fuzz list)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets <<<"$all"
for t in "${targets[@]}"; do
  grep -qx -- "$t" <<<"$all" || { echo "fuzz/run.sh: no fuzz target '$t' (have: $(echo $all))" >&2; exit 2; }
done

# The fuzz crate has a workspace (and lock file) of its own: start from the main
# crate's lock so both build the same dependency versions.
[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock

echo "fuzz/run.sh: building the seed corpus"
seeds=target/fuzz-seeds
rm -rf "$seeds"
cargo run --quiet --example fuzz_seeds -- "$seeds"

echo "fuzz/run.sh: building the fuzz targets (release, AddressSanitizer)"
cargo fuzz build
bin_dir=fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release

logs=target/fuzz-logs
mkdir -p "$logs"
failed=()
summary=()
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  artifacts=fuzz/artifacts/$t
  log=$logs/$t.log
  mkdir -p "$corpus" "$artifacts"
  before=$(find "$corpus" -type f | wc -l)
  echo
  echo "=== $t: ${secs}s, corpus $corpus ($before inputs), seeds $seeds/$t"
  status=0
  # shellcheck disable=SC2086 # FUZZ_ARGS are separate flags
  "$bin_dir/$t" -max_total_time="$secs" -print_final_stats=1 -timeout=20 \
    -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} "$corpus" "$seeds/$t" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  after=$(find "$corpus" -type f | wc -l)
  line="$t: ${execs:-?} execs (${rate:-?}/s), cov: ${cov:-?} ft: ${ft:-?}, corpus $after (+$((after - before))), peak rss ${rss:-?} MB"
  if [ "$status" = 0 ]; then
    echo "$line"
    summary+=("ok     $line")
    continue
  fi
  failed+=("$t")
  summary+=("FAILED $line")
  echo "$t: FAILED (exit $status); the panic and the end of $log:"
  grep -A12 -m1 'panicked at' "$log" || true
  echo "..."
  grep -v -E '^#[0-9]+|^INFO:' "$log" | tail -40
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
  if [ -n "$artifact" ] && [ -f "$artifact" ]; then
    size=$(wc -c <"$artifact")
    echo
    echo "reproducing input: $artifact ($size bytes)"
    head -c 65536 "$artifact" | od -An -tx1 -v | sed 's/^ //'
    [ "$size" -le 65536 ] || echo "(first 64 KiB shown)"
    echo "reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $t $artifact"
  else
    echo "(no reproducing input was written; see $log)"
  fi
done

echo
echo "=== fuzzing summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz/run.sh: crashes in: ${failed[*]}" >&2
  exit 1
fi
