// The browser rows of the transfer benchmark (bench/run-transfer): one file moved CLI→CLI (the
// reference, same run), CLI→browser, browser→CLI and browser→browser through one
// `peerweb serve`, in headless Chromium. Each rate is the receiver's own: from its accept to its
// last file verified and stored (the CLI's `done` event, the page's summary). Medians of
// rounds. Run inside a network namespace with only loopback (run-transfer makes it).
// Usage: node transfer-rates.mjs PEERWEB_BIN [--mib 256] [--rounds 3]
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [bin, ...rest] = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? Number(rest[i + 1]) : dflt;
};
const MIB = opt('mib', 256);
const ROUNDS = opt('rounds', 3);
const NET = ['--allow-loopback', '--no-stun', '--no-turn'];
const DEADLINE_MS = 600000;

function run(args) {
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const events = [];
  let buf = '';
  let stderr = '';
  proc.stdout.on('data', (d) => {
    buf += d;
    for (let nl; (nl = buf.indexOf('\n')) >= 0; buf = buf.slice(nl + 1)) {
      try { events.push(JSON.parse(buf.slice(0, nl))); } catch { /* a human line */ }
    }
  });
  proc.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((r) => proc.once('exit', (code) => r(code)));
  const event = async (name) => {
    for (const end = Date.now() + DEADLINE_MS; Date.now() < end;) {
      const e = events.find((x) => x.event === name);
      if (e) return e;
      if (proc.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`${args[0]}: no ${name} event: ${stderr}`);
  };
  return { proc, events, exited, event, get stderr() { return stderr; } };
}

async function until(p, fn, arg) {
  for (const end = Date.now() + DEADLINE_MS; Date.now() < end;) {
    const v = await p.evaluate(fn, arg);
    if (v) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the page did not get there in time');
}

const pageState = (p, names) => until(p, (n) => {
  const s = window.transferState;
  if (s?.state === 'error') throw new Error(s.error);
  return s && n.includes(s.state) ? s : null;
}, names);

/** Accepts in a receive page (its storage emptied first: nothing to resume); returns its seconds. */
async function pageReceives(p, url) {
  await p.goto(url.replace(/#.*/, ''));
  await p.evaluate(async () => (await navigator.storage.getDirectory()).removeEntry('peerweb-received', { recursive: true }).catch(() => {}));
  await p.goto('about:blank'); // else the link is a same-page jump to another #
  await p.goto(url);
  await pageState(p, ['offered']);
  await p.click('#accept');
  const s = await pageState(p, ['done']);
  return s.summary.seconds;
}

/** Offers `file` from a send page; returns {link, page}. */
async function pageSends(ctx, server, file) {
  const p = await ctx.newPage();
  await p.goto(`${server}/send`);
  await p.setInputFiles('#files', [file]);
  const { link } = await until(p, () => window.transferState.link && window.transferState);
  return { link, page: p };
}

async function cliSends(server, file) {
  const s = run(['send', '--server', server, '--json', ...NET, file]);
  return { sender: s, link: (await s.event('code')).link };
}

async function cliReceives(link, out) {
  const r = run(['receive', link, '--out', out, '--yes', '--json', ...NET]);
  const done = await r.event('done');
  if ((await r.exited) !== 0) throw new Error(`receive failed: ${r.stderr}`);
  return done.seconds;
}

const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'peerweb-bench-browser-'));
  const server = run(['serve', '--listen', '127.0.0.1:0']);
  const url = await new Promise((resolve, reject) => {
    let out = '';
    server.proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[^\s]+?)\/?\s/);
      if (m) resolve(m[1]);
    });
    setTimeout(() => reject(new Error(`server did not start: ${out}`)), 10000);
  });
  const ctx = await chromium.launchPersistentContext(join(dir, 'profile'), {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    permissions: ['camera', 'microphone'],
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--allow-loopback-in-peer-connection',
      '--use-fake-ui-for-media-stream', '--disable-dev-shm-usage'],
  });
  try {
    const file = join(dir, 'bench.bin');
    const block = randomBytes(1 << 20);
    const fd = openSync(file, 'w');
    for (let i = 0; i < MIB; i++) {
      block.writeUInt32LE(i, 0);
      writeSync(fd, block);
    }
    closeSync(fd);
    const rows = { 'CLI → CLI': [], 'CLI → browser': [], 'browser → CLI': [], 'browser → browser': [] };
    for (let round = 0; round < ROUNDS; round++) {
      const out = (name) => join(dir, `${name}-${round}`);
      {
        const { sender, link } = await cliSends(url, file);
        rows['CLI → CLI'].push(await cliReceives(link, out('cli')));
        await sender.exited;
      }
      {
        const { sender, link } = await cliSends(url, file);
        const p = await ctx.newPage();
        rows['CLI → browser'].push(await pageReceives(p, link));
        await sender.exited;
        await p.close();
      }
      {
        const { link, page } = await pageSends(ctx, url, file);
        rows['browser → CLI'].push(await cliReceives(link, out('up')));
        await page.close();
      }
      {
        const { link, page } = await pageSends(ctx, url, file);
        const p = await ctx.newPage();
        rows['browser → browser'].push(await pageReceives(p, link));
        await page.close();
        await p.close();
      }
      for (const name of ['cli', 'up']) rmSync(out(name), { recursive: true, force: true });
    }
    const bytes = MIB * 2 ** 20;
    const ref = bytes / median(rows['CLI → CLI']) / 1e6;
    console.log(`\nbrowser rows: ${MIB} MiB on loopback, ${ROUNDS} round(s), receiver's own time, medians; release peerweb, Chromium headless`);
    console.log('| direction | MB/s | vs CLI → CLI |');
    console.log('|---|---|---|');
    for (const [name, secs] of Object.entries(rows)) {
      const rate = bytes / median(secs) / 1e6;
      console.log(`| ${name} | ${rate.toFixed(1)} | ${(rate / ref).toFixed(2)}x |`);
    }
  } finally {
    await ctx.close();
    server.proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`transfer-rates: ${e.message}`);
  process.exitCode = 1;
}).finally(() => setTimeout(() => process.exit(), 1000).unref());
