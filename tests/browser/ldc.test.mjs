// The native peer against libdatachannel (npm node-datachannel, `ldc-peer.mjs`) — the other
// WebRTC data-channel stack besides Chromium's that the issue names: either side offers,
// messages both ways up to the remote's max-message-size, channels libdatachannel opens with
// each option, and a channel it closes closes on both sides (stream reset both ways).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startServer, startNative } from './lib.mjs';

/** Polls `fn` until it returns something truthy (15 s at most). */
async function waitUntil(fn, { timeout = 15000, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  while (Date.now() < end) {
    const v = fn();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

let server;
const procs = [];
before(async () => {
  server = await startServer();
});
after(async () => {
  for (const p of procs) await p.stop();
  await server?.stop();
});

/** A libdatachannel member of `room`: its reports in `events`, commands with `cmd`. */
function ldc(room) {
  const script = fileURLToPath(new URL('./ldc-peer.mjs', import.meta.url));
  const proc = spawn(process.execPath, [script, server.url, room], { stdio: ['pipe', 'pipe', 'inherit'] });
  const events = [];
  let buf = '';
  proc.stdout.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      events.push(JSON.parse(buf.slice(0, nl)));
      buf = buf.slice(nl + 1);
    }
  });
  const exited = new Promise((r) => proc.once('close', r));
  const l = {
    events,
    cmd: (o) => proc.stdin.write(`${JSON.stringify(o)}\n`),
    async wait(pred, what) {
      return waitUntil(() => events.find(pred), { what: `libdatachannel: ${what}; its events ${JSON.stringify(events.slice(-8))}` });
    },
    async stop() {
      if (proc.exitCode !== null || proc.signalCode) return;
      proc.kill('SIGKILL');
      await exited;
    },
  };
  procs.push(l);
  return l;
}

function native(room) {
  const n = startNative(server.url, room, ['--allow-loopback']);
  procs.push(n);
  return n;
}

async function talk(n, l, nId, lId) {
  l.cmd({ send: { peer: nId, label: 'peerweb', text: 'from libdatachannel' } });
  await n.waitEvent((e) => e.event === 'message' && e.peer === lId && e.data === 'from libdatachannel', { what: 'ldc→native' });
  n.say('from native');
  await l.wait((e) => e.message?.peer === nId && e.message.text === 'from native', 'native→ldc');
}

test('libdatachannel joins after the native peer and offers: messages both ways up to the max size, channels of every kind open and close', async () => {
  const n = native('ldc-offers');
  const nId = (await n.waitEvent((e) => e.event === 'welcome', { what: 'welcome' })).id;
  await n.waitEvent((e) => e.event === 'joined', { what: 'joined' });
  const l = ldc('ldc-offers');
  const lId = (await l.wait((e) => e.welcome, 'welcome')).welcome;
  await l.wait((e) => e.open?.peer === nId && e.open.label === 'peerweb', 'default channel open');
  await n.waitEvent((e) => e.event === 'open' && e.peer === lId, { what: 'native open' });
  await talk(n, l, nId, lId);
  // The largest message each side takes: 256 KiB into the native peer (its
  // a=max-message-size), a 200,000-character line out of it.
  l.cmd({ send: { peer: nId, label: 'peerweb', bytes: 262144 } });
  await n.waitEvent((e) => e.event === 'message' && e.peer === lId && e.bytes === 262144, { what: '256 KiB binary message' });
  const long = 'x'.repeat(199_999) + 'y';
  n.say(long);
  await l.wait((e) => e.message?.text?.length === 200_000 && e.message.text === long, 'the long line whole');
  // Channels libdatachannel opens: each option, a message, then closed by it.
  const kinds = [{ label: 'ordered' }, { label: 'unordered', ordered: false }, { label: 'partial', maxRetransmits: 1 }];
  for (const k of kinds) {
    l.cmd({ open: { peer: nId, ...k } });
    await l.wait((e) => e.open?.label === k.label, `${k.label} open`);
    await n.waitEvent((e) => e.event === 'channel' && e.label === k.label, { what: `native sees ${k.label}` });
    l.cmd({ send: { peer: nId, label: k.label, text: `on ${k.label}` } });
    await n.waitEvent((e) => e.event === 'message' && e.label === k.label && e.data === `on ${k.label}`, { what: `message on ${k.label}` });
    l.cmd({ close: { peer: nId, label: k.label } });
    await n.waitEvent((e) => e.event === 'channel-closed' && e.label === k.label, { what: `native sees ${k.label} closed` });
    await l.wait((e) => e.closed?.label === k.label, `${k.label} closed at libdatachannel`);
  }
  // A channel with a closed one's label opens again, and the default one still works.
  l.cmd({ open: { peer: nId, label: 'ordered' } });
  await n.waitEvent(() => n.events.filter((e) => e.event === 'channel' && e.label === 'ordered').length === 2, { what: 'ordered again' });
  await talk(n, l, nId, lId);
  assert.deepEqual(l.events.filter((e) => e.error), []);
  assert.equal(await n.stop(), 0, n.stderr);
});

test('the native peer joins after libdatachannel and offers: messages both ways', async () => {
  const l = ldc('native-offers-ldc');
  const lId = (await l.wait((e) => e.welcome, 'welcome')).welcome;
  const n = native('native-offers-ldc');
  const nId = (await n.waitEvent((e) => e.event === 'welcome', { what: 'welcome' })).id;
  await l.wait((e) => e.open?.peer === nId && e.open.label === 'peerweb', 'default channel open');
  await n.waitEvent((e) => e.event === 'open' && e.peer === lId, { what: 'native open' });
  await talk(n, l, nId, lId);
  l.cmd({ send: { peer: nId, label: 'peerweb', bytes: 100_000 } });
  await n.waitEvent((e) => e.event === 'message' && e.bytes === 100_000, { what: 'binary message' });
  assert.deepEqual(l.events.filter((e) => e.error), []);
  assert.equal(await n.stop(), 0, n.stderr);
});
