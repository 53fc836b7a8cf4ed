// The swarm benchmark (bench/run-swarm): N Chromium tabs join one file over S seconds (staggered
// evenly) and fetch it three ways in one run, from the same test origin (tests/browser/origin.mjs,
// which counts the bytes it sends and shares one uplink among its clients):
//   - plain HTTP: each tab `fetch`es the file and reads it;
//   - peerweb: `swarm.fetch` (web/sdk/swarm.js) through `peerweb serve`'s swarms, every 16 KiB
//     group verified against the manifest's BLAKE3 root;
//   - WebTorrent (npm `webtorrent`'s browser build, in the same tabs) with the same origin as its
//     web seed and a self-hosted `bittorrent-tracker` (WebSocket), SHA-1 per piece.
// Per way: offload = 1 − origin bytes / bytes delivered to the apps, time to complete per tab
// (from its join; median and slowest), the run's length, bytes uploaded per tab. Then the
// browser verifier's rate (BLAKE3 groups checked against a tree, one tab). Run inside a network
// namespace with only loopback (run-swarm makes it).
// Usage: node swarm-bench.mjs PEERWEB_BIN [--size-mib 64] [--peers 10] [--over 30]
//        [--origin-mbps 200] [--ways http,peerweb,webtorrent]
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import createTorrent from 'create-torrent';
import Tracker from 'bittorrent-tracker/server';
import { chromium } from 'playwright-core';
import { startOrigin } from '../../tests/browser/origin.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const [bin, ...rest] = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? rest[i + 1] : dflt;
};
const MIB = 1 << 20;
const SIZE = Number(opt('size-mib', 64)) * MIB;
const PEERS = Number(opt('peers', 10));
const OVER = Number(opt('over', 30));
const ORIGIN_MBPS = Number(opt('origin-mbps', 200));
const WAYS = opt('ways', 'http,peerweb,webtorrent').split(',');
const VERBOSE = rest.includes('--verbose');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const dir = mkdtempSync(join(tmpdir(), 'peerweb-swarm-bench-'));
const procs = [];

function start(cmd, args, ready) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(proc);
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

