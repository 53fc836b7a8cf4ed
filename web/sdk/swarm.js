// Verified swarms in the page: fetch a file from the peers that have it — and only the groups
// none of them can give from its origin — every 16 KiB group checked against the file's BLAKE3
// root before it is used or passed on. The page keeps serving what it has while it is open.
//
//   import * as swarm from '/sdk/swarm.js';
//   const res = await swarm.fetch('https://cdn.example/v/intro.mp4', { server: 'https://peerweb.example', trust: 'ed25519:…' });
//   res.swarm.addEventListener('progress', ({ stats }) => console.log(stats));  // {http, p2p, up, bad, peers}
//   const blob = await res.blob();     // or res.body, a stream of verified bytes in order
//   res.swarm.close();                 // stop serving others
//
// The manifest is found beside the file (`peerweb-manifest.json` in its folder, as `peerweb
// manifest` writes it) unless `manifest` names one (a URL, or the manifest's bytes). With
// `trust`, a manifest not signed by that key is refused. The same scheduling as crates/swarm
// `fetch` (docs/protocol.md, "Swarm wire protocol"): near groups in order, the origin only for
// groups no neighbour has or one that is late (hedged), rarest first beyond.

import { Room, PeerwebEvent, PeerwebError } from './peerweb.js';
import { Tree, GROUP, groupLen } from './swarm-tree.js';
import { parseManifest } from './swarm-manifest.js';
import { Have, Link, LinkError, encode, runs, T, MAX_RANGE, MAX_OUTSTANDING } from './swarm-wire.js';

export const MANIFEST_NAME = 'peerweb-manifest.json';
/** The fragment of the swarm's own requests to the origin (swarm-sw.js lets them through). */
const ORIGIN_MARK = 'peerweb-origin';
/** Files kept in memory at most (the page holds what it fetched, to serve it). */
export const MAX_SIZE = 2 ** 31;
const TICK_MS = 50;
/** Planning (a scan of the groups ahead, O(groups × neighbours)) runs at most this often. */
const PLAN_MS = 10;
/** How often the bytes moved are reported to the server (`swarm-bytes`), when they changed. */
const REPORT_MS = 2000;
/** Bytes buffered on a neighbour's channel above which serving waits (until it drains). */
const SEND_HIGH_WATER = 1 << 20;
const CFG = { window: 32, nearWaitMs: 2000, farWaitMs: 10000, httpAfterMs: 1000, maxHttp: 2, httpGroups: 64, scan: 8192 };
const JOIN_ERRORS = ['swarm-full', 'too-many-swarms', 'invalid-swarm', 'server-full', 'forbidden'];

/** A swarm as a room whose members are the neighbours the server introduces. */
class SwarmRoom extends Room {
  constructor(serverUrl, root, options) {
    super(serverUrl, `swarm:${root}`, options);
    // Relays only where the server allows them for swarms (by default STUN only).
    this._urls.ice += `${this._urls.ice.includes('?') ? '&' : '?'}for=swarm`;
    this.swarm = root;
    this.seed = false;
  }

  _sendJoin() {
    this._signaling.send({ type: 'swarm-join', swarm: this.swarm, seed: this.seed });
  }

  _onFrame(msg) {
    switch (msg.type) {
      case 'swarm-joined':
      case 'swarm-peers':
        if (msg.swarm !== this.swarm) return;
        for (const p of msg.peers) this._ensurePeer(p.id, { seed: p.seed }, true);
        if (msg.type === 'swarm-peers' && msg.retry_ms) this._retryMore = performance.now() + msg.retry_ms;
        if (this._joinedOnce) { this._joinedOnce.resolve(this); this._joinedOnce = null; }
        return;
      case 'swarm-peer':
        if (msg.swarm === this.swarm) this._ensurePeer(msg.peer.id, { seed: msg.peer.seed }, false);
        return;
      case 'swarm-peer-left':
        if (msg.swarm === this.swarm) this._dropPeer(msg.id);
        return;
      case 'error':
        if (this._joinedOnce && JOIN_ERRORS.includes(msg.code)) {
          this._joinedOnce.reject(new PeerwebError(msg.code, msg.message));
          this._joinedOnce = null;
          this._signaling.close();
          return;
        }
        break;
      default:
        break;
    }
    super._onFrame(msg);
  }

