// Verified swarms through kernel NAT: a Chromium tab behind a symmetric NAT fetches a file with
// `swarm.fetch` while a native seeder (`peerweb seed`) serves it from another home; the origin
// (tests/browser/origin.mjs, counting what it sends) and `peerweb serve` live on the public
// network. Swarm members get no TURN by default (`/api/ice?for=swarm`): behind two symmetric NATs
// the tab takes the file from the origin; with `--swarm-relay` it takes it from the seeder
// through the relay; a seeder with a public address serves the symmetric tab directly.
//
// Run through tests/natlab/run.sh (creates and deletes the namespaces).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, startCli, launchBrowser, sdkPage, waitFor } from '../browser/lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const LAB = join(here, 'lab.sh');
const P = process.env.PEERWEB_LAB ?? `pw${process.pid % 100000}`;
const lab = (...args) => execFileSync(LAB, [...args.map(String)], { stdio: 'inherit' });
const MIB = 1 << 20;
const SIZE = 4 * MIB + 77;
const ORIGIN_RATE = 1e6;

let dir;
let origin;
let originUrl;
let root;

before(async () => {
  lab('up', P);
  dir = mkdtempSync(join(tmpdir(), 'peerweb-natlab-swarm-'));
  const site = join(dir, 'site');
  mkdirSync(site);
  writeFileSync(join(site, 'file.bin'), randomBytes(SIZE));
  const m = startCli(['manifest', site, '--json']);
  assert.equal(await m.exited, 0, m.stderr);
  root = m.events.find((e) => e.event === 'file').root;
  // The origin on the public network, beside the server, with an uplink of 1 MB/s (so a peer
  // path has time to come up: connecting through a relay takes a second or two).
  origin = spawn('ip', ['netns', 'exec', `${P}pub`, process.execPath, join(here, '..', 'browser', 'origin.mjs'), site, '203.0.113.1', String(ORIGIN_RATE)], { stdio: ['ignore', 'pipe', 'inherit'] });
  originUrl = await new Promise((resolve, reject) => {
    let out = '';
    origin.stdout.on('data', (d) => {
      out += d;
      const m = /origin on (\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    origin.once('exit', (code) => reject(new Error(`origin exited with ${code}: ${out}`)));
  });
});
after(() => {
  if (origin && origin.exitCode === null) origin.kill('SIGTERM');
  lab('down', P);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** What the origin has sent of the file so far (asked from inside the lab). */
function originSent() {
  const out = execFileSync('ip', ['netns', 'exec', `${P}pub`, process.execPath, '-e',
    `fetch(${JSON.stringify(`${originUrl}/.origin/served`)}).then((r) => r.text()).then((t) => process.stdout.write(t))`]);
  return JSON.parse(out)['file.bin'] ?? 0;
}

/**
 * Home 1 (symmetric) fetches the file in Chromium while a native seeder in home 2 (`seederHome`)
 * serves it, through a server started with `serverArgs`; returns the tab's stats, the
 * seeder's upload and the origin's bytes for this fetch.
 */
async function fetchBehindNat(seederHome, serverArgs) {
  const server = await startServer({
    ns: `${P}pub`, host: '203.0.113.1', port: 8080,
    args: ['--relay-ip', '203.0.113.1', '--turn-listen', '203.0.113.1:3478', ...serverArgs],
  });
  lab('home', P, 1, 'symmetric');
  lab('home', P, 2, seederHome);
  let browser;
  let seeder;
  try {
    seeder = startCli(['seed', join(dir, 'site'), '--only', 'file.bin', '--server', server.url, '--json'], { ns: `${P}home2` });
    await seeder.waitEvent((e) => e.event === 'joined', { what: 'the seeder in its swarm', timeout: 30000 });
    const before = originSent();
    browser = await launchBrowser({ ns: `${P}home1` });
    const page = await sdkPage(browser, `${server.url}/swarm-nat.html`);
    await page.evaluate(async ({ url, server }) => {
      const swarm = await import('/sdk/swarm.js');
      const { Blake3, toHex } = await import('/transfer/blake3.js');
      const res = await swarm.fetch(url, { server });
      window.swarmFile = res.swarm;
      const h = new Blake3();
      for await (const chunk of res.body) h.update(chunk);
      window.result = { root: toHex(h.digest()), stats: { ...res.swarm.stats } };
    }, { url: `${originUrl}/file.bin`, server: server.url });
    const r = await waitFor(page, () => window.result, null, { what: 'the file', timeout: 60000 });
    // A hedged range the origin is still sending is read to its end and counted then.
    await waitFor(page, () => window.swarmFile.httpRunning === 0, null, { what: 'the origin ranges to end' });
    r.stats = await page.evaluate(() => ({ ...window.swarmFile.stats }));
    assert.equal(r.root, root, 'the exact file');
    seeder.proc.kill('SIGINT');
    await seeder.exited;
    const up = seeder.events.filter((e) => e.event === 'progress').pop()?.up ?? 0;
    return { ...r.stats, seederUp: up, origin: originSent() - before };
  } finally {
    if (seeder?.proc.exitCode === null) seeder.proc.kill('SIGKILL');
    await browser?.close();
    lab('unhome', P, 1);
    lab('unhome', P, 2);
    await server.stop();
  }
}

test('behind two symmetric NATs the swarm gets no relay by default: the origin sends the file', { timeout: 180000 }, async () => {
  const r = await fetchBehindNat('symmetric', []);
  console.log(`symmetric ↔ symmetric, default: ${JSON.stringify(r)}`);
  assert.equal(r.p2p, 0, 'no direct path, and no relay for swarms');
  assert.equal(r.http, SIZE);
  assert.equal(r.origin, SIZE, 'the origin counted it');
});

test('with --swarm-relay the symmetric tab takes the file from the seeder through TURN', { timeout: 180000 }, async () => {
  const r = await fetchBehindNat('symmetric', ['--swarm-relay']);
  console.log(`symmetric ↔ symmetric, --swarm-relay: ${JSON.stringify(r)}`);
  assert.ok(r.p2p >= SIZE / 2, `most from the seeder (${r.p2p})`);
  assert.equal(r.seederUp, r.p2p, 'the seeder uploaded it');
  assert.equal(r.origin, r.http, 'the origin sent only what the tab counted from it');
});

test('a seeder with a public address serves a symmetric tab directly, no relay needed', { timeout: 180000 }, async () => {
  const r = await fetchBehindNat('public', []);
  console.log(`symmetric ↔ public, default: ${JSON.stringify(r)}`);
  assert.ok(r.p2p >= SIZE / 2, `most from the seeder (${r.p2p})`);
  assert.equal(r.seederUp, r.p2p, 'the seeder uploaded it');
  assert.equal(r.origin, r.http);
});
