// The camera benchmark (bench/run-camera): one RTSP camera watched two ways in one run —
//   - peerweb: `peerweb camera rtsp://…` → WebRTC → the /watch page in headless Chromium;
//   - HLS, what people run today: Debian's ffmpeg pulling the same RTSP stream into HLS
//     (`-c copy`, 1 s segments), served over HTTP, played by hls.js in the same Chromium.
// The camera is Debian's gst-rtsp-server (tests/media/rtsp-server.py) fed the built-in pattern
// (bench's pattern-stream, 640×480 at 30 fps), whose blocks carry the time each frame was
// drawn: glass-to-glass latency p50/p95 is read off every presented frame
// (requestVideoFrameCallback) against the same clock, and time to first frame from opening the
// page. Then the camera process's CPU and memory with 1, 5 and 20 viewers (native
// `peerweb watch`) of a 2 Mbit/s x264 stream (1280×720).
// Run inside a network namespace with only loopback (run-camera makes it), or with `--far-ns`
// (the browser in the other end of bench's 50 ms link, `--host` this end's address).
// Usage: node camera-bench.mjs PEERWEB_BIN PATTERN_STREAM_BIN [--label loopback] [--seconds 10]
//        [--host IP --far-ns NS] [--scale 1,5,20]
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const LAUNCHER = join(here, '..', '..', 'tests', 'media', 'rtsp-server.py');
const [bin, patternBin, ...rest] = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? rest[i + 1] : dflt;
};
const LABEL = opt('label', 'loopback');
const SECONDS = Number(opt('seconds', 10));
const HOST = opt('host', '127.0.0.1');
const FAR_NS = opt('far-ns', null);
const SCALE = opt('scale', FAR_NS ? '' : '1,5,20').split(',').filter(Boolean).map(Number);
const NET = HOST === '127.0.0.1' ? ['--allow-loopback', '--no-stun', '--no-turn'] : ['--no-stun', '--no-turn'];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const procs = [];
const dir = mkdtempSync(join(tmpdir(), 'peerweb-camera-bench-'));

/** Starts a process and resolves once a line of its output matches `ready`. */
function start(cmd, args, ready) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(proc);
  let out = '';
  return new Promise((resolve, reject) => {
    const look = (d) => {
      out += d;
      const m = out.match(ready);
      if (m) resolve({ proc, match: m, out: () => out });
    };
    proc.stdout.on('data', look);
    proc.stderr.on('data', look);
    proc.once('exit', (code) => reject(new Error(`${cmd} exited with ${code}: ${out}`)));
  });
}

function stop(p) {
  if (p.exitCode === null && !p.signalCode) p.kill('SIGTERM');
}

/** utime + stime of `pid`, seconds; resident set, KiB. */
function usage(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const rss = Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);
  return { cpu: (Number(f[11]) + Number(f[12])) / 100, rss };
}

function pct(list, p) {
  if (!list.length) return null;
  const s = [...list].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

async function rtspServer(args) {
  const { match } = await start(LAUNCHER, ['--host', HOST, '--port', '0', ...args], /"url": "([^"]+)"/);
  return match[1];
}

/** Reads every presented frame's blocks (the pattern's layout) into window.bench. */
const READER = `
window.bench = { lat: [], first: null, frames: 0, measuring: false };
window.readVideo = (v) => {
  const W = 640, H = 480, MOD = 2 ** 24;
  const c = document.createElement('canvas');
  c.width = W; c.height = H;
  const g = c.getContext('2d', { willReadFrequently: true });
  const onFrame = () => {
    const now = Math.floor(performance.timeOrigin + performance.now()) % MOD;
    bench.frames += 1;
    bench.first ??= performance.timeOrigin + performance.now();
    if (bench.measuring) {
      g.drawImage(v, 0, 0, W, H);
      const px = g.getImageData(0, 0, W, H).data;
      const bit = (k) => {
        const [mx, my] = k < 16 ? [2 + k, 2] : [2 + ((k - 16) % 12), 3 + Math.floor((k - 16) / 12)];
        return px[((my * 16 + 8) * W + mx * 16 + 8) * 4] > 128 ? 1 : 0;
      };
      let sent = 0;
      for (let i = 0; i < 24; i++) sent |= bit(16 + i) << i;
      bench.lat.push((now - sent + MOD) % MOD);
    }
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);
};
`;

