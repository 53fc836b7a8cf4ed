// The pages as one web app: one header and navigation on every page, light and dark, usable
// at phone and desktop sizes (screenshots in artifacts/app-*.png), installable (manifest,
// icons, service worker, as Chromium judges it; an offline page), "Share → peerweb" reaching a
// receiver through the service worker, and a browser lacking WebRTC told so.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import jsQR from 'jsqr';
import { startServer, launchBrowser, startCli, waitFor } from './lib.mjs';

const PAGES = [['rooms', '/', 'Rooms'], ['call', '/call', 'Call'], ['send', '/send', 'Send'], ['receive', '/receive', 'Receive'], ['watch', '/watch', 'Watch'], ['status', '/status', 'Status']];
const SIZES = { phone: { width: 390, height: 844 }, desktop: { width: 1280, height: 800 } };
const NET = ['--allow-loopback', '--no-stun', '--no-turn'];

let server;
let browser;
let dir;
before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  dir = mkdtempSync(join(tmpdir(), 'peerweb-app-'));
});
after(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function open(path, { viewport = SIZES.desktop, scheme } = {}) {
  const p = await browser.newPage();
  p.on('pageerror', (e) => console.error('[page error]', e.message));
  await p.setViewportSize(viewport);
  if (scheme) await p.emulateMedia({ colorScheme: scheme });
  await p.goto(`${server.url}${path}`);
  return p;
}

/** The page as its user sees it: navigation, colours, whether anything runs off the side. */
function look(p) {
  return p.evaluate(() => {
    const rgb = (c) => c.match(/[\d.]+/g).slice(0, 3).map(Number);
    const lum = (c) => {
      const [r, g, b] = rgb(c).map((v) => {
        const s = v / 255;
        return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
      });
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const contrast = (a, b) => {
      const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x);
      return (hi + 0.05) / (lo + 0.05);
    };
    const body = getComputedStyle(document.body);
    const card = document.querySelector('main .card');
    const cardStyle = card && getComputedStyle(card);
    const links = [...document.querySelectorAll('header.top nav a')];
    const current = document.querySelector('header.top nav a[aria-current="page"]');
    const nav = document.querySelector('header.top nav').getBoundingClientRect();
    return {
      nav: links.map((a) => [a.textContent, a.getAttribute('href')]),
      current: current?.textContent,
      navVisible: nav.width > 0 && nav.height > 0 && nav.bottom <= innerHeight,
      background: lum(body.backgroundColor),
      text: contrast(body.color, body.backgroundColor),
      muted: card ? contrast(getComputedStyle(card.querySelector('.muted, label') ?? card).color, cardStyle.backgroundColor) : null,
      overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
      // How far any part of the page sticks out past main's padding on the right.
      spill: (() => {
        const main = document.querySelector('main');
        const edge = main.getBoundingClientRect().right - parseFloat(getComputedStyle(main).paddingRight);
        return Math.max(0, ...[...main.querySelectorAll('*')].filter((e) => e.checkVisibility())
          .map((e) => e.getBoundingClientRect().right - edge));
      })(),
      banner: document.getElementById('unsupported')?.textContent ?? null,
    };
  });
}

test('every page has the one header and navigation, light and dark, at phone and desktop sizes', async () => {
  for (const [name, path, label] of PAGES) {
    for (const [size, viewport] of Object.entries(SIZES)) {
      for (const scheme of ['light', 'dark']) {
        const p = await open(path, { viewport, scheme });
        await p.waitForLoadState('load');
        const l = await look(p);
        const where = `${name} ${size} ${scheme}`;
        assert.deepEqual(l.nav, PAGES.map(([, h, t]) => [t, h]), where);
        assert.equal(l.current, label, where);
        assert.ok(l.navVisible, `${where}: the navigation is off screen`);
        assert.equal(l.overflow, 0, `${where}: the page is wider than the window`);
        assert.ok(l.spill < 1, `${where}: something sticks out ${l.spill} px past the right margin`);
        assert.equal(l.banner, null, `${where}: ${l.banner}`);
        if (scheme === 'dark') assert.ok(l.background < 0.05, `${where}: background luminance ${l.background}`);
        else assert.ok(l.background > 0.85, `${where}: background luminance ${l.background}`);
        assert.ok(l.text >= 7, `${where}: text contrast ${l.text}`);
        if (l.muted !== null) assert.ok(l.muted >= 4.5, `${where}: secondary text contrast ${l.muted}`);
        await p.screenshot({ path: `artifacts/app-${name}-${size}-${scheme}.png`, fullPage: true });
        await p.close();
      }
    }
  }
});

test('on a phone, each page is reached from the front page by its tab', async () => {
  const p = await open('/', { viewport: SIZES.phone });
  for (const [, path, label] of [...PAGES.slice(1), PAGES[0]]) {
    await p.click(`header.top nav >> text=${label}`);
    await p.waitForURL(`${server.url}${path}`);
    assert.equal((await look(p)).current, label);
  }
  await p.close();
});

test('the theme switch goes auto → light → dark → auto and is remembered across pages', async () => {
  const p = await open('/', { scheme: 'dark' });
  const theme = () => p.evaluate(() => [document.documentElement.dataset.theme ?? 'auto', document.getElementById('theme').textContent]);
  assert.deepEqual(await theme(), ['auto', '◐ Auto']);
  const dark = (await look(p)).background;
  await p.click('#theme');
  assert.deepEqual(await theme(), ['light', '☀ Light']);
  assert.ok((await look(p)).background > 0.85, 'light chosen over a dark system');
  await p.goto(`${server.url}/send`);
  assert.deepEqual(await theme(), ['light', '☀ Light']);
  await p.click('#theme');
  assert.deepEqual(await theme(), ['dark', '☾ Dark']);
  await p.emulateMedia({ colorScheme: 'light' });
  assert.ok((await look(p)).background < 0.05, 'dark chosen over a light system');
  await p.reload();
  assert.deepEqual(await theme(), ['dark', '☾ Dark']);
  await p.click('#theme');
  assert.deepEqual(await theme(), ['auto', '◐ Auto']);
  assert.ok((await look(p)).background > 0.85, 'auto follows the light system again');
  assert.ok(dark < 0.05);
  await p.close();
});

test('installable: Chromium finds no installability errors; manifest, icons and worker are served', async () => {
  const p = await open('/');
  await p.evaluate(() => navigator.serviceWorker.ready);
  const cdp = await p.context().newCDPSession(p);
  const manifest = await cdp.send('Page.getAppManifest');
  assert.deepEqual(manifest.errors, [], JSON.stringify(manifest.errors));
  const parsed = JSON.parse(manifest.data);
  assert.equal(parsed.display, 'standalone');
  assert.equal(parsed.share_target.action, '/share');
  const { installabilityErrors } = await cdp.send('Page.getInstallabilityErrors');
  assert.deepEqual(installabilityErrors, [], JSON.stringify(installabilityErrors));
  for (const icon of parsed.icons) {
    const res = await fetch(new URL(icon.src, server.url));
    assert.equal(res.status, 200, icon.src);
    assert.equal(res.headers.get('content-type'), icon.type, icon.src);
    const body = Buffer.from(await res.arrayBuffer());
    if (icon.type === 'image/png') {
      // The PNG's own width and height are what the manifest says.
      const [w, h] = [body.readUInt32BE(16), body.readUInt32BE(20)];
      assert.equal(`${w}x${h}`, icon.sizes, icon.src);
    }
  }
  await cdp.detach();
  // Offline, a page load gets the worker's page saying so, not the browser's error.
  await p.context().setOffline(true);
  try {
    const res = await p.goto(`${server.url}/send`);
    assert.equal(res.status(), 503);
    assert.match(await p.textContent('h1'), /This device is offline/);
  } finally {
    await p.context().setOffline(false);
  }
  await p.close();
});

/**
 * Shares `fields` (name → string, or a list of {name, body} files) the way Android does once
 * the app is installed: a multipart POST navigation to the manifest's share_target, from a tab
 * whose service worker is running. Returns the page it lands on.
 */
async function share(fields) {
  const p = await open('/', { viewport: SIZES.phone });
  await p.evaluate(() => navigator.serviceWorker.ready);
  const paths = {};
  for (const [name, value] of Object.entries(fields)) {
    if (Array.isArray(value)) {
      paths[name] = value.map(({ name: file, body }) => {
        const path = join(dir, file);
        writeFileSync(path, body);
        return path;
      });
    }
  }
  await p.evaluate((fields) => {
    const form = document.createElement('form');
    form.method = 'POST';
    form.enctype = 'multipart/form-data';
    form.action = '/share';
    for (const [name, value] of Object.entries(fields)) {
      const input = document.createElement('input');
      input.name = name;
      if (Array.isArray(value)) {
        input.type = 'file';
        input.multiple = true;
      } else input.value = value;
      input.id = `share-${name}`;
      form.append(input);
    }
    document.body.append(form);
  }, fields);
  for (const [name, list] of Object.entries(paths)) await p.setInputFiles(`#share-${name}`, list);
  await Promise.all([p.waitForURL(/\/send/), p.evaluate(() => document.querySelector('form[action="/share"]').submit())]);
  return p;
}

const sha = (b) => createHash('sha256').update(b).digest('hex');

/** What a phone camera reads from the send page's QR code (drawn as the page draws it). */
async function qr(p) {
  const { width, height, pixels } = await p.evaluate(async () => {
    const svg = document.querySelector('#qr svg');
    const side = 400;
    const img = new Image();
    img.src = URL.createObjectURL(new Blob([svg.outerHTML], { type: 'image/svg+xml' }));
    await img.decode();
    const canvas = new OffscreenCanvas(side, side);
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0, side, side);
    return { width: side, height: side, pixels: [...ctx.getImageData(0, 0, side, side).data] };
  });
  return jsQR(Uint8ClampedArray.from(pixels), width, height)?.data ?? null;
}

