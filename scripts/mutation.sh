#!/usr/bin/env bash
# Mutation testing of the core module's own files with gremlins: each
# condition, comparison and arithmetic operator of the files named is
# changed in turn, and the core tests must fail for each change.
#
#   scripts/mutation.sh handler.go middleware.go introspect.go
#
# Not part of CI: about ten seconds per mutant on two cores (185 mutants of
# those three files: 26 minutes). A mutant that LIVED is a rule no test
# can fail, or an equivalent change (a check repeated later, one that only
# changes speed); the first kind wants a test.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: $0 FILE.go..." >&2; exit 2; }
bin=$(go env GOPATH)/bin/gremlins-v0.6.0
if [ ! -x "$bin" ]; then
  tmp=$(mktemp -d)
  GOBIN=$tmp go install github.com/go-gremlins/gremlins/cmd/gremlins@v0.6.0
  mkdir -p "$(dirname "$bin")" && mv "$tmp/gremlins" "$bin" && rm -rf "$tmp"
fi
keep=" $* "
# Only the named files of the core package: the other modules live in
# subdirectories, and the core's other files are left as they are.
ex=(-E '/' -E '_test\.go$')
for f in *.go; do
  case "$f" in *_test.go) continue ;; esac
  [[ "$keep" == *" $f "* ]] || ex+=(-E "^$f\$")
done
GOFLAGS=-failfast exec "$bin" unleash --invert-logical --workers 1 --timeout-coefficient 5 "${ex[@]}" .
