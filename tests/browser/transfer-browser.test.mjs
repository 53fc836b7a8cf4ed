// The transfer pages in real Chromium, with `peerweb send` / `peerweb receive` on the other
// side, or another tab: CLI→browser (in a phone-sized window), browser→CLI, browser→browser,
// by link and by code (the page's SPAKE2 against the Rust crate's), wrong codes, and a man in
// the middle at the signaling server caught by a browser receiver.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { addVeth, startServer, launchBrowser, startCli, waitFor } from './lib.mjs';
import { startMitm } from './mitm.mjs';
import { blake3Hex } from '../../web/transfer/blake3.js';
import { NET, server, browser, dir, sha, page, stateOf, waitState, acceptAll, files, bigFile, useTransferPages } from './transfer-pages.mjs';

const CHUNK_BYTES = 61440;
useTransferPages('transfer-browser');

test('CLI → browser in a phone-sized window: a folder arrives verified, the SAS matches', async () => {
  const { root, want } = files('cli-to-browser', { empty: 0, one: 1, odd: 200_001, 'deep/er/big.bin': 5_000_003 });
  const sender = startCli(['send', '--server', server.url, '--json', ...NET, root]);
  const { link } = await sender.waitEvent((e) => e.event === 'code', { what: 'code' });
  const p = await page(link, { width: 390, height: 844 });
  assert.deepEqual(await acceptAll(p), want);
  assert.equal(await sender.exited, 0, sender.stderr);
  const cliSas = sender.events.find((e) => e.event === 'verified').sas;
  assert.equal((await stateOf(p)).sas, cliSas);
  // The page fits the phone's width.
  assert.ok(await p.evaluate(() => document.documentElement.scrollWidth <= 390));
  await p.screenshot({ path: 'artifacts/receive-phone.png' });
  await p.close();
});


for (const by of ['link', 'code']) {
  test(`browser → CLI: picked files go to \`peerweb receive ${by.toUpperCase()}\``, async () => {
    const { root, want } = files(`browser-to-cli-${by}`, { 'a.bin': 3_000_017, 'b.txt': 1, 'c.empty': 0 });
    const p = await page(`${server.url}/send`);
    await p.setInputFiles('#files', ['a.bin', 'b.txt', 'c.empty'].map((n) => join(root, n)));
    const shared = await waitFor(p, () => window.transferState.link && window.transferState, null, { what: 'link' });
    assert.match(shared.code, /^\d{1,3}-[a-z]+-[a-z]+$/);
    const out = join(dir, `out-browser-to-cli-${by}`);
    const receiver = startCli(['receive', shared[by], '--server', server.url, '--out', out, '--yes', '--json', ...NET]);
    assert.equal(await receiver.exited, 0, receiver.stderr);
    for (const n of ['a.bin', 'b.txt', 'c.empty']) {
      assert.equal(sha(readFileSync(join(out, n))), want[`browser-to-cli-${by}/${n}`], n);
    }
    const s = await waitState(p, ['done']);
    assert.equal(s.state, 'done', s.error);
    assert.equal(s.sas, receiver.events.find((e) => e.event === 'verified').sas);
    await p.close();
  });
}

/** Opens the receive page without a link and types `text` into its code box. */
/** `code` with its last word changed (to one it is not: comparing with the first word made the
 * "wrong" code the right one whenever the last word was `acorn`). */
function wrongCode(code) {
  const [n, w1, w2] = code.split('-');
  return `${n}-${w1}-${w2 === 'acorn' ? 'actor' : 'acorn'}`;
}

async function typeCode(p, text, base = server.url) {
  await p.goto(`${base}/receive`);
  await waitState(p, ['code']);
  await p.fill('#code', text);
  await p.click('#go');
}