  more() {
    if ((this._retryMore ?? 0) > performance.now()) return;
    this._signaling.send({ type: 'swarm-more', swarm: this.swarm });
  }

  markSeed() {
    this.seed = true;
    this._signaling.send({ type: 'swarm-seed', swarm: this.swarm });
  }

  _sendLeave() {
    this._signaling.send({ type: 'swarm-leave', swarm: this.swarm });
  }
}

/** Finds and checks the manifest, the file's entry and its tree. */
async function locate(url, options) {
  const fileUrl = new URL(url, globalThis.location?.href);
  let bytes;
  let base;
  if (options.manifest instanceof Uint8Array || typeof options.manifest === 'object' && options.manifest?.byteLength !== undefined) {
    bytes = new Uint8Array(options.manifest);
    base = new URL('.', fileUrl);
  } else {
    const mUrl = new URL(options.manifest ?? MANIFEST_NAME, options.manifest ? globalThis.location?.href : fileUrl);
    const res = await globalThis.fetch(mUrl, { cache: 'no-cache' });
    if (!res.ok) throw new PeerwebError('no-manifest', `no manifest at ${mUrl} (HTTP ${res.status})`);
    bytes = new Uint8Array(await res.arrayBuffer());
    base = new URL('.', mUrl);
  }
  const manifest = parseManifest(bytes, { trust: options.trust });
  if (!fileUrl.href.startsWith(base.href)) throw new PeerwebError('not-listed', `${fileUrl} is not under the manifest's folder ${base}`);
  const path = decodeURIComponent(fileUrl.pathname.slice(new URL(base).pathname.length));
  const entry = manifest.file(path);
  if (!entry) throw new PeerwebError('not-listed', `the manifest does not list ${path}`);
  if (entry.size > MAX_SIZE) throw new PeerwebError('too-large', `${path} has ${entry.size} bytes; a page holds at most ${MAX_SIZE}`);
  let outboard = new Uint8Array(0);
  if (entry.outboard) {
    const res = await globalThis.fetch(new URL(entry.outboard, base), { cache: 'no-cache' });
    if (!res.ok) throw new PeerwebError('no-outboard', `no outboard for ${path} (HTTP ${res.status})`);
    outboard = new Uint8Array(await res.arrayBuffer());
  }
  const tree = Tree.fromOutboard(entry.size, entry.root, outboard);
  return { fileUrl, entry, tree };
}

/**
 * One file shared with a swarm: fetched (when not complete) and served while open.
 * Events: `progress` ({stats}), `complete`, `banned` ({peer, group}), `error` ({error}).
 */
export class SwarmFile extends EventTarget {
  constructor(server, fileUrl, entry, tree, options) {
    super();
    this.url = fileUrl;
    this.entry = entry;
    this.tree = tree;
    this.size = entry.size;
    this.root = tree.root;
    const saveData = globalThis.navigator?.connection?.saveData === true;
    this.upload = saveData || options.upload === false ? { rate: 0, budget: null }
      : { rate: options.upload?.rate ?? null, budget: options.upload?.budget ?? null };
    this.have = new Have(this.size);
    this.groups = new Array(this.have.groups);
    this.position = 0;
    /** The group a range reader waits at (see `_nearStart`). */
    this.readAt = 0;
    this.inflight = new Map(); // group → {from: peerId|'http'|{both: peerId}, since}
    this.announced = new Map();
    this.nowhereSince = new Map();
    this.httpRunning = 0;
    /** After a failed origin request, no other before this time (backing off, 1 s to 30 s). */
    this.httpPauseUntil = 0;
    this.httpBackoff = 1000;
    this.links = new Map(); // peer id → {peer, link}
    this.banned = new Set();
    this.stats = { http: 0, p2p: 0, up: 0, bad: 0, peers: 0 };
    /** What the server has been told of (`swarm-bytes` sends the difference). */
    this._reported = { http: 0, p2p: 0, up: 0, at: performance.now() };
    this._lastPlan = -Infinity;
    /** Groups got since the neighbours were last told (announced together, once per tick). */
    this._news = [];
    this._planTimer = null;
    this._waiters = [];
    this.closed = false;
    this.room = new SwarmRoom(server, entry.root, { ...options.room, reportConnectivity: options.reportConnectivity });
    if (this.size === 0) {
      // An empty file is its one empty group: checked against the root here, nothing to fetch.
      tree.verify(0, new Uint8Array(0));
      this.have.set(0);
      this.groups[0] = new Uint8Array(0);
      this.position = 1;
      this.room.seed = true;
    }
    this.room.addEventListener('peer', ({ peer }) => this._addPeer(peer));
    this.room.addEventListener('peerleft', ({ peer }) => this._removePeer(peer.id));
    this._timer = setInterval(() => this._tick(), TICK_MS);
  }

