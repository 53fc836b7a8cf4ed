// `peerweb camera rtsp://…` against a real RTSP server (Debian's gst-rtsp-server through
// tests/media/rtsp-server.py, x264 live test pattern, digest authentication), all inside the
// loopback-only namespace run.sh made: the stream passes through to a native viewer (ffprobe
// decodes the recording) and to Chromium (decoded live at the source's rate, right size, no
// freezes); the RTSP server restarted mid-stream and the viewers go on without reloading;
// wrong credentials, an unreachable camera, a stream that is not H.264 and one with B-frames,
// and V4L2 sources that are no camera, each give a clear message and a retry, and the camera
// never crashes. G.711 sound from the camera reaches the page.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchBrowser, startServer, startCli, waitFor } from './lib.mjs';

const NET = ['--allow-loopback', '--no-stun', '--no-turn'];
const LAUNCHER = join(dirname(fileURLToPath(import.meta.url)), '..', 'media', 'rtsp-server.py');
let server;
let dir;
const started = [];

before(async () => {
  server = await startServer();
  dir = mkdtempSync(join(tmpdir(), 'peerweb-rtsp-'));
});
after(async () => {
  for (const p of started) if (p.exitCode === null && !p.signalCode) p.kill('SIGKILL');
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A test camera; resolves to {url, stop()} once it listens. */
function rtspServer(args = []) {
  const proc = spawn(LAUNCHER, ['--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(proc);
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  return new Promise((resolve, reject) => {
    let buf = '';
    proc.stdout.on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const m = JSON.parse(buf.slice(0, nl));
      if (!m.url) return reject(new Error(`rtsp-server: ${buf}`));
      resolve({
        url: m.url,
        port: Number(new URL(m.url.replace('rtsp:', 'http:')).port),
        async stop() {
          if (proc.exitCode !== null || proc.signalCode) return;
          proc.kill('SIGKILL');
          await new Promise((r) => proc.once('exit', r));
        },
      });
    });
    proc.once('exit', (c) => reject(new Error(`rtsp-server exited with ${c}: ${err}`)));
  });
}

let n = 0;
function camera(source, extra = []) {
  n += 1;
  const state = join(dir, `camera-${n}.json`);
  const p = startCli(['camera', source, '--server', server.url, '--state', state, '--json', ...NET, ...extra]);
  p.state = state;
  return p;
}

/** Pairs a native viewer with `cam` (keys into a fresh file); returns that file. */
async function pairNative(cam) {
  const { code } = await cam.waitEvent((e) => e.event === 'code', { what: 'code' });
  const keys = join(dir, `keys-${n}.json`);
  const w = startCli(['watch', code, '--server', server.url, '--keys', keys, '--pair-only', '--json', ...NET]);
  assert.equal(await w.exited, 0, w.stderr);
  return keys;
}

test('an RTSP camera with digest authentication passes H.264 through: recorded and decoded, its profile and size reported', async () => {
  const rtsp = await rtspServer(['--user', 'ada', '--password', 's3cret', '--size', '640x360']);
  const cam = camera(rtsp.url.replace('rtsp://', 'rtsp://ada:s3cret@'));
  try {
    const stream = await cam.waitEvent((e) => e.event === 'stream', { what: 'stream', timeout: 20000 });
    assert.deepEqual([stream.profile, stream.width, stream.height], ['Constrained Baseline', 640, 360]);
    const keys = await pairNative(cam);
    const rec = join(dir, 'rtsp.h264');
    const v = startCli(['watch', 'camera', '--server', server.url, '--keys', keys, '--frames', '90', '--record', rec, '--json', ...NET]);
    assert.equal(await v.exited, 0, v.stderr);
    const status = v.events.find((e) => e.event === 'status');
    assert.deepEqual([status.width, status.height], [640, 360]);
    const out = JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-count_frames', '-show_entries',
      'stream=width,height,nb_read_frames,codec_name', '-of', 'json', rec], { encoding: 'utf8' })).streams[0];
    assert.deepEqual([out.codec_name, out.width, out.height], ['h264', 640, 360]);
    assert.ok(Number(out.nb_read_frames) >= 30, `${out.nb_read_frames} frames decoded`);
    assert.ok(!cam.stderr.includes('s3cret') && !cam.events.some((e) => JSON.stringify(e).includes('s3cret')), 'the password is never printed');
  } finally {
    await cam.terminate();
    await rtsp.stop();
  }
});

/** The /watch page, paired by the camera's link, once it decoded a frame. */
async function watchPage(browser, cam) {
  const { link } = await cam.waitEvent((e) => e.event === 'code', { what: 'code' });
  const page = await browser.newPage();
  await page.goto(link);
  await waitFor(page, () => window.watchState?.stats?.framesDecoded > 0, null, { what: 'a decoded frame', timeout: 30000 });
  return page;
}

