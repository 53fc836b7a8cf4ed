#!/usr/bin/env bash
# The Debian package and `cargo install`, as an operator meets them: `cargo deb` builds the
# package, `dpkg -i` installs it (binary, hardened systemd unit — checked with
# systemd-analyze — and the commented configuration, which must pass --check-config), the
# service's command is started by hand (there is no systemd here) on loopback and answers,
# SIGHUP and SIGTERM behave, and the package is removed again. Then `cargo install --path`
# installs the same binary into a temporary root. Run as root (dpkg).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version 3.8.0
# Stripped: the release profile keeps line tables for backtraces, 150 MB of them.
cargo deb --locked -p peerweb --strip --output target/debian >/dev/null
deb=$(ls -t target/debian/peerweb_*.deb | head -n 1)
echo "package: $deb ($(du -h "$deb" | cut -f1))"
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  dpkg -P peerweb >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
dpkg -i "$deb" >/dev/null
test -x /usr/bin/peerweb
unit=$(dpkg -L peerweb | grep -E '/peerweb\.service$')
echo "unit: $unit"
if command -v systemd-analyze >/dev/null; then
  # Only its own problems: the missing binary paths of other units do not count.
  systemd-analyze verify "$unit" 2>&1 | grep -i peerweb.service && { echo "the unit has problems" >&2; exit 1; }
fi
grep -q '^ExecStart=/usr/bin/peerweb serve --config /etc/peerweb/peerweb.toml$' "$unit"
/usr/bin/peerweb serve --config /etc/peerweb/peerweb.toml --check-config
# The service's command, by hand, on free loopback ports.
/usr/bin/peerweb serve --config /etc/peerweb/peerweb.toml --listen 127.0.0.1:0 \
  --turn-listen 127.0.0.1:0 > "$work/out" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q 'listening on' "$work/out" && break; sleep 0.1; done
url=$(sed -n 's/^peerweb serve: listening on \(http[^ ]*\)\/$/\1/p' "$work/out")
[ -n "$url" ] || { cat "$work/out" >&2; exit 1; }
curl -fsS "$url/healthz" | grep -qx ok
kill -HUP "$pid"
curl -fsS "$url/healthz" | grep -qx ok
kill -TERM "$pid"
wait "$pid"
pid=""
echo "installed package: serves, survives SIGHUP, exits 0 on SIGTERM"
dpkg -P peerweb >/dev/null
! test -e /usr/bin/peerweb
# cargo install from the repository (the release build above is reused).
cargo install --locked --path crates/cli --root "$work/root" --target-dir target >/dev/null 2>&1
"$work/root/bin/peerweb" --version
echo "package tests: 2 passed, 0 failed"