test('Share → peerweb: shared files go through the service worker to the send page and on to a receiver', async () => {
  const files = [{ name: 'photo.jpg', body: randomBytes(300_001) }, { name: 'notes.txt', body: Buffer.from('shared from another app\n') }];
  const p = await share({ files, title: '', text: '' });
  const s = await waitFor(p, () => window.transferState?.link && window.transferState, null, { what: 'link' });
  assert.deepEqual(s.files.map((f) => [f.path, f.size]), files.map((f) => [f.name, f.body.length]));
  const l = await look(p);
  assert.ok(l.overflow === 0 && l.spill < 1, `the link and QR code fit the phone (${l.overflow}, ${l.spill})`);
  assert.equal(await qr(p), s.link, 'the QR code is the link');
  await p.screenshot({ path: 'artifacts/app-send-shared-phone.png', fullPage: true });
  const out = join(dir, 'out-shared');
  const receiver = startCli(['receive', s.code, '--server', server.url, '--out', out, '--yes', '--json', ...NET]);
  assert.equal(await receiver.exited, 0, receiver.stderr);
  for (const f of files) assert.equal(sha(readFileSync(join(out, f.name))), sha(f.body), f.name);
  // The files were handed over once: a reload of the page finds nothing waiting.
  assert.equal(await p.evaluate(() => location.search), '');
  await p.close();

  // A link shared with no file arrives as shared.txt.
  const q = await share({ title: 'A page', url: 'https://example.org/a' });
  const t = await waitFor(q, () => window.transferState?.link && window.transferState, null, { what: 'link' });
  assert.deepEqual(t.files.map((f) => f.path), ['shared.txt']);
  await q.close();
});

