// The call benchmark (bench/run-call): the same four-participant mesh call in headless Chromium
// built on peerweb (`room.call()`) and on the PeerJS client's call API (npm `peerjs` against
// the PeerJS server, npm `peer`), in one run. Each tab sends a 320×240 canvas at 30 fps whose
// blocks encode the time it was drawn, and a tone. Measured per system:
//   - time from joining to the first decoded frame from every other participant;
//   - glass-to-glass latency, p50/p95: each received frame's blocks read back when it is
//     presented (requestVideoFrameCallback), against the same clock;
//   - CPU per participant over 10 s of the call (every Chromium process's time / 4);
//   - recovery after one participant's network changes (UDP on its selected ports dropped):
//     time until its video reaches the others again (PeerJS does not restart ICE).
// Run inside a network namespace with only loopback (run-call makes it), or, for the 50 ms
// link, inside one end of bench's emulated link (`netlab`) with `--host` its address and
// `--far-ns` the other end: participants 2 and 3 then run in a browser there, and latency is
// read on the pairs that cross the link.
// Usage: node call-bench.mjs PEERWEB_BIN [--label loopback] [--seconds 10] [--host IP --far-ns NS]
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { readFileSync, readdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const [bin, ...rest] = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? rest[i + 1] : dflt;
};
const LABEL = opt('label', 'loopback');
const SECONDS = Number(opt('seconds', 10));
const HOST = opt('host', '127.0.0.1');
const FAR_NS = opt('far-ns', null);
/** Whether participant `i` runs at the far end of the link (with `--far-ns`). */
const far = (i) => FAR_NS !== null && i >= 2;
const N = 4;
const RECOVERY_LIMIT_MS = 60000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Starts a process and resolves once a line of its output matches `ready`. */
function start(cmd, args, ready) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    const look = (d) => {
      out += d;
      const m = out.match(ready);
      if (m) resolve({ proc, match: m });
    };
    proc.stdout.on('data', look);
    proc.stderr.on('data', look);
    proc.once('exit', (code) => reject(new Error(`${cmd} exited with ${code}: ${out}`)));
  });
}

/** CPU seconds of every Chromium process (utime + stime from /proc). */
function chromiumCpu() {
  const hz = 100;
  let ticks = 0;
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      if (!/chrom/i.test(comm)) continue;
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch { /* gone */ }
  }
  return ticks / hz;
}

// The in-page harness, the same for both systems: the canvas source, the reader, the stats.
const HARNESS = `
window.bench = { first: {}, lat: [], startedAt: 0, frames: {} };
const W = 320, H = 240, BITS = 24, MOD = 2 ** BITS;
const clock = () => Math.floor(performance.timeOrigin + performance.now()) % MOD;
window.makeSource = () => {
  const c = document.createElement('canvas');
  c.width = W; c.height = H;
  const g = c.getContext('2d');
  const draw = () => {
    const t = clock();
    g.fillStyle = '#808080'; g.fillRect(0, 0, W, H);
    for (let i = 0; i < BITS; i++) {
      g.fillStyle = (t >> i) & 1 ? '#fff' : '#000';
      g.fillRect((i % 8) * 40, Math.floor(i / 8) * 40 + 60, 40, 40);
    }
    requestAnimationFrame(draw);
  };
  draw();
  const stream = c.captureStream(30);
  const ac = new AudioContext();
  const osc = ac.createOscillator();
  const dst = ac.createMediaStreamDestination();
  osc.connect(dst); osc.start();
  stream.addTrack(dst.stream.getAudioTracks()[0]);
  return stream;
};
const reader = document.createElement('canvas');
reader.width = W; reader.height = H;
const rg = reader.getContext('2d', { willReadFrequently: true });
window.watchVideo = (from, stream) => {
  const v = document.createElement('video');
  v.muted = true; v.autoplay = true; v.playsInline = true;
  v.srcObject = stream;
  document.body.append(v);
  v.play().catch(() => {});
  const onFrame = () => {
    const now = clock();
    bench.frames[from] = (bench.frames[from] ?? 0) + 1;
    if (bench.first[from] === undefined) bench.first[from] = performance.timeOrigin + performance.now();
    rg.drawImage(v, 0, 0, W, H);
    const px = rg.getImageData(0, 0, W, H).data;
    let t = 0;
    for (let i = 0; i < BITS; i++) {
      const x = (i % 8) * 40 + 20, y = Math.floor(i / 8) * 40 + 80;
      if (px[(y * W + x) * 4] > 128) t |= 1 << i;
    }
    if (bench.measuring) bench.lat.push([from, (now - t + MOD) % MOD]);
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);
};
/** Local UDP ports of the selected pairs of every connection of this tab. */
window.selectedPorts = async (pcs) => {
  const ports = [];
  for (const pc of pcs) {
    const r = await pc.getStats();
    r.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        const local = r.get(r.get(s.selectedCandidatePairId).localCandidateId);
        if (local?.protocol === 'udp') ports.push(local.port);
      }
    });
  }
  return ports;
};
`;