test('a receive page closed mid-transfer resumes from what it stored when both run again', async () => {
  const f = bigFile('resume-page.bin', 96);
  const first = startCli(['send', '--server', server.url, '--json', ...NET, f]);
  const p = await page((await first.waitEvent((e) => e.event === 'code', { what: 'code' })).link);
  assert.equal((await waitState(p, ['offered'])).state, 'offered');
  await p.click('#accept');
  const had = await waitFor(p, () => {
    const s = window.transferState;
    return s.state === 'error' ? s.error : (s.done ?? 0) > 30 << 20 && s.done;
  }, null, { what: '30 MiB in', timeout: 60000 });
  assert.equal(typeof had, 'number', had);
  await p.close(); // the tab goes away mid-file
  assert.notEqual(await first.exited, 0);

  const again = startCli(['send', '--server', server.url, '--json', ...NET, f]);
  const q = await page((await again.waitEvent((e) => e.event === 'code', { what: 'code' })).link);
  const got = await acceptAll(q);
  assert.equal(await again.exited, 0, again.stderr);
  assert.deepEqual(got, { 'resume-page.bin': sha(readFileSync(f)) });
  const { summary } = await stateOf(q);
  console.log(`page resumed: ${JSON.stringify({ had, summary })}`);
  // Whole chunks of what the first page had written were kept (it went on for a moment after
  // `had` was read, so a little more than `had` may be there).
  assert.ok(summary.resumed > 0 && summary.resumed < 96 << 20, JSON.stringify({ had, summary }));
  assert.equal(summary.resumed % CHUNK_BYTES, 0);
  // The sender sent only the rest.
  const sent = again.events.find((e) => e.event === 'done');
  assert.equal(sent.resumed_bytes, summary.resumed);
  assert.equal(sent.bytes, (96 << 20) - summary.resumed);
  rmSync(f);
  await q.close();
});

test('stored bytes that were damaged between runs fail the file\'s check, are dropped, and the next run is whole', async () => {
  const data = randomBytes(3 * CHUNK_BYTES + 5);
  const f = join(dir, 'damaged-part.bin');
  writeFileSync(f, data);
  const p = await page(`${server.url}/receive`);
  // What an earlier cut-off run would have left, but with one byte changed.
  const bad = Buffer.from(data.subarray(0, 2 * CHUNK_BYTES));
  bad[100] ^= 1;
  await p.evaluate(async ([name, bytes]) => {
    const { blake3, toHex } = await import('/transfer/blake3.js');
    const key = toHex(blake3(new TextEncoder().encode(name))).slice(0, 32);
    const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle('peerweb-received', { create: true });
    const w = await (await dir.getFileHandle(`${key}.part`, { create: true })).createWritable();
    await w.write(new Uint8Array(bytes));
    await w.close();
  }, [`damaged-part.bin\0${blake3Hex(data)}`, [...bad]]);
  for (const round of ['damaged', 'whole']) {
    const sender = startCli(['send', '--server', server.url, '--json', ...NET, f]);
    const { link } = await sender.waitEvent((e) => e.event === 'code', { what: 'code' });
    await p.goto('about:blank');
    await p.goto(link);
    assert.equal((await waitState(p, ['offered'])).state, 'offered');
    await p.click('#accept');
    const s = await waitState(p, ['done']);
    if (round === 'damaged') {
      assert.equal(s.state, 'error');
      assert.match(s.error, /does not match its BLAKE3 hash/);
      // The page said why: the sender stops at once, with the reason.
      assert.notEqual(await sender.exited, 0);
      assert.match(sender.stderr, /does not match its BLAKE3 hash/);
    } else {
      assert.equal(s.state, 'done', s.error);
      assert.equal(s.summary.resumed, 0);
      assert.equal(await sender.exited, 0, sender.stderr);
    }
  }
  assert.deepEqual(await p.evaluate(async () => {
    const d = new Uint8Array(await crypto.subtle.digest('SHA-256', await window.transferFiles[0].file.arrayBuffer()));
    return [...d].map((b) => b.toString(16).padStart(2, '0')).join('');
  }), sha(data));
  await p.close();
});

test('browser → browser: one tab sends a picked folder, another types the code', async () => {
  const { root, want } = files('browser-to-browser', { 'x.bin': 2_000_000, 'sub/y.bin': 61_441, 'sub/deeper/z.empty': 0 });
  const a = await page(`${server.url}/send`);
  await a.setInputFiles('#folder', root);
  const { code } = await waitFor(a, () => window.transferState.code && window.transferState, null, { what: 'code' });
  const b = await page('about:blank');
  // As a person might type it: spaces, capitals.
  await typeCode(b, ` ${code.replace(/-/g, ' ').toUpperCase()} `);
  const got = await acceptAll(b);
  assert.deepEqual(got, want);
  const s = await waitState(a, ['done']);
  assert.equal(s.state, 'done', s.error);
  assert.equal(s.sas, (await stateOf(b)).sas);
  await a.close();
  await b.close();
});

