// `peerweb serve` behind Debian's nginx, which terminates TLS and passes the WebSocket
// upgrade through (the README's snippet, as written there): two tabs chat on the HTTPS page
// nginx serves, and `peerweb send` → `peerweb receive` go through it too. peerweb trusts
// nginx's X-Forwarded-For (--trusted-proxy); TURN does not go through nginx (it cannot).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, startNginx, launchBrowser, openTab, joinRoom, waitFor, waitOpen, startCli, makeCertificates } from './lib.mjs';

let certs;
let server;
let nginx;
let browser;
let url;
before(async () => {
  certs = makeCertificates(['localhost']);
  server = await startServer({ args: ['--trusted-proxy', '127.0.0.1/32', '--turn-allow-loopback-peers'] });
  const upstream = server.url.replace('http://', '');
  const port = 20000 + Math.floor(Math.random() * 20000);
  // The snippet from the README, with test paths and ports.
  const conf = readFileSync(new URL('../../docs/nginx.conf', import.meta.url), 'utf8')
    .replace('listen 443 ssl;', `listen 127.0.0.1:${port} ssl;`)
    .replace('listen [::]:443 ssl;', '')
    .replace('server_name peerweb.example.org;', 'server_name localhost;')
    .replace('/etc/letsencrypt/live/peerweb.example.org/fullchain.pem', certs.cert)
    .replace('/etc/letsencrypt/live/peerweb.example.org/privkey.pem', certs.key)
    .replace('proxy_pass http://127.0.0.1:8080;', `proxy_pass http://${upstream};`);
  const dir = join(certs.dir, 'nginx');
  mkdirSync(dir);
  url = `https://localhost:${port}`;
  nginx = await startNginx(dir, conf, async () => (await fetch(`http://${upstream}/healthz`)).ok && probe(port));
  browser = await launchBrowser({ args: [`--ignore-certificate-errors-spki-list=${certs.spki}`] });
});
after(async () => {
  await browser?.close();
  await nginx?.stop();
  await server?.stop();
  if (certs) rmSync(certs.dir, { recursive: true, force: true });
});

/** Whether something accepts TCP on 127.0.0.1:port. */
async function probe(port) {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

test('two tabs chat on the page nginx serves over HTTPS, signaling through its WebSocket proxy', async () => {
  const a = await openTab(browser, url);
  const b = await openTab(browser, url);
  const aId = await joinRoom(a, 'behind-nginx');
  const bId = await joinRoom(b, 'behind-nginx');
  await waitOpen(a, bId);
  await waitOpen(b, aId);
  await a.evaluate((id) => window.room.peers.get(id).send('via nginx'), bId);
  await waitFor(b, () => window.t.msgs.find((m) => m.data === 'via nginx'), null, { what: 'a→b' });
  await a.close();
  await b.close();
});

test('peerweb send and receive go through nginx', async () => {
  const file = join(certs.dir, 'note.txt');
  writeFileSync(file, 'through the proxy\n');
  const out = join(certs.dir, 'in');
  const net = ['--allow-loopback', '--no-stun', '--ca', certs.ca];
  const sender = startCli(['send', '--server', url, '--json', ...net, file]);
  const { code } = await sender.waitEvent((e) => e.code, { what: 'the code' });
  const receiver = startCli(['receive', code, '--server', url, '--out', out, '--yes', '--json', ...net]);
  assert.equal(await receiver.exited, 0, receiver.stderr);
  assert.equal(await sender.exited, 0, sender.stderr);
  assert.equal(readFileSync(join(out, 'note.txt'), 'utf8'), 'through the proxy\n');
});
