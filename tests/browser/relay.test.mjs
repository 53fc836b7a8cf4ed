// Two tabs that may only use relay candidates (iceTransportPolicy: 'relay') connect through
// the STUN/TURN server built into `peerweb serve`, over UDP. Credentials come from /api/ice.
// Wrong credentials, and relaying to loopback without --turn-allow-loopback-peers, give no
// connection, and the server's metrics say why.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, launchBrowser, openTab, joinRoom, waitFor, waitOpen, turnEntry } from './lib.mjs';

let browser;
const servers = [];
after(async () => {
  await browser?.close();
  for (const s of servers) await s.stop();
});

async function metrics(url) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const get = (name) => Number(text.split('\n').find((l) => l.startsWith(`${name} `))?.split(' ')[1]);
  return get;
}

async function serve(args) {
  const s = await startServer({ args: ['--turn-listen', '127.0.0.1:0', ...args] });
  servers.push(s);
  browser ??= await launchBrowser();
  return s;
}

const relayOnly = { rtcConfig: { iceTransportPolicy: 'relay' } };

/** Connects two relay-only tabs with these options; returns both pages after checking the path. */
async function connectRelayed(server, options, protocol, context = browser) {
  const a = await openTab(context, server.url);
  const b = await openTab(context, server.url);
  const aId = await joinRoom(a, 'relayed', options);
  const bId = await joinRoom(b, 'relayed', options);
  await waitOpen(a, bId);
  await waitOpen(b, aId);
  await a.evaluate((id) => window.room.peers.get(id).send('through the relay'), bId);
  await b.evaluate((id) => window.room.peers.get(id).send('and back'), aId);
  await waitFor(b, () => window.t.msgs.some((m) => m.data === 'through the relay'), null, { what: 'a→b' });
  await waitFor(a, () => window.t.msgs.some((m) => m.data === 'and back'), null, { what: 'b→a' });
  for (const [page, other] of [[a, bId], [b, aId]]) {
    const path = await waitFor(page, (id) => window.room.peers.get(id).path, other, { what: 'path' });
    assert.equal(path.type, 'relay');
    assert.equal(path.relayProtocol, protocol);
  }
  return [a, b];
}

test('relay-only tabs connect through the built-in TURN server over UDP', async () => {
  const server = await serve(['--turn-allow-loopback-peers']);
  // The UDP URL only: given /api/ice's UDP and TCP URLs, Chromium may nominate whichever
  // relay pair succeeds first — TCP in one CI run — and move to UDP later.
  const udp = await turnEntry(server.url, /^turn:.*transport=udp$/);
  assert.equal(udp.urls.length, 1);
  const [a, b] = await connectRelayed(server, { ...relayOnly, iceServers: [udp] }, 'udp');
  // Live metrics while the session runs.
  await new Promise((r) => setTimeout(r, 400));
  const m = await metrics(server.url);
  assert.ok(m('peerweb_turn_allocations') >= 2, `allocations ${m('peerweb_turn_allocations')}`);
  assert.ok(m('peerweb_turn_relayed_packets_total{direction="to_peer"}') > 0);
  assert.ok(m('peerweb_turn_relayed_packets_total{direction="to_client"}') > 0);
  assert.ok(m('peerweb_turn_channels') >= 1, 'Chromium binds channels');
  await a.close();
  await b.close();
});

test('relay-only tabs connect through TURN over TCP', async () => {
  const server = await serve(['--turn-allow-loopback-peers']);
  const tcp = await turnEntry(server.url, /^turn:.*transport=tcp$/);
  assert.equal(tcp.urls.length, 1);
  const [a, b] = await connectRelayed(server, { ...relayOnly, iceServers: [tcp] }, 'tcp');
  await a.close();
  await b.close();
});

test('relay-only tabs connect through TURN over TLS', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'peerweb-tls-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
      '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1',
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const server = await serve(['--turn-allow-loopback-peers', '--turn-tls-listen', '127.0.0.1:0',
      '--turn-tls-cert', join(dir, 'cert.pem'), '--turn-tls-key', join(dir, 'key.pem')]);
    const tls = await turnEntry(server.url, /^turns:/);
    assert.equal(tls.urls.length, 1);
    // The test certificate is self-signed; this browser is told to accept it.
    const trusting = await launchBrowser({ args: ['--ignore-certificate-errors'] });
    try {
      const [a, b] = await connectRelayed(server, { ...relayOnly, iceServers: [tls] }, 'tls', trusting);
      await a.close();
      await b.close();
    } finally {
      await trusting.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

async function neverConnects(server, options) {
  const a = await openTab(browser, server.url);
  const b = await openTab(browser, server.url);
  const aId = await joinRoom(a, 'nope', options);
  await joinRoom(b, 'nope', options);
  await new Promise((r) => setTimeout(r, 6000));
  const open = await a.evaluate((id) => [...window.room.peers.values()].some((p) => p.open), aId);
  assert.equal(open, false, 'no relay, no connection');
  await a.close();
  await b.close();
}

test('wrong TURN credentials give no relay', async () => {
  const server = await serve(['--turn-allow-loopback-peers']);
  const ice = await (await fetch(`${server.url}/api/ice`)).json();
  const turn = ice.iceServers.find((s) => s.username);
  const bad = { ...relayOnly, iceServers: [{ ...turn, credential: 'not-the-password' }] };
  await neverConnects(server, bad);
  const m = await metrics(server.url);
  assert.ok(m('peerweb_turn_auth_failures_total') > 0);
  assert.equal(m('peerweb_turn_allocations'), 0);
});

test('relaying to loopback is refused unless allowed', async () => {
  const server = await serve([]);
  await neverConnects(server, relayOnly);
  const m = await metrics(server.url);
  // Made (a counter): the tabs are closed by now, and the live gauge may already show their
  // allocations released.
  assert.ok(m('peerweb_turn_allocations_total') >= 1, 'allocations are made');
  assert.ok(m('peerweb_turn_refusals_total{reason="peer_address"}') > 0, 'but peers refused');
});

test('a relayed room of seven tabs: every pair connects and no allocation is refused', async () => {
  // A tab's credential serves its connection to each other member, with an allocation per
  // TURN transport: 6 connections × (UDP, TCP) = 12 allocations per credential here, which a
  // per-credential quota of 10 refused. The quota must fit a room, not one connection.
  const server = await serve(['--turn-allow-loopback-peers']);
  const tabs = [];
  for (let i = 0; i < 7; i++) tabs.push(await openTab(browser, server.url));
  const ids = [];
  for (const t of tabs) ids.push(await joinRoom(t, 'seven', relayOnly));
  for (const [i, t] of tabs.entries()) {
    for (const id of ids.filter((_, j) => j !== i)) await waitOpen(t, id);
  }
  // The TURN gauges are published four times a second, and the last pairs connect within
  // that: wait for the gauge to show every connection's allocation (Chromium adds its TCP
  // ones later still), then check that none was refused.
  let m = await metrics(server.url);
  const end = Date.now() + 10000;
  while (m('peerweb_turn_allocations') < 7 * 6 && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 100));
    m = await metrics(server.url);
  }
  assert.ok(m('peerweb_turn_allocations') >= 7 * 6, `allocations ${m('peerweb_turn_allocations')}`);
  assert.equal(m('peerweb_turn_refusals_total{reason="quota"}'), 0);
  for (const t of tabs) await t.close();
});