test('a browser receiver catches a signaling server that swaps fingerprints; nothing is offered', async () => {
  const mitm = await startMitm(server.url);
  try {
    const { root } = files('mitm-browser', { 'secret.txt': 100 });
    const sender = startCli(['send', '--server', mitm.url, '--json', ...NET, root]);
    const { link } = await sender.waitEvent((e) => e.event === 'code', { what: 'code' });
    assert.ok(link.startsWith(mitm.url));
    const p = await page(link);
    const s = await waitState(p, ['done', 'offered']);
    assert.equal(s.state, 'error');
    assert.match(s.error, /man in the middle/);
    assert.equal(await sender.exited, 3, sender.stderr);
    await mitm.settle(() => mitm.openLegs() === 2);
    assert.equal(mitm.openLegs(), 2);
    assert.ok(!mitm.relayed.some((m) => m.binary || /"t":"(files|offer)"/.test(m.text ?? '')));
    await p.close();
  } finally {
    await mitm.stop();
  }
});

test('a phone-like page on plain http (no WebCrypto, no OPFS, address hidden) takes a typed code and receives', async () => {
  // A LAN address in this namespace: http:// to it is not a secure context, so the page has
  // no crypto.subtle and no origin-private file system, like a phone opening the QR link.
  const removeVeth = await addVeth('pwt0', 'pwt1', '10.98.0.1/24');
  const lan = await startServer({ host: '10.98.0.1' });
  const phone = await launchBrowser({ hideAddresses: true, loopback: false });
  try {
    const data = randomBytes(1_500_001);
    const f = join(dir, 'lan.bin');
    writeFileSync(f, data);
    const sender = startCli(['send', '--server', lan.url, '--json', '--interface', 'pwt0', '--no-stun', '--no-turn', f]);
    const { code } = await sender.waitEvent((e) => e.event === 'code', { what: 'code' });
    const p = await phone.newPage();
    await p.setViewportSize({ width: 390, height: 844 });
    await typeCode(p, code, lan.url);
    assert.equal(await p.evaluate(() => window.isSecureContext), false);
    assert.equal(await p.evaluate(() => typeof crypto.subtle), 'undefined');
    const s = await waitState(p, ['offered']);
    assert.equal(s.state, 'offered', s.error);
    await p.click('#accept');
    const done = await waitState(p, ['done']);
    assert.equal(done.state, 'done', done.error);
    assert.equal(done.storage, 'memory');
    assert.equal(await sender.exited, 0, sender.stderr);
    const got = await p.evaluate(async () => {
      const { blake3Hex } = await import('/transfer/blake3.js');
      return blake3Hex(new Uint8Array(await window.transferFiles[0].file.arrayBuffer()));
    });
    assert.equal(got, blake3Hex(data));
    assert.equal(done.sas, sender.events.find((e) => e.event === 'verified').sas);
    await p.close();
  } finally {
    await phone.close();
    await lan.stop();
    removeVeth();
  }
});

