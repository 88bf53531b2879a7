#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: property-based fuzzing with proptest (the toolchain
# here is stable, where cargo-fuzz cannot run). Each target takes random and mangled input and
# must answer without a panic or a server error; proptest shrinks any failure to a minimal case
# and prints it (add it to the target's tests as a regression).
#
#   scripts/fuzz.sh              # 60 s a target
#   scripts/fuzz.sh 300          # 300 s a target
#
# The test suite (scripts/test.sh, and CI) runs the same targets with a few cases each.
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${1:-60}"
export SALLYPORT_FUZZ_CASES="${SALLYPORT_FUZZ_CASES:-1000000}"
export PROPTEST_CASES="${PROPTEST_CASES:-1000000}"
targets=(
  "config parser|-p sallyport-config -E binary(fuzz)"
  "sandbox v1 and v2 bodies|-p sallyport-sandbox -E binary(fuzz)"
  "API JSON bodies|-p sallyport-server -E binary(in_process)&test(any_api_body)"
  "timestamp parsing|-p sallyport-sources -E test(iso_times_read_back)"
  "PostgreSQL NUMERIC decoding|-p sallyport-sources -E test(numerics_decode)"
  "JSON encoding and fingerprints|-p sallyport-destinations -E test(properties)"
)
cargo nextest run --workspace --no-run >/dev/null 2>&1 || cargo nextest run --workspace --no-run
status=0
for t in "${targets[@]}"; do
  name="${t%%|*}"; args="${t#*|}"
  start=$(date +%s)
  # A target that runs out of time without failing has passed its budget: timeout's 124.
  set +e
  # shellcheck disable=SC2086
  timeout --signal=INT "$budget" cargo nextest run --no-fail-fast $args >/tmp/sallyport-fuzz.log 2>&1
  rc=$?
  set -e
  took=$(( $(date +%s) - start ))
  if [ $rc -eq 0 ] || [ $rc -eq 124 ] || [ $rc -eq 130 ]; then
    if grep -q "FAIL \[" /tmp/sallyport-fuzz.log; then
      echo "fuzz: $name: FAILED after ${took}s"; grep -A 20 "minimal failing input\|panicked" /tmp/sallyport-fuzz.log | head -40; status=1
    else
      echo "fuzz: $name: no failure in ${took}s"
    fi
  else
    echo "fuzz: $name: FAILED after ${took}s"; grep -A 20 "minimal failing input\|panicked" /tmp/sallyport-fuzz.log | head -40; status=1
  fi
done
exit $status
