// The swarm service worker (opt-in): answers GET requests for the URLs a page relays — files
// listed in a swarm manifest — with verified bytes from the swarm, through that page, since a
// service worker gets no WebRTC. Everything else, and any doubt (no page relays the URL, the
// page does not answer within 3 s, a request it cannot serve — several ranges, a Range it does
// not understand — the swarm failing before the first byte), goes to the network as if this
// worker were not there; a failure after the first byte, or 10 s without the next chunk,
// continues from the network with a Range request for the rest.
//
// Register it from a page with `swarm.relay(urls, {sw: '/sdk/swarm-sw.js'})` (web/sdk/swarm.js),
// or load it into your own service worker with `importScripts('/sdk/swarm-sw.js')`: it adds
// listeners for `fetch` (only for relayed URLs) and `message` (only its own messages).
//
// Between the worker and a page, on a MessageChannel per request:
//   page → worker: {type: 'peerweb-swarm-relay' | 'peerweb-swarm-unrelay', urls} (acknowledged on a port)
//   worker → page, when it starts: {type: 'peerweb-swarm-who'} (relaying pages send their lists again)
//   worker → page (postMessage on the client, port attached): {type: 'peerweb-swarm-get', url, start, end}
//   page → worker: {ok: true, size, type} | {ok: false, error}
//   worker → page: 'pull' (one chunk, please) | 'cancel'
//   page → worker: {chunk: Uint8Array} | {done: true} | {error}
(() => {
  const ANSWER_MS = 3000;
  /** A chunk that takes longer (the swarm stalled) sends the rest to the network. */
  const PULL_MS = 10000;
  /** URL → relaying client ids. */
  const relayed = new Map();

  // Woken after being stopped while idle, the list is gone: relaying pages send it again.
  self.clients.matchAll({ type: 'window' }).then((cs) => {
    for (const c of cs) c.postMessage({ type: 'peerweb-swarm-who' });
  });

  self.addEventListener('install', () => self.skipWaiting());
  self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

  self.addEventListener('message', (event) => {
    const m = event.data;
    const on = m?.type === 'peerweb-swarm-relay';
    if ((!on && m?.type !== 'peerweb-swarm-unrelay') || !Array.isArray(m.urls) || !event.source) return;
    for (const url of m.urls) {
      if (typeof url !== 'string') continue;
      if (on) {
        if (!relayed.has(url)) relayed.set(url, new Set());
        relayed.get(url).add(event.source.id);
      } else {
        relayed.get(url)?.delete(event.source.id);
        if (relayed.get(url)?.size === 0) relayed.delete(url);
      }
    }
    event.ports[0]?.postMessage({ ok: true });
  });

  self.addEventListener('fetch', (event) => {
    const req = event.request;
    if (req.method !== 'GET') return;
    const [url, fragment] = req.url.split('#');
    // The swarm's own requests to the origin (marked by swarm.js) go there.
    if (fragment === 'peerweb-origin' || !relayed.has(url)) return;
    const range = parseRange(req.headers.get('range'));
    if (range === null) return; // a Range we do not serve: the network's
    event.respondWith(answer(event, url, range).catch(() => fetch(req)));
  });

  /** `{start, end|null}` for no header or one `bytes=a-b`/`bytes=a-`; null otherwise. */
  function parseRange(header) {
    if (!header) return { start: 0, end: null, whole: true };
    const m = /^bytes=(\d+)-(\d*)$/.exec(header.trim());
    if (!m) return null;
    const start = Number(m[1]);
    const end = m[2] === '' ? null : Number(m[2]);
    if (!Number.isSafeInteger(start) || (end !== null && (!Number.isSafeInteger(end) || end < start))) return null;
    return { start, end, whole: false };
  }

  /** The relaying page to ask: the requester if it relays this URL, else any that does. */
  async function relayFor(url, clientId) {
    const ids = relayed.get(url);
    const order = ids.has(clientId) ? [clientId, ...[...ids].filter((i) => i !== clientId)] : [...ids];
    for (const id of order) {
      const c = await self.clients.get(id);
      if (c) return c;
      ids.delete(id);
    }
    if (!ids.size) relayed.delete(url);
    throw new Error('no page relays this URL');
  }

  /** Resolves with the port's next message, or rejects after `ms`. */
  function next(port, ms) {
    return new Promise((resolve, reject) => {
      const t = ms ? setTimeout(() => reject(new Error('the page did not answer')), ms) : null;
      port.onmessage = (e) => { clearTimeout(t); resolve(e.data); };
    });
  }

  async function answer(event, url, range) {
    const client = await relayFor(url, event.clientId || event.resultingClientId);
    const { port1, port2 } = new MessageChannel();
    const head = next(port1, ANSWER_MS);
    client.postMessage({ type: 'peerweb-swarm-get', url, start: range.start, end: range.end }, [port2]);
    const h = await head;
    if (!h?.ok) throw new Error(h?.error ?? 'refused');
    const size = h.size;
    if (range.start >= size && !range.whole) {
      port1.postMessage('cancel');
      return new Response(null, { status: 416, headers: { 'content-range': `bytes */${size}` } });
    }
    const end = Math.min(range.end ?? size - 1, size - 1);
    let at = range.start;
    let network = null;
    const body = new ReadableStream({
      async pull(controller) {
        if (network) {
          const { value, done } = await network.read();
          if (done) controller.close();
          else controller.enqueue(value);
          return;
        }
        const pulled = next(port1, PULL_MS).catch(() => null);
        port1.postMessage('pull');
        const m = await pulled;
        if (m?.chunk) {
          at += m.chunk.length;
          controller.enqueue(m.chunk);
        } else if (m?.done) {
          controller.close();
        } else {
          // The page went wrong or stalled mid-way: the rest from the network.
          port1.postMessage('cancel');
          const res = await fetch(event.request.url, { headers: { range: `bytes=${at}-${end}` }, mode: 'cors', credentials: 'omit' });
          if (res.status !== 206 || !res.body) { controller.error(new Error('the swarm and the network both failed')); return; }
          network = res.body.getReader();
        }
      },
      cancel() {
        port1.postMessage('cancel');
        network?.cancel();
      },
    });
    const headers = {
      'content-type': h.type || 'application/octet-stream',
      'content-length': String(end - range.start + 1),
      'accept-ranges': 'bytes',
      'x-peerweb-swarm': 'verified',
    };
    if (range.whole) return new Response(body, { status: 200, headers });
    return new Response(body, { status: 206, headers: { ...headers, 'content-range': `bytes ${range.start}-${end}/${size}` } });
  }
})();
