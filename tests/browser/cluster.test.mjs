// Three `peerweb serve` nodes on one redis-server, behind Debian's nginx as the load balancer
// (docs/nginx-cluster.conf as written there): two tabs on different nodes meet and talk over
// a data channel; the node of one of them is killed (SIGKILL): its tab reconnects through
// nginx to a live node and resumes, the data channel never breaks, and the other tab never
// sees it leave. Relay-only tabs whose TURN node dies move to another node's TURN through an
// ICE restart, and one node's TURN credentials allocate on any other. A swarm spans nodes: a
// tab on one node gets a whole file from a native seeder on another.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, startCli, startNginx, launchBrowser, openTab, joinRoom, sdkPage, turnEntry, waitFor, waitOpen } from './lib.mjs';
import { startOrigin } from './origin.mjs';

const PORTS = [8081, 8082, 8083];
const LB = 18090;
/** One TURN REST secret on every node: credentials from one verify on all. */
const TURN_SECRET = 'cluster-test-turn-secret-0123456789abcdef';
let dir;
let redis;
let nginx;
const nodes = [];
let browser;

/** Node `i` (again, after a stop: same port, same name). */
function startNode(i) {
  return startServer({ port: PORTS[i], args: ['--redis', `redis+unix://${join(dir, 'r.sock')}`,
    '--node-name', `n${i + 1}`, '--turn-allow-loopback-peers', '--turn-secret', TURN_SECRET] });
}

