// Live connectivity metrics: tabs and the native peer report how their connections fared,
// /metrics counts them by client, outcome and path, /status shows them (screenshots at phone
// and desktop sizes); a client that sends garbage or floods reports keeps its connection
// and cannot add a series or grow the counters past its allowance.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startServer, launchBrowser, openTab, joinRoom, waitFor, waitOpen, startNative } from './lib.mjs';

let server;
let browser;
before(async () => {
  server = await startServer({ args: ['--turn-allow-loopback-peers', '--max-reports-per-min', '30'] });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

async function metrics() {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const lines = text.split('\n').filter((l) => l && !l.startsWith('#'));
  const get = (name) => Number(lines.find((l) => l.startsWith(`${name} `))?.split(' ')[1] ?? NaN);
  return { get, series: lines.length };
}

const conn = (client, result, path, relay = 'none') =>
  `peerweb_peer_connections_total{client="${client}",result="${result}",path="${path}",relay="${relay}"}`;
/**
 * Connections of `client` over a loopback pair: host, or prflx when the remote's checks
 * arrived before its trickled candidate (a report names the path its stats show the moment
 * the connection comes up; Chromium relabels such a candidate as host a moment later).
 */
const local = (g, client) => g(conn(client, 'connected', 'host')) + g(conn(client, 'connected', 'prflx'));
const connectCount = (g) => g('peerweb_peer_connect_seconds_count{path="host"}')
  + g('peerweb_peer_connect_seconds_count{path="prflx"}');

/** Polls /metrics until `pred(get)` holds. */
async function until(pred, what) {
  const end = Date.now() + 15000;
  let m;
  while (Date.now() < end) {
    m = await metrics();
    if (pred(m.get)) return m;
    await new Promise((r) => setTimeout(r, 200));
  }
  const seen = (await (await fetch(`${server.url}/metrics`)).text()).split('\n')
    .filter((l) => /^peerweb_peer_connections_total.* [1-9]/.test(l));
  throw new Error(`timed out waiting for ${what}; counted ${seen.join(', ')}`);
}

test('connections are counted by client and path; a tab that opts out is not; /status shows them', async () => {
  const a = await openTab(browser, server.url);
  const b = await openTab(browser, server.url);
  const aId = await joinRoom(a, 'counted');
  const bId = await joinRoom(b, 'counted');
  await waitOpen(a, bId);
  await waitOpen(b, aId);
  await until((g) => local(g, 'chromium') === 2, 'two local connections');
  // A relay-only pair over TURN/UDP.
  const relayOnly = { rtcConfig: { iceTransportPolicy: 'relay' } };
  const c = await openTab(browser, server.url);
  const d = await openTab(browser, server.url);
  const cId = await joinRoom(c, 'relayed', relayOnly);
  const dId = await joinRoom(d, 'relayed', relayOnly);
  await waitOpen(c, dId);
  await waitOpen(d, cId);
  await until((g) => g(conn('chromium', 'connected', 'relay', 'udp')) === 2, 'two relayed connections');
  // The native peer reports as native.
  const n = startNative(server.url, 'counted', ['--allow-loopback']);
  const nId = (await n.waitEvent((e) => e.event === 'welcome', { what: 'welcome' })).id;
  await waitOpen(a, nId);
  await until((g) => local(g, 'native') === 2 && local(g, 'chromium') === 4, 'native and tab report');
  assert.equal(await n.stop(), 0, n.stderr);
  // Opted out: a pair that connects and says nothing.
  const before = connectCount((await metrics()).get);
  const e = await openTab(browser, server.url);
  const f = await openTab(browser, server.url);
  const eId = await joinRoom(e, 'quiet', { reportConnectivity: false });
  const fId = await joinRoom(f, 'quiet', { reportConnectivity: false });
  await waitOpen(e, fId);
  await waitOpen(f, eId);
  await new Promise((r) => setTimeout(r, 1500));
  const m = await metrics();
  assert.equal(connectCount(m.get), before);
  assert.equal(m.get(conn('chromium', 'failed', 'none')), 0);

  // The status page, at desktop and phone sizes.
  for (const [name, viewport] of [['desktop', { width: 1100, height: 800 }], ['phone', { width: 390, height: 844 }]]) {
    const p = await browser.newPage();
    p.on('pageerror', (err) => console.error('[page error]', err.message));
    await p.setViewportSize(viewport);
    await p.goto(`${server.url}/status`);
    await p.locator('#success', { hasText: '100%' }).waitFor({ timeout: 10000 });
    const s = await p.evaluate(() => window.statusData);
    assert.equal(s.totals.connected, 8);
    assert.equal(s.totals.relayed, 2);
    assert.equal(s.minutes.length, 60);
    assert.equal(s.minutes.at(-1).connected + s.minutes.at(-2).connected >= 1, true, 'this minute (or the last) has them');
    assert.match(await p.textContent('#direct'), /^75% \/ 25%$/);
    assert.ok(await p.locator('#chart rect').count() >= 1, 'the chart has bars');
    assert.ok(await p.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), `${name}: fits the width`);
    await p.screenshot({ path: `artifacts/status-${name}.png`, fullPage: true });
    await p.close();
  }
  for (const p of [a, b, c, d, e, f]) await p.close();
});

/** A raw signaling connection that said hello; frames it receives land in `frames`. */
async function rawClient() {
  const ws = new WebSocket(`${server.url.replace('http', 'ws')}/ws`);
  const frames = [];
  ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
  await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
  ws.send(JSON.stringify({ type: 'hello', v: 1 }));
  const end = Date.now() + 5000;
  while (!frames.some((f) => f.type === 'welcome') && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  return { ws, frames };
}

test('garbage and floods of reports get error frames, keep the connection and add no series', async () => {
  const { ws, frames } = await rawClient();
  const start = await metrics();
  const sent = (m) => ws.send(typeof m === 'string' ? m : JSON.stringify(m));
  const garbage = [
    { type: 'report', what: 'connect', ok: true, ms: 5, path: 'a-new-label' },
    { type: 'report', what: 'connect', ok: true, ms: 5, path: 'relay', relay: 'x'.repeat(40000) },
    { type: 'report', what: 'connect', ok: false, ms: 5, client: 'x'.repeat(300), pad: 'y'.repeat(300) },
    { type: 'report', what: 'explode', ok: true, ms: 5 },
    { type: 'report', what: 'connect', ok: true, ms: 1e12, path: 'host' },
    '{"type":"report","what":"connect",',
  ];
  for (const g of garbage) sent(g);
  // 150 good reports at once (within the message burst of 200): 60 (twice the per-minute
  // rate) are counted, the rest dropped.
  for (let i = 0; i < 150; i++) sent({ type: 'report', what: 'connect', ok: true, ms: 1, path: 'host', client: `made-up-${i}` });
  sent({ type: 'ping', data: 'still here' });
  const end = Date.now() + 10000;
  while (!frames.some((f) => f.type === 'pong') && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  assert.ok(frames.some((f) => f.type === 'pong' && f.data === 'still here'), 'the connection is kept');
  const errors = frames.filter((f) => f.type === 'error').map((f) => f.code);
  assert.deepEqual(errors, [...garbage.slice(0, 5).map(() => 'bad-message'), 'bad-json', 'rate-limited']);
  const m = await until((g) => g('peerweb_reports_dropped_total{reason="flood"}') === 90, 'the flood counted');
  assert.equal(m.series, start.series, 'no new series');
  assert.equal(m.get(conn('other', 'connected', 'host')) - start.get(conn('other', 'connected', 'host')), 60);
  assert.equal(m.get('peerweb_reports_dropped_total{reason="malformed"}') - start.get('peerweb_reports_dropped_total{reason="malformed"}'), 5);
  ws.close();
});

test('tabs that close the moment they connect are still counted', async () => {
  const start = connectCount((await metrics()).get);
  const a = await openTab(browser, server.url);
  const b = await openTab(browser, server.url);
  const aId = await joinRoom(a, 'brief');
  const bId = await joinRoom(b, 'brief');
  await waitOpen(a, bId);
  await waitOpen(b, aId);
  await b.close();
  await a.close();
  await until((g) => connectCount(g) === start + 2, 'both reports');
});
