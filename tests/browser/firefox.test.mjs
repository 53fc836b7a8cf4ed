// Debian's stock Firefox ESR (headless, over WebDriver BiDi) in run.sh's loopback-only
// namespace: two Firefox tabs chat; Firefox ↔ Chromium and Firefox ↔ `peerweb join` with
// each side offering, messages of 64 KiB and 256 KiB both ways; relay-only through the
// built-in TURN over UDP and TCP; the transfer receive page from `peerweb send`; a call with
// Chromium (video and audio both ways, the same words) and with a native test pattern.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, launchBrowser, openTab, joinRoom, waitFor, waitOpen, startNative, startCli, turnEntry, mediaFlows,
  BIG_SIZES, big, sendBig, gotBig } from './lib.mjs';
import { acceptAll, stateOf } from './transfer-pages.mjs';

let server;
let firefox;
let chromium;
/** Chromium with a fake camera and microphone, for the call. */
let chromiumMedia;
const natives = [];
before(async () => {
  server = await startServer({ args: ['--turn-listen', '127.0.0.1:0', '--turn-allow-loopback-peers'] });
  firefox = await launchBrowser({ engine: 'firefox' });
  console.log(`browsers: Firefox ${firefox.version} and Chromium`);
});
after(async () => {
  for (const n of natives) await n.stop();
  await firefox?.close();
  await chromium?.close();
  await chromiumMedia?.close();
  await server?.stop();
});

async function talk(a, b, aId, bId, names) {
  await a.evaluate((id) => window.room.peers.get(id).send('hello'), bId);
  await b.evaluate((id) => window.room.peers.get(id).send('hi back'), aId);
  await waitFor(b, () => window.t.msgs.some((m) => m.data === 'hello'), null, { what: `${names[0]}→${names[1]}` });
  await waitFor(a, () => window.t.msgs.some((m) => m.data === 'hi back'), null, { what: `${names[1]}→${names[0]}` });
  await sendBig(a, bId, names[0]);
  await sendBig(b, aId, names[1]);
  await gotBig(b, names[0]);
  await gotBig(a, names[1]);
}

test('two Firefox tabs chat over a direct data channel, and a closed tab leaves at once', async () => {
  const a = await openTab(firefox, server.url);
  const b = await openTab(firefox, server.url);
  const aId = await joinRoom(a, 'ff-pair', { meta: { name: 'ada' } });
  const bId = await joinRoom(b, 'ff-pair', { meta: { name: 'bob' } });
  await waitOpen(a, bId);
  await waitOpen(b, aId);
  await talk(a, b, aId, bId, ['ada', 'bob']);
  assert.equal(await b.evaluate((id) => window.room.peers.get(id).meta.name, aId), 'ada');
  const path = await waitFor(a, (id) => window.room.peers.get(id).path, bId, { what: 'path' });
  // Direct: host ↔ host — or peer-reflexive, when the other tab's first check arrived before
  // its trickled host candidate did (then Firefox keeps calling that address prflx; on this
  // loopback-only network it is the same host address). Never a relay.
  assert.ok(path.type === 'host' || (path.type === 'prflx' && path.local === 'host'), JSON.stringify(path));
  assert.equal(path.protocol, 'udp');
  // Firefox drops the socket of a closed tab without a close frame; the SDK says goodbye
  // on pagehide, so the other side does not wait out the resume grace.
  await b.close();
  await waitFor(a, (id) => window.t.left.includes(id), bId, { what: 'peer-left', timeout: 5000 });
  await a.close();
});

for (const first of ['firefox', 'chromium']) {
  test(`Firefox ↔ Chromium, ${first === 'firefox' ? 'Chromium' : 'Firefox'} offering: 64 KiB and 256 KiB both ways`, async () => {
    chromium ??= await launchBrowser({ engine: 'chromium' });
    const room = `ff-chromium-${first}`;
    const ff = await openTab(firefox, server.url);
    const ch = await openTab(chromium, server.url);
    const [p1, p2] = first === 'firefox' ? [ff, ch] : [ch, ff];
    const id1 = await joinRoom(p1, room);
    const id2 = await joinRoom(p2, room);
    await waitOpen(p1, id2);
    await waitOpen(p2, id1);
    const names = first === 'firefox' ? ['firefox', 'chromium'] : ['chromium', 'firefox'];
    await talk(p1, p2, id1, id2, names);
    // The joiner made the offer and the member answered it.
    const initiated = await p2.evaluate((id) => window.room.peers.get(id).pc.localDescription.type, id1);
    assert.equal(initiated, 'offer');
    await ff.close();
    await ch.close();
  });
}

