// `peerweb serve` over HTTPS, as a phone would use it: the page is a secure context (camera
// and microphone available), the SDK signals over wss://, two tabs chat, and a native peer
// joins the same room through https:// trusting the private CA with --ca. Chromium trusts
// exactly the server's key (--ignore-certificate-errors-spki-list), nothing else.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { startServer, launchBrowser, openTab, joinRoom, waitFor, waitOpen, startNative, makeCertificates } from './lib.mjs';

let certs;
let server;
let browser;
before(async () => {
  certs = makeCertificates(['localhost']);
  server = await startServer({
    args: ['--tls-cert', certs.cert, '--tls-key', certs.key, '--turn-allow-loopback-peers'],
  });
  browser = await launchBrowser({ args: [`--ignore-certificate-errors-spki-list=${certs.spki}`] });
});
after(async () => {
  await browser?.close();
  await server?.stop();
  if (certs) rmSync(certs.dir, { recursive: true, force: true });
});

test('two tabs on the HTTPS page: a secure context, signaling over wss://, chat both ways', async () => {
  assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  const url = server.url.replace('127.0.0.1', 'localhost');
  const a = await openTab(browser, url);
  const b = await openTab(browser, url);
  const page = await a.evaluate(() => ({ secure: window.isSecureContext, media: typeof navigator.mediaDevices?.getUserMedia }));
  assert.deepEqual(page, { secure: true, media: 'function' });
  const aId = await joinRoom(a, 'tls-room');
  const bId = await joinRoom(b, 'tls-room');
  await waitOpen(a, bId);
  await waitOpen(b, aId);
  const ice = await a.evaluate(() => performance.getEntriesByType('resource').map((e) => e.name).find((n) => n.includes('/api/ice')));
  assert.match(ice, /^https:\/\/localhost:\d+\/api\/ice/);
  await a.evaluate((id) => window.room.peers.get(id).send('over https'), bId);
  await waitFor(b, () => window.t.msgs.find((m) => m.data === 'over https'), null, { what: 'a→b' });

  // A native peer through the same server, trusting the CA.
  const n = startNative(url, 'tls-room', ['--allow-loopback', '--ca', certs.ca]);
  try {
    const nId = (await n.waitEvent((e) => e.event === 'welcome', { what: 'welcome over wss' })).id;
    await waitOpen(a, nId);
    await a.evaluate((id) => window.room.peers.get(id).send('to the native peer'), nId);
    await n.waitEvent((e) => e.event === 'message' && e.data === 'to the native peer', { what: 'tab→native' });
  } finally {
    await n.stop();
  }
  await a.close();
  await b.close();
});
