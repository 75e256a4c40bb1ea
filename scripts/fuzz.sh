#!/usr/bin/env bash
# Runs every fuzz target of the core module for a bounded time each
# (default 10s): scripts/fuzz.sh 30s. New crashers land in testdata/fuzz and
# become regression tests of the ordinary test run.
#
# A target fails the run if it records a crasher. A failure that records
# none (the fuzzing engine losing a worker on a loaded machine) is printed
# in full and retried once; failing again fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' *_test.go | sed 's/^func //')
log=$(mktemp)
trap 'rm -f "$log"' EXIT
crashers() { if [ -d "testdata/fuzz/$1" ]; then find "testdata/fuzz/$1" -type f | wc -l; else echo 0; fi; }
for f in $targets; do
  for try in 1 2; do
    echo "==> fuzz $f ($t)"
    before=$(crashers "$f")
    if GOWORK=off go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" . >"$log" 2>&1; then
      tail -n 3 "$log"
      break
    fi
    tail -n 40 "$log"
    if [ "$(crashers "$f")" != "$before" ]; then
      echo "FAIL: $f recorded a crasher in testdata/fuzz/$f: commit it with the fix"
      exit 1
    fi
    [ $try = 2 ] && { echo "FAIL: $f"; exit 1; }
    echo "==> $f failed without recording a crasher; retrying once"
  done
done
