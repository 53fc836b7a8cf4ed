// peerweb browser SDK — an ES module with no build step.
//
//   import { join } from '/sdk/peerweb.js';
//   const room = await join('http://127.0.0.1:8080', 'lobby', { meta: { name: 'ada' } });
//   room.addEventListener('peer', ({ peer }) => peer.send('hello'));
//   room.addEventListener('message', ({ peer, data }) => console.log(peer.id, data));
//
// Signaling protocol v1 (docs/protocol.md) over one WebSocket; everything after the handshake
// goes peer to peer. The WebSocket reconnects with backoff and resumes the same peer id; live
// peer connections are never torn down because signaling went away.

const PROTOCOL_VERSION = 1;
/** The label of the SDK's call channel (call.js, loaded only by `room.call()`). */
const CALL_LABEL = 'peerweb-call';
const DEFAULT_LABEL = 'peerweb';
/** Bytes buffered on a channel above which `ready()` waits. */
const HIGH_WATER = 1024 * 1024;
/** `bufferedAmountLowThreshold` set on every channel. */
const LOW_WATER = 256 * 1024;
/** Messages queued per peer before its default channel opens. */
const MAX_PENDING = 1024;
const PING_EVERY_MS = 20000;
const PONG_TIMEOUT_MS = 10000;
/** Signals received are acknowledged together, this long after the first unacknowledged one. */
const ACK_AFTER_MS = 250;
const STATS_EVERY_MS = 2000;
/** Track labels taken from a peer's description at most (a call has a few). */
const MAX_SDP_LABELS = 16;
/** A connection disconnected this long gets an ICE restart. */
const RESTART_AFTER_MS = 3000;
/** A restart that has not reconnected after this long is tried again, backing off to the max. */
const RESTART_RETRY_MS = 10000;
const RESTART_RETRY_MAX_MS = 60000;
/** `/api/ice` requests give up after this long. */
const ICE_FETCH_TIMEOUT_MS = 5000;
/** A new connection not connected by then is reported as failed (connectivity reports). */
const CONNECT_GIVE_UP_MS = 30000;
/** A path down this long, with ICE restarts made, is reported as a restart that failed. */
const RESTART_GIVE_UP_MS = 60000;
/** Connectivity reports kept while signaling is down. */
const MAX_PENDING_REPORTS = 32;