async function launch() {
  let executablePath = '/usr/bin/chromium';
  if (FAR_NS) {
    executablePath = join(dir, `chromium-in-${FAR_NS}`);
    writeFileSync(executablePath, `#!/bin/sh\nexec ip netns exec ${FAR_NS} /usr/bin/chromium "$@"\n`, { mode: 0o755 });
  }
  return chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--autoplay-policy=no-user-gesture-required',
      '--allow-loopback-in-peer-connection', '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
      `--unsafely-treat-insecure-origin-as-secure=http://${HOST}`],
  });
}

/** Latency samples over SECONDS and the time to the first frame, for a page showing `video`. */
async function measure(page, opened) {
  await page.waitForFunction(() => window.bench.first !== null, null, { timeout: 60000 });
  const first = await page.evaluate(() => window.bench.first);
  await page.evaluate(() => { window.bench.measuring = true; });
  await sleep(SECONDS * 1000);
  const lat = await page.evaluate(() => { window.bench.measuring = false; return window.bench.lat; });
  return { ttff: Math.round(first - opened), p50: pct(lat, 50), p95: pct(lat, 95), n: lat.length };
}

async function peerwebRow(browser, rtsp, peerwebUrl) {
  const cam = await start(bin, ['camera', rtsp, '--server', peerwebUrl, '--state', join(dir, 'pattern-camera.json'), '--json', ...NET],
    /"event":"code".*"link":"([^"]+)"/);
  const link = cam.match[1];
  const ctx = await browser.newContext({ viewport: { width: 800, height: 600 } });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => console.error('[peerweb page]', e.message));
  await page.addInitScript(READER);
  await page.addInitScript(() => {
    // Reads the /watch page's video as soon as it has one.
    const look = () => {
      const v = document.getElementById('video');
      if (v) window.readVideo(v); else setTimeout(look, 10);
    };
    document.addEventListener('DOMContentLoaded', look);
  });
  // First visit: pairing by the link, then watching.
  let opened = Date.now();
  await page.goto(link);
  const pairing = await page.waitForFunction(() => window.bench.first, null, { timeout: 60000 }).then(() => page.evaluate(() => window.bench.first));
  const ttffPairing = Math.round(pairing - opened);
  // A paired visit, as every later one: the page reloaded.
  opened = Date.now();
  await page.reload();
  const m = await measure(page, opened);
  await ctx.close();
  stop(cam.proc);
  return { system: 'peerweb (WebRTC, /watch)', ...m, ttffPairing };
}

async function hlsRow(browser, rtsp) {
  const hlsDir = join(dir, 'hls');
  const ff = spawn('ffmpeg', ['-loglevel', 'error', '-rtsp_transport', 'tcp', '-i', rtsp, '-c', 'copy', '-f', 'hls',
    '-hls_time', '1', '-hls_list_size', '6', '-hls_flags', 'delete_segments', join(hlsDir, 'live.m3u8')], { stdio: 'ignore' });
  procs.push(ff);
  const { mkdirSync } = await import('node:fs');
  mkdirSync(hlsDir, { recursive: true });
  const types = { '.m3u8': 'application/vnd.apple.mpegurl', '.ts': 'video/mp2t', '.js': 'text/javascript', '.html': 'text/html' };
  const hlsJs = join(here, 'node_modules', 'hls.js', 'dist', 'hls.min.js');
  const http = createServer((req, res) => {
    const path = req.url.split('?')[0];
    const file = path === '/hls.js' ? hlsJs : path === '/' ? null : join(hlsDir, path.slice(1));
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<!doctype html><video id="video" muted autoplay playsinline></video><script src="/hls.js"></script>'
        + '<script>const v = document.getElementById("video"); window.readVideo(v);'
        + 'const h = new Hls(); h.loadSource("/live.m3u8"); h.attachMedia(v); v.play().catch(() => {});</script>');
      return;
    }
    if (!file || !existsSync(file)) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
    res.end(readFileSync(file));
  });
  await new Promise((r) => http.listen(0, HOST, r));
  const url = `http://${HOST}:${http.address().port}/`;
  // A viewer arriving at a stream that is already live: the playlist is there.
  const end = Date.now() + 30000;
  while (!existsSync(join(hlsDir, 'live.m3u8')) && Date.now() < end) await sleep(100);
  await sleep(3000);
  const ctx = await browser.newContext({ viewport: { width: 800, height: 600 } });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => console.error('[hls page]', e.message));
  await page.addInitScript(READER);
  const opened = Date.now();
  await page.goto(url);
  const m = await measure(page, opened);
  await ctx.close();
  const cpu = usage(ff.pid);
  stop(ff);
  http.close();
  return { system: 'HLS (ffmpeg -c copy → hls.js)', ...m, ffmpegCpu: cpu.cpu };
}

