#!/usr/bin/env bash
# Runs the browser tests inside a fresh loopback-only network namespace: Chromium (and Firefox), the
# peerweb server and node all live there, so no test packet can leave the machine.
# Usage: tests/browser/run.sh [test files...]   (PEERWEB_BIN overrides the server binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export PEERWEB_BIN=${PEERWEB_BIN:-$root/target/debug/peerweb}
[ -x "$PEERWEB_BIN" ] || { echo "run.sh: no server binary at $PEERWEB_BIN (cargo build first)" >&2; exit 2; }
ns="peerweb-browser-$$"
# Whatever a test left running in the namespace (all of it started by this run) is ended, by
# PID, after each file and at the end: a file that timed out or crashed cannot hold a port
# (3478, a fixed HTTP port) or this script's output open for the files after it.
clear_ns() { ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; }
cleanup() {
  clear_ns
  ip netns delete "$ns" 2>/dev/null || true
}
# HUP and PIPE too: a closed terminal or a reader that stopped reading (`| head`) must
# not leave the namespace behind.
trap cleanup EXIT INT TERM HUP PIPE
ip netns add "$ns"
ip -n "$ns" link set lo up
cd "$here"
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(*.test.mjs)
mkdir -p artifacts
# One node per file: a file and each of its tests get at most 10 minutes (the 1 GiB transfers
# through pages, 20: they take minutes each on two cores). Every file runs even after one
# fails, and the run fails if any did.
failed=()
for f in "${files[@]}"; do
  limit=600000
  [ "$(basename "$f")" = transfer-large.test.mjs ] && limit=1200000
  ip netns exec "$ns" node --test --test-timeout=$limit "$f" || failed+=("$f")
  clear_ns
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "browser tests failed in: ${failed[*]}" >&2
  exit 1
fi
