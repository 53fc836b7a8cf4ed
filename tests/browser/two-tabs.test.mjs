// Two tabs meet in a room and talk directly: messages both ways, path and RTT from getStats,
// unreliable channel options as asked, simultaneous channel creation (glare), peer-left.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openTab, joinRoom, waitFor, waitOpen } from './lib.mjs';

let server;
let browser;
before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test('two tabs exchange messages both ways over a direct data channel', async () => {
  const a = await openTab(browser, server.url);
  const b = await openTab(browser, server.url);
  const aId = await joinRoom(a, 'pair', { meta: { name: 'ada' } });
  const bId = await joinRoom(b, 'pair', { meta: { name: 'bob' } });
  assert.notEqual(aId, bId);
  await waitOpen(a, bId);
  await waitOpen(b, aId);

  await a.evaluate((id) => window.room.peers.get(id).send('hello from a'), bId);
  await b.evaluate((id) => window.room.peers.get(id).send(new Uint8Array([1, 2, 3]).buffer), aId);
  const gotB = await waitFor(b, () => window.t.msgs.find((m) => m.data === 'hello from a'), null, { what: 'a→b' });
  assert.equal(gotB.from, aId);
  assert.equal(gotB.label, 'peerweb');
  const gotA = await waitFor(a, () => {
    const m = window.t.msgs.find((x) => x.data instanceof ArrayBuffer);
    return m && { from: m.from, bytes: [...new Uint8Array(m.data)] };
  }, null, { what: 'b→a' });
  assert.deepEqual(gotA, { from: bId, bytes: [1, 2, 3] });

  // The metadata each joined with is visible to the other.
  assert.equal(await b.evaluate((id) => window.room.peers.get(id).meta.name, aId), 'ada');

  // Path and RTT come from getStats: on loopback, a host↔host pair.
  const path = await waitFor(a, (id) => window.room.peers.get(id).path, bId, { what: 'path' });
  assert.equal(path.type, 'host');
  assert.equal(path.protocol, 'udp');
  assert.ok(path.rtt === null || (path.rtt >= 0 && path.rtt < 1), `rtt ${path.rtt}`);

  // Broadcast reaches the peer.
  await a.evaluate(() => window.room.broadcast('to everyone'));
  await waitFor(b, () => window.t.msgs.some((m) => m.data === 'to everyone'), null, { what: 'broadcast' });

  // Backpressure: a bulk sender that awaits ready() never lets the buffer grow unbounded.
  const maxBuffered = await a.evaluate(async (id) => {
    const ch = window.room.peers.get(id).defaultChannel;
    const chunk = new Uint8Array(64 * 1024);
    let max = 0;
    for (let i = 0; i < 160; i++) {
      await ch.sendWhenReady(chunk);
      max = Math.max(max, ch.bufferedAmount);
    }
    return max;
  }, bId);
  assert.ok(maxBuffered <= 1024 * 1024 + 64 * 1024, `buffered ${maxBuffered}`);
  await waitFor(b, () => window.t.msgs.filter((m) => m.data instanceof ArrayBuffer && m.data.byteLength === 65536).length === 160,
    null, { what: 'bulk data', timeout: 30000 });
  await a.close();
  await b.close();
});

test('unreliable channel options arrive as asked on the remote side', async () => {
  const a = await openTab(browser, server.url);
  const b = await openTab(browser, server.url);
  const aId = await joinRoom(a, 'game');
  const bId = await joinRoom(b, 'game');
  await waitOpen(a, bId);
  await a.evaluate((id) => {
    const p = window.room.peers.get(id);
    p.channel('state', { ordered: false, maxRetransmits: 0 });
    p.channel('input', { ordered: false, maxPacketLifeTime: 150 });
  }, bId);
  const chans = await waitFor(b, () => window.t.channels.length >= 2 && window.t.channels, null, { what: 'remote channels' });
  const byLabel = Object.fromEntries(chans.map((c) => [c.label, c]));
  assert.deepEqual(byLabel.state, { from: aId, label: 'state', ordered: false, maxRetransmits: 0, maxPacketLifeTime: null });
  assert.deepEqual(byLabel.input, { from: aId, label: 'input', ordered: false, maxRetransmits: null, maxPacketLifeTime: 150 });
  // And they carry data.
  await waitFor(a, (id) => window.room.peers.get(id).channels.get('state').readyState === 'open', bId, { what: 'open' });
  await a.evaluate((id) => window.room.peers.get(id).channels.get('state').send('tick'), bId);
  const m = await waitFor(b, () => window.t.msgs.find((x) => x.label === 'state'), null, { what: 'unreliable message' });
  assert.equal(m.data, 'tick');
  await a.close();
  await b.close();
});

