// `peerweb send` / `peerweb receive` between two CLIs through a real `peerweb serve`, all in
// the loopback-only namespace run.sh made: sizes, folders, codes and links, wrong codes,
// kill-and-resume on either side, a 1 GiB file with memory watched.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { startServer, startCli, writeBigFile } from './lib.mjs';
import { startMitm } from './mitm.mjs';

const NET = ['--allow-loopback', '--no-stun', '--no-turn'];
let server;
let dir;

before(async () => {
  server = await startServer();
  dir = mkdtempSync(join(tmpdir(), 'peerweb-transfer-'));
});
after(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function sha256(path) {
  const h = createHash('sha256');
  for await (const b of createReadStream(path)) h.update(b);
  return h.digest('hex');
}

/** { relative path: sha256 } of every file under `root` (the staging folder excluded). */
async function tree(root) {
  const out = {};
  const walk = async (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) {
        if (e.name !== '.peerweb-partial') await walk(p);
      } else out[relative(root, p)] = await sha256(p);
    }
  };
  await walk(root);
  return out;
}

function send(paths, extra = [], via = server.url) {
  return startCli(['send', '--server', via, '--json', ...NET, ...extra, ...paths]);
}

function receive(code, out, extra = [], via = server.url) {
  return startCli(['receive', code, '--server', via, '--out', out, '--yes', '--json', ...NET, ...extra]);
}

async function offered(sender) {
  return sender.waitEvent((e) => e.event === 'code', { what: 'code' });
}

/** Largest resident set of `pid` while `until` is pending, polled every 200 ms (KiB). */
function watchRss(pid, until) {
  let max = 0;
  let done = false;
  until.finally(() => { done = true; });
  return (async () => {
    while (!done) {
      try {
        const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
        if (m) max = Math.max(max, Number(m[1]));
      } catch { break; }
      await new Promise((r) => setTimeout(r, 200));
    }
    return max;
  })();
}

test('a folder with empty, one-byte, odd-sized and nested files arrives whole, by code', async () => {
  const src = join(dir, 'album');
  mkdirSync(join(src, 'deep/er/still'), { recursive: true });
  writeFileSync(join(src, 'empty'), '');
  writeFileSync(join(src, 'one'), 'x');
  writeFileSync(join(src, 'chunk-minus-one'), randomBytes(60 * 1024 - 1));
  writeFileSync(join(src, 'chunk-plus-one'), randomBytes(60 * 1024 + 1));
  writeFileSync(join(src, 'deep/er/still/odd.bin'), randomBytes(3_000_007));
  writeFileSync(join(src, 'deep/note.txt'), 'nested\n');
  const out = join(dir, 'out-folder');
  const sender = send([src]);
  const { code, files, bytes } = await offered(sender);
  assert.match(code, /^\d{1,3}-[a-z]+-[a-z]+$/);
  assert.equal(files, 6);
  const receiver = receive(code, out);
  assert.equal(await receiver.exited, 0, receiver.stderr);
  assert.equal(await sender.exited, 0, sender.stderr);
  const want = await tree(dir).then((t) => Object.fromEntries(
    Object.entries(t).filter(([k]) => k.startsWith('album/')).map(([k, v]) => [k, v])));
  assert.deepEqual(await tree(out), want);
  // Both sides show the same short authentication string, and the receiver's summary adds up.
  const sas = (p) => p.events.find((e) => e.event === 'verified')?.sas;
  assert.match(sas(sender), /^\d{3} \d{3}$/);
  assert.equal(sas(sender), sas(receiver));
  const done = receiver.events.find((e) => e.event === 'done');
  assert.equal(done.bytes, bytes);
  assert.equal(done.direct, true);
  assert.deepEqual(receiver.events.find((e) => e.event === 'saved').names, ['album']);
  assert.ok(!readdirSync(out).includes('.peerweb-partial'), 'staging folder removed');
});

test('by link; a name that exists gets a suffix instead of being overwritten', async () => {
  const f = join(dir, 'report.pdf');
  writeFileSync(f, randomBytes(1 << 20));
  const out = join(dir, 'out-link');
  mkdirSync(out);
  writeFileSync(join(out, 'report.pdf'), 'mine');
  // Other transfers' staged files: a week and a day old goes, a day old stays.
  const staged = join(out, '.peerweb-partial');
  mkdirSync(staged);
  const days = (n) => new Date(Date.now() - n * 86400e3);
  for (const [name, age] of [['old.part', 8], ['old.sums', 8], ['recent.part', 1], ['notes.txt', 30]]) {
    writeFileSync(join(staged, name), 'x');
    utimesSync(join(staged, name), days(age), days(age));
  }
  const sender = send([f]);
  const { link } = await offered(sender);
  assert.match(link, new RegExp(`^${server.url}/receive#\\d+-[a-z2-7]{26}$`));
  const receiver = receive(link, out);
  assert.equal(await receiver.exited, 0, receiver.stderr);
  assert.equal(await sender.exited, 0, sender.stderr);
  assert.equal(readFileSync(join(out, 'report.pdf'), 'utf8'), 'mine');
  assert.equal(await sha256(join(out, 'report (1).pdf')), await sha256(f));
  assert.deepEqual(readdirSync(staged).sort(), ['notes.txt', 'recent.part']);
});

