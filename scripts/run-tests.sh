#!/usr/bin/env bash
# Runs every test. As root, the root/eBPF tests must run: a skip of any of them fails the run.
set -uo pipefail
report=$(mktemp)
python3 -m pytest -q -rs --durations=15 "$@" | tee "$report"
rc=${PIPESTATUS[0]}
if [ "$(id -u)" = 0 ] && grep -E "^SKIPPED .*\[root\]" "$report" >/dev/null; then
  echo "FAIL: root tests were skipped although running as root:" >&2
  grep -E "^SKIPPED .*\[root\]" "$report" >&2
  rc=1
fi
rm -f "$report"
exit $rc
