#!/usr/bin/env bash
# Runs every fuzz target of the core module for a bounded time each
# (default 10s): scripts/fuzz.sh 30s. New crashers land in testdata/fuzz and
# become regression tests of the ordinary test run.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' *_test.go | sed 's/^func //')
for f in $targets; do
  echo "==> fuzz $f ($t)"
  GOWORK=off go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" . 2>&1 | tail -n 3
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "FAIL: $f"; exit 1; }
done