test('a wrong code fails on both sides before anything is offered, and burns the code', async () => {
  const f = join(dir, 'secret.txt');
  writeFileSync(f, 'top secret');
  const out = join(dir, 'out-wrong');
  const sender = send([f]);
  const { code } = await offered(sender);
  const [n, a, b] = code.split('-');
  const wrong = `${n}-${a === 'otter' ? 'owl' : 'otter'}-${b}`;
  const receiver = receive(wrong, out);
  assert.equal(await receiver.exited, 3, receiver.stderr);
  assert.match(receiver.stderr, /could not prove|man in the middle/);
  assert.equal(await sender.exited, 3, sender.stderr);
  assert.match(sender.stderr, /could not prove/);
  assert.ok(!receiver.events.some((e) => e.event === 'offer'), 'no file list before verification');
  assert.deepEqual(readdirSync(out), []);
  // The sender is gone: the right code now finds nobody.
  const late = receive(code, out, ['--wait', '2']);
  assert.equal(await late.exited, 1);
  assert.match(late.stderr, /nobody is sending/);
});

for (const by of ['code', 'link']) {
  test(`a signaling server that swaps both fingerprints is caught on both sides (${by}); no file byte reaches it`, async () => {
    const mitm = await startMitm(server.url);
    try {
      const f = join(dir, `private-${by}.txt`);
      writeFileSync(f, 'for your eyes only');
      const out = join(dir, `out-mitm-${by}`);
      const sender = send([f], [], mitm.url);
      const offer = await offered(sender);
      // The link names the server it came from: the attacker's.
      const receiver = receive(by === 'code' ? offer.code : offer.link, out, [], mitm.url);
      assert.equal(await receiver.exited, 3, receiver.stderr);
      assert.equal(await sender.exited, 3, sender.stderr);
      for (const p of [sender, receiver]) assert.match(p.stderr, /man in the middle/);
      // The attack was real: each side completed DTLS with the proxy's certificate, and the
      // proxy relayed the handshake between them.
      await mitm.settle(() => mitm.openLegs() === 2 && mitm.relayed.filter((m) => m.text?.includes('"confirm"')).length === 2);
      assert.equal(mitm.openLegs(), 2);
      const kinds = mitm.relayed.map((m) => (m.binary ? 'binary' : JSON.parse(m.text).t));
      assert.ok(kinds.includes('hello') && kinds.includes('confirm'), kinds.join());
      assert.ok(!kinds.includes('binary') && !kinds.includes('files') && !kinds.includes('offer'), kinds.join());
      assert.ok(!mitm.relayed.some((m) => m.text?.includes('private')), 'no file name leaked');
      assert.deepEqual(readdirSync(out), []);
    } finally {
      await mitm.stop();
    }
  });
}

test('a receiver without room for the offer refuses it, and the sender, already streaming, says why', async () => {
  // A 1 MiB tmpfs as the output folder: the free-space check is real. A fresh `--yes`
  // receiver says it is ready, so the sender streams right behind its offer.
  const small = join(dir, 'out-small');
  mkdirSync(small);
  const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', small]);
  assert.equal(mount.status, 0, String(mount.stderr));
  try {
    const f = join(dir, 'too-big.bin');
    writeFileSync(f, randomBytes(8 << 20));
    const sender = send([f]);
    const receiver = receive((await offered(sender)).code, small);
    assert.equal(await receiver.exited, 1, receiver.stderr);
    assert.match(receiver.stderr, /not enough free space/);
    assert.equal(await sender.exited, 1, sender.stderr);
    assert.match(sender.stderr, /the other side stopped: not enough free space at the receiver/);
    assert.deepEqual(readdirSync(small).filter((n) => n !== '.peerweb-partial'), []);
  } finally {
    spawnSync('umount', [small]);
  }
});

