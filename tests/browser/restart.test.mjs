// The server is killed and restarted mid-session: open data channels keep working the whole
// time, the SDK reconnects and rejoins by itself with the same peer ids, no connection is
// rebuilt, and new peers can still join afterwards. And a path that dies is restarted until
// it is back, even when the restart's offers are lost on the way.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startServer, launchBrowser, openTab, joinRoom, waitFor, waitOpen } from './lib.mjs';

// Inside the test's own network namespace any fixed port is free.
const PORT = 18080;
let server;
let browser;
before(async () => {
  server = await startServer({ port: PORT });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

async function exchange(a, b, aId, bId, tag, timeout = 5000) {
  await a.evaluate(([id, tag]) => window.room.peers.get(id).send(`a:${tag}`), [bId, tag]);
  await b.evaluate(([id, tag]) => window.room.peers.get(id).send(`b:${tag}`), [aId, tag]);
  await waitFor(b, (tag) => window.t.msgs.some((m) => m.data === `a:${tag}`), tag, { what: `a→b ${tag}`, timeout });
  await waitFor(a, (tag) => window.t.msgs.some((m) => m.data === `b:${tag}`), tag, { what: `b→a ${tag}`, timeout });
}

test('killing and restarting the server does not break live peers; the SDK rejoins', async () => {
  const opts = { reconnect: { minDelay: 100, maxDelay: 1000 } };
  const a = await openTab(browser, server.url);
  const b = await openTab(browser, server.url);
  const aId = await joinRoom(a, 'survive', opts);
  const bId = await joinRoom(b, 'survive', opts);
  await waitOpen(a, bId);
  await waitOpen(b, aId);
  await exchange(a, b, aId, bId, 'before');

  await server.kill();
  await waitFor(a, () => window.room.signalingState === 'reconnecting', null, { what: 'a notices', timeout: 5000 });
  await waitFor(b, () => window.room.signalingState === 'reconnecting', null, { what: 'b notices', timeout: 5000 });
  // Peer to peer, nothing needs the server.
  for (let i = 0; i < 5; i++) await exchange(a, b, aId, bId, `down${i}`);

  server = await startServer({ port: PORT });
  await waitFor(a, () => window.room.signalingState === 'open', null, { what: 'a rejoins', timeout: 10000 });
  await waitFor(b, () => window.room.signalingState === 'open', null, { what: 'b rejoins', timeout: 10000 });
  assert.equal(await a.evaluate(() => window.room.id), aId);
  assert.equal(await b.evaluate(() => window.room.id), bId);
  await exchange(a, b, aId, bId, 'after');
  // The same connection carried everything: one peer connection per side, never rebuilt.
  assert.equal(await a.evaluate(() => window.t.pcs), 1);
  assert.equal(await b.evaluate(() => window.t.pcs), 1);
  assert.equal(await a.evaluate((id) => window.room.peers.get(id).state, bId), 'connected');

  // The restarted server knows the room again: a newcomer meets both.
  const c = await openTab(browser, server.url);
  const cId = await joinRoom(c, 'survive', opts);
  await waitOpen(c, aId);
  await waitOpen(c, bId);
  await waitOpen(a, cId);
  await c.evaluate(() => window.room.broadcast('hi from c'));
  await waitFor(a, () => window.t.msgs.some((m) => m.data === 'hi from c'), null, { what: 'c→a' });
  await waitFor(b, () => window.t.msgs.some((m) => m.data === 'hi from c'), null, { what: 'c→b' });
  for (const p of [a, b, c]) await p.close();
});

test('a dead path is restarted again until it is back, when the first restart offers are lost', async () => {
  const a = await openTab(browser, server.url);
  const b = await openTab(browser, server.url);
  // Each tab's signaling passes through a route that can swallow the tab's next offer, as a
  // socket that died without either end noticing would.
  const drops = [];
  for (const page of [a, b]) {
    const drop = { armed: false, dropped: 0 };
    drops.push(drop);
    await page.routeWebSocket(/\/ws$/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((m) => {
        if (drop.armed && String(m).includes('"type":"offer"')) {
          drop.armed = false;
          drop.dropped += 1;
          return;
        }
        server.send(m);
      });
    });
  }
  const aId = await joinRoom(a, 'lost-offers');
  const bId = await joinRoom(b, 'lost-offers');
  await waitOpen(a, bId);
  await waitOpen(b, aId);
  await exchange(a, b, aId, bId, 'before');

  // Kill the path for good: drop UDP to and from both ends of the selected pair. A restart
  // gathers on new sockets, so only a restart brings the peers back.
  const port = (page, id) => page.evaluate(async (id) => {
    const report = await window.room.peers.get(id).pc.getStats();
    let port = null;
    report.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        port = report.get(report.get(s.selectedCandidatePairId).localCandidateId).port;
      }
    });
    return port;
  }, id);
  const turnUser = (page, id) => page.evaluate((id) =>
    window.room.peers.get(id).pc.getConfiguration().iceServers.find((s) => s.username)?.username, id);
  const users = [await turnUser(a, bId), await turnUser(b, aId)];
  assert.ok(users.every(Boolean), 'TURN credentials from /api/ice');
  const ports = [await port(a, bId), await port(b, aId)];
  assert.ok(ports.every(Boolean), `selected ports ${ports}`);
  const rules = ports.flatMap((p) => [['INPUT', '-p', 'udp', '--dport', String(p), '-j', 'DROP'],
    ['OUTPUT', '-p', 'udp', '--sport', String(p), '-j', 'DROP']]);
  for (const d of drops) d.armed = true;
  for (const r of rules) execFileSync('iptables', ['-I', ...r]);
  try {
    await waitFor(a, (id) => window.room.peers.get(id).state !== 'connected', bId, { what: 'a sees the path die', timeout: 20000 });
    // Both restarts' offers are lost; only trying again reconnects.
    await exchange(a, b, aId, bId, 'after', 60000);
    assert.deepEqual(drops.map((d) => d.dropped), [1, 1], 'each side lost one offer');
    assert.equal(await a.evaluate(() => window.t.pcs), 1, 'the same connection, restarted');
    assert.equal(await b.evaluate(() => window.t.pcs), 1);
    // Restarts fetch fresh TURN credentials (allocations behind a dead path still count
    // against the old ones).
    assert.notEqual(await turnUser(a, bId), users[0]);
    assert.notEqual(await turnUser(b, aId), users[1]);
  } finally {
    for (const r of rules) execFileSync('iptables', ['-D', ...r]);
  }
  for (const p of [a, b]) await p.close();
});
