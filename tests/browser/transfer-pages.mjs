// What the transfer-page tests share: one `peerweb serve` and one Chromium per file (set up by
// useTransferPages() in the file's before/after), the pages' state, generated files, and the
// heap watch for the large transfers.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, launchBrowser, waitFor, writeBigFile } from './lib.mjs';

/** The CLI's network flags for these tests: loopback host candidates only. */
export const NET = ['--allow-loopback', '--no-stun', '--no-turn'];
export let server;
export let browser;
export let dir;

/** Starts the server and the browser before the file's tests and ends them after. */
export function useTransferPages(name) {
  before(async () => {
    server = await startServer();
    // gc() and exact heap numbers, so heap samples count what a page keeps, not garbage.
    browser = await launchBrowser({ args: ['--js-flags=--expose-gc', '--enable-precise-memory-info'] });
    dir = mkdtempSync(join(tmpdir(), `peerweb-${name}-`));
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
}

export const sha = (buf) => createHash('sha256').update(buf).digest('hex');

export async function page(url, viewport) {
  const p = await browser.newPage();
  p.on('pageerror', (e) => console.error('[page error]', e.message));
  if (viewport) await p.setViewportSize(viewport);
  await p.goto(url);
  return p;
}

export const stateOf = (p) => p.evaluate(() => window.transferState);

export async function waitState(p, names, timeout = 60000) {
  return waitFor(p, (names) => {
    const s = window.transferState;
    return s && (names.includes(s.state) || s.state === 'error') ? s : null;
  }, names, { timeout, what: `page state ${names}` });
}

/** Accepts the offer in a receive page and waits until it is done; returns {path: sha256}. */
export async function acceptAll(p) {
  const s = await waitState(p, ['offered']);
  assert.equal(s.state, 'offered', s.error);
  await p.click('#accept');
  const done = await waitState(p, ['done']);
  assert.equal(done.state, 'done', done.error);
  return p.evaluate(async () => {
    const out = {};
    for (const r of window.transferFiles) {
      const d = new Uint8Array(await crypto.subtle.digest('SHA-256', await r.file.arrayBuffer()));
      out[r.path] = [...d].map((b) => b.toString(16).padStart(2, '0')).join('');
    }
    return out;
  });
}

export function files(name, spec) {
  const root = join(dir, name);
  const want = {};
  for (const [rel, size] of Object.entries(spec)) {
    const f = join(root, rel);
    mkdirSync(join(f, '..'), { recursive: true });
    const data = randomBytes(size);
    writeFileSync(f, data);
    want[`${name}/${rel}`] = sha(data);
  }
  return { root, want };
}

/** A file of `mib` MiB in this file's folder (see `writeBigFile`). */
export function bigFile(name, mib) {
  return writeBigFile(join(dir, name), mib);
}

/**
 * Samples a page's JS heap (after a garbage collection) until it leaves the `busy` states.
 * Returns the largest sample and the largest of the first and of the last third, in MiB: a page
 * that kept what it moved would grow from third to third.
 */
export async function watchHeap(p, busy) {
  const samples = [];
  for (;;) {
    const [state, heap] = await p.evaluate(() => {
      window.gc();
      return [window.transferState.state, performance.memory.usedJSHeapSize];
    });
    samples.push(heap / 2 ** 20);
    if (!busy.includes(state)) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  const third = Math.max(1, Math.floor(samples.length / 3));
  const max = (a) => Math.max(...a);
  return { max: max(samples), first: max(samples.slice(0, third)), last: max(samples.slice(-third)) };
}

/** A 1 GiB transfer kept the page's heap bounded and not growing. */
export function assertFlat(heap) {
  assert.ok(heap.max < 64, `JS heap grew to ${heap.max.toFixed(1)} MiB`);
  assert.ok(heap.last < heap.first + 16, `JS heap grew from ${heap.first.toFixed(1)} to ${heap.last.toFixed(1)} MiB`);
}

export const mib = (heap) => `max JS heap ${heap.max.toFixed(1)} MiB (first third ${heap.first.toFixed(1)}, last ${heap.last.toFixed(1)})`;
