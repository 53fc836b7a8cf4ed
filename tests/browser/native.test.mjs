// The native peer (`peerweb join`, on its own data path) and Chromium in one room through
// `peerweb serve`: either side offers, data flows both ways on the default channel (short
// messages, then 64 KiB and 256 KiB, the most either side takes), relay-only on both sides
// goes through the built-in TURN, a browser that hides its address behind an mDNS name still
// connects, an unreliable channel drops under induced loss where the reliable one does not,
// and `peerweb ping` reports the path. All inside run.sh's loopback-only namespace.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { addVeth, startServer, launchBrowser, openTab, joinRoom, waitFor, waitOpen, startNative, BIG_SIZES, big, sendBig, gotBig } from './lib.mjs';

let server;
let browser;
const natives = [];
before(async () => {
  server = await startServer({ args: ['--turn-listen', '127.0.0.1:0', '--turn-allow-loopback-peers'] });
  browser = await launchBrowser();
});
after(async () => {
  for (const n of natives) await n.stop();
  await browser?.close();
  await server?.stop();
});

function native(room, args = []) {
  const n = startNative(server.url, room, ['--allow-loopback', ...args]);
  natives.push(n);
  return n;
}

/** The native peer's id, from its welcome event. */
async function nativeId(n) {
  return (await n.waitEvent((e) => e.event === 'welcome', { what: 'welcome' })).id;
}

/** Messages both ways between a tab and a native peer whose channel is open: short ones,
 * then the large sizes. */
async function talk(page, n, pageId, nId) {
  await page.evaluate((id) => window.room.peers.get(id).send('from chromium'), nId);
  await n.waitEvent((e) => e.event === 'message' && e.data === 'from chromium' && e.peer === pageId, { what: 'browser→native' });
  n.say('from native');
  const got = await waitFor(page, () => window.t.msgs.find((m) => m.data === 'from native'), null, { what: 'native→browser' });
  assert.equal(got.from, nId);
  assert.equal(got.label, 'peerweb');
  await sendBig(page, nId, 'chromium');
  for (const size of BIG_SIZES) {
    await n.waitEvent((e) => e.event === 'message' && e.peer === pageId && e.data === big('chromium', size),
      { what: `${size} bytes from Chromium`, timeout: 20000 });
  }
  // `peerweb join` sends each stdin line as one message.
  for (const size of BIG_SIZES) n.say(big('native', size));
  await gotBig(page, 'native');
}

test('native joins after a browser: the native peer offers, data flows both ways', async () => {
  const page = await openTab(browser, server.url);
  const pageId = await joinRoom(page, 'native-offers');
  const n = native('native-offers');
  const nId = await nativeId(n);
  await n.waitEvent((e) => e.event === 'joined' && e.peers.includes(pageId), { what: 'joined with the browser' });
  await waitOpen(page, nId);
  await n.waitEvent((e) => e.event === 'open' && e.peer === pageId, { what: 'open' });
  await talk(page, n, pageId, nId);
  const path = await n.waitEvent((e) => e.event === 'path', { what: 'path' });
  assert.equal(path.path.direct, true);
  await n.stop();
  await waitFor(page, (id) => window.t.left.includes(id), nId, { what: 'peer-left for the native peer' });
  await page.close();
});