function native(room, args = []) {
  const n = startNative(server.url, room, ['--allow-loopback', ...args]);
  natives.push(n);
  return n;
}

for (const first of ['native', 'firefox']) {
  test(`Firefox ↔ peerweb join, ${first === 'native' ? 'Firefox' : 'the native peer'} offering: 64 KiB and 256 KiB both ways`, async () => {
    const room = `ff-native-${first}`;
    let n;
    let page;
    let pageId;
    if (first === 'native') {
      n = native(room);
      await n.waitEvent((e) => e.event === 'joined', { what: 'joined' });
      page = await openTab(firefox, server.url);
      pageId = await joinRoom(page, room);
    } else {
      page = await openTab(firefox, server.url);
      pageId = await joinRoom(page, room);
      n = native(room);
    }
    const nId = (await n.waitEvent((e) => e.event === 'welcome', { what: 'welcome' })).id;
    await waitOpen(page, nId);
    await n.waitEvent((e) => e.event === 'open' && e.peer === pageId, { what: 'native open' });
    await page.evaluate((id) => window.room.peers.get(id).send('from firefox'), nId);
    await n.waitEvent((e) => e.event === 'message' && e.data === 'from firefox', { what: 'firefox→native' });
    n.say('from native');
    await waitFor(page, () => window.t.msgs.some((m) => m.data === 'from native'), null, { what: 'native→firefox' });
    await sendBig(page, nId, 'firefox');
    for (const size of BIG_SIZES) {
      await n.waitEvent((e) => e.event === 'message' && e.data?.length === size && e.data.startsWith(`firefox:${size}:`),
        { what: `${size} bytes from firefox`, timeout: 20000 });
    }
    // `peerweb join` sends each stdin line as one message.
    for (const size of BIG_SIZES) n.say(big('native', size));
    await gotBig(page, 'native');
    assert.equal(await n.stop(), 0, n.stderr);
    await waitFor(page, (id) => window.t.left.includes(id), nId, { what: 'peer-left for the native peer' });
    await page.close();
  });
}

for (const protocol of ['udp', 'tcp']) {
  test(`relay-only Firefox tabs connect through the built-in TURN over ${protocol.toUpperCase()}`, async () => {
    const turn = await turnEntry(server.url, new RegExp(`^turn:.*transport=${protocol}$`));
    assert.equal(turn.urls.length, 1);
    const options = { rtcConfig: { iceTransportPolicy: 'relay' }, iceServers: [turn] };
    const a = await openTab(firefox, server.url);
    const b = await openTab(firefox, server.url);
    const aId = await joinRoom(a, `ff-relay-${protocol}`, options);
    const bId = await joinRoom(b, `ff-relay-${protocol}`, options);
    await waitOpen(a, bId);
    await waitOpen(b, aId);
    await talk(a, b, aId, bId, ['a', 'b']);
    for (const [page, other] of [[a, bId], [b, aId]]) {
      const path = await waitFor(page, (id) => window.room.peers.get(id).path, other, { what: 'path' });
      assert.equal(path.type, 'relay');
      assert.equal(path.relayProtocol, protocol);
    }
    await a.close();
    await b.close();
  });
}