test('the page\'s SPAKE2 gives the Rust crate\'s (python-spake2\'s) known answers', async () => {
  const p = await page(`${server.url}/receive`);
  const got = await p.evaluate(async () => {
    const { Spake2, passwordScalar } = await import('/transfer/spake2.js');
    const te = new TextEncoder();
    const hex = (b) => [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
    const args = [te.encode('password'), te.encode('idA'), te.encode('idB')];
    const a = new Spake2('A', ...args, 2611694063369306139794446498317402240796898290761098242657700742213257926693n);
    const b = new Spake2('B', ...args, 7002393159576182977806091886122272758628412261510164356026361256515836884383n);
    const wrong = new Spake2('B', te.encode('passwore'), args[1], args[2]);
    let bad = null;
    try { a.finish(new Uint8Array([0x42, ...new Uint8Array(32).fill(0xff)])); } catch (e) { bad = e.message; }
    return {
      pw: String(passwordScalar(args[0])), a: hex(a.message), b: hex(b.message),
      ka: hex(a.finish(b.message)), kb: hex(b.finish(a.message)),
      wrongDiffers: hex(wrong.finish(a.message)) !== hex(a.finish(wrong.message)), bad,
    };
  });
  // The test vectors of the `spake2` crate (tests::test_asymmetric), from python-spake2.
  assert.equal(got.pw, '3515301705789368674385125653994241092664323519848410154015274772661223168839');
  assert.equal(got.a, '416fc960df73c9cf8ed7198b0c9534e2e96a5984bfc5edc023fd24dacf371f2af9');
  assert.equal(got.b, '42354e97b88406922b1df4bea1d7870f17aed3dba7c720b313edae315b00959309');
  assert.equal(got.ka, '712295de7219c675ddd31942184aa26e0a957cf216bc230d165b215047b520c1');
  assert.equal(got.kb, got.ka);
  assert.ok(got.wrongDiffers);
  assert.ok(got.bad, 'a message that is no point is refused');
  await p.close();
});

test('CLI → browser by a code typed into the page; a wrong code fails on both sides', async () => {
  const { root, want } = files('code-to-browser', { 'k.bin': 700_001 });
  const sender = startCli(['send', '--server', server.url, '--json', ...NET, root]);
  const { code } = await sender.waitEvent((e) => e.event === 'code', { what: 'code' });
  const p = await page('about:blank');
  await typeCode(p, code);
  assert.deepEqual(await acceptAll(p), want);
  assert.equal(await sender.exited, 0, sender.stderr);
  assert.equal((await stateOf(p)).sas, sender.events.find((e) => e.event === 'verified').sas);

  // A wrong guess: right nameplate, wrong words. Both sides stop before any file list.
  const again = startCli(['send', '--server', server.url, '--json', ...NET, root]);
  const real = (await again.waitEvent((e) => e.event === 'code', { what: 'code' })).code;
  await typeCode(p, wrongCode(real));
  const s = await waitState(p, ['offered', 'done']);
  assert.equal(s.state, 'error');
  assert.match(s.error, /wrong code or link/);
  assert.equal(s.files.length, 0);
  assert.equal(await again.exited, 3, again.stderr);
  await p.close();
});

test('a browser sender refuses a CLI receiver with a wrong code, once', async () => {
  const { root } = files('browser-wrong-code', { 'w.bin': 1000 });
  const p = await page(`${server.url}/send`);
  await p.setInputFiles('#files', [join(root, 'w.bin')]);
  const { code } = await waitFor(p, () => window.transferState.code && window.transferState, null, { what: 'code' });
  const out = join(dir, 'out-wrong-code');
  const guess = startCli(['receive', wrongCode(code), '--server', server.url, '--out', out, '--yes', '--json', ...NET]);
  assert.equal(await guess.exited, 3, guess.stderr);
  const s = await waitState(p, ['done']);
  assert.equal(s.state, 'error');
  assert.match(s.error, /wrong code or link/);
  // The code is spent: the right one now finds nobody.
  const late = startCli(['receive', code, '--server', server.url, '--out', out, '--yes', '--wait', '3', '--json', ...NET]);
  assert.notEqual(await late.exited, 0);
  await p.close();
});

test('the receive page explains a code it cannot use', async () => {
  const p = await page('about:blank');
  for (const [text, why] of [['7-crimson', /a number and two words/], ['7-crimson-zzz', /"zzz" is not a code word/], ['0-crimson-otter', /1 to 999/]]) {
    await typeCode(p, text);
    await waitFor(p, () => window.transferState.error, null, { what: 'error' });
    assert.match((await stateOf(p)).error, why);
    assert.equal((await stateOf(p)).state, 'code');
  }
  await p.close();
});

test('a page whose parts fail to load (a network change mid-load) says so instead of waiting forever', async () => {
  for (const path of ['/receive', '/send']) {
    const p = await browser.newPage();
    await p.route('**/vendor/@noble/hashes/sha2.js', (r) => r.abort('internetdisconnected'));
    await p.goto(`${server.url}${path}`);
    const s = await waitState(p, [], 15000);
    assert.equal(s.state, 'error', path);
    assert.match(s.error, /did not load.*Reload/, path);
    assert.equal(await p.isVisible('#error'), true, path);
    await p.close();
  }
});

test('a damaged link says so', async () => {
  const p = await page(`${server.url}/receive#7-short`);
  const s = await waitState(p, []);
  assert.match(s.error, /whole link/);
  await p.close();
});