/** The camera's CPU (% of one core) and memory with `n` native viewers of `rtsp`. */
async function scaleRow(rtsp, peerwebUrl, n, keys) {
  const cam = await start(bin, ['camera', rtsp, '--server', peerwebUrl, '--state', join(dir, 'x264-camera.json'), '--json', ...NET],
    /"event":"ready"/);
  const viewers = [];
  for (let i = 0; i < n; i++) {
    viewers.push(await start(bin, ['watch', 'camera', '--server', peerwebUrl, '--keys', keys, '--json', ...NET], /"event":"frames"/));
  }
  await sleep(2000);
  const a = usage(cam.proc.pid);
  const t0 = Date.now();
  await sleep(SECONDS * 1000);
  const b = usage(cam.proc.pid);
  const cpu = (100 * (b.cpu - a.cpu)) / ((Date.now() - t0) / 1000);
  // Every viewer still receiving.
  const frames = viewers.map((v) => [...v.out().matchAll(/"frames":(\d+)/g)].at(-1)?.[1] ?? 0).map(Number);
  for (const v of viewers) stop(v.proc);
  stop(cam.proc);
  await sleep(1000);
  return { n, cpu, rss: b.rss, minFrames: Math.min(...frames) };
}

async function main() {
  const server = await start(bin, ['serve', '--listen', `${HOST}:0`], /listening on (http:\/\/[^/\s]+)/);
  const peerwebUrl = server.match[1];
  const browser = await launch();
  try {
    const pattern = await rtspServer(['--h264-from', `${patternBin} --size 640x480 --fps 30 --seconds 900`]);
    const rows = [await peerwebRow(browser, pattern, peerwebUrl), await hlsRow(browser, pattern)];
    console.log(`\n### Camera to screen, ${LABEL} (640×480 pattern at 30 fps over RTSP, ${SECONDS} s per system)\n`);
    console.log('| system | time to first frame, ms | glass-to-glass p50, ms | p95, ms | frames read |');
    console.log('|---|---|---|---|---|');
    for (const r of rows) console.log(`| ${r.system} | ${r.ttff}${r.ttffPairing ? ` (first visit, pairing included: ${r.ttffPairing})` : ''} | ${r.p50} | ${r.p95} | ${r.n} |`);
    const [p, h] = rows;
    console.log(`\nRatios HLS/peerweb: latency p50 ${(h.p50 / p.p50).toFixed(1)}x, p95 ${(h.p95 / p.p95).toFixed(1)}x, time to first frame ${(h.ttff / p.ttff).toFixed(1)}x.`);
    if (SCALE.length) {
      const x264 = await rtspServer(['--size', '1280x720', '--fps', '30', '--bitrate', '2000']);
      // One pairing; every viewer process proves the same key.
      const keys = join(dir, 'keys.json');
      const cam = await start(bin, ['camera', x264, '--server', peerwebUrl, '--state', join(dir, 'x264-camera.json'), '--json', ...NET],
        /"code":"([^"]+)"/);
      const code = cam.match[1];
      await start(bin, ['watch', code, '--server', peerwebUrl, '--keys', keys, '--pair-only', '--json', ...NET], /"event":"paired"/);
      stop(cam.proc);
      await sleep(1000);
      const scale = [];
      for (const n of SCALE) scale.push(await scaleRow(x264, peerwebUrl, n, keys));
      console.log(`\n### The camera process with N viewers (1280×720 x264 at 2 Mbit/s, native \`peerweb watch\` viewers, ${SECONDS} s)\n`);
      console.log('| viewers | camera CPU, % of a core | per viewer | RSS, MiB | fewest frames a viewer got |');
      console.log('|---|---|---|---|---|');
      for (const r of scale) console.log(`| ${r.n} | ${r.cpu.toFixed(1)} | ${(r.cpu / r.n).toFixed(2)} | ${(r.rss / 1024).toFixed(1)} | ${r.minFrames} |`);
      if (scale.length > 1) {
        const [a, b] = [scale[0], scale.at(-1)];
        console.log(`\nCPU per added viewer (${a.n} → ${b.n}): ${((b.cpu - a.cpu) / (b.n - a.n)).toFixed(2)}% of a core (goal: under 2%).`);
      }
    }
  } finally {
    await browser.close();
    for (const p of procs) stop(p);
    await sleep(500);
    for (const p of procs) if (p.exitCode === null && !p.signalCode) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
