// The test origin of the swarm tests and benchmark: a static folder over HTTP with single-range
// requests, CORS for pages on another origin (the peerweb server's), and a count of the bytes it
// sends per path — the offload is measured here, not taken from the clients. A path can be made
// "down" (503), and the origin can have an uplink: `rate` bytes per second shared by every
// response, as a real origin's bill and bandwidth are shared by its audience.
import { createServer } from 'node:http';
import { statSync, openSync, readSync, closeSync } from 'node:fs';
import { join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const SLICE = 64 * 1024;

/**
 * Serves `dir` on 127.0.0.1 (or `host`). Returns `{ url, served, down, close }`: `served` maps a
 * path to the bytes sent for it, `down` holds paths answered 503.
 */
export async function startOrigin(dir, { rate = 0, host = '127.0.0.1', control = false } = {}) {
  const served = new Map();
  const down = new Set();
  // The shared uplink: a token bucket of `rate` bytes per second (a quarter second deep).
  let tokens = rate / 4;
  let last = performance.now();
  const take = async (n) => {
    if (!rate) return;
    for (;;) {
      const now = performance.now();
      tokens = Math.min(rate / 4, tokens + ((now - last) / 1000) * rate);
      last = now;
      if (tokens >= n) { tokens -= n; return; }
      await new Promise((r) => setTimeout(r, Math.max(1, ((n - tokens) / rate) * 1000)));
    }
  };
  const server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^\/+/, '');
    if (control && path.startsWith('.origin/')) {
      const [, what, ...rest] = path.split('/');
      if (what === 'served') res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(Object.fromEntries(served)));
      else if (what === 'down' || what === 'up') {
        if (what === 'down') down.add(rest.join('/'));
        else down.delete(rest.join('/'));
        res.writeHead(204).end();
      } else res.writeHead(404).end();
      return;
    }
    const file = join(dir, path);
    let size;
    try { size = statSync(file).size; } catch { res.writeHead(404).end(); return; }
    const headers = {
      'access-control-allow-origin': '*',
      'access-control-expose-headers': 'content-range, content-length',
      'accept-ranges': 'bytes',
    };
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { ...headers, 'access-control-allow-headers': 'range' }).end();
      return;
    }
    if (down.has(path)) {
      res.writeHead(503, headers).end();
      return;
    }
    let start = 0;
    let end = size - 1;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (m) {
      start = Number(m[1]);
      end = m[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
      if (start > end) {
        res.writeHead(416, { ...headers, 'content-range': `bytes */${size}` }).end();
        return;
      }
      res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${size}`, 'content-length': end - start + 1 });
    } else {
      res.writeHead(200, { ...headers, 'content-length': size });
    }
    if (req.method === 'HEAD') { res.end(); return; }
    let closed = false;
    res.on('close', () => { closed = true; });
    const fd = openSync(file, 'r');
    try {
      for (let at = start; at <= end && !closed;) {
        const buf = Buffer.allocUnsafe(Math.min(SLICE, end + 1 - at));
        readSync(fd, buf, 0, buf.length, at);
        await take(buf.length);
        if (closed) break;
        served.set(path, (served.get(path) ?? 0) + buf.length);
        at += buf.length;
        if (!res.write(buf)) {
          await new Promise((r) => {
            const go = () => { res.off('drain', go); res.off('close', go); r(); };
            res.on('drain', go);
            res.on('close', go);
          });
        }
      }
    } finally {
      closeSync(fd);
    }
    res.end();
  });
  await new Promise((r) => server.listen(0, host, r));
  return {
    url: `http://${host}:${server.address().port}`,
    served,
    down,
    close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(r); }),
  };
}

// As a process (for a network namespace of its own, as the NAT lab's public network):
//   node origin.mjs DIR HOST [RATE]   prints "origin on URL"; GET /.origin/served gives the
//   counts as JSON, POST /.origin/down/PATH and /.origin/up/PATH switch a path off and on.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [dir, host = '127.0.0.1', rate = '0'] = process.argv.slice(2);
  const o = await startOrigin(dir, { host, rate: Number(rate), control: true });
  console.log(`origin on ${o.url}`);
  process.on('SIGTERM', () => o.close().then(() => process.exit(0)));
}