async function run(cmd, args) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  proc.stdout.on('data', (d) => { out += d; });
  const code = await new Promise((r) => proc.once('close', r));
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${code}`);
  return out;
}

async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--allow-loopback-in-peer-connection',
      '--use-fake-ui-for-media-stream', '--disable-dev-shm-usage', '--disable-background-timer-throttling',
      '--disable-renderer-backgrounding', '--disable-backgrounding-occluded-windows',
    ],
  });
}

/**
 * A blank page on `base`'s origin in a browser context of its own (its own storage, as another
 * user's browser). Camera and microphone are granted so that Chromium gives raw host addresses
 * (on loopback here) rather than mDNS names; the page is route-fulfilled, so its fetches to the
 * origin need the Local Network Access permission.
 */
async function tab(browser, base, scripts = {}) {
  const context = await browser.newContext({ permissions: ['camera', 'microphone', 'local-network-access'] });
  const page = await context.newPage();
  for (const [path, file] of Object.entries(scripts)) {
    await page.route(`${base}${path}`, (r) => r.fulfill({ contentType: 'text/javascript', body: readFileSync(file) }));
  }
  await page.route(`${base}/bench.html`, (r) => r.fulfill({
    contentType: 'text/html',
    body: '<!doctype html><script type="importmap">{ "imports": { "@noble/curves/": "/vendor/@noble/curves/", "@noble/hashes/": "/vendor/@noble/hashes/" } }</script>',
  }));
  await page.goto(`${base}/bench.html`);
  return page;
}

/**
 * Opens PEERS tabs, one every OVER/(PEERS−1) seconds, each running `begin(arg)` in the page
 * (which sets window.result = {bytes, up, error?} when done); returns per-tab results with
 * `ms` from the tab's join to its completion.
 */
async function staggered(browser, base, scripts, begin, arg) {
  const pages = [];
  const gap = PEERS > 1 ? (OVER * 1000) / (PEERS - 1) : 0;
  const t0 = performance.now();
  for (let i = 0; i < PEERS; i++) {
    const due = t0 + i * gap;
    await sleep(Math.max(0, due - performance.now()));
    const page = await tab(browser, base, scripts);
    await page.evaluate(() => { window.t0 = performance.now(); });
    await page.evaluate(begin, arg);
    pages.push(page);
  }
  const results = [];
  for (const page of pages) {
    await page.waitForFunction(() => window.result, null, { timeout: 600000, polling: 200 });
    const r = await page.evaluate(() => window.result);
    if (r.error) throw new Error(r.error);
    results.push(r);
  }
  // Every tab stays open (serving) until all are done, as users who keep a page open.
  const total = performance.now() - t0;
  return { results, total, pages };
}

function summary(way, { results, total }, originBytes) {
  const delivered = results.reduce((a, r) => a + r.bytes, 0);
  const times = results.map((r) => r.ms).sort((a, b) => a - b);
  const up = results.map((r) => r.up ?? 0);
  return {
    way,
    offload: 1 - originBytes / delivered,
    origin: originBytes,
    median: times[Math.floor(times.length / 2)],
    slowest: times[times.length - 1],
    total,
    upMean: up.reduce((a, b) => a + b, 0) / up.length,
    upMax: Math.max(...up),
    complete: results.every((r) => r.bytes === SIZE),
  };
}

async function main() {
  const site = join(dir, 'site');
  await run('mkdir', ['-p', site]);
  writeFileSync(join(site, 'big.bin'), randomBytes(SIZE));
  await run(bin, ['manifest', site]);
  const origin = await startOrigin(site, { rate: ORIGIN_MBPS * 1e6 / 8 });
  const fileUrl = `${origin.url}/big.bin`;
  const server = await start(bin, ['serve', '--listen', '127.0.0.1:0', '--no-turn'], /listening on (http:\/\/[^\s]+?)\/?\s/);
  const base = server.match[1];
  const rows = [];

  if (WAYS.includes('http')) {
    origin.served.clear();
    const browser = await launch();
    try {
      const r = await staggered(browser, base, {}, (url) => {
        // Not awaited: the next tab joins on time whatever this one is doing.
        (async () => {
          const res = await fetch(url);
          let bytes = 0;
          for await (const chunk of res.body) bytes += chunk.length;
          window.result = { bytes, ms: performance.now() - window.t0, up: 0 };
        })().catch((e) => { window.result = { error: String(e) }; });
      }, fileUrl);
      rows.push(summary('plain HTTP', r, origin.served.get('big.bin') ?? 0));
    } finally {
      await browser.close();
    }
  }

  if (WAYS.includes('peerweb')) {
    origin.served.clear();
    const browser = await launch();
    try {
      const r = await staggered(browser, base, {}, async ({ url, server }) => {
        const swarm = await import('/sdk/swarm.js');
        const res = await swarm.fetch(url, { server });
        window.swarmFile = res.swarm;
        (async () => {
          let bytes = 0;
          for await (const chunk of res.body) bytes += chunk.length;
          const ms = performance.now() - window.t0;
          window.result = { bytes, ms, get up() { return window.swarmFile.stats.up; } };
        })().catch((e) => { window.result = { error: String(e) }; });
      }, { url: fileUrl, server: base });
      // Uploads keep counting until every tab is done: read them at the end.
      const stats = await Promise.all(r.pages.map((p) => p.evaluate(() => ({ ...window.swarmFile.stats }))));
      r.results.forEach((x, i) => { x.up = stats[i].up; });
      if (VERBOSE) console.log('peerweb tabs', stats, r.results.map((x) => x.ms));
      rows.push(summary('peerweb swarm', r, origin.served.get('big.bin') ?? 0));
    } finally {
      await browser.close();
    }
  }

  if (WAYS.includes('webtorrent')) {
    origin.served.clear();
    const tracker = new Tracker({ udp: false, http: false, ws: true, stats: false });
    await new Promise((r) => tracker.listen(0, '127.0.0.1', r));
    const announce = `ws://127.0.0.1:${tracker.ws.address().port}`;
    const torrent = await new Promise((resolve, reject) => createTorrent(join(site, 'big.bin'), {
      name: 'big.bin', announceList: [[announce]], urlList: [fileUrl], createdBy: 'peerweb bench',
    }, (err, buf) => (err ? reject(err) : resolve(buf))));
    const browser = await launch();
    try {
      const wt = join(here, 'node_modules', 'webtorrent', 'dist', 'webtorrent.min.js');
      const r = await staggered(browser, base, { '/webtorrent.min.js': wt }, async (torrent) => {
        const { default: WebTorrent } = await import('/webtorrent.min.js');
        // No STUN: host candidates on loopback only, as the other ways.
        const client = new WebTorrent({ dht: false, lsd: false, tracker: { rtcConfig: { iceServers: [] } } });
        window.client = client;
        client.on('error', (e) => { window.result = { error: String(e) }; });
        client.add(new Uint8Array(torrent), (t) => {
          window.torrent = t;
          t.on('done', () => {
            window.result = { bytes: t.length, ms: performance.now() - window.t0, get up() { return window.torrent.uploaded; } };
          });
        });
      }, [...torrent]);
      const stats = await Promise.all(r.pages.map((p) => p.evaluate(() => ({ up: window.torrent.uploaded, down: window.torrent.downloaded, wires: window.torrent.wires.length, received: window.torrent.received }))));
      r.results.forEach((x, i) => { x.up = stats[i].up; });
      if (VERBOSE) console.log('WebTorrent tabs', stats, r.results.map((x) => x.ms));
      rows.push(summary('WebTorrent', r, origin.served.get('big.bin') ?? 0));
    } finally {
      await browser.close();
      await new Promise((r) => tracker.close(r));
    }
  }

  // The browser verifier: every group of the file checked against its tree in one tab.
  let verifyRate = null;
  {
    const browser = await launch();
    try {
      const page = await tab(browser, base);
      verifyRate = await page.evaluate(async (url) => {
        const { Tree, groupLen } = await import('/sdk/swarm-tree.js');
        const { parseManifest } = await import('/sdk/swarm-manifest.js');
        const m = parseManifest(new Uint8Array(await (await fetch(new URL('peerweb-manifest.json', url))).arrayBuffer()));
        const e = m.file('big.bin');
        const ob = new Uint8Array(await (await fetch(new URL(e.outboard, url))).arrayBuffer());
        const data = new Uint8Array(await (await fetch(url)).arrayBuffer());
        const tree = Tree.fromOutboard(e.size, e.root, ob);
        const t = performance.now();
        let at = 0;
        for (let g = 0; at < data.length; g++) {
          const n = groupLen(e.size, g);
          tree.verify(g, data.subarray(at, at + n));
          at += n;
        }
        return data.length / ((performance.now() - t) / 1000);
      }, fileUrl);
    } finally {
      await browser.close();
    }
  }

  const http = rows.find((r) => r.way === 'plain HTTP');
  const mb = (b) => (b / MIB).toFixed(1);
  const s = (ms) => (ms / 1000).toFixed(1);
  console.log(`\n### ${PEERS} tabs join a ${SIZE / MIB} MiB file over ${OVER} s; origin uplink ${ORIGIN_MBPS || '∞'} Mbit/s (loopback, one Chromium per way)\n`);
  console.log('| way | origin sent (MiB) | offload | complete: median (s) | slowest (s) | vs HTTP (median) | run (s) | uploaded per tab: mean / max (MiB) |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const ratio = http ? (r.median / http.median).toFixed(2) + 'x' : '–';
    console.log(`| ${r.way}${r.complete ? '' : ' (INCOMPLETE)'} | ${mb(r.origin)} | ${(r.offload * 100).toFixed(1)}% | ${s(r.median)} | ${s(r.slowest)} | ${ratio} | ${s(r.total)} | ${mb(r.upMean)} / ${mb(r.upMax)} |`);
  }
  console.log(`\nceiling for offload: ${(100 - 100 / PEERS).toFixed(0)}% (one copy from the origin). Browser verifier (swarm-tree.js, BLAKE3 per 16 KiB group): ${(verifyRate / 1e6).toFixed(0)} MB/s in one tab.`);
  await origin.close();
}

try {
  await main();
} finally {
  for (const p of procs) if (p.exitCode === null && !p.signalCode) p.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