test('the transfer receive page in Firefox takes a folder from `peerweb send`, verified', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'peerweb-ff-transfer-'));
  try {
    const want = {};
    for (const [rel, size] of Object.entries({ 'one.txt': 1, 'odd.bin': 200_001, 'deep/big.bin': 3_000_017 })) {
      const f = join(dir, 'folder', rel);
      mkdirSync(join(f, '..'), { recursive: true });
      const data = randomBytes(size);
      writeFileSync(f, data);
      want[`folder/${rel}`] = createHash('sha256').update(data).digest('hex');
    }
    const sender = startCli(['send', '--server', server.url, '--json', '--allow-loopback', '--no-stun', '--no-turn', join(dir, 'folder')]);
    const { link } = await sender.waitEvent((e) => e.event === 'code', { what: 'code' });
    const p = await firefox.newPage();
    p.on('pageerror', (e) => console.error('[page error]', e.message));
    await p.goto(link);
    assert.deepEqual(await acceptAll(p), want);
    assert.equal(await sender.exited, 0, sender.stderr);
    assert.equal((await stateOf(p)).sas, sender.events.find((e) => e.event === 'verified').sas);
    await p.screenshot({ path: 'artifacts/firefox-receive.png' });
    await p.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Starts a call in a tab (joined already) and records what it hears of it in `window.c`. */
function inCall(page, keys) {
  return page.evaluate(async (keys) => {
    const { KeyStore } = await import('/sdk/call.js');
    const c = { tracks: [], verification: {}, noCodec: [] };
    window.c = c;
    window.call = await window.room.call({ video: { width: 320, height: 240 }, audio: true, keyStore: new KeyStore(keys) });
    window.call.addEventListener('track', ({ peer, label }) => c.tracks.push({ peer: peer.id, label }));
    window.call.addEventListener('verification', ({ peer, state, sas }) => { c.verification[peer.id] = { state, sas }; });
    window.call.addEventListener('nocodec', ({ peer, kind }) => c.noCodec.push({ peer: peer.id, kind }));
  }, keys);
}

test('a call between Firefox and Chromium: video and audio both ways, the same words; with a native test pattern Firefox decodes it or says there is no codec in common', async () => {
  chromiumMedia ??= await launchBrowser({ args: ['--use-fake-device-for-media-stream'] });
  const ff = await openTab(firefox, server.url);
  const ch = await openTab(chromiumMedia, server.url);
  const ffId = await joinRoom(ff, 'ff-call');
  const chId = await joinRoom(ch, 'ff-call');
  await inCall(ff, 'ff-keys');
  await inCall(ch, 'ch-keys');
  const zero = { frames: 0, audio: 0 };
  const fromCh = await mediaFlows(ff, chId, zero, 'Firefox from Chromium');
  const fromFf = await mediaFlows(ch, ffId, zero, 'Chromium from Firefox');
  const words = async (page, id) => waitFor(page, (id) => {
    const v = window.c.verification[id];
    return v && v.state !== 'waiting' && v;
  }, id, { what: 'the words', timeout: 20000 });
  const [a, b] = [await words(ff, chId), await words(ch, ffId)];
  assert.equal(a.state, 'compare');
  assert.equal(a.sas, b.sas);
  console.log(`Firefox ↔ Chromium call: ${fromCh.codec} / ${fromFf.codec}`);
  // The native peer sends H.264 only. Firefox without an H.264 codec (no OpenH264 plugin
  // offline) must say so rather than show nothing; with one, it decodes the pattern.
  const dir = mkdtempSync(join(tmpdir(), 'peerweb-ff-call-'));
  const n = startNative(server.url, 'ff-call', ['--allow-loopback', '--no-stun', '--no-turn', '--keys', join(dir, 'k.json'),
    '--video', 'test:320x240', '--fps', '15']);
  natives.push(n);
  try {
    const { id: nId } = await n.waitEvent((e) => e.event === 'welcome', { what: 'welcome' });
    const outcome = await waitFor(ff, async (id) => {
      if (window.c.noCodec.some((x) => x.peer === id && x.kind === 'video')) return 'nocodec';
      const stats = await window.room.peers.get(id)?.pc.getStats();
      let frames = 0;
      stats?.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') frames = Math.max(frames, s.framesDecoded ?? 0); });
      return frames > 10 && 'decoded';
    }, nId, { what: 'the pattern in Firefox, or no codec', timeout: 30000 });
    console.log(`Firefox and the native H.264 pattern: ${outcome}`);
    if (outcome === 'nocodec') {
      await n.waitEvent((e) => e.event === 'no-codec' && e.peer === ffId, { what: 'the native side says so too' });
    }
    // Chromium decodes the pattern either way, and the words with Firefox still match.
    await mediaFlows(ch, nId, zero, 'the pattern in Chromium', { audio: false });
    const nv = await n.waitEvent((e) => e.event === 'verification' && e.peer === ffId && e.state !== 'waiting', { what: 'native words with Firefox', timeout: 20000 });
    assert.equal(nv.sas, (await words(ff, nId)).sas);
  } finally {
    await n.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  await ff.close();
  await ch.close();
});
