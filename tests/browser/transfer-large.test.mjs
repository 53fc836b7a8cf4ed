// The transfer pages in real Chromium moving 1 GiB in every direction a page takes part in
// (CLI → page, page → CLI, page → page): hashes compared, the pages' memory watched. A file of
// their own, as each takes minutes on two cores (run.sh gives this file a longer limit).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startCli, waitFor } from './lib.mjs';
import { blake3Hex } from '../../web/transfer/blake3.js';
import { NET, server, dir, sha, page, stateOf, waitState, bigFile, watchHeap, assertFlat, mib, useTransferPages } from './transfer-pages.mjs';

useTransferPages('transfer-large');

test('CLI → browser, 1 GiB: the page streams to disk, verifies, and its memory stays flat', async () => {
  const f = bigFile('large.bin', 1024);
  const sender = startCli(['send', '--server', server.url, '--json', ...NET, f]);
  const { link } = await sender.waitEvent((e) => e.event === 'code', { what: 'code' });
  const p = await page(link);
  const s = await waitState(p, ['offered']);
  assert.equal(s.state, 'offered', s.error);
  await p.click('#accept');
  const heap = await watchHeap(p, ['offered', 'receiving']);
  const done = await stateOf(p);
  assert.equal(done.state, 'done', done.error);
  assert.equal(await sender.exited, 0, sender.stderr);
  assert.equal(done.results[0].size, 1 << 30);
  assert.equal(done.storage, 'disk');
  // What is on disk, read back and hashed in the page, is the file that was sent.
  const onDisk = await p.evaluate(async () => {
    const { hashFile } = await import('/transfer/transfer.js');
    return hashFile(window.transferFiles[0].file);
  });
  assert.equal(onDisk, blake3Hex(readFileSync(f)));
  console.log(`1 GiB to a page: ${mib(heap)}; ${JSON.stringify(done.summary)}`);
  assertFlat(heap);
  rmSync(f);
  await p.close();
});

test('browser → CLI, 1 GiB: the sending page reads the file in pieces, its memory stays flat', async () => {
  const f = bigFile('large-up.bin', 1024);
  const p = await page(`${server.url}/send`);
  await p.setInputFiles('#files', [f]);
  const { link } = await waitFor(p, () => window.transferState.link && window.transferState, null, { what: 'link', timeout: 60000 });
  const out = join(dir, 'out-large-up');
  const receiver = startCli(['receive', link, '--out', out, '--yes', '--json', ...NET]);
  const heap = await watchHeap(p, ['waiting', 'verifying', 'offered', 'sending']);
  assert.equal(await receiver.exited, 0, receiver.stderr);
  const s = await stateOf(p);
  assert.equal(s.state, 'done', s.error);
  assert.equal(sha(readFileSync(join(out, 'large-up.bin'))), sha(readFileSync(f)));
  console.log(`1 GiB from a page: ${mib(heap)}; ${JSON.stringify(receiver.events.find((e) => e.event === 'done'))}`);
  assertFlat(heap);
  rmSync(f);
  rmSync(out, { recursive: true });
  await p.close();
});

test('browser → browser, 1 GiB: one page reads, the other stores, both stay flat', async () => {
  const f = bigFile('large-b2b.bin', 1024);
  const a = await page(`${server.url}/send`);
  await a.setInputFiles('#files', [f]);
  const { link } = await waitFor(a, () => window.transferState.link && window.transferState, null, { what: 'link', timeout: 60000 });
  const b = await page(link);
  assert.equal((await waitState(b, ['offered'])).state, 'offered');
  await b.click('#accept');
  const [sendHeap, receiveHeap] = await Promise.all([
    watchHeap(a, ['waiting', 'verifying', 'offered', 'sending']),
    watchHeap(b, ['offered', 'receiving']),
  ]);
  const done = await stateOf(b);
  assert.equal(done.state, 'done', done.error);
  assert.equal((await stateOf(a)).state, 'done');
  assert.equal(done.storage, 'disk');
  const onDisk = await b.evaluate(async () => {
    const { hashFile } = await import('/transfer/transfer.js');
    return hashFile(window.transferFiles[0].file);
  });
  assert.equal(onDisk, blake3Hex(readFileSync(f)));
  console.log(`1 GiB page to page: sender ${mib(sendHeap)}, receiver ${mib(receiveHeap)}; ${JSON.stringify(done.summary)}`);
  assertFlat(sendHeap);
  assertFlat(receiveHeap);
  rmSync(f);
  await a.close();
  await b.close();
});