  async _start() {
    await this.room._start();
    this.joinedAt = performance.now();
  }

  _addPeer(peer) {
    if (this.banned.has(peer.id)) { queueMicrotask(() => this.room._dropPeer(peer.id)); return; }
    const link = new Link(performance.now(), this.tree.root, this.size, this.upload);
    const entry = { peer, link };
    this.links.set(peer.id, entry);
    // Queued by the peer until its channel opens.
    for (const m of link.start(this.have)) this._send(entry, m);
    peer.addEventListener('message', ({ data, channel }) => {
      if (channel !== peer.defaultChannel || typeof data === 'string') return;
      this._onMessage(peer.id, data);
    });
    this.stats.peers = this.links.size;
  }

  /** Sends to a neighbour; one that is closing is dropped by the room soon anyway. */
  _send(e, m) {
    try {
      e.peer.send(m);
      return true;
    } catch {
      return false;
    }
  }

  _removePeer(id) {
    if (!this.links.delete(id)) return;
    this._lost(id, [...this.inflight.keys()]);
    this.stats.peers = this.links.size;
  }

  /**
   * Groups neighbour `id` will not send (rejected, choked, late, or it left) are asked again;
   * one also asked of the origin stays with the origin (as crates/swarm `Fetch::lost`).
   */
  _lost(id, groups) {
    for (const g of groups) {
      const f = this.inflight.get(g);
      if (f?.from === id) this.inflight.delete(g);
      else if (f?.from?.both === id) f.from = 'http';
    }
  }

  _onMessage(id, data) {
    const e = this.links.get(id);
    if (!e) return;
    let ev;
    try {
      ev = e.link.receive(performance.now(), data, this.tree, this.have);
    } catch (err) {
      if (!(err instanceof LinkError)) throw err;
      this._ban(id, err);
      return;
    }
    const now = performance.now();
    this._serve(e, now);
    if (!ev) return;
    if (ev.verified !== undefined) {
      this.stats.p2p += ev.bytes.length;
      this._got(ev.verified, ev.bytes, id);
    } else if (ev.lost) {
      this._lost(id, ev.lost);
    } else if (ev.fetching) {
      const [first, count] = ev.fetching;
      const until = performance.now() + CFG.nearWaitMs * 2;
      for (let g = first; g < Math.min(first + count, this.have.groups); g++) this.announced.set(g, until);
    }
    this._planSoon();
  }

  /** Plans now, or once PLAN_MS have passed since the last plan (many messages, one plan). */
  _planSoon() {
    if (this._planTimer !== null || this.closed) return;
    const wait = this._lastPlan + PLAN_MS - performance.now();
    if (wait <= 0) { this._tick(); return; }
    this._planTimer = setTimeout(() => { this._planTimer = null; this._tick(); }, wait);
  }

  /**
   * Sends neighbour `e` what it asked for, at its channel's pace: what does not fit waits for
   * the channel to drain (`bufferedamountlow`) or the next tick.
   */
  _serve(e, now) {
    const ch = e.peer.defaultChannel;
    if (ch && !e.drainHooked) {
      e.drainHooked = true;
      ch.bufferedAmountLowThreshold = SEND_HIGH_WATER / 2;
      ch.addEventListener('bufferedamountlow', () => { if (!this.closed) this._serve(e, performance.now()); });
    }
    while ((ch?.bufferedAmount ?? 0) <= SEND_HIGH_WATER) {
      const g = e.link.serve(now);
      if (typeof g !== 'number') break;
      if (!this._send(e, e.link.data(g, this.groups[g]))) break;
      this.stats.up += this.groups[g].length;
    }
    for (const m of e.link.takeOut()) this._send(e, m);
  }

