// The server is killed and restarted mid-session: open data channels keep working the whole
// time, the SDK reconnects and rejoins by itself with the same peer ids, no connection is
// rebuilt, and new peers can still join afterwards.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
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

async function exchange(a, b, aId, bId, tag) {
  await a.evaluate(([id, tag]) => window.room.peers.get(id).send(`a:${tag}`), [bId, tag]);
  await b.evaluate(([id, tag]) => window.room.peers.get(id).send(`b:${tag}`), [aId, tag]);
  await waitFor(b, (tag) => window.t.msgs.some((m) => m.data === `a:${tag}`), tag, { what: `a→b ${tag}`, timeout: 5000 });
  await waitFor(a, (tag) => window.t.msgs.some((m) => m.data === `b:${tag}`), tag, { what: `b→a ${tag}`, timeout: 5000 });
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
