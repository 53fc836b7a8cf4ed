#!/usr/bin/env bash
# Runs the browser tests inside a fresh loopback-only network namespace: Chromium, the
# peerweb server and node all live there, so no test packet can leave the machine.
# Usage: tests/browser/run.sh [test files...]   (PEERWEB_BIN overrides the server binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export PEERWEB_BIN=${PEERWEB_BIN:-$root/target/debug/peerweb}
[ -x "$PEERWEB_BIN" ] || { echo "run.sh: no server binary at $PEERWEB_BIN (cargo build first)" >&2; exit 2; }
ns="peerweb-browser-$$"
# Whatever a crashed test left running in the namespace (all started by this run) goes too,
# so it cannot hold a port or this script's output open.
cleanup() {
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns delete "$ns" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
ip netns add "$ns"
ip -n "$ns" link set lo up
cd "$here"
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(*.test.mjs)
mkdir -p artifacts
ip netns exec "$ns" node --test --test-concurrency=1 --test-timeout=600000 "${files[@]}"