  /** Tells the server the bytes moved since the last report (for its metrics), if any. */
  _report(now) {
    const r = this._reported;
    const d = { http: this.stats.http - r.http, p2p: this.stats.p2p - r.p2p, up: this.stats.up - r.up };
    if (!d.http && !d.p2p && !d.up) return;
    r.at = now;
    // Kept for the next report while signaling is down.
    if (!this.room._signaling.send({ type: 'swarm-bytes', swarm: this.entry.root, ...d })) return;
    Object.assign(r, { http: this.stats.http, p2p: this.stats.p2p, up: this.stats.up });
  }

  /** A neighbour broke the protocol or sent a bad group: never again in this swarm. */
  _ban(id, err) {
    const e = this.links.get(id);
    this.banned.add(id);
    if (err.bad !== null) {
      this.stats.bad += 1;
      this.room._signaling.send({ type: 'swarm-bad', swarm: this.entry.root, id });
      this.dispatchEvent(new PeerwebEvent('banned', { peer: id, group: err.bad, reason: err.message }));
    } else {
      console.warn(`peerweb swarm: ${id}: ${err.message}`);
    }
    this._removePeer(id);
    if (e) this.room._dropPeer(id);
  }

  /** A verified group: kept, delivered in order, announced to the neighbours. */
  _got(g, bytes, from) {
    const was = this.inflight.get(g);
    this.inflight.delete(g);
    if (!this.have.set(g)) return;
    this.groups[g] = bytes.slice();
    this.nowhereSince.delete(g);
    while (this.position < this.have.groups && this.have.has(this.position)) this.position += 1;
    for (const [id, e] of this.links) {
      if (was?.from?.both === id && from === 'http') {
        const m = e.link.cancel(g);
        if (m) this._send(e, m);
      }
    }
    this._news.push(g);
    this._planSoon();
    for (const w of this._waiters.splice(0)) w();
    this.dispatchEvent(new PeerwebEvent('progress', { stats: { ...this.stats }, have: this.have.count, groups: this.have.groups }));
    if (this.have.complete) {
      this._report(performance.now());
      this.room.markSeed();
      this.dispatchEvent(new Event('complete'));
    }
  }

  _tick() {
    if (this.closed) return;
    const now = performance.now();
    if (this._news.length) {
      const msgs = this.have.announceNew(this._news);
      this._news = [];
      for (const e of this.links.values()) if (e.link.hello) for (const m of msgs) this._send(e, m);
    }
    for (const [id, e] of this.links) {
      const [late, msgs] = e.link.expire(now);
      for (const m of msgs) this._send(e, m);
      this._lost(id, late);
      this._serve(e, now);
    }
    // Nothing is planned before the swarm answered the join (it names the neighbours).
    if (!this.have.complete && this.joinedAt !== undefined) {
      this._lastPlan = now;
      this._plan(now);
    }
    if (now >= this._reported.at + REPORT_MS) this._report(now);
  }

  /**
   * Where the near window starts: at the first missing group from where a reader waits
   * (`read`, a range request) when that is ahead of the first missing group, else there.
   */
  _nearStart() {
    const n = this.have.groups;
    if (this.readAt > this.position) {
      let g = this.readAt;
      while (g < n && this.have.has(g)) g += 1;
      if (g < n) return g;
    }
    return this.position;
  }

  /**
   * Bytes `from` to `to` (exclusive) of the file once verified; the groups there are fetched
   * first (a range request's read position).
   */
  async read(from, to) {
    if (!(from >= 0 && to <= this.size && from <= to)) throw new PeerwebError('out-of-range', `bytes ${from}–${to} are outside the file (${this.size})`);
    const out = new Uint8Array(to - from);
    let at = from;
    while (at < to) {
      const g = Math.floor(at / GROUP);
      this.readAt = g;
      if (!this.have.has(g)) this._planSoon();
      while (!this.have.has(g)) {
        if (this.closed) throw new PeerwebError('closed', 'the swarm was closed');
        await new Promise((r) => this._waiters.push(r));
      }
      const bytes = this.groups[g];
      const off = at - g * GROUP;
      const n = Math.min(bytes.length - off, to - at);
      out.set(bytes.subarray(off, off + n), at - from);
      at += n;
    }
    return out;
  }

