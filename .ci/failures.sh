#!/usr/bin/env bash
# Prints every failing assertion of the last tap run, with the lines around it, at the END of the CI log: CI shows only
# the log's tail, and a failure in one of 60 files scrolls out of it (a run failed with "fail: 1" and no name).
# Reads the TAP output tap keeps per test file in .tap/test-results; prints nothing when nothing failed.
set -euo pipefail
cd "$(dirname "$0")/.."

results=.tap/test-results
[ -d "$results" ] || exit 0
grep -rlE '^[[:space:]]*not ok ' "$results" 2>/dev/null | while read -r file; do
  echo "=== failures in ${file#"$results"/}"
  grep -nE -B3 -A25 '^[[:space:]]*not ok ' "$file" | head -n 200
done
