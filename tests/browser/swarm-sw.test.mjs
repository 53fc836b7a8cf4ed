// The swarm service worker in real Chromium (web/sdk/swarm-sw.js with `swarm.relay`): requests
// for manifest-listed URLs — `fetch`, `Range`, an `<img>` — are answered with verified bytes
// from the swarm through the page, the origin counting what it sends (origin.mjs); a second tab
// gets its copy from the first; a relayed URL the swarm cannot serve, and any other URL, comes
// from the network unchanged.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchBrowser, sdkPage, startServer, startCli, waitFor } from './lib.mjs';
import { startOrigin } from './origin.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const MIB = 1 << 20;
const SIZE = 8 * MIB + 5;
let server;
let dir;
let origin;
let data;

before(async () => {
  server = await startServer();
  dir = mkdtempSync(join(tmpdir(), 'peerweb-swarm-sw-'));
  const site = join(dir, 'site');
  mkdirSync(site);
  data = randomBytes(SIZE);
  writeFileSync(join(site, 'big.bin'), data);
  copyFileSync(join(here, '..', '..', 'web', 'icons', 'icon-192.png'), join(site, 'icon.png'));
  const m = startCli(['manifest', site]);
  assert.equal(await m.exited, 0, m.stderr);
  // Written after the manifest: served by the origin, listed nowhere.
  writeFileSync(join(site, 'unlisted.bin'), data.subarray(0, 100000));
  origin = await startOrigin(site);
});
after(async () => {
  await origin?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const sha = (b) => createHash('sha256').update(b).digest('hex');

/** A tab under /sdk/ (the worker's default scope: its script lives there) relaying `urls`. */
async function relayTab(browser, name, urls) {
  const page = await sdkPage(browser, `${server.url}/sdk/${name}.html`);
  await page.evaluate(async ({ urls, server }) => {
    const swarm = await import('/sdk/swarm.js');
    window.relay = await swarm.relay(urls, { server, sw: '/sdk/swarm-sw.js' });
  }, { urls, server: server.url });
  return page;
}

/** `fetch(url)` in the page: status, the headers that matter, SHA-256 of the body. */
function pageFetch(page, url, headers = {}) {
  return page.evaluate(async ({ url, headers }) => {
    const res = await fetch(url, { headers });
    const body = new Uint8Array(await res.arrayBuffer());
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', body));
    return {
      status: res.status,
      length: body.length,
      sha: [...digest].map((b) => b.toString(16).padStart(2, '0')).join(''),
      range: res.headers.get('content-range'),
      type: res.headers.get('content-type'),
      swarm: res.headers.get('x-peerweb-swarm'),
    };
  }, { url, headers });
}

test('a relaying page answers its own requests, ranges and images from the swarm, verified', async () => {
  const big = `${origin.url}/big.bin`;
  const icon = `${origin.url}/icon.png`;
  const unlisted = `${origin.url}/unlisted.bin`;
  const browser = await launchBrowser();
  try {
    const a = await relayTab(browser, 'relay-a', [big, icon, unlisted]);
    const whole = await pageFetch(a, big);
    assert.deepEqual(whole, { status: 200, length: SIZE, sha: sha(data), range: null, type: 'application/octet-stream', swarm: 'verified' });
    // The swarm had no one else: the origin sent one copy, through the swarm's own requests.
    assert.equal(origin.served.get('big.bin'), SIZE);
    // A range, as media elements ask: 206 with the exact bytes, nothing more from the origin.
    const part = await pageFetch(a, big, { Range: 'bytes=1000000-1999999' });
    assert.deepEqual(part, {
      status: 206, length: 1000000, sha: sha(data.subarray(1000000, 2000000)),
      range: `bytes 1000000-1999999/${SIZE}`, type: 'application/octet-stream', swarm: 'verified',
    });
    const tail = await pageFetch(a, big, { Range: `bytes=${SIZE - 10}-` });
    assert.equal(tail.status, 206);
    assert.equal(tail.sha, sha(data.subarray(SIZE - 10)));
    assert.equal(origin.served.get('big.bin'), SIZE, 'ranges came from what the swarm holds');
    // An image element, through the worker.
    const img = await a.evaluate(async (src) => {
      const el = new Image();
      el.crossOrigin = 'anonymous';
      el.src = src;
      await el.decode();
      return el.naturalWidth;
    }, icon);
    assert.equal(img, 192);
    const iconSwarm = await a.evaluate(async (u) => (await window.relay.files.get(u)).stats, icon);
    assert.ok(iconSwarm.http > 0, 'the image went through the swarm');
    // A relayed URL the manifest does not list: the page refuses, the network answers.
    const fallback = await pageFetch(a, unlisted);
    assert.equal(fallback.status, 200);
    assert.equal(fallback.sha, sha(data.subarray(0, 100000)));
    assert.equal(fallback.swarm, null, 'from the network');
    assert.equal(origin.served.get('unlisted.bin'), 100000);

    // A second tab: its copy from the first, not from the origin.
    const before = origin.served.get('big.bin');
    const b = await relayTab(browser, 'relay-b', [big]);
    const second = await pageFetch(b, big);
    assert.equal(second.sha, sha(data));
    assert.equal(second.swarm, 'verified');
    // (A hedged range still arriving from the origin is counted when it has: wait for it.)
    await waitFor(b, async (u) => (await window.relay.files.get(u)).httpRunning === 0, big, { what: 'the origin ranges to end' });
    const stats = await b.evaluate(async (u) => ({ ...(await window.relay.files.get(u)).stats }), big);
    const fromOrigin = origin.served.get('big.bin') - before;
    console.log(`second tab through the worker: ${(stats.p2p / MIB).toFixed(1)} MiB from the first tab, ${(fromOrigin / MIB).toFixed(2)} MiB from the origin`);
    assert.equal(stats.http, fromOrigin, 'the page counts what the origin counted');
    assert.ok(stats.p2p >= SIZE * 0.75, `most from the first tab (${stats.p2p})`);

    // Closing the relay: the worker falls back to the network for the next request.
    await b.evaluate(() => window.relay.close());
    await a.evaluate(() => window.relay.close());
    await a.close();
    const after = await pageFetch(b, big, { Range: 'bytes=0-99' });
    assert.equal(after.sha, sha(data.subarray(0, 100)));
    assert.equal(after.swarm, null, 'no relay: the network');
  } finally {
    await browser.close();
  }
});

test('a page that is not relaying a URL never has it answered by the worker', async () => {
  const browser = await launchBrowser();
  try {
    const a = await relayTab(browser, 'relay-c', [`${origin.url}/icon.png`]);
    const other = await pageFetch(a, `${origin.url}/big.bin`, { Range: 'bytes=0-9' });
    assert.equal(other.status, 206);
    assert.equal(other.swarm, null);
    assert.equal(other.sha, sha(data.subarray(0, 10)));
    // Several ranges in one request are the network's to answer.
    const multi = await a.evaluate(async (u) => (await fetch(u, { headers: { Range: 'bytes=0-1,5-6' } })).headers.get('x-peerweb-swarm'), `${origin.url}/icon.png`);
    assert.equal(multi, null);
    await waitFor(a, () => navigator.serviceWorker.controller !== null, null, { what: 'the page controlled' });
  } finally {
    await browser.close();
  }
});