test('hostile file names from a sender are neutralised inside the output folder', async () => {
  const tool = join(dirname(process.env.PEERWEB_BIN), 'examples', 'hostile_sender');
  const out = join(dir, 'out-hostile', 'inner');
  mkdirSync(out, { recursive: true });
  const proc = spawn(tool, [server.url], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const code = await new Promise((resolve, reject) => {
    proc.stdout.once('data', (d) => resolve(JSON.parse(d.toString()).code));
    proc.once('exit', (c) => reject(new Error(`hostile sender exited ${c}: ${stderr}`)));
  });
  const exited = new Promise((r) => proc.once('close', (c) => r(c)));
  const receiver = receive(code, out);
  assert.equal(await receiver.exited, 0, receiver.stderr);
  assert.equal(await exited, 0, stderr);
  assert.deepEqual(Object.keys(await tree(out)).sort(), [
    'SAME (1).TXT', '_CON', 'a/b/c.txt', 'bell__newline.txt', 'escaped.txt', 'etc/peerweb-owned',
    'same.txt', 'windows.txt',
  ]);
  assert.equal(readFileSync(join(out, 'same.txt'), 'utf8'), 'first');
  assert.equal(readFileSync(join(out, 'SAME (1).TXT'), 'utf8'), 'second');
  assert.deepEqual(readdirSync(join(dir, 'out-hostile')), ['inner'], 'nothing escaped the output folder');
  assert.throws(() => statSync('/etc/peerweb-owned'));
});

test('bad codes and links are refused with a clear message', async () => {
  for (const [arg, msg] of [
    ['crimson-otter', /a number and two words/],
    ['7-crimson-zzzz', /not a code word/],
    ['http://127.0.0.1:1/receive#7-abc', /secret in the link is damaged/],
  ]) {
    const r = receive(arg, join(dir, 'never'));
    assert.equal(await r.exited, 1, arg);
    assert.match(r.stderr, msg);
  }
});

async function partBytes(out) {
  try {
    return readdirSync(join(out, '.peerweb-partial'))
      .filter((n) => n.endsWith('.part'))
      .reduce((s, n) => s + statSync(join(out, '.peerweb-partial', n)).size, 0);
  } catch { return 0; }
}

async function waitPart(out, bytes) {
  const end = Date.now() + 60000;
  while (Date.now() < end) {
    if ((await partBytes(out)) >= bytes) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the transfer did not get going');
}

for (const victim of ['receiver', 'sender']) {
  test(`the ${victim} killed mid-transfer: running both again resumes from the verified chunks`, async () => {
    const f = join(dir, `resume-${victim}.bin`);
    writeFileSync(f, randomBytes(120 << 20));
    const out = join(dir, `out-resume-${victim}`);
    const s1 = send([f]);
    const r1 = receive((await offered(s1)).code, out);
    await waitPart(out, 8 << 20);
    const [dead, survivor] = victim === 'receiver' ? [r1, s1] : [s1, r1];
    dead.proc.kill('SIGKILL');
    // The other side notices on its own and says how to go on.
    assert.equal(await survivor.exited, 1, survivor.stderr);
    if (victim === 'sender') assert.match(survivor.stderr, /run the same command again to resume/);
    const had = await partBytes(out);
    const s2 = send([f]);
    const r2 = receive((await offered(s2)).code, out);
    assert.equal(await r2.exited, 0, r2.stderr);
    assert.equal(await s2.exited, 0, s2.stderr);
    const done = r2.events.find((e) => e.event === 'done');
    assert.ok(done.resumed_bytes > 0 && done.resumed_bytes <= had, JSON.stringify({ done, had }));
    assert.equal(done.resumed_bytes + done.bytes, 120 << 20);
    assert.equal(await sha256(join(out, `resume-${victim}.bin`)), await sha256(f));
  });
}

test('a 1 GiB file arrives verified with both sides\' memory flat', async () => {
  const f = writeBigFile(join(dir, 'big.bin'), 1024);
  const out = join(dir, 'out-big');
  const sender = send([f]);
  const { code } = await offered(sender);
  const receiver = receive(code, out);
  const [rssS, rssR] = [watchRss(sender.proc.pid, sender.exited), watchRss(receiver.proc.pid, receiver.exited)];
  assert.equal(await receiver.exited, 0, receiver.stderr);
  assert.equal(await sender.exited, 0, sender.stderr);
  assert.equal(await sha256(join(out, 'big.bin')), await sha256(f));
  const [maxS, maxR] = [await rssS, await rssR];
  console.log(`1 GiB: sender max RSS ${maxS} KiB, receiver ${maxR} KiB; ${JSON.stringify(receiver.events.find((e) => e.event === 'done'))}`);
  assert.ok(maxS < 150_000 && maxR < 150_000, `memory grew: ${maxS} / ${maxR} KiB`);
  rmSync(f);
  rmSync(out, { recursive: true });
});
