#!/usr/bin/env bash
# bench/compare.sh COMMIT [bench options]: the same bench on an earlier commit and on this checkout,
# back to back, then their phases side by side (bench/compare-summary.ts).
#
#   bench/compare.sh 93281b8 --only spread,hot --duration 5 --load wrk
#
# The earlier commit runs from a git worktree of its own (kept in $BENCH_BEFORE_DIR, default
# /tmp/cs-bench-<sha>, for the next comparison) with its own bench code and its own node_modules
# from `npm ci`: the checkout's node_modules cannot be linked there, since its @cs/* packages are
# relative links that resolve to this checkout's packages, the new code. Each run drops and
# recreates the bench database, so the two never overlap. Logs and JSON go to $BENCH_COMPARE_OUT
# (default a new temp folder). The exit status is non-zero when either run failed a check.
set -uo pipefail

ref=${1:?usage: bench/compare.sh COMMIT [bench options]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
sha=$(git -C "$root" rev-parse --verify --short "$ref^{commit}") || exit 2
before=${BENCH_BEFORE_DIR:-/tmp/cs-bench-$sha}
out=${BENCH_COMPARE_OUT:-$(mktemp -d /tmp/cs-bench-compare.XXXXXX)}
mkdir -p "$out"
# The ceil phases' folder is found from each tree's root; both runs use this checkout's.
ceiling=(--ceiling "$(cd "$root/.." && pwd)/shared/ceiling")

if [ ! -d "$before" ]; then
  git -C "$root" worktree add --detach "$before" "$sha" || exit 2
elif [ "$(git -C "$before" rev-parse --short HEAD)" != "$sha" ]; then
  echo "compare: $before holds $(git -C "$before" rev-parse --short HEAD), not $sha (set BENCH_BEFORE_DIR)" >&2
  exit 2
fi
if [ ! -d "$before/node_modules" ]; then
  (cd "$before" && npm ci --no-audit --no-fund) || exit 2
fi

status=0
echo "== before: $sha ($before)"
(cd "$before" && npm run --silent bench -- "${ceiling[@]}" "$@" --json "$out/before.json") 2>&1 | tee "$out/before.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "== after: $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- || echo ' with uncommitted changes') ($root)"
(cd "$root" && npm run --silent bench -- "${ceiling[@]}" "$@" --json "$out/after.json") 2>&1 | tee "$out/after.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo
echo "== $sha → $(git -C "$root" rev-parse --short HEAD), logs and JSON in $out"
if [ -f "$out/before.json" ] && [ -f "$out/after.json" ]; then
  (cd "$root" && node --import tsx bench/compare-summary.ts "$out/before.json" "$out/after.json") || status=1
fi
exit $status