test('a share that reaches the server (no service worker yet) is not read, and the page says what happened', async () => {
  const body = 'x'.repeat(1 << 20);
  const res = await fetch(`${server.url}/share`, { method: 'POST', body, redirect: 'manual', headers: { 'content-type': 'multipart/form-data; boundary=b' } });
  assert.equal(res.status, 303);
  assert.equal(res.headers.get('location'), '/send?shared=lost');
  // An empty share, through the worker.
  const p = await share({ title: '', text: '' });
  await waitFor(p, () => /Nothing was shared/.test(document.getElementById('status').textContent), null, { what: 'empty share said' });
  await p.goto(`${server.url}/send?shared=lost`);
  await waitFor(p, () => /did not reach this page/.test(document.getElementById('status').textContent), null, { what: 'lost share said' });
  await p.close();
});

test('in a browser with WebRTC turned off, the pages say which part is missing (Firefox)', async () => {
  const firefox = await launchBrowser({ engine: 'firefox', prefs: { 'media.peerconnection.enabled': false } });
  try {
    for (const [name, path] of PAGES) {
      const p = await firefox.newPage();
      await p.goto(`${server.url}${path}`);
      await p.waitForLoadState('load');
      const banner = await p.evaluate(() => document.getElementById('unsupported')?.textContent ?? null);
      if (name === 'status') {
        assert.equal(banner, null, 'the status page needs no WebRTC');
        continue;
      }
      assert.match(banner ?? '', /lacks WebRTC \(RTCPeerConnection\), which this page needs/, name);
      assert.match(banner, /media\.peerconnection\.enabled/, name);
      // Nothing else of the page is offered.
      assert.equal(await p.evaluate(() => [...document.querySelectorAll('main > *')].some((e) => e.checkVisibility())), false, name);
      if (name === 'rooms') await p.screenshot({ path: 'artifacts/app-no-webrtc.png' });
      await p.close();
    }
  } finally {
    await firefox.close();
  }
});