  _bestPeer(now, g, planned) {
    let best = null;
    for (const [id, e] of this.links) {
      if (!e.link.canAsk(now) || !e.link.remote.has(g)) continue;
      const load = e.link.asked.size + (planned.get(id)?.length ?? 0);
      if (load >= MAX_OUTSTANDING) continue;
      if (!best || load < best.load) best = { id, load };
    }
    return best?.id ?? null;
  }

  _plan(now) {
    const n = this.have.groups;
    for (const [g, t] of this.announced) if (now >= t) this.announced.delete(g);
    // Neighbours were introduced but none has said what it has yet: the first second is
    // theirs (a small file lies all in the near window, and would otherwise go to the origin
    // before any neighbour could give it).
    const connecting = this.links.size > 0 && ![...this.links.values()].some((e) => e.link.remote.count > 0)
      && now < this.joinedAt + CFG.httpAfterMs;
    const nearStart = this._nearStart();
    const nearEnd = Math.min(nearStart + CFG.window, n);
    const toHttp = [];
    const planned = new Map(); // peer id → groups
    const plan = (id, g) => { if (!planned.has(id)) planned.set(id, []); planned.get(id).push(g); };
    for (let g = nearStart; g < nearEnd; g++) {
      if (this.have.has(g)) continue;
      const f = this.inflight.get(g);
      if (f) {
        if (typeof f.from === 'string' && f.from !== 'http' && now >= f.since + CFG.nearWaitMs) toHttp.push(g);
        continue;
      }
      const id = this._bestPeer(now, g, planned);
      if (id) plan(id, g);
      else if (!this.announced.has(g) && !connecting) toHttp.push(g);
    }
    const far = [];
    // The next CFG.scan groups from the first missing one, the near window left out.
    let scanned = 0;
    for (let g = this.position; g < n && scanned < CFG.scan; g++) {
      if (g === nearStart && nearEnd > nearStart) { g = nearEnd - 1; continue; }
      scanned += 1;
      if (this.have.has(g) || this.inflight.has(g)) continue;
      let holders = 0;
      for (const e of this.links.values()) if (e.link.hello && e.link.remote.has(g)) holders += 1;
      if (holders === 0) {
        if (this.announced.has(g)) continue;
        if (!this.nowhereSince.has(g)) this.nowhereSince.set(g, now);
        if (now >= this.nowhereSince.get(g) + CFG.httpAfterMs) toHttp.push(g);
      } else {
        this.nowhereSince.delete(g);
        far.push([holders, g]);
      }
    }
    far.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    for (const [, g] of far) {
      const id = this._bestPeer(now, g, planned);
      if (id) plan(id, g);
    }
    for (const [id, gs] of planned) {
      const e = this.links.get(id);
      gs.sort((a, b) => a - b);
      for (const [first, count] of runs(gs, MAX_RANGE)) {
        const within = first < nearEnd ? CFG.nearWaitMs : CFG.farWaitMs;
        this._send(e, e.link.ask(now, first, count, within));
        for (let g = first; g < first + count; g++) this.inflight.set(g, { from: id, since: now });
      }
    }
    toHttp.sort((a, b) => a - b);
    for (const [first, count] of runs([...new Set(toHttp)], CFG.httpGroups)) {
      if (this.httpRunning >= CFG.maxHttp || now < this.httpPauseUntil) break;
      for (let g = first; g < first + count; g++) {
        const f = this.inflight.get(g);
        this.inflight.set(g, f && typeof f.from === 'string' && f.from !== 'http' ? { from: { both: f.from }, since: f.since } : { from: 'http', since: now });
      }
      for (const e of this.links.values()) if (e.link.hello) this._send(e, encode.range(T.FETCHING, first, count));
      this._http(first, count);
    }
    // Few neighbours and groups nobody has: ask the server for more.
    if (this.links.size < 8 && toHttp.length) this.room.more();
  }