test('Chromium decodes an RTSP camera live, and keeps going when the RTSP server restarts mid-stream', async () => {
  let rtsp = await rtspServer(['--size', '640x360']);
  const cam = camera(rtsp.url);
  const browser = await launchBrowser();
  try {
    const page = await watchPage(browser, cam);
    const rate = async () => {
      const a = await page.evaluate(() => window.watchState.stats.framesDecoded);
      await new Promise((r) => setTimeout(r, 3000));
      const s = await page.evaluate(() => window.watchState.stats);
      return { fps: (s.framesDecoded - a) / 3, s };
    };
    const live = await rate();
    assert.ok(live.fps >= 20, `decoded ${live.fps} fps from a 30 fps camera`);
    assert.deepEqual([live.s.width, live.s.height], [640, 360]);
    assert.equal(live.s.freezes, 0, 'no freezes');
    // The camera's RTSP server goes away and comes back on the same port.
    const port = rtsp.port;
    await rtsp.stop();
    await cam.waitEvent((e) => e.event === 'source-failed', { what: 'source-failed', timeout: 20000 });
    // (A later --port wins over the launcher's --port 0.)
    rtsp = await rtspServer(['--size', '640x360', '--port', String(port)]);
    const before = await page.evaluate(() => window.watchState.stats.framesDecoded);
    await waitFor(page, (b) => window.watchState.stats.framesDecoded > b + 60, before, { what: 'frames after the restart', timeout: 45000 });
    assert.equal(await page.evaluate(() => window.watchState.state), 'watching', 'no reload, same visit');
  } finally {
    await browser.close();
    await cam.terminate();
    await rtsp.stop();
  }
});

for (const [codec, mime] of [['pcmu', 'audio/PCMU'], ['opus', 'audio/opus']]) {
  test(`a camera's ${codec} sound passes through to the browser beside the picture`, async () => {
    const rtsp = await rtspServer(['--size', '320x240', '--audio', codec]);
    const cam = camera(rtsp.url);
    const browser = await launchBrowser();
    try {
      const page = await watchPage(browser, cam);
      // 20 ms packets: 100 in two seconds or so.
      await waitFor(page, () => window.watchState.stats.audio?.packets > 100, null, { what: 'the camera\'s sound', timeout: 20000 });
      const got = await page.evaluate(async () => {
        const pc = window.cameraWatch.peer.pc;
        const stats = await pc.getStats();
        let inbound = null;
        stats.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') inbound = s; });
        return stats.get(inbound.codecId)?.mimeType;
      });
      assert.equal(got, mime, 'passed through as the camera sent it');
      assert.equal(await page.evaluate(() => document.getElementById('sound').hidden), false, 'the page offers the sound');
      // Played: the tone's energy shows once the page unmutes.
      await page.click('#sound');
      await waitFor(page, () => window.watchState.stats.audio.energy > 0, null, { what: 'sound played', timeout: 10000 });
      const s = await page.evaluate(() => window.watchState.stats);
      console.log(`RTSP ${codec} sound: ${s.audio.packets} packets, energy ${s.audio.energy.toFixed(3)}; video ${s.width}×${s.height}`);
      assert.deepEqual([s.width, s.height], [320, 240]);
    } finally {
      await browser.close();
      await cam.terminate();
      await rtsp.stop();
    }
  });
}

test('bad sources get a clear message and a retry, never a crash', async () => {
  const cases = [];
  const authed = await rtspServer(['--user', 'ada', '--password', 's3cret']);
  const jpeg = await rtspServer(['--codec', 'jpeg']);
  const bframes = await rtspServer(['--profile', 'main', '--bframes', '2']);
  // A port nobody listens on: the launcher's, once it is gone.
  const gone = await rtspServer();
  await gone.stop();
  cases.push(['wrong password', authed.url.replace('rtsp://', 'rtsp://ada:nope@'), /401|[Uu]nauthori/]);
  cases.push(['unreachable', gone.url, /refused|connect/i]);
  cases.push(['not H.264', jpeg.url, /no H\.264.*video\/jpeg/]);
  cases.push(['B-frames', bframes.url, /B-frames/]);
  // A V4L2 source that is no camera (CI has no capture device; the device path is tested
  // for what it can be: missing, or not a V4L2 node).
  cases.push(['not a V4L2 device', 'v4l2:/dev/null', /not a V4L2 video device/]);
  cases.push(['no such device', 'v4l2:/dev/video-peerweb-none', /cannot open/]);
  const cams = cases.map(([what, url, re]) => ({ what, re, cam: camera(url, ['--name', what]) }));
  try {
    for (const { what, re, cam } of cams) {
      const failures = () => cam.events.filter((e) => e.event === 'source-failed');
      await cam.waitEvent(() => failures().length >= 2, { what: `${what}: two tries`, timeout: 30000 });
      assert.match(failures()[0].why, re, what);
      assert.ok(failures()[0].retry_secs >= 1, what);
      assert.equal(cam.proc.exitCode, null, `${what}: the camera exited`);
    }
    for (const { what, cam } of cams) assert.equal(await cam.terminate(), 0, `${what}: ${cam.stderr}`);
  } finally {
    for (const { cam } of cams) await cam.terminate();
    for (const s of [authed, jpeg, bframes]) await s.stop();
  }
});
