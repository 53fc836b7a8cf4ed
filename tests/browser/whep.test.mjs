// WHEP (draft-ietf-wish-whep) on `peerweb serve`: a player written against the draft — a page
// of another origin using fetch and RTCPeerConnection, as a home-automation dashboard would —
// watches a `peerweb camera` with the bearer token `peerweb camera --whep NAME` printed. The
// picture is read off the test pattern; wrong and missing tokens, a wrong content type and an
// unknown camera are refused with the draft's statuses; DELETE ends the session at the camera;
// a revoked token stops the stream and cannot start another.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchBrowser, readPattern, startServer, startCli, waitFor } from './lib.mjs';

const NET = ['--allow-loopback', '--no-stun', '--no-turn'];
let server;
let dir;
let origin;
let site;

before(async () => {
  server = await startServer();
  dir = mkdtempSync(join(tmpdir(), 'peerweb-whep-'));
  // The player's own origin (another port): the WHEP endpoint is used cross-origin.
  site = createServer((_, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>player</title><video id="video" muted autoplay playsinline></video>');
  });
  await new Promise((r) => site.listen(0, '127.0.0.1', r));
  origin = `http://127.0.0.1:${site.address().port}/`;
});
after(async () => {
  await server?.stop();
  site?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The WHEP player, in the page: POST the offer (complete, no trickle), apply the answer. */
function play(page, url, token, { contentType = 'application/sdp' } = {}) {
  return page.evaluate(async ([url, token, contentType]) => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const video = document.getElementById('video');
    pc.ontrack = (e) => {
      if (e.track.kind === 'video') video.srcObject = new MediaStream([e.track]);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') return resolve();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && resolve();
    });
    const headers = { 'Content-Type': contentType };
    if (token) headers.Authorization = `Bearer ${token}`;
    const res = await fetch(url, { method: 'POST', headers, body: pc.localDescription.sdp });
    const body = await res.text();
    if (res.status !== 201) {
      pc.close();
      return { status: res.status, body, auth: res.headers.get('WWW-Authenticate') };
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    const location = new URL(res.headers.get('Location'), url).href;
    window.player = { pc, location };
    return { status: 201, location, type: res.headers.get('Content-Type') };
  }, [url, token, contentType]);
}

function decoded(page) {
  return page.evaluate(async () => {
    const stats = await window.player.pc.getStats();
    let n = 0;
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') n = s.framesDecoded ?? 0;
    });
    return n;
  });
}

async function whepSessions() {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  return Number(text.match(/^peerweb_whep_sessions (\d+)$/m)?.[1]);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

test('a WHEP player watches a camera with a viewer\'s token; bad requests get the draft\'s statuses', async () => {
  const state = join(dir, 'camera.json');
  const made = startCli(['camera', '--whep', 'dashboard', '--state', state, '--server', server.url, '--json']);
  assert.equal(await made.exited, 0, made.stderr);
  const { url, token, viewer } = made.events.find((e) => e.event === 'whep');
  assert.equal(viewer, 'dashboard');
  assert.match(url, new RegExp(`^${server.url}/whep/[a-z2-7]{16}$`));
  // Asked again: the same viewer and token.
  const again = startCli(['camera', '--whep', 'dashboard', '--state', state, '--server', server.url, '--json']);
  assert.equal(await again.exited, 0, again.stderr);
  assert.equal(again.events[0].token, token);

  const browser = await launchBrowser();
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.error('[page error]', e.message));
  await page.goto(origin);
  // The camera is not running yet.
  const offline = await play(page, url, token);
  assert.equal(offline.status, 404, offline.body);
  assert.match(offline.body, /not online/);

  const cam = startCli(['camera', 'test:320x240', '--server', server.url, '--state', state, '--json', ...NET]);
  try {
    await cam.waitEvent((e) => e.event === 'ready' && e.viewers === 1);
    const none = await play(page, url, null);
    assert.equal(none.status, 401);
    assert.match(none.auth ?? '', /^Bearer/);
    const wrong = await play(page, url, `${token.split('.')[0]}.${'0'.repeat(32)}`);
    assert.equal(wrong.status, 403, wrong.body);
    assert.match(wrong.body, /not a token/);
    const text = await play(page, url, token, { contentType: 'text/plain' });
    assert.equal(text.status, 415);
    const other = await play(page, url.replace(/[a-z2-7]{16}$/, 'a'.repeat(16)), token);
    assert.equal(other.status, 404);
    assert.ok(!cam.events.some((e) => e.event === 'watching'), 'nobody watches yet');

    const started = Date.now();
    const ok = await play(page, url, token);
    assert.equal(ok.status, 201, ok.body);
    assert.equal(ok.type, 'application/sdp');
    assert.match(ok.location, new RegExp(`^${url}/[a-z2-7]+$`));
    await waitFor(page, () => document.getElementById('video').videoWidth > 0, null, { what: 'a picture', timeout: 20000 });
    console.log(`WHEP: first frame ${Date.now() - started} ms after the POST began`);
    const seen = await cam.waitEvent((e) => e.event === 'watching');
    assert.equal(seen.name, 'dashboard');
    assert.equal(await whepSessions(), 1);
    const samples = await readPattern(page, '#video', 2000, [320, 240]);
    const frames = samples.map((x) => x.frame);
    assert.ok(frames.length >= 40, `${frames.length} frames presented in 2 s`);
    assert.ok(frames.every((f, i) => i === 0 || f > frames[i - 1]), `numbers rise: ${frames}`);
    const lat = median(samples.map((x) => x.latency));
    console.log(`WHEP: latency p50 ${lat} ms`);
    assert.ok(lat < 250, `latency p50 ${lat} ms on loopback`);

    // DELETE ends it: the camera sees the player leave, and the server holds nothing.
    const status = await page.evaluate(async () => (await fetch(window.player.location, { method: 'DELETE' })).status);
    assert.equal(status, 200);
    await cam.waitEvent((e) => e.event === 'left' && e.peer === seen.peer, { what: 'the player left' });
    assert.equal(await whepSessions(), 0);
    const twice = await page.evaluate(async () => (await fetch(window.player.location, { method: 'DELETE' })).status);
    assert.equal(twice, 404);
    await page.evaluate(() => window.player.pc.close());

    // Revoked while watching: the stream stops, the session ends, the token is dead.
    const again2 = await play(page, url, token);
    assert.equal(again2.status, 201, again2.body);
    await waitFor(page, async () => {
      const s = await window.player.pc.getStats();
      let n = 0;
      s.forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') n = r.framesDecoded ?? 0; });
      return n > 10;
    }, null, { what: 'frames again', timeout: 20000 });
    const second = await cam.waitEvent((e) => e.event === 'watching' && e.peer !== seen.peer);
    const revoke = startCli(['camera', '--state', state, '--revoke', 'dashboard']);
    assert.equal(await revoke.exited, 0, revoke.stderr);
    await cam.waitEvent((e) => e.event === 'left' && e.peer === second.peer, { what: 'the revoked player cut off', timeout: 10000 });
    const a = await decoded(page);
    await new Promise((r) => setTimeout(r, 1500));
    const b = await decoded(page);
    assert.ok(b - a <= 2, `frames went on after the revocation: ${a} → ${b}`);
    assert.equal(await whepSessions(), 0);
    const dead = await play(page, url, token);
    assert.equal(dead.status, 403, dead.body);
  } finally {
    await browser.close();
    await cam.terminate();
  }
});