  /** Groups first..first+count from the origin, each verified like a peer's. */
  async _http(first, count) {
    this.httpRunning += 1;
    const start = first * GROUP;
    const end = Math.min(this.size, (first + count) * GROUP) - 1;
    try {
      // Marked (in the fragment, which no server sees) so that the swarm service worker lets
      // it through to the origin rather than back to this swarm.
      const url = new URL(this.url);
      url.hash = ORIGIN_MARK;
      const res = await globalThis.fetch(url, { headers: { Range: `bytes=${start}-${end}` }, cache: 'no-store' });
      if (res.status !== 206 && res.status !== 200) throw new Error(`HTTP ${res.status}`);
      const reader = res.body.getReader();
      // A 200 is the whole file: skip to the range, stop after it.
      let skip = res.status === 200 ? start : 0;
      let g = first;
      let buf = new Uint8Array(0);
      while (g < first + count) {
        const { value, done } = await reader.read();
        if (done) break;
        // Counted as it arrives, verified or not: what the origin sent (and bills).
        this.stats.http += value.length;
        let chunk = value;
        if (skip) { const s = Math.min(skip, chunk.length); chunk = chunk.subarray(s); skip -= s; }
        const joined = new Uint8Array(buf.length + chunk.length);
        joined.set(buf); joined.set(chunk, buf.length);
        buf = joined;
        while (g < first + count && buf.length >= groupLen(this.size, g)) {
          const len = groupLen(this.size, g);
          const bytes = buf.subarray(0, len);
          try {
            this.tree.verify(g, bytes);
          } catch {
            throw new PeerwebError('origin-corrupt', `group ${g} from the origin does not match the manifest`);
          }
          this.httpBackoff = 1000;
          this._got(g, bytes, 'http');
          buf = buf.subarray(len);
          g += 1;
        }
      }
      reader.cancel().catch(() => {});
    } catch (error) {
      this.httpPauseUntil = performance.now() + this.httpBackoff;
      this.httpBackoff = Math.min(this.httpBackoff * 2, 30000);
      this.dispatchEvent(new PeerwebEvent('error', { error }));
    } finally {
      this.httpRunning -= 1;
      for (let g = first; g < first + count; g++) {
        const f = this.inflight.get(g);
        if (f?.from === 'http') this.inflight.delete(g);
        else if (f?.from?.both) f.from = f.from.both;
      }
    }
  }

  /** The verified bytes in order, as a stream. */
  stream() {
    let next = 0;
    return new ReadableStream({
      pull: async (controller) => {
        while (!this.have.has(next)) {
          if (this.closed) { controller.error(new PeerwebError('closed', 'the swarm was closed')); return; }
          await new Promise((r) => this._waiters.push(r));
        }
        const bytes = this.groups[next];
        next += 1;
        if (bytes.length) controller.enqueue(bytes.slice());
        if (next >= this.have.groups) controller.close();
      },
    });
  }

  /** Stops fetching and serving, and leaves the swarm. */
  close() {
    if (this.closed) return;
    this._report(performance.now());
    this.closed = true;
    clearInterval(this._timer);
    clearTimeout(this._planTimer);
    for (const w of this._waiters.splice(0)) w();
    this.room.leave();
  }
}

/**
 * Fetches `url` from its swarm (peers first, the origin for what they cannot give), every
 * group verified. Resolves to a `Response` whose body streams the verified bytes in order;
 * `response.swarm` is the SwarmFile (stats, events, `close()`). Options: `server` (the
 * `peerweb serve` address; default this page's origin), `manifest`, `trust`, `upload`
 * (`{rate, budget}` in bytes, or `false`: upload nothing — also the default when the
 * connection asks to save data).
 */
export async function fetch(url, options = {}) {
  const file = await open(url, options);
  const res = new Response(file.stream(), {
    status: 200,
    headers: { 'content-length': String(file.size), 'content-type': options.contentType ?? typeOf(file.url) },
  });
  Object.defineProperty(res, 'swarm', { value: file });
  return res;
}

/** The file at `url` in its swarm, joined: fetching what it lacks and serving what it has. */
export async function open(url, options = {}) {
  const { fileUrl, entry, tree } = await locate(url, options);
  const server = options.server ?? globalThis.location?.origin;
  const file = new SwarmFile(server, fileUrl, entry, tree, options);
  await file._start();
  return file;
}

