// A server started with --auth-secret and the browser SDK's `token` option: tabs with tokens
// meet and get TURN credentials (they connect relay-only); a tab without a token, with a
// forged or expired one, or with one for another room is refused with its reason (in
// Chromium and in Firefox).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startServer, launchBrowser, openTab, joinRoom, waitOpen } from './lib.mjs';

const SECRET = 'the secret of this test file that is long enough to sign tokens';
let server;
let browser;
before(async () => {
  server = await startServer({ args: ['--auth-secret', SECRET, '--turn-allow-loopback-peers'] });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** `peerweb token`: a token for `room` (a name or a `prefix*`). */
function token(room, { secret = SECRET, ttl = '10m' } = {}) {
  return execFileSync(process.env.PEERWEB_BIN, ['token', '--secret', secret, '--room', room, '--ttl', ttl]).toString().trim();
}

/** Joins with these options and returns the error code the join failed with. */
async function refusedJoin(room, options, context = browser) {
  const page = await openTab(context, server.url);
  try {
    return await page.evaluate(async ([room, options]) => {
      try {
        await window.pw.join(location.origin, room, options);
        return 'joined';
      } catch (e) {
        return `${e.code}: ${e.message}`;
      }
    }, [room, options]);
  } finally {
    await page.close();
  }
}

test('tabs with tokens meet through the relay; without a good token nobody joins', async () => {
  const t = token('team-*');
  const relay = { iceTransportPolicy: 'relay' };
  const a = await openTab(browser, server.url);
  const b = await openTab(browser, server.url);
  const aId = await joinRoom(a, 'team-a', { token: t, rtcConfig: relay });
  // A function giving the token works the same (it can fetch a fresh one each time).
  const bId = await b.evaluate(async ([t, relay]) => {
    const r = await window.pw.join(location.origin, 'team-a', { token: async () => t, rtcConfig: relay });
    window.room = r;
    return r.id;
  }, [t, relay]);
  await waitOpen(a, bId);
  await waitOpen(b, aId);
  const path = await a.evaluate(async (id) => {
    for (let i = 0; i < 100 && !window.room.peers.get(id).path; i++) await new Promise((r) => setTimeout(r, 100));
    return window.room.peers.get(id).path;
  }, bId);
  assert.equal(path?.type, 'relay', 'TURN credentials came with the token');
  await a.close();
  await b.close();

  assert.match(await refusedJoin('team-a', {}), /^unauthorized: .*requires an access token/);
  assert.match(await refusedJoin('team-a', { token: token('team-*', { secret: 'another secret that is long enough to sign tokens' }) }),
    /^unauthorized: .*not signed by this server/);
  assert.match(await refusedJoin('lobby', { token: t }), /^forbidden: /);
});

test('the bundled pages ask for the page password and get tokens with it', async () => {
  const pw = 'correct horse battery';
  const s = await startServer({ args: ['--auth-secret', SECRET, '--page-password', pw, '--turn-allow-loopback-peers'] });
  try {
    const info = await (await fetch(`${s.url}/api/auth`)).json();
    assert.deepEqual(info, { required: true, pageLogin: true });
    const tabs = [];
    for (const name of ['ada', 'bob']) {
      const page = await browser.newPage();
      await page.goto(`${s.url}/#room=staff`);
      await page.fill('#name', name);
      await page.click('#join-form button');
      // A wrong password first: the dialog says so and asks again.
      await page.fill('#page-password', name === 'ada' ? 'wrong password' : pw);
      await page.click('dialog button');
      if (name === 'ada') {
        await page.waitForSelector('dialog .error:text("wrong password")');
        await page.screenshot({ path: 'artifacts/page-password.png' });
        await page.fill('#page-password', pw);
        await page.click('dialog button');
      }
      await page.waitForSelector('#room-view:not([hidden])');
      tabs.push(page);
    }
    await tabs[0].fill('#msg', 'hello staff');
    await tabs[0].click('#chat-form button');
    await tabs[1].waitForSelector('#log li:text("hello staff")', { timeout: 15000 });
    for (const t of tabs) await t.close();
    // Without the password nothing: the login refuses a wrong one, and many in a row.
    const attempt = () => fetch(`${s.url}/api/auth`, { method: 'POST', body: JSON.stringify({ password: 'guess', room: 'staff' }) });
    assert.equal((await attempt()).status, 401);
    let limited = false;
    for (let i = 0; i < 15 && !limited; i++) limited = (await attempt()).status === 429;
    assert.ok(limited, 'password guesses are rate-limited');
  } finally {
    await s.stop();
  }
});

test('Firefox hears why it was refused too', async () => {
  // The refusal's reason is an error frame just before the 4401 close; a server that dropped
  // the socket right after its close frame reset the connection under the client's `hello`,
  // and Firefox then discarded the frame ("access token refused", with no reason).
  const firefox = await launchBrowser({ engine: 'firefox' });
  try {
    assert.match(await refusedJoin('team-a', {}, firefox), /^unauthorized: .*requires an access token/);
    assert.match(await refusedJoin('team-a', { token: token('team-*', { secret: 'another secret that is long enough to sign tokens' }) }, firefox),
      /^unauthorized: .*not signed by this server/);
    assert.match(await refusedJoin('lobby', { token: token('team-*') }, firefox), /^forbidden: /);
  } finally {
    await firefox.close();
  }
});