const PEERWEB = {
  name: 'peerweb',
  async join(page, i, url) {
    await page.evaluate(async ([url, i]) => {
      // The SDK's modules load with the page (as the PeerJS page loads its bundle), not
      // inside the timed join.
      const { join } = await import('/sdk/peerweb.js');
      await import('/sdk/call.js');
      await import('/transfer/words.js');
      const stream = window.makeSource();
      bench.startedAt = performance.timeOrigin + performance.now();
      // Straight into the call, as a PeerJS call carries its media from the first offer.
      window.room = await join(url, 'bench-call', { meta: { name: `p${i}` }, reportConnectivity: false, call: { stream } });
      window.call = window.room.activeCall;
      window.call.addEventListener('track', ({ peer, track, label }) => {
        if (label === 'camera') window.watchVideo(peer.meta?.name ?? peer.id, new MediaStream([track]));
      });
    }, [url, i]);
  },
  pcs: 'window.call ? [...window.room.peers.values()].map((p) => p.pc) : []',
};

const PEERJS = {
  name: 'PeerJS',
  async join(page, i, url, peerjsPort) {
    await page.evaluate(async ([i, port, n, host]) => {
      const stream = window.makeSource();
      bench.startedAt = performance.timeOrigin + performance.now();
      window.pcs = [];
      const peer = new window.Peer(`p${i}`, { host, port, path: '/', secure: false, config: { iceServers: [] } });
      window.peer = peer;
      const take = (call) => {
        window.pcs.push(call.peerConnection);
        call.on('stream', (remote) => {
          if (!window.seen?.has(call.peer)) {
            (window.seen ??= new Set()).add(call.peer);
            window.watchVideo(call.peer, remote);
          }
        });
      };
      peer.on('call', (call) => { call.answer(stream); take(call); });
      await new Promise((resolve, reject) => { peer.on('open', resolve); peer.on('error', reject); });
      // Joining in order: each calls the ones already there.
      for (let j = 0; j < i; j++) take(peer.call(`p${j}`, stream));
    }, [i, peerjsPort, N, HOST]);
  },
  pcs: '(window.pcs ?? []).filter((pc) => pc)',
};

function pct(list, p) {
  if (!list.length) return null;
  const s = [...list].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

/** Chromium, in the far namespace with `ns` (through a wrapper script in `dir`). */
function launch(dir, urls, ns) {
  let executablePath = '/usr/bin/chromium';
  if (ns) {
    executablePath = join(dir, `chromium-in-${ns}`);
    writeFileSync(executablePath, `#!/bin/sh\nexec ip netns exec ${ns} /usr/bin/chromium "$@"\n`, { mode: 0o755 });
  }
  return chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--use-fake-ui-for-media-stream', '--autoplay-policy=no-user-gesture-required',
      '--allow-loopback-in-peer-connection', '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
      '--disable-backgrounding-occluded-windows',
      // Off loopback the pages are plain http to an address.
      `--unsafely-treat-insecure-origin-as-secure=${urls.peerweb},${urls.static}`],
  });
}