test('a member that opens a channel the moment the native peer joins: it connects whichever side is polite', async () => {
  // Regression: the README's example opens a channel on the `peer` event, so the tab
  // offered while the joining native peer did. When the native side was the polite one,
  // str0m panicked ("sctp_stream_id (0) exists already") and `peerweb join` hung; when the
  // tab was, Chromium could not roll back its offer ("Failed to start SCTP transport").
  // Peer ids are random: fresh tabs and natives meet until each side has been the polite
  // one.
  const seen = { nativePolite: 0, browserPolite: 0 };
  for (let i = 0; i < 16 && !(seen.nativePolite && seen.browserPolite); i++) {
    const page = await openTab(browser, server.url);
    const pageId = await joinRoom(page, `glare-on-join-${i}`);
    await page.evaluate(() => {
      window.errs = [];
      window.room.addEventListener('error', ({ error }) => window.errs.push(`${error.code}: ${error.message}`));
      window.room.addEventListener('peer', ({ peer }) => {
        peer.channel('state', { ordered: false, maxRetransmits: 0 });
      });
    });
    const n = native(`glare-on-join-${i}`);
    const nId = await nativeId(n);
    const role = nId > pageId ? 'nativePolite' : 'browserPolite';
    seen[role] += 1;
    try {
      await waitOpen(page, nId);
    } catch (e) {
      const why = await page.evaluate((id) => { const pc = window.room.peers.get(id)?.pc; return pc && { conn: pc.connectionState, sig: pc.signalingState, errs: window.errs }; }, nId);
      throw new Error(`${e.message}; ${role}; browser ${JSON.stringify(why)}; native ${JSON.stringify(n.events)}; stderr ${n.stderr.slice(-3000)}`);
    }
    await n.waitEvent((e) => e.event === 'channel' && e.peer === pageId && e.label === 'state', { what: "the tab's channel" });
    await talk(page, n, pageId, nId);
    assert.deepEqual(await page.evaluate(() => window.errs), []);
    assert.equal(await n.stop(), 0, n.stderr);
    await page.close();
  }
  assert.ok(seen.nativePolite && seen.browserPolite, JSON.stringify(seen));
});

test('a browser joins after the native peer: the browser offers, data flows both ways', async () => {
  const n = native('browser-offers');
  const nId = await nativeId(n);
  await n.waitEvent((e) => e.event === 'joined', { what: 'joined' });
  const page = await openTab(browser, server.url);
  const pageId = await joinRoom(page, 'browser-offers');
  await n.waitEvent((e) => e.event === 'peer-joined' && e.peer === pageId, { what: 'peer-joined' });
  await waitOpen(page, nId);
  await talk(page, n, pageId, nId);
  await page.close();
  await n.waitEvent((e) => e.event === 'peer-left' && e.peer === pageId, { what: 'peer-left for the tab' });
  await n.stop();
});

test('a channel Chromium closes closes on the native side too (both streams reset), and a new one with its label works', async () => {
  const n = native('channel-close');
  const nId = await nativeId(n);
  await n.waitEvent((e) => e.event === 'joined', { what: 'joined' });
  const page = await openTab(browser, server.url);
  const pageId = await joinRoom(page, 'channel-close');
  await waitOpen(page, nId);
  const options = [{}, { ordered: false }, { maxRetransmits: 2 }];
  for (const [i, opts] of options.entries()) {
    const round = i + 1;
    await page.evaluate(async ({ id, round, opts }) => {
      const ch = window.room.peers.get(id).channel('side', opts);
      await ch.ready();
      ch.send(`side ${round}`);
    }, { id: nId, round, opts });
    await n.waitEvent((e) => e.event === 'message' && e.label === 'side' && e.data === `side ${round}`, { what: `message on side ${round}` });
    // Chromium's channel reaches "closed" only once the native peer reset its own stream in
    // turn (RFC 8831 §6.7); the native peer reports the close.
    await page.evaluate(async (id) => {
      const ch = window.room.peers.get(id).channels.get('side');
      const closed = new Promise((resolve) => ch.dc.addEventListener('close', resolve));
      ch.dc.close();
      const late = new Promise((_, reject) => setTimeout(() => reject(new Error(`still ${ch.dc.readyState} after 10 s: the native side did not reset its stream`)), 10000));
      await Promise.race([closed, late]);
    }, nId);
    const closes = () => n.events.filter((e) => e.event === 'channel-closed' && e.label === 'side' && e.peer === pageId).length;
    await n.waitEvent(() => closes() >= round, { what: `channel-closed ${round}` });
  }
  // The default channel was not touched.
  await talk(page, n, pageId, nId);
  assert.deepEqual(n.events.filter((e) => e.event === 'channel-closed' && e.label !== 'side'), []);
  await page.close();
  assert.equal(await n.stop(), 0, n.stderr);
});

