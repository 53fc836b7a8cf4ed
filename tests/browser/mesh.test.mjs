// Ten tabs in one room form a full mesh: 45 direct connections, every ordered pair exchanges
// a message.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openTab, joinRoom, waitFor } from './lib.mjs';

const N = 10;
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

test(`${N} tabs form a full mesh and every pair exchanges a message`, async () => {
  const tabs = [];
  for (let i = 0; i < N; i++) tabs.push(await openTab(browser, server.url));
  const ids = [];
  // Join one after another, as people arrive.
  for (const tab of tabs) ids.push(await joinRoom(tab, 'mesh'));
  assert.equal(new Set(ids).size, N);

  for (const [i, tab] of tabs.entries()) {
    const others = ids.filter((_, j) => j !== i);
    await waitFor(tab, (others) => others.every((id) => window.room.peers.get(id)?.open), others,
      { what: `tab ${i} connected to all`, timeout: 60000 });
  }
  // Every tab sends a distinct message to every other tab.
  await Promise.all(tabs.map((tab, i) => tab.evaluate(([me, others]) => {
    for (const id of others) window.room.peers.get(id).send(`${me}->${id}`);
  }, [ids[i], ids.filter((_, j) => j !== i)])));
  for (const [i, tab] of tabs.entries()) {
    const expected = ids.filter((_, j) => j !== i).map((from) => `${from}->${ids[i]}`).sort();
    const got = await waitFor(tab, (n) => window.t.msgs.length >= n && window.t.msgs.map((m) => `${m.data}`).sort(),
      expected.length, { what: `tab ${i} messages`, timeout: 20000 });
    assert.deepEqual(got, expected);
    // Exactly one connection per other peer: no duplicates from glare or re-announcements.
    assert.equal(await tab.evaluate(() => window.room.peers.size), N - 1);
    assert.deepEqual(await tab.evaluate(() => window.t.errors), []);
  }
  for (const tab of tabs) await tab.close();
});