const TYPES = {
  html: 'text/html', css: 'text/css', js: 'text/javascript', mjs: 'text/javascript', json: 'application/json',
  txt: 'text/plain', svg: 'image/svg+xml', png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg', gif: 'image/gif',
  webp: 'image/webp', avif: 'image/avif', mp4: 'video/mp4', webm: 'video/webm', m4s: 'video/iso.segment', ts: 'video/mp2t',
  m3u8: 'application/vnd.apple.mpegurl', mpd: 'application/dash+xml', mp3: 'audio/mpeg', ogg: 'audio/ogg', opus: 'audio/ogg',
  wasm: 'application/wasm', pdf: 'application/pdf', zip: 'application/zip',
};

/** A content type from the URL's extension (an origin's usual mapping), else bytes. */
function typeOf(url) {
  const ext = /\.([a-z0-9]+)$/i.exec(new URL(url).pathname)?.[1]?.toLowerCase();
  return TYPES[ext] ?? 'application/octet-stream';
}

/** Bytes a relayed range request is answered in, per message to the service worker. */
const RELAY_CHUNK = 256 * 1024;

/**
 * Makes this page the swarm's relay for the swarm service worker (swarm-sw.js): requests from
 * any page it controls for one of `urls` (files listed in swarm manifests) are answered with
 * verified bytes from the swarm — `<img>`, `<video crossorigin>`, `fetch`, downloads, with
 * `Range` — and anything the swarm cannot do goes to the network. Options: those of `fetch`
 * (`server`, `manifest`, `trust`, `upload`), `sw` (the worker's script, registered here;
 * leave it out when your own service worker loads it with importScripts) and `scope`.
 * Returns `{files, close()}`: the SwarmFiles opened so far, by URL; `close()` stops relaying
 * and leaves their swarms.
 */
export async function relay(urls, options = {}) {
  const sw = globalThis.navigator?.serviceWorker;
  if (!sw) throw new PeerwebError('no-service-worker', 'this page cannot use service workers (a secure context is needed)');
  if (options.sw) await sw.register(options.sw, { scope: options.scope });
  await sw.ready;
  if (!sw.controller) await new Promise((r) => sw.addEventListener('controllerchange', r, { once: true }));
  const list = urls.map((u) => new URL(u, globalThis.location?.href).href.split('#')[0]);
  const files = new Map(); // url → Promise<SwarmFile>
  const fileFor = (url) => {
    if (!files.has(url)) {
      const p = open(url, options);
      files.set(url, p);
      p.catch(() => files.delete(url));
    }
    return files.get(url);
  };
  const announce = () => new Promise((resolve) => {
    const { port1, port2 } = new MessageChannel();
    port1.onmessage = () => resolve();
    sw.controller?.postMessage({ type: 'peerweb-swarm-relay', urls: list }, [port2]);
    setTimeout(resolve, 1000);
  });
  const onMessage = (e) => {
    const m = e.data;
    if (m?.type === 'peerweb-swarm-who') { announce(); return; }
    if (m?.type !== 'peerweb-swarm-get' || !e.ports[0] || !list.includes(m.url)) return;
    answer(m, e.ports[0]);
  };
  const answer = async ({ url, start, end }, port) => {
    let file;
    try {
      file = await fileFor(url);
    } catch (error) {
      port.postMessage({ ok: false, error: String(error?.message ?? error) });
      return;
    }
    port.postMessage({ ok: true, size: file.size, type: options.contentType ?? typeOf(url) });
    const last = Math.min(end ?? file.size - 1, file.size - 1);
    let at = start;
    port.onmessage = async (e) => {
      if (e.data === 'cancel') { port.close(); return; }
      if (at > last) { port.postMessage({ done: true }); return; }
      try {
        const chunk = await file.read(at, Math.min(last + 1, at + RELAY_CHUNK));
        at += chunk.length;
        port.postMessage({ chunk }, [chunk.buffer]);
      } catch (error) {
        port.postMessage({ error: String(error?.message ?? error) });
      }
    };
  };
  sw.addEventListener('message', onMessage);
  sw.startMessages();
  await announce();
  // A service worker that was stopped while idle forgot the list: it asks again on waking
  // (`peerweb-swarm-who`), and hears it again here every 10 s.
  const again = setInterval(announce, 10000);
  return {
    files,
    close() {
      clearInterval(again);
      sw.controller?.postMessage({ type: 'peerweb-swarm-unrelay', urls: list });
      sw.removeEventListener('message', onMessage);
      for (const p of files.values()) p.then((f) => f.close(), () => {});
    },
  };
}