test('relay only on both sides: native and Chromium connect through the built-in TURN', async () => {
  const page = await openTab(browser, server.url);
  const pageId = await joinRoom(page, 'relayed', { rtcConfig: { iceTransportPolicy: 'relay' } });
  const n = native('relayed', ['--relay-only']);
  const nId = await nativeId(n);
  try {
    await waitOpen(page, nId);
  } catch (e) {
    const why = await page.evaluate((id) => { const pc = window.room.peers.get(id)?.pc; return pc && { conn: pc.connectionState, ice: pc.iceConnectionState, sig: pc.signalingState }; }, nId);
    throw new Error(`${e.message}; browser ${JSON.stringify(why)}; native events ${JSON.stringify(n.events)}; stderr ${n.stderr.slice(-6000)}`);
  }
  await talk(page, n, pageId, nId);
  const path = await n.waitEvent((e) => e.event === 'path', { what: 'path' });
  assert.equal(path.path.local, 'relay', JSON.stringify(path));
  assert.equal(path.path.relay_protocol, 'udp', JSON.stringify(path));
  const bpath = await waitFor(page, (id) => window.room.peers.get(id).path, nId, { what: 'browser path' });
  assert.equal(bpath.type, 'relay');
  // The TURN gauges are published four times a second, and the whole connection can take
  // less: wait (bounded) for the gauge to show both allocations.
  const allocations = async () => Number((await (await fetch(`${server.url}/metrics`)).text())
    .match(/^peerweb_turn_allocations (\d+)/m)?.[1] ?? 0);
  let seen = await allocations();
  for (const end = Date.now() + 5000; seen < 2 && Date.now() < end;) {
    await new Promise((r) => setTimeout(r, 50));
    seen = await allocations();
  }
  assert.ok(seen >= 2, `both sides allocated: ${seen}`);
  await n.stop();
  await page.close();
});

test('with UDP to the TURN port blocked, both sides relay over TURN/TCP', async () => {
  const turnPort = new URL((await (await fetch(`${server.url}/api/ice`)).json()).iceServers[0].urls[0].replace('stun:', 'http://')).port;
  const rule = ['OUTPUT', '-p', 'udp', '--dport', turnPort, '-j', 'DROP'];
  execFileSync('iptables', ['-A', ...rule]);
  try {
    const page = await openTab(browser, server.url);
    const pageId = await joinRoom(page, 'relayed-tcp', { rtcConfig: { iceTransportPolicy: 'relay' } });
    const n = native('relayed-tcp', ['--relay-only']);
    const nId = await nativeId(n);
    await waitOpen(page, nId);
    await talk(page, n, pageId, nId);
    const path = await n.waitEvent((e) => e.event === 'path', { what: 'path' });
    assert.equal(path.path.local, 'relay', JSON.stringify(path));
    assert.equal(path.path.relay_protocol, 'tcp', JSON.stringify(path));
    await n.stop();
    await page.close();
  } finally {
    execFileSync('iptables', ['-D', ...rule]);
  }
});

