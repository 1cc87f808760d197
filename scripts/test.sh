#!/usr/bin/env bash
# The test command (README and .ci/run): installs what it needs, builds, then runs the unit
# tests (test/, no root) and the kernel-facing tests (native-tests/, root; they skip with a
# message otherwise). Ends with one line `N passed, N failed[, N skipped]`; exits non-zero
# on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
logdir=$(mktemp -d /tmp/tunlb-test.XXXXXX)
passed=0 failed=0 skipped=0

if ! bash scripts/install-deps.sh; then
  echo "install/build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

if ! npm run --silent typecheck; then
  echo "typecheck failed"
  failed=$((failed + 1))
else
  passed=$((passed + 1))
fi

run_suite() { # name, ava config
  local name=$1 cfg=$2 out="$logdir/$1.tap"
  echo "== $name tests"
  npx ava --config "$cfg" --tap 2>&1 | tee "$out"
  local p f s
  p=$(grep -E '^# pass ' "$out" | awk '{print $3}' | tail -1)
  f=$(grep -E '^# fail ' "$out" | awk '{print $3}' | tail -1)
  s=$(grep -E '^# skip ' "$out" | awk '{print $3}' | tail -1)
  # AVA reports uncaught exceptions, timeouts and unhandled rejections as `not ok` lines too.
  [ -z "$p" ] && [ -z "$f" ] && { echo "$name: no TAP summary (runner crashed?)"; f=1; }
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
}
run_suite unit ava.config.cjs
run_suite native ava.native.config.cjs

echo "logs: $logdir"
if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
