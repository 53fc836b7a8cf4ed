// `peerweb camera` and `peerweb watch` through a real `peerweb serve`, all in the loopback-only
// namespace run.sh made: pairing by code, watching by name with the video checked by ffprobe,
// nothing for strangers, wrong codes and forged keys; revocation cuts a live viewer off; a
// camera that restarts is waited for; a man in the middle cannot pair. The /watch page in
// Chromium: paired by the camera's link, live video checked from getStats and the pattern's
// blocks (frame numbers and latency read off the picture), back with no code after a reload.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchBrowser, readPattern, startServer, startCli, waitFor } from './lib.mjs';
import { startMitm } from './mitm.mjs';

const NET = ['--allow-loopback', '--no-stun', '--no-turn'];
let server;
let dir;

before(async () => {
  server = await startServer();
  dir = mkdtempSync(join(tmpdir(), 'peerweb-camera-'));
});
after(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

let n = 0;
/** A camera with its own state file, streaming the 320×240 test pattern. */
function camera(state, extra = [], via = server.url) {
  return startCli(['camera', 'test:320x240', '--server', via, '--state', state, '--json', ...NET, ...extra]);
}

function watch(target, keys, extra = [], via = server.url) {
  return startCli(['watch', target, '--server', via, '--keys', keys, '--json', ...NET, ...extra]);
}

async function codeOf(cam, after = 0) {
  const seen = () => cam.events.filter((e) => e.event === 'code');
  await cam.waitEvent(() => seen().length > after, { what: `code #${after + 1}` });
  return seen()[after];
}

function fresh(name) {
  n += 1;
  return { state: join(dir, `${name}-${n}-camera.json`), keys: join(dir, `${name}-${n}-keys.json`) };
}

/** ffprobe's count of decodable frames and the size, for an H.264 file. */
function probe(file) {
  const out = execFileSync('ffprobe', ['-v', 'error', '-count_frames', '-show_entries',
    'stream=width,height,nb_read_frames', '-of', 'json', file], { encoding: 'utf8' });
  const s = JSON.parse(out).streams[0];
  return { width: s.width, height: s.height, frames: Number(s.nb_read_frames) };
}

test('a viewer pairs by code, then watches by name: the video decodes at the right size', async () => {
  const { state, keys } = fresh('pair');
  const cam = camera(state, ['--name', 'porch']);
  try {
    const ready = await cam.waitEvent((e) => e.event === 'ready');
    assert.equal(ready.viewers, 0);
    const { code, link } = await codeOf(cam);
    assert.match(link, /\/watch#\d+-[a-z2-7]+$/);
    const pairing = watch(code, keys, ['--pair-only', '--name', 'phone']);
    assert.equal(await pairing.exited, 0, pairing.stderr);
    const paired = pairing.events.find((e) => e.event === 'paired');
    assert.equal(paired.name, 'porch');
    assert.equal(paired.camera, ready.camera);
    await cam.waitEvent((e) => e.event === 'paired' && e.name === 'phone');
    // The key is kept privately; the code is not shown again.
    assert.equal(statSync(keys).mode & 0o777, 0o600);
    const next = await codeOf(cam, 1);
    assert.notEqual(next.code, code);

    const rec = join(dir, 'porch.h264');
    const viewer = watch('porch', keys, ['--frames', '90', '--record', rec]);
    assert.equal(await viewer.exited, 0, viewer.stderr);
    const watching = viewer.events.find((e) => e.event === 'watching');
    const seen = await cam.waitEvent((e) => e.event === 'watching');
    assert.equal(seen.name, 'phone', 'the camera knows the viewer by its pairing');
    assert.equal(seen.sas, watching.sas, 'both sides derive the same SAS');
    const status = viewer.events.find((e) => e.event === 'status');
    assert.deepEqual([status.width, status.height, status.fps, status.viewers], [320, 240, 30, 1]);
    const first = viewer.events.find((e) => e.event === 'frames');
    assert.ok(first.ms < 3000, `first frame after ${first.ms} ms`);
    const p = probe(rec);
    assert.equal(p.width, 320);
    assert.equal(p.height, 240);
    assert.ok(p.frames >= 85, `only ${p.frames} frames decoded`);
  } finally {
    await cam.terminate();
  }
});

test('a camera with viewers shows no code until it is asked (SIGUSR1), then pairs another viewer', async () => {
  const { state, keys } = fresh('usr1');
  let cam = camera(state);
  try {
    const { code } = await codeOf(cam);
    const first = watch(code, keys, ['--pair-only', '--name', 'phone']);
    assert.equal(await first.exited, 0, first.stderr);
    assert.equal(await cam.terminate(), 0);
    // Restarted with a viewer paired: ready, and no code.
    cam = camera(state);
    await cam.waitEvent((e) => e.event === 'ready' && e.viewers === 1);
    const w = watch('camera', keys, ['--frames', '1']);
    assert.equal(await w.exited, 0, w.stderr);
    assert.ok(!cam.events.some((e) => e.event === 'code'), 'a code without being asked');
    cam.proc.kill('SIGUSR1');
    const { code: again } = await codeOf(cam);
    const second = watch(again, join(dir, 'usr1-second.json'), ['--pair-only', '--name', 'tablet']);
    assert.equal(await second.exited, 0, second.stderr);
    await cam.waitEvent((e) => e.event === 'paired' && e.name === 'tablet');
    const list = startCli(['camera', '--state', state, '--list-viewers', '--json']);
    assert.equal(await list.exited, 0);
    assert.deepEqual(list.events.map((e) => e.name).sort(), ['phone', 'tablet']);
  } finally {
    await cam.terminate();
  }
});

test('strangers get nothing: a wrong code, a forged key, and pairing closes after three wrong codes', async () => {
  const { state, keys } = fresh('strangers');
  const cam = camera(state);
  try {
    const ready = await cam.waitEvent((e) => e.event === 'ready');
    // A viewer file naming this camera with a key it never gave.
    writeFileSync(keys, JSON.stringify({
      cameras: [{ camera: ready.camera, name: 'cam', server: server.url, viewer: 'abcdef012345', key: '00'.repeat(16) }],
    }));
    const forged = watch('cam', keys, ['--frames', '1']);
    assert.equal(await forged.exited, 3, forged.stderr);
    assert.match(forged.stderr, /refused/);
    assert.ok(!forged.events.some((e) => e.event === 'frames' || e.event === 'watching'));
    let shown = 0;
    for (let i = 0; i < 3; i += 1) {
      const { code } = await codeOf(cam, shown);
      shown += 1;
      // The right room, the wrong words.
      const [num, a, b] = code.split('-');
      const wrong = `${num}-${a}-${b === 'otter' ? 'crater' : 'otter'}`;
      const guess = watch(wrong, join(dir, `guess-${i}.json`), ['--pair-only']);
      assert.equal(await guess.exited, 3, guess.stderr);
      assert.match(guess.stderr, /wrong code|man in the middle|refused/);
    }
    await cam.waitEvent((e) => e.event === 'pairing-closed');
    assert.equal(cam.events.filter((e) => e.event === 'paired').length, 0);
    assert.equal(cam.events.filter((e) => e.event === 'watching').length, 0);
  } finally {
    await cam.terminate();
  }
});

test('a revoked viewer is cut off at once and cannot come back', async () => {
  const { state, keys } = fresh('revoke');
  const cam = camera(state);
  try {
    const { code } = await codeOf(cam);
    const pairing = watch(code, keys, ['--pair-only', '--name', 'tablet']);
    assert.equal(await pairing.exited, 0, pairing.stderr);
    const viewer = watch('camera', keys);
    await viewer.waitEvent((e) => e.event === 'frames');
    const revoked = startCli(['camera', '--state', state, '--revoke', 'tablet', '--json']);
    assert.equal(await revoked.exited, 0, revoked.stderr);
    const cutAt = Date.now();
    assert.equal(await viewer.exited, 3, viewer.stderr);
    assert.ok(Date.now() - cutAt < 5000, `cut off after ${Date.now() - cutAt} ms`);
    assert.match(viewer.stderr, /revoked/);
    const again = watch('camera', keys, ['--frames', '1']);
    assert.equal(await again.exited, 3, again.stderr);
    const list = startCli(['camera', '--state', state, '--list-viewers', '--json']);
    assert.equal(await list.exited, 0);
    assert.equal(list.events.length, 0);
  } finally {
    await cam.terminate();
  }
});

test('a viewer waits for a camera that restarts, and watches on', async () => {
  const { state, keys } = fresh('restart');
  let cam = camera(state);
  try {
    const { code } = await codeOf(cam);
    const pairing = watch(code, keys, ['--pair-only']);
    assert.equal(await pairing.exited, 0, pairing.stderr);
    const viewer = watch('camera', keys);
    await viewer.waitEvent((e) => e.event === 'frames');
    await cam.terminate();
    await viewer.waitEvent((e) => e.event === 'lost', { what: 'lost' });
    const before = viewer.events.filter((e) => e.event === 'watching').length;
    cam = camera(state);
    await viewer.waitEvent((e) => e.event === 'watching' && viewer.events.filter((x) => x.event === 'watching').length > before,
      { timeout: 30000, what: 'watching again' });
    const lastFrames = () => viewer.events.filter((e) => e.event === 'frames').at(-1).frames;
    const was = lastFrames();
    await viewer.waitEvent(() => lastFrames() > was + 30, { what: 'frames after the restart' });
    assert.equal(await viewer.terminate(), 0, viewer.stderr);
  } finally {
    await cam.terminate();
  }
});

test('a signaling server in the middle cannot pair: both sides see the proofs fail', async () => {
  const mitm = await startMitm(server.url);
  const { state, keys } = fresh('mitm');
  const cam = camera(state, [], mitm.url);
  try {
    const { code } = await codeOf(cam);
    const viewer = watch(code, keys, ['--pair-only'], mitm.url);
    assert.equal(await viewer.exited, 3, viewer.stderr);
    assert.match(viewer.stderr, /man in the middle/);
    await cam.waitEvent((e) => e.event === 'refused' && /man in the middle/.test(e.why));
    assert.equal(cam.events.filter((e) => e.event === 'paired').length, 0);
    assert.throws(() => readFileSync(keys), 'no key kept');
  } finally {
    await cam.terminate();
    await mitm.stop();
  }
});

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

test('the /watch page pairs by the camera\'s link and shows live video, then comes back with no code', async () => {
  const { state } = fresh('page');
  const cam = camera(state, ['--name', 'garden']);
  const browser = await launchBrowser();
  try {
    const { link } = await codeOf(cam);
    const page = await browser.newPage();
    page.on('pageerror', (e) => console.error('[page error]', e.message));
    const opened = Date.now();
    await page.goto(link);
    await waitFor(page, () => window.watchState?.state === 'watching', null, { what: 'watching', timeout: 30000 });
    await waitFor(page, () => window.watchState.stats?.framesDecoded > 0, null, { what: 'a decoded frame' });
    const firstFrameMs = Date.now() - opened;
    assert.ok(!page.url().includes('#'), 'the secret left the address bar');
    const paired = cam.events.find((e) => e.event === 'paired');
    assert.ok(paired, 'the camera paired the page');
    const seen = await cam.waitEvent((e) => e.event === 'watching');
    assert.equal(await page.evaluate(() => window.watchState.sas), seen.sas);
    // Live: frames keep coming at the source's rate, at the source's size.
    const before = await page.evaluate(() => window.watchState.stats.framesDecoded);
    const samples = await readPattern(page, '#video', 3000, [320, 240]);
    const st = await page.evaluate(() => window.watchState);
    assert.deepEqual([st.stats.width, st.stats.height], [320, 240]);
    assert.ok(st.stats.framesDecoded - before >= 60, `${st.stats.framesDecoded - before} frames in ~3 s`);
    assert.equal(st.status.viewers, 1);
    const frames = samples.map((x) => x.frame);
    assert.ok(frames.length >= 60, `${frames.length} frames presented in 3 s`);
    assert.ok(frames.every((f, i) => i === 0 || f > frames[i - 1]), `numbers rise: ${frames}`);
    const lat = median(samples.map((x) => x.latency));
    console.log(`/watch: first frame ${firstFrameMs} ms after opening the link; latency p50 ${lat} ms; page estimate ${st.stats.latencyMs} ms`);
    assert.ok(lat < 250, `latency p50 ${lat} ms on loopback`);
    assert.match(await page.textContent('#facts'), /320×240/);

    // A reload watches again with the kept key: no code, and the camera knows it by name.
    const watched = cam.events.filter((e) => e.event === 'watching').length;
    await page.reload();
    await waitFor(page, () => window.watchState?.state === 'watching', null, { what: 'watching again', timeout: 30000 });
    const againMs = await waitFor(page, () => window.watchState.firstFrame, null, { what: 'frames again' });
    console.log(`/watch: first frame ${againMs} ms after a reload began (a paired visit)`);
    assert.ok(againMs < 1500, `first frame ${againMs} ms after a reload`);
    await cam.waitEvent(() => cam.events.filter((e) => e.event === 'watching').length > watched);
    assert.equal(cam.events.filter((e) => e.event === 'paired').length, 1, 'paired once');

    // A browser with a made-up key for this camera gets refused and no frame.
    const id = await page.evaluate(() => window.watchState.camera);
    await page.close();
    const stranger = await browser.newPage();
    await stranger.goto(`${server.url}/watch`);
    const forged = { camera: id, name: 'garden', server: server.url, viewer: 'abcdef012345', key: '11'.repeat(16) };
    await stranger.evaluate((r) => localStorage.setItem('peerweb-cameras', JSON.stringify([r])), forged);
    await stranger.goto(`${server.url}/watch?camera=${id}`);
    await waitFor(stranger, () => window.watchState?.state === 'refused', null, { what: 'refused', timeout: 30000 });
    assert.match(await stranger.textContent('#error'), /refused/);
    assert.equal(await stranger.evaluate(() => window.watchState.stats?.framesDecoded ?? 0), 0);
  } finally {
    await browser.close();
    await cam.terminate();
  }
});