test('a browser that hides its address behind an mDNS name still connects to the native peer', async () => {
  // A second interface in this namespace: Chromium (not allowed loopback, no camera
  // permission) can use only it, and hides its address behind a random .local name.
  const removeVeth = await addVeth('pwv0', 'pwv1', '10.99.0.1/24');
  const hidden = await launchBrowser({ hideAddresses: true, loopback: false });
  try {
    const page = await openTab(hidden, server.url);
    const pageId = await joinRoom(page, 'mdns');
    const n = native('mdns', ['--no-turn', '--interface', 'pwv0']);
    const nId = await nativeId(n);
    await waitOpen(page, nId);
    await talk(page, n, pageId, nId);
    // Chromium never reveals 10.99.0.1: its host candidates are .local names (or, where
    // its mDNS responder cannot register here, left out), so the native side must use what
    // the browser's checks and STUN show it.
    const sdp = await page.evaluate((id) => window.room.peers.get(id).pc.localDescription.sdp, nId);
    const lines = sdp.split('\r\n').filter((l) => l.startsWith('a=candidate:'));
    assert.ok(!lines.some((l) => l.includes('10.99.0.1')), `browser revealed its address: ${lines}`);
    assert.ok(lines.filter((l) => l.includes(' typ host')).every((l) => l.split(' ')[4].endsWith('.local')), `${lines}`);
    // The native side skipped the .local candidate and learned the browser's address
    // another way (its checks: peer-reflexive; or its STUN address).
    const path = await n.waitEvent((e) => e.event === 'path', { what: 'path' });
    assert.notEqual(path.path.remote, 'host', JSON.stringify(path));
    await n.stop();
  } finally {
    await hidden.close();
    removeVeth();
  }
});

// Loss comes from iptables' statistic match on UDP (this kernel has no netem); signaling
// (TCP) is untouched.
const LOSS = ['INPUT', '-p', 'udp', '-m', 'statistic', '--mode', 'random', '--probability', '0.2', '-j', 'DROP'];

