// The demo app at `/`, driven like a person would: join, see the peer with its path and RTT,
// chat both ways. Saves a screenshot to artifacts/demo.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser } from './lib.mjs';

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

async function joinVia(page, url, room, name) {
  await page.goto(`${url}/`);
  await page.fill('#room', room);
  await page.fill('#name', name);
  await page.click('button[type=submit]');
  await page.waitForSelector('#room-view:not([hidden])');
  // The join form gives way to the room (a CSS display rule must not keep it on screen).
  assert.equal(await page.locator('#join-form').isVisible(), false);
}

test('demo page: join, peer list with path and RTT, chat both ways', async () => {
  const ada = await browser.newPage();
  const bob = await browser.newPage();
  await joinVia(ada, server.url, 'demo', 'Ada');
  await joinVia(bob, server.url, 'demo', 'Bob');

  // Each sees the other connected, with a host path and an RTT in ms.
  for (const [page, other] of [[ada, 'Bob'], [bob, 'Ada']]) {
    const li = page.locator('#peers li', { hasText: other });
    await li.locator('.badge.ok', { hasText: 'connected' }).waitFor({ timeout: 15000 });
    await li.locator('.badge', { hasText: 'host udp' }).waitFor({ timeout: 10000 });
    await li.locator('.badge.rtt').waitFor({ timeout: 10000 });
    assert.match(await li.locator('.badge.rtt').textContent(), /^\d+ ms$/);
  }
  await ada.fill('#msg', 'Hello Bob, this went straight to you.');
  await ada.press('#msg', 'Enter');
  await bob.locator('#log li', { hasText: 'Hello Bob, this went straight to you.' }).waitFor({ timeout: 5000 });
  assert.equal(await bob.locator('#log li', { hasText: 'Hello Bob' }).locator('.who').textContent(), 'Ada');
  await bob.fill('#msg', 'Hi Ada! No server in between.');
  await bob.click('#chat-form button');
  await ada.locator('#log li', { hasText: 'Hi Ada! No server in between.' }).waitFor({ timeout: 5000 });
  assert.equal(await ada.locator('#sig').textContent(), 'signaling: open');

  // The room name went into the link fragment, so a shared link joins the same room.
  assert.match(await ada.locator('#share').getAttribute('href'), /#room=demo$/);
  await ada.screenshot({ path: 'artifacts/demo.png' });

  // A room name the server refuses is reported in the form, not thrown away.
  const eve = await browser.newPage();
  await eve.goto(`${server.url}/`);
  // 40 characters fit the field, but 80 bytes of UTF-8 break the 64-byte protocol limit.
  await eve.fill('#room', 'é'.repeat(40));
  await eve.click('button[type=submit]');
  await eve.locator('#join-error', { hasText: 'Could not join' }).waitFor({ timeout: 10000 });
  assert.match(await eve.locator('#join-error').textContent(), /longer than 64 bytes/);
  assert.equal(await eve.locator('#room-view').isHidden(), true);
  for (const p of [ada, bob, eve]) await p.close();
});

test('a demo page whose script fails to load (a network change mid-load) says so', async () => {
  const page = await browser.newPage();
  await page.route('**/sdk/peerweb.js', (r) => r.abort('internetdisconnected'));
  await page.goto(`${server.url}/`);
  await page.locator('#join-error', { hasText: 'did not load' }).waitFor({ timeout: 10000 });
  assert.match(await page.textContent('#join-error'), /Reload to try again/);
  assert.equal(await page.locator('#join-form button').isDisabled(), true);
  await page.close();
});