/** Starts `cmd` and waits for `ready` on its stdout. */
function started(cmd, args, ready) {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${cmd} did not start: ${out}`)), 10000);
    p.stdout.on('data', (d) => {
      out += d;
      if (ready.test(out)) {
        clearTimeout(timer);
        p.stdout.resume();
        resolve(p);
      }
    });
    p.on('exit', (code) => reject(new Error(`${cmd} exited with ${code}: ${out}`)));
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'peerweb-cluster-'));
  redis = await started('redis-server', ['--port', '0', '--unixsocket', join(dir, 'r.sock'),
    '--unixsocketperm', '700', '--dir', dir, '--save', '', '--appendonly', 'no'], /ready to accept connections/i);
  for (const i of PORTS.keys()) nodes.push(await startNode(i));
  const conf = readFileSync(new URL('../../docs/nginx-cluster.conf', import.meta.url), 'utf8')
    .replace('listen 80;', `listen 127.0.0.1:${LB};`)
    .replace('server_name peerweb.example.org;', 'server_name localhost;');
  nginx = await startNginx(dir, conf, async () => (await fetch(`http://127.0.0.1:${LB}/healthz`)).ok);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await nginx?.stop();
  for (const n of nodes) await n.stop();
  if (redis && redis.exitCode === null) {
    redis.kill('SIGKILL');
    await new Promise((r) => redis.once('exit', r));
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Sessions connected to each node (its own gauge; `null`: the node is down), once they add
 * up to `total` (the gauges are updated every half second). */
async function sessionsPerNode(total) {
  let counts;
  for (let i = 0; i < 50; i++) {
    counts = await Promise.all(nodes.map(async (n) => {
      try {
        const text = await (await fetch(`${n.url}/metrics`)).text();
        return Number(/^peerweb_signal_sessions (\d+)/m.exec(text)?.[1] ?? 0);
      } catch {
        return null;
      }
    }));
    if (counts.reduce((x, y) => x + (y ?? 0), 0) === total) return counts;
    await new Promise((r) => setTimeout(r, 100));
  }
  return counts;
}

/** Waits until the earlier tests' sessions are gone from every node's gauge: a test that
 * finds its tabs' nodes by the gauges must not count a closed tab's session still shown. */
async function noSessions() {
  const counts = await sessionsPerNode(0);
  assert.equal(counts.reduce((x, y) => x + (y ?? 0), 0), 0, `sessions left: ${counts}`);
}

/** TURN allocations live on each node (`null`: the node is down). */
async function allocationsPerNode() {
  return Promise.all(nodes.map(async (n) => {
    try {
      const text = await (await fetch(`${n.url}/metrics`)).text();
      return Number(/^peerweb_turn_allocations (\d+)/m.exec(text)?.[1] ?? 0);
    } catch {
      return null;
    }
  }));
}

/** Polls allocationsPerNode() until `ok(counts)`; returns the last counts. */
async function allocationsWhen(ok) {
  let counts;
  for (let i = 0; i < 100; i++) {
    counts = await allocationsPerNode();
    if (ok(counts)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return counts;
}

/** Two relay-only tabs with `options` in room `room`, their channel open both ways. */
async function relayedPair(room, options) {
  const url = `http://localhost:${LB}`;
  const a = await openTab(browser, url);
  const b = await openTab(browser, url);
  const aId = await joinRoom(a, room, { ...options, rtcConfig: { iceTransportPolicy: 'relay' } });
  const bId = await joinRoom(b, room, { ...options, rtcConfig: { iceTransportPolicy: 'relay' } });
  await waitOpen(a, bId);
  await waitOpen(b, aId);
  let n = 0;
  const exchange = async (tag, timeout = 10000) => {
    tag = `${tag}-${n++}`;
    await a.evaluate(([id, tag]) => window.room.peers.get(id).send(`a:${tag}`), [bId, tag]);
    await b.evaluate(([id, tag]) => window.room.peers.get(id).send(`b:${tag}`), [aId, tag]);
    await waitFor(b, (tag) => window.t.msgs.some((m) => m.data === `a:${tag}`), tag, { what: `a→b ${tag}`, timeout });
    await waitFor(a, (tag) => window.t.msgs.some((m) => m.data === `b:${tag}`), tag, { what: `b→a ${tag}`, timeout });
  };
  const paths = async () => Promise.all([[a, bId], [b, aId]].map(([page, other]) =>
    waitFor(page, (id) => window.room.peers.get(id).path, other, { what: 'path' })));
  return { a, b, aId, bId, exchange, paths };
}

// First, while every node is up.
test('TURN credentials from one node allocate on another (one shared REST secret)', async () => {
  const live = [];
  for (const [i, n] of nodes.entries()) {
    try {
      live.push({ i, udp: await turnEntry(n.url, /^turn:.*transport=udp$/) });
    } catch { /* down */ }
  }
  assert.ok(live.length >= 2, 'two live nodes');
  const [from, to] = live;
  const crossed = { ...from.udp, urls: to.udp.urls };
  const before = (await allocationsPerNode())[to.i];
  const { a, b, exchange, paths } = await relayedPair('crossed', { iceServers: [crossed] });
  await exchange('crossed');
  for (const p of await paths()) assert.equal(p.type, 'relay');
  const after = await allocationsWhen((c) => c[to.i] >= before + 2);
  assert.ok(after[to.i] >= before + 2, `node ${to.i + 1} allocated with node ${from.i + 1}'s credentials: ${after}`);
  for (const p of [a, b]) await p.close();
});

test('a tab on one node fetches a whole file from a native seeder on another, the origin down for it', async () => {
  const site = join(dir, 'site');
  mkdirSync(site, { recursive: true });
  const origin = await startOrigin(site);
  const size = 4 * (1 << 20) + 77;
  writeFileSync(join(site, 'spread.bin'), randomBytes(size));
  const m = startCli(['manifest', site, '--json']);
  assert.equal(await m.exited, 0, m.stderr);
  const root = m.events.find((e) => e.event === 'file' && e.path === 'spread.bin').root;
  const net = ['--allow-loopback', '--no-stun', '--no-turn'];
  const seeder = startCli(['seed', site, '--only', 'spread.bin', '--server', nodes[0].url, '--json', ...net]);
  try {
    await seeder.waitEvent((e) => e.event === 'joined', { what: 'the seeder in its swarm' });
    origin.down.add('spread.bin');
    const page = await sdkPage(browser, `${nodes[1].url}/swarm-test.html`);
    await page.evaluate(async (url) => {
      const swarm = await import('/sdk/swarm.js');
      const { Blake3, toHex } = await import('/transfer/blake3.js');
      const res = await swarm.fetch(url, { server: location.origin });
      const h = new Blake3();
      let bytes = 0;
      for await (const chunk of res.body) { h.update(chunk); bytes += chunk.length; }
      window.result = { root: toHex(h.digest()), bytes, stats: res.swarm.stats };
      res.swarm.close();
    }, `${origin.url}/spread.bin`);
    const r = await page.evaluate(() => window.result);
    assert.equal(r.root, root, 'the exact file');
    assert.equal(r.bytes, size);
    assert.equal(origin.served.get('spread.bin') ?? 0, 0, 'none of it from the origin');
    await page.close();
  } finally {
    seeder.proc.kill('SIGINT');
    await seeder.exited;
    await origin.close();
  }
});

test('a rolling restart: SIGTERM on a tab\'s node moves it to another unseen, its data channel unbroken', async () => {
  await noSessions();
  const url = `http://localhost:${LB}`;
  const opts = { reconnect: { minDelay: 100, maxDelay: 1000 } };
  const a = await openTab(browser, url);
  const aId = await joinRoom(a, 'rolling', opts);
  const one = await sessionsPerNode(1);
  const b = await openTab(browser, url);
  const bId = await joinRoom(b, 'rolling', opts);
  const both = await sessionsPerNode(2);
  const bNode = both.findIndex((n, i) => n === 1 && one[i] === 0);
  assert.ok(bNode >= 0, `b on a node of its own: ${both}`);
  await waitOpen(a, bId);
  await waitOpen(b, aId);
  await nodes[bNode].stop();
  await waitFor(b, () => window.t.signaling.includes('reconnecting'), null, { what: 'b told to go' });
  await waitFor(b, () => window.room.signalingState === 'open', null, { what: 'b resumes elsewhere', timeout: 15000 });
  assert.equal(await b.evaluate(() => window.room.id), bId);
  await a.evaluate((id) => window.room.peers.get(id).send('after the restart'), bId);
  await waitFor(b, () => window.t.msgs.some((m) => m.data === 'after the restart'), null, { what: 'a→b' });
  // The node comes back (a new process on its port), as in a rolling deploy.
  nodes[bNode] = await startNode(bNode);
  assert.deepEqual(await a.evaluate(() => window.t.left), [], 'a saw b leave');
  for (const p of [a, b]) assert.equal(await p.evaluate(() => window.t.pcs), 1, 'the same peer connection');
  for (const p of [a, b]) await p.close();
});

test('tabs on different nodes behind nginx talk; killing one node breaks nothing and no one sees a leave', async () => {
  await noSessions();
  const url = `http://localhost:${LB}`;
  const opts = { reconnect: { minDelay: 100, maxDelay: 1000 } };
  const a = await openTab(browser, url);
  const aId = await joinRoom(a, 'spread', opts);
  const before = await sessionsPerNode(1);
  const aNode = before.findIndex((n) => n === 1);
  assert.ok(aNode >= 0, `a's node: ${before}`);
  // nginx sends each new connection to the node with the fewest: b's lands elsewhere.
  const b = await openTab(browser, url);
  const bId = await joinRoom(b, 'spread', opts);
  const both = await sessionsPerNode(2);
  const bNode = both.findIndex((n, i) => n === 1 && i !== aNode);
  assert.ok(bNode >= 0 && both[aNode] === 1, `one each: ${both}`);
  await waitOpen(a, bId);
  await waitOpen(b, aId);
  const exchange = async (tag) => {
    await a.evaluate(([id, tag]) => window.room.peers.get(id).send(`a:${tag}`), [bId, tag]);
    await b.evaluate(([id, tag]) => window.room.peers.get(id).send(`b:${tag}`), [aId, tag]);
    await waitFor(b, (tag) => window.t.msgs.some((m) => m.data === `a:${tag}`), tag, { what: `a→b ${tag}` });
    await waitFor(a, (tag) => window.t.msgs.some((m) => m.data === `b:${tag}`), tag, { what: `b→a ${tag}` });
  };
  await exchange('before');

  await nodes[bNode].kill();
  await waitFor(b, () => window.t.signaling.includes('reconnecting'), null, { what: 'b notices', timeout: 10000 });
  await exchange('down');
  await waitFor(b, () => window.room.signalingState === 'open', null, { what: 'b resumes elsewhere', timeout: 15000 });
  assert.equal(await b.evaluate(() => window.room.id), bId, 'the same peer id');
  const after = await sessionsPerNode(2);
  assert.equal(after[bNode], null, 'the killed node is gone');
  assert.equal(after.reduce((x, y) => x + (y ?? 0), 0), 2, `both connected: ${after}`);
  // Past the resume grace (20 s by default), a has seen no leave; the same connection
  // carried everything; signaling works both ways again (a third tab meets both).
  await new Promise((r) => setTimeout(r, 21000));
  await exchange('after');
  assert.deepEqual(await a.evaluate(() => window.t.left), [], 'a saw b leave');
  assert.equal(await a.evaluate(() => window.t.pcs), 1);
  assert.equal(await b.evaluate(() => window.t.pcs), 1);
  const c = await openTab(browser, url);
  const cId = await joinRoom(c, 'spread', opts);
  await waitOpen(c, aId);
  await waitOpen(c, bId);
  await waitOpen(b, cId);
  for (const p of [a, b, c]) await p.close();
});

test('relay-only tabs whose TURN node dies recover through an ICE restart via another node\'s TURN', async () => {
  // Earlier tabs' allocations may linger (until they expire): this pair's are what it adds.
  const base = await allocationsPerNode();
  const { a, b, exchange, paths } = await relayedPair('relayed', { reconnect: { minDelay: 100, maxDelay: 1000 } });
  await exchange('before');
  for (const p of await paths()) assert.equal(p.type, 'relay');
  // Each tab's /api/ice came through nginx from some live node: its TURN holds the tab's
  // allocations (one per URL, UDP and TCP), and each tab's relayed candidate is on the path.
  const added = (c) => c.map((x, i) => (x ?? 0) - (base[i] ?? 0));
  const before = added(await allocationsWhen((c) => added(c).reduce((x, y) => x + y, 0) >= 2));
  const victim = before.indexOf(Math.max(...before));
  assert.ok(before[victim] > 0, `a node relays this pair: ${before}`);
  const t0 = Date.now();
  await nodes[victim].kill();
  // Every path through the dead relay is down; each tab whose path it carried restarts ICE
  // (after 3 s disconnected) with fresh servers from a live node, over the same peer
  // connection and data channel.
  await exchange('after', 30000);
  console.log(`relayed path back ${Date.now() - t0} ms after the kill`);
  for (const p of await paths()) assert.equal(p.type, 'relay');
  const after = await allocationsWhen((c) => c.reduce((x, y) => x + (y ?? 0), 0) >= 2);
  assert.equal(after[victim], null, 'the killed node is gone');
  assert.ok(after.some((x) => x > 0), `a live node relays now: ${after}`);
  for (const p of [a, b]) {
    assert.equal(await p.evaluate(() => window.t.pcs), 1, 'the same peer connection');
    assert.deepEqual(await p.evaluate(() => window.t.left), [], 'no one left');
  }
  for (const p of [a, b]) await p.close();
});