test('under 20% loss an unreliable channel drops messages while the reliable one delivers all', async () => {
  const page = await openTab(browser, server.url);
  const pageId = await joinRoom(page, 'lossy');
  const n = native('lossy', ['--no-turn']);
  const nId = await nativeId(n);
  await waitOpen(page, nId);
  await page.evaluate((id) => {
    const ch = window.room.peers.get(id).channel('game', { ordered: false, maxRetransmits: 0 });
    return new Promise((r) => (ch.readyState === 'open' ? r() : ch.addEventListener('open', r, { once: true })));
  }, nId);
  await n.waitEvent((e) => e.event === 'channel' && e.label === 'game', { what: 'game channel at the native side' });
  execFileSync('iptables', ['-A', ...LOSS]);
  try {
    await page.evaluate(async (id) => {
      const peer = window.room.peers.get(id);
      const game = peer.channels.get('game');
      for (let i = 0; i < 200; i++) {
        game.send(`g${i}`);
        peer.send(`r${i}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    }, nId);
    await n.waitEvent((e) => e.event === 'message' && e.data === 'r199', { what: 'every reliable message', timeout: 60000 });
  } finally {
    execFileSync('iptables', ['-D', ...LOSS]);
  }
  await new Promise((r) => setTimeout(r, 500));
  const got = (label) => n.events.filter((e) => e.event === 'message' && e.label === label).map((e) => e.data);
  const reliable = got('peerweb');
  assert.deepEqual(reliable, Array.from({ length: 200 }, (_, i) => `r${i}`), 'reliable: all, in order');
  const game = got('game');
  // ~20% of 200 lost and never resent (maxRetransmits 0).
  assert.ok(game.length < 195 && game.length > 100, `unreliable: ${game.length} of 200 arrived`);
  await n.stop();
  await page.close();
});

test('peerweb ping reports the path and RTT to a browser, and exits 1 when nobody is there', async () => {
  const page = await openTab(browser, server.url);
  await joinRoom(page, 'ping');
  const run = (room, args) => new Promise((resolve) => {
    const p = spawn(process.env.PEERWEB_BIN, ['ping', server.url, room, '--json', '--allow-loopback', '--no-turn', ...args]);
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.on('exit', (code) => resolve({ code, lines: out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) }));
  });
  const ok = await run('ping', ['--count', '2']);
  assert.equal(ok.code, 0);
  const pings = ok.lines.filter((l) => l.event === 'ping');
  assert.equal(pings.length, 2, JSON.stringify(ok.lines));
  assert.equal(pings[0].path.direct, true);
  assert.ok(pings[0].path.rtt_ms > 0 && pings[0].path.rtt_ms < 100, JSON.stringify(pings[0]));
  const none = await run('nobody-here', ['--wait', '2']);
  assert.equal(none.code, 1);
  await page.close();
});

test('two native peers talk over real sockets, and a leave is seen at once', async () => {
  const a = native('natives', ['--no-turn']);
  const aId = await nativeId(a);
  await a.waitEvent((e) => e.event === 'joined', { what: 'a joined' });
  const b = native('natives', ['--no-turn']);
  const bId = await nativeId(b);
  await a.waitEvent((e) => e.event === 'open' && e.peer === bId, { what: 'a open' });
  await b.waitEvent((e) => e.event === 'open' && e.peer === aId, { what: 'b open' });
  a.say('from a');
  b.say('from b');
  await b.waitEvent((e) => e.event === 'message' && e.data === 'from a' && e.peer === aId, { what: 'a→b' });
  await a.waitEvent((e) => e.event === 'message' && e.data === 'from b' && e.peer === bId, { what: 'b→a' });
  assert.equal(await b.stop(), 0);
  await a.waitEvent((e) => e.event === 'peer-left' && e.peer === bId, { what: 'peer-left', timeout: 3000 });
});

test('the CLI refuses bad input with a clear message and exit code', async () => {
  const run = (args) => new Promise((resolve) => {
    const p = spawn(process.env.PEERWEB_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => { err += d; });
    p.on('exit', (code) => resolve({ code, err }));
  });
  const badUrl = await run(['join', 'ftp://x', 'room']);
  assert.equal(badUrl.code, 1);
  assert.match(badUrl.err, /bad server address/);
  const noAddr = await run(['join', server.url, 'room']);
  assert.equal(noAddr.code, 1, noAddr.err);
  assert.match(noAddr.err, /no usable network address/);
  const down = await run(['join', 'http://127.0.0.1:9', 'room', '--allow-loopback']);
  assert.equal(down.code, 1);
  assert.match(down.err, /cannot reach the signaling server/);
  const badRoom = await run(['join', server.url, ' spaces ', '--allow-loopback']);
  assert.equal(badRoom.code, 1);
  assert.match(badRoom.err, /invalid-room/);
  const usage = await run(['join']);
  assert.equal(usage.code, 2);
});

test('lines typed right before Ctrl-D still arrive: leaving waits for them to be acknowledged', async () => {
  const page = await openTab(browser, server.url);
  const pageId = await joinRoom(page, 'last-words');
  const n = native('last-words', ['--no-turn']);
  const nId = await nativeId(n);
  await n.waitEvent((e) => e.event === 'open' && e.peer === pageId, { what: 'open' });
  // With UDP loss, what was sent last needs retransmissions after the user has left.
  const loss = ['INPUT', '-p', 'udp', '-m', 'statistic', '--mode', 'random', '--probability', '0.15', '-j', 'DROP'];
  execFileSync('iptables', ['-A', ...loss]);
  try {
    for (let i = 0; i < 10; i++) n.say(`${i} ${'x'.repeat(1000)}`);
    n.say('last words');
    // Leaving waits up to 10 s (LEAVE_DRAIN) for the acknowledgements; under 15% loss the
    // last retransmissions can take longer than the usual 5 s grace of stop().
    assert.equal(await n.stop({ timeout: 15000 }), 0);
  } finally {
    execFileSync('iptables', ['-D', ...loss]);
  }
  await waitFor(page, () => window.t.msgs.some((m) => m.data === 'last words'), null, { what: 'the last line', timeout: 20000 });
  assert.equal(await page.evaluate(() => window.t.msgs.length), 11);
  await waitFor(page, (id) => window.t.left.includes(id), nId, { what: 'peer-left' });
  await page.close();
});
