// Verified swarms in real Chromium: tabs fetch a file with `swarm.fetch` from a test origin
// (origin.mjs: it serves a folder with Range and counts the bytes it sends per path) and from each
// other through `peerweb serve`'s swarms. Staggered tabs all get the exact file (BLAKE3 of what
// the page read = the manifest's root) while the origin sends a fraction of it; a poisoned tab —
// its data channels flip a byte in every group it serves — gets no bad byte into anyone, is
// banned after one group by each tab it served, and is reported to the server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { launchBrowser, sdkPage, startServer, startCli, waitFor } from './lib.mjs';
import { startOrigin } from './origin.mjs';

const MIB = 1 << 20;
let server;
let dir;
let origin;
let originUrl;
/** Bytes the origin sent, by path. */
let served;
/** Paths the origin answers 503 for (it is "down" for them). */
let down;
const NET = ['--allow-loopback', '--no-stun', '--no-turn'];

before(async () => {
  server = await startServer();
  dir = mkdtempSync(join(tmpdir(), 'peerweb-swarm-'));
  mkdirSync(join(dir, 'site'));
  origin = await startOrigin(join(dir, 'site'));
  originUrl = origin.url;
  served = origin.served;
  down = origin.down;
});
after(async () => {
  await origin?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Writes `name` (random bytes) into the origin's folder and its manifest; returns its root. */
async function publish(name, size) {
  const site = join(dir, 'site');
  writeFileSync(join(site, name), randomBytes(size), { flag: 'w' });
  const p = startCli(['manifest', site, '--json']);
  assert.equal(await p.exited, 0, p.stderr);
  return p.events.find((e) => e.event === 'file' && e.path === name).root;
}

/** A tab on the server's origin with the SDK's import map. */
function tab(browser) {
  return sdkPage(browser, `${server.url}/swarm-test.html`);
}

/** Starts `swarm.fetch` in the page; `window.result` gets the BLAKE3 of what it read and the stats. */
function startFetch(page, url) {
  return page.evaluate(async (url) => {
    const swarm = await import('/sdk/swarm.js');
    const { Blake3, toHex } = await import('/transfer/blake3.js');
    window.banned = [];
    const res = await swarm.fetch(url, { server: location.origin });
    window.swarmFile = res.swarm;
    res.swarm.addEventListener('banned', (e) => window.banned.push(e.peer));
    window.errors = [];
    res.swarm.addEventListener('error', (e) => window.errors.push(String(e.error)));
    (async () => {
      const h = new Blake3();
      let bytes = 0;
      for await (const chunk of res.body) { h.update(chunk); bytes += chunk.length; }
      window.result = { root: toHex(h.digest()), bytes, stats: res.swarm.stats };
    })().catch((e) => { window.result = { error: String(e) }; });
  }, url);
}

test('ten staggered tabs share 64 MiB: every byte verified, the origin sends little more than one copy', async () => {
  const size = 64 * MIB;
  const root = await publish('big.bin', size);
  served.clear();
  // Background tabs are not throttled: the ten share the machine as ten users' browsers would.
  const browser = await launchBrowser({ args: ['--disable-background-timer-throttling', '--disable-renderer-backgrounding', '--disable-backgrounding-occluded-windows'] });
  try {
    const pages = [];
    for (let i = 0; i < 10; i++) {
      const page = await tab(browser);
      pages.push(page);
      await startFetch(page, `${originUrl}/big.bin`);
      // The next tab a second later (the first has some of the file by then).
      await new Promise((r) => setTimeout(r, 1000));
    }
    const results = [];
    for (const page of pages) {
      await waitFor(page, () => window.result, null, { what: 'the whole file', timeout: 120000 });
      results.push(await page.evaluate(() => ({ ...window.result, stats: { ...window.swarmFile.stats }, errors: window.errors })));
    }
    for (const [i, r] of results.entries()) {
      assert.equal(r.error, undefined, `tab ${i}: ${r.error}`);
      assert.equal(r.bytes, size, `tab ${i} read the whole file`);
      assert.equal(r.root, root, `tab ${i} read exactly the published bytes`);
    }
    const delivered = size * results.length;
    const p2p = results.reduce((a, r) => a + r.stats.p2p, 0);
    const up = results.map((r) => (r.stats.up / MIB).toFixed(1));
    // Client-reported and origin-counted bytes agree, and the server's metrics have what the
    // pages reported for this swarm. A hedged range the origin is still sending when a tab
    // completes (its groups came from a peer first) is read to its end and counted after the
    // tab's result: compare once every count has settled, each page reporting at most 2 s
    // after its last byte.
    const line = (source) => new RegExp(`peerweb_swarm_top_bytes\\{swarm="${root}",source="${source}"\\} (\\d+)`);
    let want;
    let got;
    let pagesHttp;
    let fromOrigin;
    for (const end = Date.now() + 10000; Date.now() < end; await new Promise((r) => setTimeout(r, 200))) {
      const stats = await Promise.all(pages.map((p) => p.evaluate(() => ({ ...window.swarmFile.stats }))));
      fromOrigin = served.get('big.bin') ?? 0;
      pagesHttp = stats.reduce((a, s) => a + s.http, 0);
      want = { http: fromOrigin, p2p: stats.reduce((a, s) => a + s.p2p, 0) };
      const text = await (await fetch(`${server.url}/metrics`)).text();
      got = { http: Number(line('http').exec(text)?.[1]), p2p: Number(line('p2p').exec(text)?.[1]) };
      if (pagesHttp === fromOrigin && got.http === want.http && got.p2p === want.p2p) break;
    }
    const offload = 1 - fromOrigin / delivered;
    console.log(`swarm of ${results.length} tabs, ${size / MIB} MiB: origin sent ${(fromOrigin / MIB).toFixed(1)} MiB of ${delivered / MIB} delivered, offload ${(offload * 100).toFixed(1)}% (ceiling ${(100 - 100 / results.length).toFixed(0)}%), p2p ${(p2p / MIB).toFixed(1)} MiB; uploaded per tab (MiB): ${up.join(' ')}`);
    assert.ok(fromOrigin >= size, 'someone fetched the first copy');
    assert.ok(offload > 0.75, `offload ${offload} (ceiling 0.9)`);
    assert.equal(pagesHttp, fromOrigin, `the pages count what the origin counted; errors: ${JSON.stringify(results.map((r) => r.errors))}`);
    assert.deepEqual(got, want, 'the reported bytes in /metrics');
    const status = await browser.newPage();
    await status.goto(`${server.url}/status`);
    await waitFor(status, () => document.querySelector('#swarms tbody tr'), null, { what: 'the swarm on /status' });
    const shown = await status.evaluate(() => [...document.querySelectorAll('#swarms tbody tr td')].map((td) => td.textContent));
    assert.equal(shown[1], '10', 'ten members');
    assert.equal(shown[5], `${Math.round((100 * want.p2p) / (want.p2p + fromOrigin))}%`, 'its offload');
  } finally {
    await browser.close();
  }
});

test('a poisoned tab gets no bad byte into anyone and is banned after one group', async () => {
  const size = 4 * MIB;
  const root = await publish('poison.bin', size);
  const browser = await launchBrowser();
  try {
    // The poisoner fetches the file honestly, then serves every group with a byte flipped —
    // at the wire: its data channels change `data` messages (type 6) as they leave.
    const bad = await tab(browser);
    await bad.evaluate(() => {
      const send = RTCDataChannel.prototype.send;
      RTCDataChannel.prototype.send = function (data) {
        if (data instanceof Uint8Array && data[0] === 6 && data.length > 9) {
          const copy = data.slice();
          copy[9] ^= 0x01;
          return send.call(this, copy);
        }
        return send.call(this, data);
      };
    });
    await startFetch(bad, `${originUrl}/poison.bin`);
    await waitFor(bad, () => window.result, null, { what: 'the poisoner has the file', timeout: 60000 });
    const pages = [];
    for (let i = 0; i < 3; i++) {
      const page = await tab(browser);
      pages.push(page);
      await startFetch(page, `${originUrl}/poison.bin`);
    }
    const badId = await bad.evaluate(() => window.swarmFile.room.id);
    let bans = 0;
    for (const [i, page] of pages.entries()) {
      await waitFor(page, () => window.result, null, { what: `tab ${i} has the file`, timeout: 120000 });
      const r = await page.evaluate(() => ({ ...window.result, banned: window.banned, bad: window.swarmFile.stats.bad }));
      assert.equal(r.error, undefined, `tab ${i}: ${r.error}`);
      assert.equal(r.root, root, `tab ${i}: not one bad byte reached the reader`);
      assert.ok(r.bad <= 1, `tab ${i} took ${r.bad} bad groups: banned after the first`);
      assert.ok(r.banned.every((id) => id === badId), `tab ${i} banned only the poisoner`);
      bans += r.banned.length;
    }
    assert.ok(bans >= 1, 'the poisoner served someone and was caught');
    // Reported to the server.
    await waitFor(pages[0], async (url) => {
      const m = await (await fetch(`${url}/metrics`)).text();
      return /peerweb_swarm_bad_reports_total [1-9]/.test(m);
    }, server.url, { what: 'the report counted', timeout: 5000 });
  } finally {
    await browser.close();
  }
});

test('a native seeder serves the tabs and `peerweb fetch` while the origin is down for the file', async () => {
  const size = 8 * MIB + 123;
  const root = await publish('seeded.bin', size);
  const seeder = startCli(['seed', join(dir, 'site'), '--only', 'seeded.bin', '--server', server.url, '--json', ...NET]);
  await seeder.waitEvent((e) => e.event === 'joined', { what: 'the seeder in its swarm' });
  // From here the origin serves the manifest and outboard, never the file's bytes.
  down.add('seeded.bin');
  served.delete('seeded.bin');
  const browser = await launchBrowser();
  try {
    const pages = [];
    for (let i = 0; i < 3; i++) {
      const page = await tab(browser);
      pages.push(page);
      await startFetch(page, `${originUrl}/seeded.bin`);
    }
    for (const [i, page] of pages.entries()) {
      await waitFor(page, () => window.result, null, { what: `tab ${i} has the file`, timeout: 120000 });
      const r = await page.evaluate(() => window.result);
      assert.equal(r.error, undefined, `tab ${i}: ${r.error}`);
      assert.equal(r.root, root, `tab ${i}: the exact file, from the seeder and the other tabs`);
    }
    // The native fetcher, from the same swarm.
    const out = join(dir, 'fetched.bin');
    const f = startCli(['fetch', `${originUrl}/seeded.bin`, '-o', out, '--server', server.url, '--json', ...NET]);
    assert.equal(await f.exited, 0, f.stderr);
    assert.ok(f.events.some((e) => e.event === 'complete'), 'complete');
    const progress = f.events.filter((e) => e.event === 'progress').pop();
    assert.equal(progress.http, 0, 'nothing from the origin');
    assert.equal(progress.p2p, size, 'every byte from peers');
    assert.equal(createHash('sha256').update(readFileSync(out)).digest('hex'),
      createHash('sha256').update(readFileSync(join(dir, 'site', 'seeded.bin'))).digest('hex'), 'the exact file on disk');
    assert.equal(served.get('seeded.bin') ?? 0, 0, 'the origin sent none of the file');
    // Run again: resumed from the verified file, nothing to fetch.
    const again = startCli(['fetch', `${originUrl}/seeded.bin`, '-o', out, '--server', server.url, '--json', ...NET]);
    assert.equal(await again.exited, 0, again.stderr);
    assert.ok(again.events.some((e) => e.event === 'complete'));
  } finally {
    down.delete('seeded.bin');
    await browser.close();
    seeder.proc.kill('SIGINT');
    await seeder.exited;
  }
  const up = seeder.events.filter((e) => e.event === 'progress').pop();
  console.log(`native seeder uploaded ${((up?.up ?? 0) / MIB).toFixed(1)} MiB of a ${(size / MIB).toFixed(1)} MiB file to 3 tabs and peerweb fetch`);
  assert.ok(up && up.up >= size, 'the seeder served at least one copy');
});

test('a seeder that leaves mid-transfer: what it was sending comes from the origin and the other tab', async () => {
  const size = 16 * MIB;
  const root = await publish('leaving.bin', size);
  // Slow enough to be caught mid-way: 2 MB/s to each neighbour.
  const seeder = startCli(['seed', join(dir, 'site'), '--only', 'leaving.bin', '--upload-rate', '2000000', '--server', server.url, '--json', ...NET]);
  await seeder.waitEvent((e) => e.event === 'joined', { what: 'the seeder in its swarm' });
  down.add('leaving.bin');
  served.delete('leaving.bin');
  const browser = await launchBrowser();
  try {
    const pages = [];
    for (let i = 0; i < 2; i++) {
      const page = await tab(browser);
      pages.push(page);
      await startFetch(page, `${originUrl}/leaving.bin`);
    }
    // A quarter in, the seeder dies without a word, and the origin comes back.
    await waitFor(pages[0], () => window.swarmFile.have.count >= window.swarmFile.have.groups / 4, null, { what: 'a quarter from the seeder', timeout: 60000 });
    seeder.proc.kill('SIGKILL');
    await seeder.exited;
    down.delete('leaving.bin');
    for (const [i, page] of pages.entries()) {
      await waitFor(page, () => window.result, null, { what: `tab ${i} has the file`, timeout: 120000 });
      const r = await page.evaluate(() => ({ ...window.result, stats: { ...window.swarmFile.stats } }));
      assert.equal(r.error, undefined, `tab ${i}: ${r.error}`);
      assert.equal(r.root, root, `tab ${i}: the exact file`);
      assert.ok(r.stats.p2p > 0, `tab ${i} had some from peers`);
    }
    const fromOrigin = served.get('leaving.bin') ?? 0;
    console.log(`seeder left a quarter in: the origin sent ${(fromOrigin / MIB).toFixed(1)} MiB of the ${size / MIB} MiB file to 2 tabs`);
    assert.ok(fromOrigin > 0, 'the origin filled in');
    assert.ok(fromOrigin <= size * 1.1, 'only what was missing, about one copy at most');
  } finally {
    down.delete('leaving.bin');
    await browser.close();
  }
});

test('a folder of small files, down to empty and single-group ones: every file exact in every tab', async () => {
  const sizes = [0, 1, 1000, 16384, 16385, 100000, 300001];
  const site = join(dir, 'site');
  for (const [i, n] of sizes.entries()) writeFileSync(join(site, `small-${i}.bin`), randomBytes(n));
  const p = startCli(['manifest', site, '--json']);
  assert.equal(await p.exited, 0, p.stderr);
  const roots = sizes.map((_, i) => p.events.find((e) => e.event === 'file' && e.path === `small-${i}.bin`).root);
  for (let i = 0; i < sizes.length; i++) served.delete(`small-${i}.bin`);
  const browser = await launchBrowser();
  try {
    const pages = [];
    for (let t = 0; t < 3; t++) {
      const page = await tab(browser);
      pages.push(page);
      await page.evaluate(async ({ base, count }) => {
        const swarm = await import('/sdk/swarm.js');
        const { Blake3, toHex } = await import('/transfer/blake3.js');
        window.files = await Promise.all(Array.from({ length: count }, async (_, i) => {
          const res = await swarm.fetch(`${base}/small-${i}.bin`, { server: location.origin });
          const bytes = new Uint8Array(await res.arrayBuffer());
          return { root: toHex(new Blake3().update(bytes).digest()), length: bytes.length, stats: { ...res.swarm.stats } };
        }));
      }, { base: originUrl, count: sizes.length });
    }
    let delivered = 0;
    for (const [t, page] of pages.entries()) {
      const files = await page.evaluate(() => window.files);
      for (const [i, f] of files.entries()) {
        assert.equal(f.length, sizes[i], `tab ${t}, file ${i}`);
        assert.equal(f.root, roots[i], `tab ${t}, file ${i}: exact`);
        delivered += f.length;
      }
    }
    const fromOrigin = sizes.reduce((a, _, i) => a + (served.get(`small-${i}.bin`) ?? 0), 0);
    console.log(`folder of ${sizes.length} small files in 3 tabs, one after another: the origin sent ${fromOrigin} of ${delivered} bytes delivered`);
    // The first tab takes the folder from the origin; the others, introduced to it, from it.
    const once = sizes.reduce((a, b) => a + b, 0);
    assert.ok(fromOrigin >= once, 'the first copy from the origin');
    assert.ok(fromOrigin < 1.5 * once, `the later tabs from the first (origin sent ${fromOrigin}, one copy is ${once})`);
    // A native fetcher waits for its introduced neighbours too: the small file from the tabs.
    const out = join(dir, 'small-fetched.bin');
    const f = startCli(['fetch', `${originUrl}/small-6.bin`, '-o', out, '--server', server.url, '--json', ...NET]);
    assert.equal(await f.exited, 0, f.stderr);
    const last = f.events.filter((e) => e.event === 'progress').pop();
    assert.deepEqual([last.http, last.p2p], [0, sizes[6]], 'all from the tabs');
    assert.equal(createHash('sha256').update(readFileSync(out)).digest('hex'),
      createHash('sha256').update(readFileSync(join(site, 'small-6.bin'))).digest('hex'));
  } finally {
    await browser.close();
  }
});
