#!/usr/bin/env bash
# The NAT lab alone — the connectivity matrix, and swarms through NAT: Chromium and native
# peers in homes behind kernel NAT, peerweb serve on the public network, all in network
# namespaces this run creates and deletes.
# Usage: tests/natlab/run.sh            PEERWEB_WRITE_REPORT=1 also rewrites docs/connectivity.md
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export PEERWEB_BIN=${PEERWEB_BIN:-$root/target/debug/peerweb}
[ -x "$PEERWEB_BIN" ] || { echo "natlab: no server binary at $PEERWEB_BIN (cargo build first)" >&2; exit 2; }
export PEERWEB_LAB="pwl$$"
# HUP and PIPE too: a closed terminal or a reader that stopped reading must not leave the
# lab's namespaces behind.
trap '"$here/lab.sh" down "$PEERWEB_LAB"' EXIT INT TERM HUP PIPE
[ -d "$root/tests/browser/node_modules/playwright-core" ] || (cd "$root/tests/browser" && npm ci --no-audit --no-fund --loglevel=error)
cd "$here"
node --test --test-concurrency=1 --test-timeout=600000 "$@" matrix.test.mjs swarm.test.mjs