/** What kind of browser this is, in the words of the protocol's `report`. */
function clientKind() {
  const ua = globalThis.navigator?.userAgent ?? '';
  if (/Firefox\//.test(ua)) return 'firefox';
  if (/(Chrome|Chromium)\//.test(ua)) return 'chromium';
  if (/Safari\//.test(ua)) return 'safari';
  return 'other';
}

/**
 * Join a room on a peerweb server.
 * @param {string} serverUrl  http(s):// or ws(s):// address of `peerweb serve`.
 * @param {string} room       room name (1–64 bytes).
 * @param {import('./peerweb').JoinOptions} [options]
 * @returns {Promise<Room>} resolves once the server confirmed the join.
 */
export async function join(serverUrl, room, options = {}) {
  const r = new Room(serverUrl, room, options);
  await r._start();
  return r;
}

/** A typed event carrying extra fields (the SDK's modules' events, all of them). */
export class PeerwebEvent extends Event {
  constructor(type, fields) {
    super(type);
    Object.assign(this, fields);
  }
}

/** Error raised by the SDK, with a stable `code` (protocol error codes or SDK codes). */
export class PeerwebError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'PeerwebError';
    this.code = code;
  }
}

function endpoints(serverUrl) {
  const u = new URL(serverUrl, globalThis.location?.href);
  const secure = u.protocol === 'https:' || u.protocol === 'wss:';
  const base = u.host;
  return {
    ws: `${secure ? 'wss' : 'ws'}://${base}/ws`,
    ice: `${secure ? 'https' : 'http'}://${base}/api/ice`,
  };
}

/**
 * The signaling connection: hello/welcome, resume token, reconnect with backoff, keepalive.
 * Emits 'frame' for every server frame after welcome, and 'state' on changes.
 */
class Signaling extends EventTarget {
  constructor(url, opts, accessToken) {
    super();
    this.url = url;
    /** `() => Promise<string|null>`: the access token for each (re)connection. */
    this.accessToken = accessToken;
    this.minDelay = opts.minDelay ?? 250;
    this.maxDelay = opts.maxDelay ?? 8000;
    this.state = 'connecting'; // connecting | open | reconnecting | closed
    this.id = null;
    this.token = null;
    this.ws = null;
    this.attempt = 0;
    this.closedByUser = false;
    this._pingTimer = null;
    this._pongTimer = null;
    // Signals are numbered per session (`n`): the last one received and acknowledged. A
    // resumed connection (on any server node) sends what came after `last`; one seen
    // before is dropped.
    this.lastN = null;
    this.ackedN = null;
    this._ackTimer = null;
  }

  /** Resolves with the welcome frame of the first connection. */
  start() {
    return new Promise((resolve, reject) => {
      const onState = () => {
        if (this.state === 'open') {
          this.removeEventListener('state', onState);
          resolve();
        }
      };
      this.addEventListener('state', onState);
      // A page going away says goodbye, so the others see it leave at once (Chromium sends
      // a close frame when a tab closes; Firefox may just drop the socket, which the
      // server must hold for the resume grace). A page kept in the back-forward cache may
      // come back: its socket is left to the browser.
      globalThis.addEventListener?.('pagehide', (ev) => {
        if (!ev.persisted && this.ws && !this.closedByUser) this.close();
      });
      this._firstFail = (err) => {
        this.removeEventListener('state', onState);
        reject(err);
      };
      this._connect();
    });
  }

  _setState(s) {
    if (this.state === s) return;
    this.state = s;
    this.dispatchEvent(new PeerwebEvent('state', { state: s }));
  }

  async _connect() {
    let ws;
    let url = this.url;
    try {
      const t = await this.accessToken();
      if (t) url += `?access_token=${encodeURIComponent(t)}`;
    } catch (e) {
      // No token to be had: the first connection fails the join; a reconnection tries
      // again later (the token's source may be back by then).
      if (this.id === null) this._failFirst(new PeerwebError('unauthorized', `no access token: ${e}`));
      else this._retry();
      return;
    }
    if (this.closedByUser) return;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      this._failFirst(new PeerwebError('bad-url', String(e)));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      const hello = { type: 'hello', v: PROTOCOL_VERSION, acks: true };
      if (this.token) hello.token = this.token;
      if (this.token && this.lastN !== null) hello.last = this.lastN;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      this._alive();
      if (msg.type === 'welcome') {
        this.id = msg.id;
        this.token = msg.token;
        this.limits = msg.limits;
        this.resumed = msg.resumed;
        if (!msg.resumed) {
          // A new session: its signals are numbered afresh.
          this.lastN = null;
          this.ackedN = null;
        }
        this.attempt = 0;
        this._refusedBefore = false;
        this._setState('open');
        this._keepalive();
        this.dispatchEvent(new PeerwebEvent('welcome', { msg }));
        return;
      }
      if (msg.type === 'error' && msg.code === 'unauthorized') {
        // The close (4401) follows; say why first.
        this._refusal = new PeerwebError('unauthorized', msg.message);
        return;
      }
      if (msg.type === 'error' && msg.code === 'bad-token') {
        // Our token is not accepted: start a fresh session.
        this.token = null;
        ws.send(JSON.stringify({ type: 'hello', v: PROTOCOL_VERSION }));
        return;
      }
      if (msg.type === 'pong') return;
      if (msg.type === 'signal' && Number.isSafeInteger(msg.n)) {
        if (this.lastN !== null && msg.n <= this.lastN) return;
        this.lastN = msg.n;
        // Acknowledged together, a moment after the first unacknowledged one.
        this._ackTimer ??= setTimeout(() => {
          this._ackTimer = null;
          if (this.lastN !== this.ackedN && this.send({ type: 'ack', n: this.lastN })) this.ackedN = this.lastN;
        }, ACK_AFTER_MS);
      }
      this.dispatchEvent(new PeerwebEvent('frame', { msg }));
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this._stopKeepalive();
      this.ws = null;
      if (this.closedByUser) {
        this._setState('closed');
        return;
      }
      if (this.state === 'connecting' && this.id === null && this.attempt >= 2) {
        this._failFirst(new PeerwebError('unreachable', `cannot reach signaling server (close ${ev.code})`));
        return;
      }
      if (ev.code === 4401) {
        // No (good) access token. The first connection fails the join; later, the token
        // expired: reconnect, which asks for a fresh one — unless it is refused again.
        const err = this._refusal ?? new PeerwebError('unauthorized', 'access token refused');
        this._refusal = null;
        if (this.id === null || this._refusedBefore) {
          if (this.id === null) {
            this._failFirst(err);
          } else {
            this._setState('closed');
            this.dispatchEvent(new PeerwebEvent('refused', { error: err }));
          }
          return;
        }
        this._refusedBefore = true;
      }
      if (ev.code === 4409) {
        // Our session was resumed by another connection (another tab with our token).
        this._setState('closed');
        this.dispatchEvent(new PeerwebEvent('replaced', {}));
        return;
      }
      this._retry();
    };
  }

  /** Connects again after the backoff. */
  _retry() {
    this._setState(this.id === null ? 'connecting' : 'reconnecting');
    const delay = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt);
    this.attempt += 1;
    setTimeout(() => this.closedByUser || this._connect(), delay * (0.5 + Math.random() / 2));
  }

  _failFirst(err) {
    const f = this._firstFail;
    this._firstFail = null;
    this.closedByUser = true;
    this._setState('closed');
    if (f) f(err);
  }

  _keepalive() {
    this._stopKeepalive();
    this._pingTimer = setInterval(() => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      this.ws.send('{"type":"ping"}');
      clearTimeout(this._pongTimer);
      // A half-open TCP connection shows up as silence: drop it and reconnect.
      this._pongTimer = setTimeout(() => this.ws?.close(4000, 'no pong'), PONG_TIMEOUT_MS);
    }, PING_EVERY_MS);
  }

  _alive() {
    clearTimeout(this._pongTimer);
  }

  _stopKeepalive() {
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
  }

  /** Sends a frame if connected; returns false if signaling is down right now. */
  send(msg) {
    if (this.state !== 'open' || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  close() {
    this.closedByUser = true;
    this._stopKeepalive();
    if (this.ws) this.ws.close(1000, 'bye');
    else this._setState('closed');
  }
}

/**
 * A room: the set of peers met through one signaling connection.
 * Events: `peer` ({peer}), `peerleft` ({peer}), `message` ({peer, data, channel}),
 * `signaling` ({state}), `error` ({error}).
 */
export class Room extends EventTarget {
  constructor(serverUrl, name, options) {
    super();
    this.name = name;
    this.options = options;
    this.meta = options.meta ?? null;
    this._urls = endpoints(serverUrl);
    /** @type {Map<string, Peer>} */
    this.peers = new Map();
    // A token, or a function giving one (called for every connection, so it can refresh).
    // Callers at the same time (the socket and the ICE fetch start together) share one call:
    // a function that asks the user must ask once.
    const t = options.token;
    let pending = null;
    this._accessToken = typeof t === 'function'
      ? () => (pending ??= Promise.resolve().then(t).finally(() => { pending = null; }))
      : async () => t ?? null;
    this._signaling = new Signaling(this._urls.ws, options.reconnect ?? {}, this._accessToken);
    this._joinedOnce = null;
    this._left = false;
    /** Connectivity reports made while signaling was down (sent after the next welcome). */
    this._reports = [];
  }

  /**
   * Tells the server how a peer connection fared (the protocol's optional `report`: no
   * addresses, no room names), unless `reportConnectivity: false` was given.
   */
  _report(what, ok, ms, path) {
    if (this.options.reportConnectivity === false) return;
    const msg = { type: 'report', what, ok, ms: Math.min(Math.max(0, Math.round(ms)), 600000), client: clientKind() };
    if (ok) {
      msg.path = path.type;
      if (path.type === 'relay' && path.relayProtocol) msg.relay = path.relayProtocol;
    }
    if (this._signaling.send(msg)) return;
    if (this._reports.length >= MAX_PENDING_REPORTS) this._reports.shift();
    this._reports.push(msg);
  }

  /** This peer's id (stable across signaling reconnects). */
  get id() {
    return this._signaling.id;
  }

  /** `connecting`, `open`, `reconnecting` or `closed`. */
  get signalingState() {
    return this._signaling.state;
  }

  async _start() {
    // Fetched while the socket connects (a round trip saved on a long path); the join waits
    // for it, as the connections made on `joined` use the servers it gives.
    const ice = this._refreshIce();
    // Joining straight into a call (`{call}`): the media and key store are ready before the
    // join, so each connection's first offer carries our tracks (no renegotiation).
    const call = this.options.call ? this.call(this.options.call) : null;
    const sig = this._signaling;
    sig.addEventListener('state', (ev) => this.dispatchEvent(new PeerwebEvent('signaling', { state: ev.state })));
    sig.addEventListener('welcome', async () => {
      await ice;
      if (call) await call.catch(() => null);
      if (this._left || sig.state !== 'open') return;
      this._sendJoin();
      for (const r of this._reports.splice(0)) this._signaling.send(r);
      // Connections that failed while signaling was down can now renegotiate.
      for (const peer of this.peers.values()) peer._resync();
    });
    sig.addEventListener('frame', (ev) => this._onFrame(ev.msg));
    sig.addEventListener('refused', ({ error }) => this._emitError(error));
    sig.addEventListener('replaced', () =>
      this._emitError(new PeerwebError('replaced', 'this session was resumed by another connection')));
    const joined = new Promise((resolve, reject) => (this._joinedOnce = { resolve, reject }));
    try {
      await Promise.all([sig.start(), call]);
    } catch (e) {
      // The camera or microphone was refused (or the call could not start): no half-joined room.
      this.leave();
      throw e;
    }
    return joined;
  }

  /** The call this room is in (`call()` or `join(…, {call})`), or null. */
  get activeCall() {
    return this._call ?? null;
  }

  /**
   * Fetches ICE servers with fresh TURN credentials into `_iceConfig` (new connections use
   * them) and returns it; fetches again before the credentials expire. On failure the
   * previous servers stay (none at first: host candidates still work on one network).
   */
  async _refreshIce() {
    const base = { iceServers: [], ...(this.options.rtcConfig ?? {}) };
    if (this.options.iceServers) {
      this._iceConfig = { ...base, iceServers: this.options.iceServers };
      return this._iceConfig;
    }
    clearTimeout(this._iceTimer);
    let again = 60;
    try {
      const token = await this._accessToken();
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      const res = await fetch(this._urls.ice, { cache: 'no-store', headers, signal: AbortSignal.timeout(ICE_FETCH_TIMEOUT_MS) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const body = await res.json();
      this._iceConfig = { ...base, iceServers: body.iceServers ?? [] };
      if (body.ttl > 0) again = Math.max(again, body.ttl / 2);
    } catch (e) {
      console.warn('peerweb: could not fetch ICE servers:', e);
      this._iceConfig ??= base;
    }
    this._iceTimer = setTimeout(() => {
      if (!this._left && this.signalingState !== 'closed') this._refreshIce();
    }, Math.min(again * 1000, 2 ** 31 - 1));
    return this._iceConfig;
  }

  _sendLeave() {
    this._signaling.send({ type: 'leave', room: this.name });
  }

  _sendJoin() {
    const msg = { type: 'join', room: this.name };
    if (this.meta) msg.meta = this.meta;
    this._signaling.send(msg);
  }

  _onFrame(msg) {
    switch (msg.type) {
      case 'joined': {
        if (msg.room !== this.name) return;
        // The joiner makes the offers; peers we still have live connections to are kept.
        for (const info of msg.peers) this._ensurePeer(info.id, info.meta, true);
        if (this._joinedOnce) {
          this._joinedOnce.resolve(this);
          this._joinedOnce = null;
        }
        break;
      }
      case 'peer-joined':
        // A peer we still have may join "anew" after a server restart: its connection lives.
        if (msg.room === this.name) this._ensurePeer(msg.peer.id, msg.peer.meta, false);
        break;
      case 'peer-left':
        if (msg.room === this.name) {
          this._eligible?.delete(msg.id);
          this._dropPeer(msg.id);
        }
        break;
      case 'signal': {
        let peer = this._ensurePeer(msg.from, undefined, false);
        const kind = peer?._newSession(msg.data);
        if (kind) {
          // A description under another certificate: the remote's session ended while we
          // were away (or it ours), so its connection to us is gone though no `peer-left`
          // reached us — nor can `welcome` or `peer-joined` tell, as a server restart looks
          // the same while connections live. An offer makes the new connection; an answer
          // (to an offer of the old one) is dropped and we offer afresh.
          this._dropPeer(msg.from);
          peer = this._ensurePeer(msg.from, undefined, kind === 'answer');
          if (kind === 'answer') break;
        }
        peer?._onSignal(msg.data);
        break;
      }
      case 'error': {
        const err = new PeerwebError(msg.code, msg.message);
        if (this._joinedOnce && ['room-full', 'too-many-rooms', 'invalid-room', 'server-full', 'forbidden'].includes(msg.code)) {
          this._joinedOnce.reject(err);
          this._joinedOnce = null;
          this._signaling.close();
          return;
        }
        this._emitError(err);
        break;
      }
      default:
        break;
    }
  }

  _emitError(error) {
    this.dispatchEvent(new PeerwebEvent('error', { error }));
  }

  _ensurePeer(id, meta, initiate) {
    if (id === this.id) return null;
    const role = this.options.onlyRole;
    if (role) {
      // Only peers whose metadata gives them this role (a viewer connects to the camera,
      // not to the other viewers): known from joined/peer-joined, remembered for signals.
      this._eligible ??= new Set();
      if (meta !== undefined) {
        if (meta?.role === role) this._eligible.add(id); else this._eligible.delete(id);
      }
      if (!this._eligible.has(id)) return null;
    }
    let peer = this.peers.get(id);
    if (peer && !peer.closed) {
      if (meta !== undefined) peer.meta = meta;
      return peer;
    }
    peer = new Peer(this, id, meta ?? null, initiate);
    this.peers.set(id, peer);
    this.dispatchEvent(new PeerwebEvent('peer', { peer }));
    // In a call, the new peer gets our tracks in its first offer (or right after).
    this._call?._addPeer(peer);
    return peer;
  }

  _dropPeer(id) {
    const peer = this.peers.get(id);
    if (!peer) return;
    this.peers.delete(id);
    this._call?._removePeer(peer);
    peer.close();
    this.dispatchEvent(new PeerwebEvent('peerleft', { peer }));
  }

  _signal(to, data) {
    return this._signaling.send({ type: 'signal', to, data });
  }

  /** Sends to every peer whose default channel is open (queued for the others). */
  broadcast(data) {
    for (const peer of this.peers.values()) peer.send(data);
  }

  /**
   * Starts a call: our camera and microphone (`{audio, video}`, or a `stream`) go to every
   * peer in the room and to those who join later. See call.js and the README.
   * @returns {Promise<import('./call.js').Call>}
   */
  async call(options = {}) {
    const { startCall } = await import('./call.js');
    return startCall(this, options);
  }

  /** Leaves the room (and its call), closes every peer connection and the signaling socket. */
  leave() {
    if (this._left) return;
    this._left = true;
    this._call?.hangUp();
    clearTimeout(this._iceTimer);
    this._sendLeave();
    for (const id of [...this.peers.keys()]) this._dropPeer(id);
    this._signaling.close();
  }
}

/**
 * A data channel with backpressure.
 * Events: `open`, `message` ({data}), `close`.
 */
export class Channel extends EventTarget {
  constructor(peer, dc) {
    super();
    this.peer = peer;
    this.dc = dc;
    dc.binaryType = 'arraybuffer';
    dc.bufferedAmountLowThreshold = LOW_WATER;
    dc.addEventListener('open', () => this.dispatchEvent(new Event('open')));
    dc.addEventListener('close', () => this.dispatchEvent(new Event('close')));
    dc.addEventListener('message', (ev) => {
      this.dispatchEvent(new PeerwebEvent('message', { data: ev.data }));
      peer._onChannelMessage(this, ev.data);
    });
  }

  get label() { return this.dc.label; }
  get ordered() { return this.dc.ordered; }
  get maxRetransmits() { return this.dc.maxRetransmits; }
  get maxPacketLifeTime() { return this.dc.maxPacketLifeTime; }
  get readyState() { return this.dc.readyState; }
  get bufferedAmount() { return this.dc.bufferedAmount; }

  /** Sends now; throws a PeerwebError if the channel is not open. */
  send(data) {
    if (this.dc.readyState !== 'open') throw new PeerwebError('channel-not-open', `channel ${this.label} is ${this.dc.readyState}`);
    this.dc.send(data);
  }

  /** Resolves when the channel is open and its buffer is below the high-water mark. */
  ready() {
    const dc = this.dc;
    if (dc.readyState === 'closing' || dc.readyState === 'closed') {
      return Promise.reject(new PeerwebError('channel-closed', `channel ${this.label} is closed`));
    }
    if (dc.readyState === 'open' && dc.bufferedAmount <= HIGH_WATER) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = () => {
        dc.removeEventListener('open', check);
        dc.removeEventListener('bufferedamountlow', check);
        dc.removeEventListener('close', closed);
      };
      const check = () => {
        if (dc.readyState === 'open' && dc.bufferedAmount <= HIGH_WATER) { done(); resolve(); }
      };
      const closed = () => { done(); reject(new PeerwebError('channel-closed', `channel ${this.label} closed`)); };
      dc.addEventListener('open', check);
      dc.addEventListener('bufferedamountlow', check);
      dc.addEventListener('close', closed);
    });
  }

  /** Waits for room in the buffer, then sends: use in loops that send a lot. */
  async sendWhenReady(data) {
    await this.ready();
    this.dc.send(data);
  }

  close() {
    this.dc.close();
  }
}

/**
 * A remote peer and the RTCPeerConnection to it.
 * Events: `open` (default channel open), `message` ({data, channel}), `channel` ({channel}),
 * `state` ({state}), `path` ({path}), `close`.
 */
/** The `a=fingerprint:` of an SDP, upper-cased, or null. */
function fingerprintOf(sdp) {
  const m = typeof sdp === 'string' && sdp.match(/^a=fingerprint:(.+?)\r?$/m);
  return m ? m[1].toUpperCase() : null;
}

export class Peer extends EventTarget {
  constructor(room, id, meta, initiate) {
    super();
    this.room = room;
    this.id = id;
    this.meta = meta;
    this.closed = false;
    /** `{type: 'host'|'srflx'|'prflx'|'relay', local, remote, protocol, relayProtocol, rtt}` once known. */
    this.path = null;
    /** @type {Map<string, Channel>} */
    this.channels = new Map();
    this._pending = [];
    this._polite = room.id > id;
    this._makingOffer = false;
    this._ignoreOffer = false;
    this._queue = Promise.resolve();
    /** The path went down (disconnected or failed) and has not come back yet. */
    this._down = false;
    this._restartTimer = null;
    this._restartDelay = RESTART_RETRY_MS;
    // Connectivity reports: one for this connection (connected, or failed), one per time
    // its path went down and ICE restarts brought it back (or did not).
    this._born = performance.now();
    this._connectReported = false;
    this._downAt = null;
    this._restarted = false;
    this._giveUpTimer = setTimeout(() => this._connectFailed(), CONNECT_GIVE_UP_MS);
    const pc = new RTCPeerConnection(room._iceConfig);
    this.pc = pc;
    pc.onicecandidate = ({ candidate }) => {
      room._signal(id, { candidate: candidate ? candidate.toJSON() : null });
    };
    pc.onnegotiationneeded = async () => {
      // A member does not make the first offer: the joiner's is on its way, and channels
      // opened before it ride on our answer. Two first offers crossing would make the
      // polite side roll its own back, which Chromium cannot do for an offer with data
      // channels once the other side's m-line has another mid ("Failed to start SCTP
      // transport": the native peer's mids are not Chromium's).
      if (!initiate && !pc.remoteDescription) return;
      try {
        this._makingOffer = true;
        await pc.setLocalDescription();
        this._sendDescription();
      } catch (e) {
        room._emitError(new PeerwebError('negotiation-failed', String(e)));
      } finally {
        this._makingOffer = false;
      }
    };
    pc.onconnectionstatechange = () => this._onState();
    /** Remote tracks and call channels, kept for a call started now or later (call.js). */
    this._trackEvents = new Map(); // mid → the latest track event
    this._callChannels = [];
    pc.ontrack = (ev) => {
      if (ev.transceiver?.mid != null) this._trackEvents.set(ev.transceiver.mid, ev);
      room._call?._onTrack(this, ev);
      this.dispatchEvent(new PeerwebEvent('track', { track: ev.track, streams: ev.streams, mid: ev.transceiver?.mid ?? null }));
    };
    pc.ondatachannel = ({ channel }) => {
      if (channel.label === CALL_LABEL) {
        this._callChannels = this._callChannels.filter((c) => c.readyState !== 'closed').concat(channel);
        const leg = room._call?.legs.get(id);
        if (leg) room._call._attachChannel(leg, channel, false);
        return;
      }
      const ch = new Channel(this, channel);
      this.channels.set(channel.label, ch);
      this.dispatchEvent(new PeerwebEvent('channel', { channel: ch }));
    };
    this._default = null;
    // Media we only receive (a camera's viewer): asked for in the first offer, so the other
    // side's answer carries it and no second negotiation is needed before the first picture.
    if (initiate) {
      for (const kind of ['audio', 'video']) {
        if (room.options.receive?.[kind]) pc.addTransceiver(kind, { direction: 'recvonly' });
      }
    }
    if (initiate) this._openDefault();
    this._statsTimer = setInterval(() => this._refreshPath(), STATS_EVERY_MS);
  }

  _openDefault() {
    if (this._default) return;
    // Negotiated with a fixed id on both sides: no in-band announcement, no ordering race.
    const dc = this.pc.createDataChannel(DEFAULT_LABEL, { negotiated: true, id: 0 });
    this._default = new Channel(this, dc);
    this._default.addEventListener('open', () => {
      const queued = this._pending;
      this._pending = [];
      for (const d of queued) dc.send(d);
      this.dispatchEvent(new Event('open'));
      this._refreshPath();
    });
  }

  /** `new`, `connecting`, `connected`, `disconnected`, `failed` or `closed`. */
  get state() {
    return this.pc.connectionState;
  }

  /** True once the default channel is open. */
  get open() {
    return this._default?.readyState === 'open';
  }

  /** The default reliable, ordered channel. */
  get defaultChannel() {
    return this._default;
  }

  /** Sends on the default channel; queued (bounded) until it opens. */
  send(data) {
    if (this.closed) throw new PeerwebError('peer-closed', `peer ${this.id} is gone`);
    if (this.open) {
      this._default.dc.send(data);
      return;
    }
    if (this._pending.length >= MAX_PENDING) throw new PeerwebError('queue-full', `too many messages queued for ${this.id}`);
    this._pending.push(data);
  }

  /**
   * Opens (or returns) a named channel. Options as RTCDataChannelInit:
   * `{ordered, maxRetransmits, maxPacketLifeTime}`; `{ordered: false, maxRetransmits: 0}`
   * gives game-style unreliable delivery. The remote side gets a `channel` event.
   */
  channel(label, options = {}) {
    if (label === DEFAULT_LABEL || label === CALL_LABEL) throw new PeerwebError('reserved-label', `"${label}" is the SDK's own channel`);
    const have = this.channels.get(label);
    if (have && have.readyState !== 'closed') return have;
    const init = {};
    for (const k of ['ordered', 'maxRetransmits', 'maxPacketLifeTime', 'protocol']) {
      if (options[k] !== undefined) init[k] = options[k];
    }
    // The default channel first: it holds SCTP stream 0, which a channel created before it
    // could be given (the DTLS client's first even id) once a remote offer is applied,
    // leaving no way to create the default (a member that opens a channel on `peer` while
    // the joiner's offer is on its way, and answers it as the polite side).
    this._openDefault();
    const ch = new Channel(this, this.pc.createDataChannel(label, init));
    this.channels.set(label, ch);
    return ch;
  }

  _onChannelMessage(channel, data) {
    const ev = { peer: this, data, channel };
    this.dispatchEvent(new PeerwebEvent('message', ev));
    this.room.dispatchEvent(new PeerwebEvent('message', ev));
  }

  /**
   * `'offer'` or `'answer'` if `data` is a description under another DTLS certificate than
   * the one this connection negotiated with: the remote is a new session.
   */
  _newSession(data) {
    const known = fingerprintOf(this.pc.currentRemoteDescription?.sdp);
    const d = data?.description;
    if (!known || !d || (d.type !== 'offer' && d.type !== 'answer')) return null;
    const cert = fingerprintOf(d.sdp);
    return cert && cert !== known ? d.type : null;
  }

  /**
   * Sends our current description; in a call, with the labels of our tracks by mid (they are
   * no secret), so the other side can show a track as soon as it arrives, before our call
   * state comes over the data channel.
   */
  _sendDescription() {
    const msg = { description: this.pc.localDescription.toJSON() };
    const labels = this.room._call?._labelsFor(this);
    if (labels) msg.labels = labels;
    this.room._signal(this.id, msg);
  }

  _onSignal(data) {
    // Apply signals strictly in order, one at a time.
    this._queue = this._queue.then(() => this._applySignal(data)).catch((e) => {
      this.room._emitError(new PeerwebError('signal-failed', String(e)));
    });
  }

  async _applySignal({ description, candidate, labels }) {
    const pc = this.pc;
    if (this.closed) return;
    if (description) {

      // Perfect negotiation: on an offer collision the impolite side ignores the remote
      // offer, the polite side rolls back its own (implicitly, in setRemoteDescription).
      const collision = description.type === 'offer' && (this._makingOffer || pc.signalingState !== 'stable');
      this._ignoreOffer = !this._polite && collision;
      if (this._ignoreOffer) {
        // The polite side answers our offer instead; if ours was lost (it went out on a
        // signaling socket that died), it must see it again, or both wait forever.
        if (pc.signalingState === 'have-local-offer' && !this._makingOffer && pc.localDescription) {
          this._sendDescription();
        }
        return;
      }
      // An answer to an offer we already settled (a re-sent offer answered twice) is stale.
      if (description.type === 'answer' && pc.signalingState === 'stable') return;
      // The remote's track labels by mid, if it sent them (a bounded copy), set before its
      // tracks fire: used until its call state arrives, which then rules.
      this._sdpLabels = null;
      if (labels && typeof labels === 'object') {
        this._sdpLabels = {};
        for (const [mid, label] of Object.entries(labels).slice(0, MAX_SDP_LABELS)) {
          if (typeof label === 'string') this._sdpLabels[String(mid).slice(0, 32)] = label.slice(0, 32);
        }
      }
      await pc.setRemoteDescription(description);
      if (description.type === 'offer') {
        this._openDefault();
        await pc.setLocalDescription();
        this._sendDescription();
      }
    } else if (candidate !== undefined) {
      try {
        await pc.addIceCandidate(candidate ?? undefined);
      } catch (e) {
        if (!this._ignoreOffer) throw e;
      }
    }
  }

  _connectFailed() {
    if (this._connectReported || this.closed) return;
    this._connectReported = true;
    this.room._report('connect', false, performance.now() - this._born);
  }

  /** Reports a connection (or a restart) that came up, once the path is known. */
  async _reportUp(what, since) {
    const ms = performance.now() - since;
    for (let i = 0; i < 10 && !this.closed; i++) {
      await this._refreshPath();
      if (this.path) {
        this.room._report(what, true, ms, this.path);
        return;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  _onState() {
    const state = this.pc.connectionState;
    this.dispatchEvent(new PeerwebEvent('state', { state }));
    if ((state === 'disconnected' || state === 'failed') && this._connectReported) {
      this._downAt ??= performance.now();
    }
    if (state === 'failed' && !this._connectReported) this._connectFailed();
    if (state === 'connected') {
      if (!this._connectReported) {
        this._connectReported = true;
        clearTimeout(this._giveUpTimer);
        this._reportUp('connect', this._born);
      } else if (this._downAt !== null) {
        if (this._restarted) this._reportUp('restart', this._downAt);
        this._downAt = null;
        this._restarted = false;
        clearTimeout(this._giveUpTimer);
      }
    }
    if (state === 'disconnected' || state === 'failed') this._down = true;
    if (state === 'connected') {
      this._down = false;
      this._refreshPath();
      clearTimeout(this._restartTimer);
      this._restartTimer = null;
      this._restartDelay = RESTART_RETRY_MS;
    } else if (state === 'disconnected' && !this._restartTimer) {
      // A path that stays down (a NAT dropped its mappings, the network changed, a relay
      // allocation was lost) is renegotiated with an ICE restart rather than after the
      // ~30 s it takes to be declared failed.
      this._restartTimer = setTimeout(() => this._restartIce(), RESTART_AFTER_MS);
    } else if (state === 'failed') {
      this._restartIce();
    }
  }

  /**
   * After the signaling socket came back: an offer we made may have been lost with the old
   * socket (a NAT that dropped our mappings drops the WebSocket too), so take it back and let
   * negotiation run again over the new one; restart ICE if the path is still down.
   */
  _resync() {
    this._queue = this._queue.then(async () => {
      if (this.closed) return;
      if (this.pc.signalingState === 'have-local-offer') {
        await this.pc.setLocalDescription({ type: 'rollback' });
      }
      this._restartIce();
    }).catch((e) => this.room._emitError(new PeerwebError('negotiation-failed', String(e))));
  }

  /**
   * Restarts ICE while the path is down: fresh TURN credentials (allocations made before a
   * network change are dead but still count against the old credential's quota, and a
   * long-lived page's credentials expire), then a new offer. Tried again with backoff until
   * connected: the offer or its answer can be lost with a signaling socket that died
   * unnoticed, and a restart can find no usable path yet.
   */
  _restartIce() {
    clearTimeout(this._restartTimer);
    this._restartTimer = null;
    if (this.closed || !this._down) return;
    this._restartTimer = setTimeout(() => this._restartIce(), this._restartDelay);
    this._restartDelay = Math.min(this._restartDelay * 2, RESTART_RETRY_MAX_MS);
    // Signaling down: the restart runs when it is back (`_resync`).
    if (this.room.signalingState !== 'open') return;
    this._queue = this._queue.then(async () => {
      if (this.closed || !this._down) return;
      // An offer still unanswered is taken back: it or its answer was lost.
      if (this.pc.signalingState === 'have-local-offer' && !this._makingOffer) {
        await this.pc.setLocalDescription({ type: 'rollback' });
      }
      const { iceServers } = await this.room._refreshIce();
      if (this.closed) return;
      this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers });
      this.pc.restartIce();
      if (!this._restarted && this._downAt !== null) {
        this._restarted = true;
        const downAt = this._downAt;
        clearTimeout(this._giveUpTimer);
        this._giveUpTimer = setTimeout(() => {
          if (this.closed || this._downAt !== downAt) return;
          this.room._report('restart', false, performance.now() - downAt);
          this._downAt = null;
          this._restarted = false;
        }, Math.max(0, RESTART_GIVE_UP_MS - (performance.now() - downAt)));
      }
    }).catch((e) => this.room._emitError(new PeerwebError('negotiation-failed', String(e))));
  }

  /** Reads getStats and updates `path` (type and RTT of the selected candidate pair). */
  async _refreshPath() {
    if (this.closed || this.pc.connectionState !== 'connected') return;
    let report;
    try {
      report = await this.pc.getStats();
    } catch {
      return;
    }
    let pair = null;
    report.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
    });
    if (!pair) {
      report.forEach((s) => {
        if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
      });
    }
    if (!pair) return;
    const local = report.get(pair.localCandidateId);
    const remote = report.get(pair.remoteCandidateId);
    if (!local || !remote) return;
    const types = [local.candidateType, remote.candidateType];
    const type = types.includes('relay') ? 'relay'
      : types.every((t) => t === 'host') ? 'host'
        : types.includes('srflx') ? 'srflx' : 'prflx';
    const path = {
      type,
      local: local.candidateType,
      remote: remote.candidateType,
      protocol: local.protocol,
      relayProtocol: local.relayProtocol ?? null,
      rtt: pair.currentRoundTripTime ?? null,
    };
    const changed = !this.path || this.path.type !== path.type || this.path.rtt !== path.rtt;
    this.path = path;
    if (changed) this.dispatchEvent(new PeerwebEvent('path', { path }));
  }

  /** Closes the connection to this peer. */
  close() {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this._statsTimer);
    clearTimeout(this._restartTimer);
    clearTimeout(this._giveUpTimer);
    this.pc.close();
    this.dispatchEvent(new Event('close'));
  }
}
