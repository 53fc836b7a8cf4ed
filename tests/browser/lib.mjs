// Helpers for the browser tests: start `peerweb serve`, launch Chromium or Firefox, poll pages.
import { after } from 'node:test';
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, firefox } from 'playwright-core';

const BIN = process.env.PEERWEB_BIN;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const FIREFOX = process.env.FIREFOX ?? '/usr/bin/firefox-esr';
/** The engine launchBrowser() starts when not told: PEERWEB_BROWSER=firefox runs a Chromium
 * file in Firefox (the Firefox group names its engines itself). */
const ENGINE = process.env.PEERWEB_BROWSER ?? 'chromium';

/**
 * A throwaway CA and a server certificate it signs for `names` (DNS names or IP addresses),
 * made with openssl in a new temporary folder: `{dir, ca, cert, key, spki}` (paths, and the
 * server key's SHA-256 SPKI hash for Chromium's --ignore-certificate-errors-spki-list, which
 * trusts exactly that key). A self-signed CA certificate cannot itself be a server's, so
 * native peers trust the CA with --ca.
 */
export function makeCertificates(names) {
  const dir = mkdtempSync(join(tmpdir(), 'peerweb-certs-'));
  const ssl = (...a) => execFileSync('openssl', a, { stdio: ['ignore', 'pipe', 'ignore'] });
  const f = (n) => join(dir, n);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ssl('req', '-x509', ...ec, '-keyout', f('ca-key.pem'), '-out', f('ca.pem'), '-days', '1', '-subj', '/CN=peerweb test CA');
  ssl('req', ...ec, '-keyout', f('key.pem'), '-out', f('cert.csr'), '-subj', `/CN=${names[0]}`);
  const san = names.map((n) => (/^[\d.]+$/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
  writeFileSync(f('ext.cnf'), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\n`);
  ssl('x509', '-req', '-in', f('cert.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca-key.pem'), '-CAcreateserial',
    '-out', f('cert.pem'), '-days', '1', '-extfile', f('ext.cnf'));
  const pub = ssl('pkey', '-in', f('key.pem'), '-pubout', '-outform', 'DER');
  const spki = createHash('sha256').update(pub).digest('base64');
  return { dir, ca: f('ca.pem'), cert: f('cert.pem'), key: f('key.pem'), spki };
}

/** Writes `mib` MiB to `path`: random 1 MiB blocks with a counter (incompressible enough, quick). */
export function writeBigFile(path, mib) {
  const block = randomBytes(1 << 20);
  const fd = openSync(path, 'w');
  for (let i = 0; i < mib; i++) {
    block.writeUInt32LE(i, 0);
    writeSync(fd, block);
  }
  closeSync(fd);
  return path;
}

/**
 * Adds a veth pair `a`–`b` to this namespace with `cidr` on `a`, settled before it returns:
 * IPv6 off on both ends (no link-local address arrives a second later) and both ends up.
 * Chromium aborts a page's loads with ERR_NETWORK_CHANGED when an interface changes under
 * it, so a browser must only ever see this pair finished. Returns a function that deletes it.
 */
export async function addVeth(a, b, cidr) {
  const ip = (...args) => execFileSync('ip', args);
  ip('link', 'add', a, 'type', 'veth', 'peer', 'name', b);
  for (const n of [a, b]) writeFileSync(`/proc/sys/net/ipv6/conf/${n}/disable_ipv6`, '1');
  ip('addr', 'add', cidr, 'dev', a);
  ip('link', 'set', a, 'up');
  ip('link', 'set', b, 'up');
  const up = () => [a, b].every((n) => readFileSync(`/sys/class/net/${n}/operstate`, 'utf8').trim() === 'up');
  for (let i = 0; !up(); i++) {
    if (i >= 250) throw new Error(`veth ${a} did not come up`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return () => ip('link', 'del', a);
}

/** Servers and CLIs still running: a test that failed early leaves them waiting (a sender for
 * 10 minutes), which would keep its file's runner alive; they end with the file, and when the
 * runner ends the file early (a timeout sends SIGTERM). */
const running = new Set();
function track(proc) {
  running.add(proc);
  proc.once('exit', () => running.delete(proc));
  return proc;
}
function killAll() {
  for (const proc of running) proc.kill('SIGKILL');
}
after(killAll);
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => {
    killAll();
    process.exit(1);
  });
}

/**
 * Starts `peerweb serve` on `host` (127.0.0.1; port 0 unless given) and waits for its URL.
 * STUN/TURN listen on an ephemeral port of `host` too (not 3478) unless `args` say otherwise.
 * With `ns`, the server runs inside that network namespace.
 */
export async function startServer({ port = 0, args = [], host = '127.0.0.1', ns } = {}) {
  if (!BIN) throw new Error('PEERWEB_BIN is not set (run through run.sh)');
  const turn = args.some((a) => a === '--turn-listen' || a === '--no-turn') ? [] : ['--turn-listen', `${host}:0`];
  const argv = [BIN, 'serve', '--listen', `${host}:${port}`, ...turn, ...args];
  const [cmd, ...rest] = ns ? ['ip', 'netns', 'exec', ns, ...argv] : argv;
  const proc = track(spawn(cmd, rest, { stdio: ['ignore', 'pipe', 'inherit'] }));
  const url = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`server did not start: ${out}`)), 10000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (https?:\/\/[^\s]+?)\/?\s/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.on('exit', (code) => reject(new Error(`server exited with ${code}: ${out}`)));
  });
  return {
    url,
    proc,
    /** Kills the server at once (SIGKILL): no goodbye to anyone. */
    kill() {
      proc.kill('SIGKILL');
      return new Promise((r) => (proc.exitCode !== null || proc.signalCode ? r() : proc.once('exit', r)));
    },
    stop() {
      if (proc.exitCode !== null || proc.signalCode) return Promise.resolve();
      proc.kill('SIGTERM');
      return new Promise((r) => proc.once('exit', r));
    },
  };
}

/**
 * Debian's nginx with `server` (a block from docs/, edited for the test) in a minimal `http {}`
 * of its own, everything under `dir`; resolves once `ready()` says it serves (10 s at most).
 * Returns `{ proc, stop() }`.
 */
export async function startNginx(dir, server, ready) {
  writeFileSync(join(dir, 'nginx.conf'), `
    daemon off;
    pid ${dir}/nginx.pid;
    error_log ${dir}/error.log;
    events {}
    http {
      access_log off;
      client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir};
      uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
      map $http_upgrade $connection_upgrade { default upgrade; '' close; }
      ${server}
    }`);
  const proc = track(spawn('nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: ['ignore', 'ignore', 'inherit'] }));
  for (let i = 0; ; i++) {
    try {
      if (await ready()) break;
    } catch { /* not yet */ }
    if (i > 100 || proc.exitCode !== null) {
      throw new Error(`nginx did not come up: ${readFileSync(join(dir, 'error.log'), 'utf8')}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    proc,
    stop() {
      if (proc.exitCode !== null || proc.signalCode) return Promise.resolve();
      proc.kill('SIGTERM');
      return new Promise((r) => proc.once('exit', r));
    },
  };
}

/**
 * A headless browser — `engine` 'chromium' (the default) or 'firefox' — with camera/mic
 * granted (needed for raw-IP host candidates; with `hideAddresses` nothing is granted and the
 * browser hides host addresses behind mDNS names). With `ns`, it runs inside that network
 * namespace (a wrapper script enters it). Returns a browser context whose close() also
 * removes the profile.
 */
export async function launchBrowser({ engine = ENGINE, ...options } = {}) {
  if (engine === 'firefox') return launchFirefox(options);
  if (engine !== 'chromium') throw new Error(`unknown browser engine ${engine}`);
  return launchChromium(options);
}

/** A wrapper script in `dir` that runs `binary` inside network namespace `ns`. */
function inNamespace(dir, binary, ns) {
  const path = join(dir, 'in-ns');
  writeFileSync(path, `#!/bin/sh\nexec ip netns exec "$PEERWEB_NS" ${binary} "$@"\n`, { mode: 0o755 });
  return path;
}

async function launchChromium({ args = [], ns, hideAddresses = false, loopback = true }) {
  const dir = mkdtempSync(join(tmpdir(), 'peerweb-chromium-'));
  let executablePath = CHROMIUM;
  const env = { ...process.env };
  if (ns) {
    executablePath = inNamespace(dir, CHROMIUM, ns);
    env.PEERWEB_NS = ns;
  }
  let context;
  try {
    context = await chromium.launchPersistentContext(dir, {
      executablePath,
      env,
      headless: true,
      permissions: hideAddresses ? [] : ['camera', 'microphone'],
      viewport: { width: 1100, height: 720 },
      args: [
        '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        ...(loopback ? ['--allow-loopback-in-peer-connection'] : []), '--use-fake-ui-for-media-stream',
        '--disable-dev-shm-usage',
        ...args,
      ],
    });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const close = context.close.bind(context);
  context.close = async () => {
    await close();
    rmSync(dir, { recursive: true, force: true });
  };
  context.engine = 'chromium';
  return context;
}

/**
 * Debian's stock Firefox ESR, headless, driven over WebDriver BiDi (playwright's `moz-firefox`
 * channel; no patched browser is downloaded). One Firefox process per call, whose profile,
 * HOME and temporary files live in a folder removed on close. The preferences keep raw
 * loopback host candidates (Firefox gathers none in a loopback-only namespace without the
 * microphone permission, and skips loopback addresses without ice.loopback) and give fake
 * camera and microphone; with `hideAddresses`, host addresses are mDNS names as by default.
 */
async function launchFirefox({ ns, hideAddresses = false, prefs = {} }) {
  const dir = mkdtempSync(join(tmpdir(), 'peerweb-firefox-'));
  const env = { ...process.env, HOME: dir, TMPDIR: dir };
  let executablePath = FIREFOX;
  if (ns) {
    executablePath = inNamespace(dir, FIREFOX, ns);
    env.PEERWEB_NS = ns;
  }
  let browser;
  try {
    browser = await firefox.launch({
      channel: 'moz-firefox',
      executablePath,
      env,
      headless: true,
      firefoxUserPrefs: {
        'media.peerconnection.ice.loopback': true,
        'media.peerconnection.ice.obfuscate_host_addresses': hideAddresses,
        'permissions.default.microphone': hideAddresses ? 0 : 1,
        'permissions.default.camera': hideAddresses ? 0 : 1,
        'media.navigator.permission.disabled': true,
        'media.navigator.streams.fake': true,
        ...prefs,
      },
    });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  context.close = async () => {
    await browser.close();
    rmSync(dir, { recursive: true, force: true });
  };
  context.engine = 'firefox';
  context.version = browser.version();
  return context;
}

/**
 * A blank page at `url` (on the server's origin) in `context`, with the SDK's import map, for
 * tests that import the SDK's modules themselves. The page is handed over by the test, so it has
 * no address space: its requests to an origin on a local address need the Local Network Access
 * permission, granted here.
 */
export async function sdkPage(context, url) {
  await context.grantPermissions(['local-network-access']);
  const page = await context.newPage();
  await page.route(url, (r) => r.fulfill({
    contentType: 'text/html',
    body: '<!doctype html><script type="importmap">{ "imports": { "@noble/curves/": "/vendor/@noble/curves/", "@noble/hashes/": "/vendor/@noble/hashes/" } }</script>',
  }));
  await page.goto(url);
  return page;
}

/** Opens a tab on the server's origin and loads the SDK into `window.pw`. */
export async function openTab(context, url) {
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('[page error]', e.message));
  await page.goto(`${url}/`);
  await page.evaluate(async () => {
    window.pw = await import('/sdk/peerweb.js');
  });
  return page;
}

/**
 * Joins `room` in the tab (through `server`, by default the tab's own origin) and records what
 * happens in `window.t`: messages, peers seen, peer-left events, channel events, peer
 * connections created.
 */
export async function joinRoom(page, room, options = {}, server = null) {
  return page.evaluate(async ([room, options, server]) => {
    const t = { msgs: [], peers: [], left: [], channels: [], pcs: 0, errors: [], signaling: [] };
    window.t = t;
    const r = await window.pw.join(server ?? location.origin, room, options);
    window.room = r;
    const watch = (peer) => {
      t.pcs += 1;
      t.peers.push(peer.id);
      peer.addEventListener('channel', ({ channel }) => {
        t.channels.push({ from: peer.id, label: channel.label, ordered: channel.ordered,
          maxRetransmits: channel.maxRetransmits, maxPacketLifeTime: channel.maxPacketLifeTime });
      });
    };
    r.addEventListener('peer', ({ peer }) => watch(peer));
    for (const p of r.peers.values()) watch(p);
    r.addEventListener('peerleft', ({ peer }) => t.left.push(peer.id));
    r.addEventListener('message', ({ peer, data, channel }) => t.msgs.push({ from: peer.id, data, label: channel.label }));
    r.addEventListener('error', ({ error }) => t.errors.push(error.code));
    r.addEventListener('signaling', ({ state }) => t.signaling.push(state));
    return r.id;
  }, [room, options, server]);
}

/** The TURN entry of a server's /api/ice, keeping only the URLs that match `re`. */
export async function turnEntry(url, re) {
  const ice = await (await fetch(`${url}/api/ice`)).json();
  const turn = ice.iceServers.find((s) => s.urls.some((u) => u.startsWith('turn:')));
  return { ...turn, urls: turn.urls.filter((u) => re.test(u)) };
}

/** Polls `fn(arg)` in the page until it returns a truthy value (or throws after `timeout`). */
export async function waitFor(page, fn, arg, { timeout = 15000, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    last = await page.evaluate(fn, arg);
    if (last) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}; last value ${JSON.stringify(last)}`);
}

/** Waits until the tab's default channel to `peerId` is open. */
/**
 * What `page` got from peer `id` so far: video frames decoded, the width and codec
 * (`video/VP8`, …) of the video stream with the most, and audio bytes received (zeros while
 * there is no such peer yet).
 */
export function mediaFrom(page, id) {
  return page.evaluate(async (id) => {
    const stats = await window.room.peers.get(id)?.pc.getStats();
    let frames = 0;
    let width = 0;
    let audio = 0;
    let codec = null;
    stats?.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video' && (s.framesDecoded ?? 0) >= frames) {
        frames = s.framesDecoded ?? 0;
        width = s.frameWidth ?? 0;
        codec = stats.get(s.codecId)?.mimeType ?? codec;
      }
      if (s.type === 'inbound-rtp' && s.kind === 'audio') audio += s.bytesReceived ?? 0;
    });
    return { frames, width, audio, codec };
  }, id);
}

/**
 * Waits until `page` has decoded `more` (10) video frames from `id` beyond `from` and (unless
 * `audio` is false) more audio; returns what it got, or throws naming `what`.
 */
export async function mediaFlows(page, id, from, what, { timeout = 30000, audio = true, more = 10 } = {}) {
  const end = Date.now() + timeout;
  let m;
  while (Date.now() < end) {
    m = await mediaFrom(page, id);
    if (m.frames >= from.frames + more && (!audio || m.audio > from.audio)) return m;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: media stopped at ${JSON.stringify(m)} (from ${JSON.stringify(from)})`);
}

export function waitOpen(page, peerId) {
  return waitFor(page, (id) => window.room.peers.get(id)?.open, peerId, { what: `channel to ${peerId}` });
}

/**
 * Starts the native peer (`peerweb join --json`) in `room` (inside network namespace `ns`
 * when given); its stdout events are parsed into
 * `events`. `say(line)` sends a line to every connected peer; `stop()` closes stdin (the
 * peer leaves) and waits for it to exit.
 */
export function startNative(url, room, args = [], { ns } = {}) {
  return startCli(['join', url, room, '--json', ...args], { ns });
}

/**
 * Runs `peerweb ARGS...` (inside `ns` when given) with its JSON-line stdout parsed into
 * `events`; `exited` resolves to the exit code (or the signal's name).
 */
export function startCli(args, { ns } = {}) {
  if (!BIN) throw new Error('PEERWEB_BIN is not set (run through run.sh)');
  const argv = [BIN, ...args];
  const [cmd, ...rest] = ns ? ['ip', 'netns', 'exec', ns, ...argv] : argv;
  const proc = track(spawn(cmd, rest, { stdio: ['pipe', 'pipe', 'pipe'] }));
  const events = [];
  let stderr = '';
  let buf = '';
  proc.stdout.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try { events.push(JSON.parse(line)); } catch { events.push({ event: 'unparsed', line }); }
    }
  });
  proc.stderr.on('data', (d) => { stderr += d; });
  // 'close', not 'exit': 'exit' can come before the last of stdout and stderr has been read,
  // and a test that reads them right after would see them cut.
  const exited = new Promise((r) => proc.once('close', (code, signal) => r(code ?? signal)));
  return {
    proc,
    events,
    get stderr() { return stderr; },
    exited,
    /** Waits for an event matching `pred`; returns it. */
    async waitEvent(pred, { timeout = 15000, what = 'native event' } = {}) {
      const end = Date.now() + timeout;
      while (Date.now() < end) {
        const e = events.find(pred);
        if (e) return e;
        if (proc.exitCode !== null || proc.signalCode) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`timed out waiting for ${what}; events ${JSON.stringify(events.slice(-12))}; stderr ${stderr}`);
    },
    say(line) { proc.stdin.write(`${line}\n`); },
    /** Ends it as a service manager would (SIGTERM; SIGKILL after `timeout` ms); its exit code. */
    async terminate({ timeout = 10000 } = {}) {
      if (proc.exitCode === null && !proc.signalCode) proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), timeout);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
    /** Closes stdin (the peer leaves) and waits up to `timeout` ms for it to exit. */
    async stop({ timeout = 5000 } = {}) {
      if (proc.exitCode === null) proc.stdin.end();
      const t = setTimeout(() => proc.kill('SIGKILL'), timeout);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

/**
 * Every frame the `<video>` at `selector` presents for `ms`, read as the built-in test pattern
 * (crates/camera/src/pattern.rs) of `width`×`height` draws it: its frame number, and its
 * latency — the page's clock (ms mod 2^24) less the send time in the blocks.
 */
export function readPattern(page, selector, ms, [width, height]) {
  return page.evaluate(async ([selector, ms, W, H]) => {
    const v = document.querySelector(selector);
    const c = document.createElement('canvas');
    [c.width, c.height] = [W, H];
    const g = c.getContext('2d', { willReadFrequently: true });
    const samples = [];
    const end = Date.now() + ms;
    while (Date.now() < end) {
      await new Promise((r) => v.requestVideoFrameCallback(r));
      const now = Math.floor(performance.timeOrigin + performance.now()) % 2 ** 24;
      g.drawImage(v, 0, 0, W, H);
      const px = g.getImageData(0, 0, W, H).data;
      // 16 frame-number bits in a row of 16×16 blocks from (2, 2), then time bits in rows of 12.
      const bit = (k) => {
        const [mx, my] = k < 16 ? [2 + k, 2] : [2 + ((k - 16) % 12), 3 + Math.floor((k - 16) / 12)];
        return px[((my * 16 + 8) * W + mx * 16 + 8) * 4] > 128 ? 1 : 0;
      };
      let frame = 0;
      let sent = 0;
      for (let i = 0; i < 16; i++) frame |= bit(i) << i;
      for (let i = 0; i < 24; i++) sent |= bit(16 + i) << i;
      samples.push({ frame, latency: (now - sent + 2 ** 24) % 2 ** 24 });
    }
    return samples;
  }, [selector, ms, width, height]);
}

/** The large sizes exchanged both ways with a tab: the SDK's and str0m's 64 KiB, and 256 KiB,
 * the most Chromium, Firefox and the native peer take (their a=max-message-size). */
export const BIG_SIZES = [64 * 1024, 256 * 1024];

/** A text message of exactly `size` bytes (ASCII) that names its sender and size. */
export function big(from, size) {
  const head = `${from}:${size}:`;
  return head + 'x'.repeat(size - head.length);
}

/** Sends `big(from, size)` for each size from a tab to peer `to`. */
export function sendBig(page, to, from, sizes = BIG_SIZES) {
  return page.evaluate(([to, from, sizes]) => {
    for (const size of sizes) {
      const head = `${from}:${size}:`;
      window.room.peers.get(to).send(head + 'x'.repeat(size - head.length));
    }
  }, [to, from, sizes]);
}

/** Waits until a tab holds each big message from `from`, whole. */
export function gotBig(page, from, sizes = BIG_SIZES) {
  return waitFor(page, ([from, sizes]) => sizes.every((size) => window.t.msgs.some((m) => typeof m.data === 'string'
    && m.data.length === size && m.data.startsWith(`${from}:${size}:`) && m.data.endsWith('xxxx'))), [from, sizes],
  { what: `${sizes} bytes from ${from}`, timeout: 20000 });
}
