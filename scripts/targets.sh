#!/usr/bin/env bash
# Checks BENCHMARKS.md's ratio targets on this machine, each measured as a
# pair in one benchmark (bench/paired_test.go: ours and the peer's
# operation in alternating 20 ms batches, so a noisy host slows both
# alike), and prints each median against its target:
#
#   scripts/targets.sh        # -count 6, about a minute and a half
#   scripts/targets.sh 10     # -count 10
#
# Not part of CI, and not a test: speed lives in benchmarks. It exits 1 if
# a target is missed, so that a run can be scripted; the raw output is
# kept in a temporary file whose name it prints, for benchstat.
set -euo pipefail
cd "$(dirname "$0")/../bench"
count=${1:-6}
out=$(mktemp --suffix=.txt)
echo "==> go test -run '^\$' -bench Paired -count $count (raw output: $out)"
GOWORK=off go test -run '^$' -bench Paired -count "$count" . > "$out"
# Each line: BenchmarkPaired/NAME-P  N  ours ns/op  peer peer-ns/op  ratio UNIT
awk '
  $1 ~ /^BenchmarkPaired\// {
    name = $1; sub(/^BenchmarkPaired\//, "", name); sub(/-[0-9]+$/, "", name)
    v[name] = v[name] " " $(NF-1); unit[name] = $NF
  }
  function median(s,   a, n, i, j, t) {
    n = split(s, a, " ")
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
    return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
  }
  END {
    # target: the bound on the pair'\''s ratio, and its direction.
    max["Rotate_vs_GolangJWTSign"] = 0.5
    max["Rotate_vs_FositeRefresh"] = 0.25
    max["VerifyHS256_vs_GolangJWTParse"] = 1.0
    max["VerifyEdDSA_vs_Ed25519Verify"] = 1.1
    min["RotateParallel_vs_Rotate"] = 1.7
    failed = 0
    for (name in v) {
      m = median(v[name])
      if (name in max) { ok = m <= max[name]; want = "<= " max[name] }
      else if (name in min) { ok = m >= min[name]; want = ">= " min[name] }
      else { printf "%-34s %s %.3f (no target)\n", name, unit[name], m; continue }
      printf "%-34s %s %.3f, target %s: %s\n", name, unit[name], m, want, ok ? "met" : "MISSED"
      if (!ok) failed = 1
    }
    exit failed
  }' "$out" | sort
