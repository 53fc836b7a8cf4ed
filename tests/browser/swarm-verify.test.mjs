// Verified swarms, the trust layer: `peerweb manifest` (Rust) and the browser's verifier
// (web/sdk/swarm-tree.js, swarm-manifest.js on web/transfer/blake3.js) agree byte for byte —
// the same roots (what b3sum prints), the same outboards, every 16 KiB group verifying and any
// changed byte caught in exactly its group; a signed manifest verifies in Chromium, and a
// tampered, reformatted or wrongly signed one is refused with the reason.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchBrowser, sdkPage, startServer, startCli } from './lib.mjs';

const G = 16384;
let server;
let dir;
let browser;
let page;

before(async () => {
  server = await startServer();
  dir = mkdtempSync(join(tmpdir(), 'peerweb-swarm-'));
  browser = await launchBrowser();
  // The modules come from the server itself.
  page = await sdkPage(browser, `${server.url}/swarm-verify-test.html`);
});
after(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Runs `peerweb manifest` with `args`; returns its JSON events. */
async function manifest(args) {
  const p = startCli(['manifest', '--json', ...args]);
  assert.equal(await p.exited, 0, p.stderr);
  return p.events;
}

const b64 = (buf) => Buffer.from(buf).toString('base64');

test('the browser builds the same trees as `peerweb manifest` and verifies every group of them', async () => {
  const files = join(dir, 'files');
  mkdirSync(join(files, 'sub'), { recursive: true });
  const sizes = [0, 1, 1023, 1024, G - 1, G, G + 1, 2 * G, 3 * G - 5, 4 * G, 5 * G + 1, 8 * G, 9 * G + 3, 17 * G, 64 * G + 7];
  for (const [i, size] of sizes.entries()) writeFileSync(join(files, i % 2 ? 'sub' : '', `f${String(i).padStart(2, '0')}.bin`), randomBytes(size));
  const events = await manifest([files, '--key', join(dir, 'key.pem')]);
  const listed = events.filter((e) => e.event === 'file');
  assert.equal(listed.length, sizes.length);
  const key = events.find((e) => e.event === 'manifest').key;
  assert.match(key, /^ed25519:[0-9a-f]{64}$/);
  const cases = listed.map((f) => ({
    path: f.path,
    size: f.size,
    root: f.root,
    data: b64(readFileSync(join(files, f.path))),
    outboard: f.outboard ? b64(readFileSync(join(files, f.outboard))) : '',
  }));
  const results = await page.evaluate(async (cases) => {
    const { Tree, TreeError, GROUP } = await import('/sdk/swarm-tree.js');
    const { toHex } = await import('/transfer/blake3.js');
    const bytes = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
    const out = [];
    for (const c of cases) {
      const data = bytes(c.data);
      const rustOutboard = bytes(c.outboard);
      const mine = Tree.of(data);
      const r = { path: c.path, size: c.size, root: mine.rootHex === c.root, outboard: toHex(mine.outboard()) === toHex(rustOutboard) };
      const tree = Tree.fromOutboard(c.size, c.root, rustOutboard);
      r.groups = tree.groups;
      r.verified = 0;
      r.caught = 0;
      for (let g = 0; g < tree.groups; g++) {
        const group = data.subarray(g * GROUP, (g + 1) * GROUP);
        tree.verify(g, group);
        r.verified += 1;
        if (group.length === 0) continue;
        // One flipped bit: caught in this group, and blamed on it.
        const bad = group.slice();
        bad[bad.length >> 1] ^= 1;
        try { tree.verify(g, bad); } catch (e) { if (e instanceof TreeError && e.index === g) r.caught += 1; }
      }
      // A group one byte short, and a group out of range: refused.
      try { tree.verify(0, data.subarray(0, Math.max(0, Math.min(GROUP, data.length) - 1))); r.short = data.length === 0; } catch { r.short = true; }
      try { tree.verify(tree.groups, new Uint8Array(0)); r.range = false; } catch { r.range = true; }
      // A forged outboard: refused when read, wherever the change is.
      r.forged = true;
      for (let at = 0; at < rustOutboard.length; at += 97) {
        const f = rustOutboard.slice();
        f[at] ^= 0x40;
        try { Tree.fromOutboard(c.size, c.root, f); r.forged = false; } catch (e) { if (!(e instanceof TreeError)) r.forged = false; }
      }
      if (rustOutboard.length) {
        try { Tree.fromOutboard(c.size, c.root, rustOutboard.subarray(0, rustOutboard.length - 1)); r.forged = false; } catch { /* refused */ }
      }
      out.push(r);
    }
    return out;
  }, cases);
  for (const r of results) {
    assert.ok(r.root, `${r.path} (${r.size} B): the browser's root is b3sum's`);
    assert.ok(r.outboard, `${r.path}: the browser's outboard is Rust's, byte for byte`);
    assert.equal(r.verified, r.groups, `${r.path}: every group verifies`);
    assert.equal(r.caught, r.size === 0 ? 0 : r.groups, `${r.path}: every changed group is caught and blamed`);
    assert.ok(r.short && r.range, `${r.path}: wrong lengths and indexes refused`);
    assert.ok(r.forged, `${r.path}: a forged outboard refused`);
  }
});

test('a signed manifest verifies in the browser; tampered, reformatted or foreign ones are refused with the reason', async () => {
  const files = join(dir, 'signed');
  mkdirSync(files, { recursive: true });
  writeFileSync(join(files, 'a.txt'), 'hello');
  writeFileSync(join(files, 'b.bin'), randomBytes(40000));
  const events = await manifest([files, '--key', join(dir, 'signer.pem')]);
  const key = events.find((e) => e.event === 'manifest').key;
  const text = readFileSync(join(files, 'peerweb-manifest.json'), 'utf8');
  // Written in the same folder, not listed in itself.
  await manifest([files, '--out', join(files, 'unsigned.json')]);
  const unsigned = readFileSync(join(files, 'unsigned.json'), 'utf8');
  const other = (await manifest([join(files, 'a.txt'), '--key', join(dir, 'other.pem'), '--out', join(files, 'other.json')]))
    .find((e) => e.event === 'manifest').key;
  const verdicts = await page.evaluate(async ([text, unsigned, key, other]) => {
    const { parseManifest } = await import('/sdk/swarm-manifest.js');
    const verdict = (t, opts) => { try { const m = parseManifest(t, opts); return `ok ${m.files.length} ${m.key}`; } catch (e) { return `${e.name}: ${e.message}`; } };
    const m = JSON.parse(text);
    return {
      good: verdict(text, { trust: key }),
      bytes: verdict(new TextEncoder().encode(text)),
      foreign: verdict(text, { trust: other }),
      unsignedTrusted: verdict(unsigned, { trust: key }),
      unsigned: verdict(unsigned),
      size: verdict(text.replace('"size":5,', '"size":6,')),
      root: verdict(text.replace(m.files[0].root, '0'.repeat(64))),
      swappedKey: verdict(text.replace(key, other)),
      spaced: verdict(JSON.stringify(m, null, 1)),
      extra: verdict(text.replace('{"v":1,', '{"v":1,"x":0,')),
      noSig: verdict(text.replace(/,"sig":"[0-9a-f]+"/, '')),
      traversal: verdict(unsigned.replace('"a.txt"', '"../a.txt"')),
      huge: verdict(unsigned.replace('"size":5,', `"size":${2 ** 41},`)),
      unsorted: verdict(unsigned.replace('"a.txt"', '"c.txt"')),
      junk: verdict('{"v":1'),
    };
  }, [text, unsigned, key, other]);
  assert.equal(verdicts.good, `ok 2 ${key}`);
  assert.equal(verdicts.bytes, `ok 2 ${key}`);
  assert.equal(verdicts.unsigned, 'ok 2 null');
  const expect = {
    foreign: `is signed by ${key}, not by ${other}`,
    unsignedTrusted: 'not signed',
    size: 'signature does not verify',
    root: 'signature does not verify',
    swappedKey: 'signature does not verify',
    spaced: 'not in canonical form',
    extra: 'unknown field x',
    noSig: 'a key but no signature',
    traversal: 'not relative',
    huge: 'the most is',
    unsorted: 'not sorted',
    junk: 'not a manifest',
  };
  for (const [k, want] of Object.entries(expect)) {
    assert.match(verdicts[k], /^ManifestError: /, `${k}: ${verdicts[k]}`);
    assert.ok(verdicts[k].includes(want), `${k}: ${verdicts[k]} should say ${want}`);
  }
  // The Rust side refuses the same manifests (its --check reads them with the same rules).
  writeFileSync(join(files, 'spaced.json'), JSON.stringify(JSON.parse(text), null, 1));
  const p = startCli(['manifest', '--check', join(files, 'spaced.json')]);
  assert.equal(await p.exited, 1);
  assert.match(p.stderr, /canonical form/);
  const q = startCli(['manifest', '--check', join(files, 'peerweb-manifest.json'), '--trust', other]);
  assert.equal(await q.exited, 1);
  assert.match(q.stderr, /signed by/);
});