async function runSystem(sys, urls) {
  const dir = mkdtempSync(join(tmpdir(), 'peerweb-call-bench-'));
  const browsers = [await launch(dir, urls, null)];
  if (FAR_NS) browsers.push(await launch(dir, urls, FAR_NS));
  const result = { system: sys.name };
  try {
    const pages = [];
    for (let i = 0; i < N; i++) {
      // A window each: a background tab would present (and so read) frames only now and then.
      // Camera and microphone granted: Chromium then gathers raw host addresses, not mDNS names.
      const ctx = await browsers[far(i) ? 1 : 0].newContext({ viewport: { width: 400, height: 300 }, permissions: ['camera', 'microphone'] });
      const p = await ctx.newPage();
      p.on('pageerror', (e) => console.error(`[${sys.name} page ${i}]`, e.message));
      await p.goto(sys === PEERWEB ? `${urls.peerweb}/` : `${urls.static}/peerjs.html`);
      await p.evaluate(HARNESS);
      pages.push(p);
    }
    for (const [i, p] of pages.entries()) await sys.join(p, i, urls.peerweb, urls.peerjsPort);
    // First frames: each tab from each other tab, timed from when the later of the two
    // joined (the tabs join one after the other).
    const deadline = Date.now() + 60000;
    let seen = [];
    while (Date.now() < deadline) {
      seen = await Promise.all(pages.map((p) => p.evaluate(() => ({ at: window.bench.startedAt, first: window.bench.first }))));
      if (seen.every((s) => Object.keys(s.first).length >= N - 1)) break;
      await sleep(100);
    }
    const flat = seen.flatMap((s) => Object.entries(s.first).map(([from, at]) => at - Math.max(s.at, seen[Number(from.slice(1))].at)));
    result.pairs = `${flat.length}/${N * (N - 1)}`;
    result.firstMedian = pct(flat, 50);
    result.firstMax = flat.length ? Math.max(...flat) : null;
    await sleep(2000);
    const cpu0 = chromiumCpu();
    const t0 = Date.now();
    for (const p of pages) await p.evaluate(() => { window.bench.measuring = true; window.bench.lat = []; });
    await sleep(SECONDS * 1000);
    for (const p of pages) await p.evaluate(() => { window.bench.measuring = false; });
    result.cpu = ((chromiumCpu() - cpu0) / ((Date.now() - t0) / 1000) / N) * 100;
    // With the link, the pairs that cross it (a sender is named p0…p3).
    const lat = (await Promise.all(pages.map((p, i) => p.evaluate(() => window.bench.lat)
      .then((l) => l.filter(([from]) => !FAR_NS || far(i) !== far(Number(from.slice(1)))).map(([, v]) => v))))).flat();
    result.latSamples = lat.length;
    result.p50 = pct(lat, 50);
    result.p95 = pct(lat, 95);
    // Recovery: tab 0's network changes (its selected UDP ports go dead).
    const ports = await pages[0].evaluate(`window.selectedPorts(${sys.pcs})`);
    const frames = () => Promise.all(pages.slice(1).map((p) => p.evaluate(() => window.bench.frames.p0 ?? 0)));
    const rules = ports.flatMap((port) => [['INPUT', '-p', 'udp', '--dport', String(port), '-j', 'DROP'],
      ['OUTPUT', '-p', 'udp', '--sport', String(port), '-j', 'DROP']]);
    for (const r of rules) execFileSync('iptables', ['-I', ...r]);
    const cut = Date.now();
    try {
      await sleep(1000);
      const base = await frames();
      result.recovery = null;
      while (Date.now() - cut < RECOVERY_LIMIT_MS) {
        const now = await frames();
        if (now.every((f, k) => f > base[k] + 15)) {
          result.recovery = (Date.now() - cut) / 1000;
          break;
        }
        await sleep(200);
      }
    } finally {
      for (const r of rules) execFileSync('iptables', ['-D', ...r]);
    }
  } finally {
    for (const b of browsers) await b.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return result;
}

const peerjsPort = 9000 + Math.floor(Math.random() * 1000);
const peerweb = await start(bin, ['serve', '--listen', `${HOST}:0`], /listening on (http:\/\/[^/\s]+)/);
const peerjs = await start(process.execPath, [join(here, '..', 'peerjs', 'server.mjs'), String(peerjsPort), HOST], /peerjs listening/);
const page = `<!doctype html><meta charset="utf-8"><title>PeerJS call</title><script src="/peerjs.min.js"></script>`;
const bundle = readFileSync(join(here, 'node_modules', 'peerjs', 'dist', 'peerjs.min.js'));
const web = createServer((req, res) => {
  if (req.url === '/peerjs.min.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(bundle);
  else res.writeHead(200, { 'content-type': 'text/html' }).end(page);
});
await new Promise((r) => web.listen(0, HOST, r));
const staticHost = HOST === '127.0.0.1' ? 'localhost' : HOST;
const urls = { peerweb: peerweb.match[1], static: `http://${staticHost}:${web.address().port}`, peerjsPort };
const results = [];
try {
  for (const sys of [PEERJS, PEERWEB]) {
    console.error(`${LABEL}: ${sys.name}…`);
    results.push(await runSystem(sys, urls));
  }
} finally {
  peerweb.proc.kill();
  peerjs.proc.kill();
  web.close();
}

const f = (v, d = 0) => (v === null || v === undefined ? '–' : v.toFixed(d));
const [pj, pw] = results;
const ratio = (a, b) => (a && b ? (a / b).toFixed(2) : '–');
console.log(`\n### Four-participant call, ${LABEL}\n`);
console.log('| | PeerJS | peerweb | peerweb / PeerJS |');
console.log('|---|---|---|---|');
console.log(`| pairs with video | ${pj.pairs} | ${pw.pairs} | |`);
console.log(`| join → first frame, median of pairs, ms | ${f(pj.firstMedian)} | ${f(pw.firstMedian)} | ${ratio(pw.firstMedian, pj.firstMedian)} |`);
console.log(`| join → first frame, slowest pair, ms | ${f(pj.firstMax)} | ${f(pw.firstMax)} | ${ratio(pw.firstMax, pj.firstMax)} |`);
const across = FAR_NS ? ' (pairs across the link)' : '';
console.log(`| glass-to-glass p50, ms${across} | ${f(pj.p50)} | ${f(pw.p50)} | ${ratio(pw.p50, pj.p50)} |`);
console.log(`| glass-to-glass p95, ms${across} | ${f(pj.p95)} | ${f(pw.p95)} | ${ratio(pw.p95, pj.p95)} |`);
console.log(`| frames read | ${pj.latSamples} | ${pw.latSamples} | |`);
console.log(`| CPU per participant, % of a core | ${f(pj.cpu, 1)} | ${f(pw.cpu, 1)} | ${ratio(pw.cpu, pj.cpu)} |`);
console.log(`| video back after a network change, s | ${pj.recovery === null ? `none in ${RECOVERY_LIMIT_MS / 1000} s` : f(pj.recovery, 1)} | ${pw.recovery === null ? `none in ${RECOVERY_LIMIT_MS / 1000} s` : f(pw.recovery, 1)} | |`);