test('both sides opening channels at the same moment (glare) still connect', async () => {
  const a = await openTab(browser, server.url);
  const b = await openTab(browser, server.url);
  const aId = await joinRoom(a, 'glare');
  const bId = await joinRoom(b, 'glare');
  await waitOpen(a, bId);
  await waitOpen(b, aId);
  // Both renegotiate at once, several times in a row.
  await Promise.all([
    a.evaluate((id) => { for (let i = 0; i < 3; i++) window.room.peers.get(id).channel(`a${i}`); }, bId),
    b.evaluate((id) => { for (let i = 0; i < 3; i++) window.room.peers.get(id).channel(`b${i}`); }, aId),
  ]);
  await waitFor(a, () => window.t.channels.length === 3, null, { what: 'b channels at a' });
  await waitFor(b, () => window.t.channels.length === 3, null, { what: 'a channels at b' });
  for (const [page, other] of [[a, bId], [b, aId]]) {
    const state = await page.evaluate((id) => [window.room.peers.get(id).state, window.room.peers.get(id).pc.signalingState, window.t.errors], other);
    assert.deepEqual(state, ['connected', 'stable', []]);
  }
  await a.close();
  await b.close();
});

test("the README's example: a member opens a channel the moment a tab joins, whichever is polite", async () => {
  // The member's channel used to make it offer while the joiner offered; as the polite side
  // its channel then took SCTP stream 0 and the default channel could not be created.
  // Peer ids are random: fresh pairs meet until each has been the polite one.
  const seen = { memberPolite: 0, joinerPolite: 0 };
  for (let i = 0; i < 16 && !(seen.memberPolite && seen.joinerPolite); i++) {
    const a = await openTab(browser, server.url);
    const b = await openTab(browser, server.url);
    const aId = await joinRoom(a, `readme-${i}`);
    await a.evaluate(() => {
      window.errs = [];
      window.room.addEventListener('error', ({ error }) => window.errs.push(`${error.code}: ${error.message}`));
      window.room.addEventListener('peer', ({ peer }) => {
        peer.send('hello');
        peer.channel('state', { ordered: false, maxRetransmits: 0 });
      });
    });
    const bId = await joinRoom(b, `readme-${i}`);
    seen[aId > bId ? 'memberPolite' : 'joinerPolite'] += 1;
    await waitOpen(a, bId);
    await waitOpen(b, aId);
    await waitFor(b, () => window.t.msgs.find((m) => m.data === 'hello'), null, { what: 'hello on the default channel' });
    await waitFor(b, () => window.t.channels.find((c) => c.label === 'state'), null, { what: "the member's channel" });
    assert.deepEqual(await a.evaluate(() => window.errs), []);
    await a.close();
    await b.close();
  }
  assert.ok(seen.memberPolite && seen.joinerPolite, JSON.stringify(seen));
});

test('a tab that closes shows up as peer-left at once', async () => {
  const a = await openTab(browser, server.url);
  const b = await openTab(browser, server.url);
  await joinRoom(a, 'bye');
  const bId = await joinRoom(b, 'bye');
  await waitOpen(a, bId);
  const t0 = Date.now();
  await b.close(); // the tab closes: no leave() call, the browser ends the WebSocket
  const left = await waitFor(a, () => window.t.left.length > 0 && window.t.left, null, { what: 'peer-left', timeout: 5000 });
  assert.deepEqual(left, [bId]);
  assert.ok(Date.now() - t0 < 5000);
  assert.equal(await a.evaluate((id) => window.room.peers.has(id), bId), false);
  await a.close();
});

test('leave() shows up as peer-left', async () => {
  const a = await openTab(browser, server.url);
  const b = await openTab(browser, server.url);
  await joinRoom(a, 'leave');
  const bId = await joinRoom(b, 'leave');
  await waitOpen(a, bId);
  await b.evaluate(() => window.room.leave());
  assert.deepEqual(await waitFor(a, () => window.t.left.length > 0 && window.t.left, null, { what: 'peer-left' }), [bId]);
  assert.equal(await b.evaluate(() => window.room.signalingState), 'closed');
  await a.close();
  await b.close();
});
