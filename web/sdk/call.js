// Calls for the peerweb SDK: voice and video in a mesh, every pair verified (verify.js).
//
//   const call = await room.call({ audio: true, video: true });
//   call.addEventListener('track', ({ peer, track, label }) => show(peer, track, label));
//   call.addEventListener('verification', ({ peer, state, sas }) => ...);
//   call.mute('audio'); call.shareScreen(); call.hangUp();
//
// Each member sends its tracks on every peer connection of the room (and to peers who join
// later). What a track is (`camera`, `screen`, `audio`), whether a side is muted and whether
// its camera holds one of the room's video slots travel as call state on a data channel of
// their own (`peerweb-call`, docs/protocol.md), with the verification exchange.
import { PeerwebEvent } from './peerweb.js';
import { toHex } from '../transfer/blake3.js';
import { Verifier, VerifyError, MAX_MESSAGE } from './verify.js';
import { fingerprints } from './trust.js';

export const CALL_LABEL = 'peerweb-call';
/** Members sending camera video at once, by default; later ones are audio-only until one stops. */
export const MAX_VIDEO_SENDERS = 6;
/** How long verification waits for both descriptions' fingerprints before it fails. */
const VERIFY_START_MS = 10000;
const QUALITY_EVERY_MS = 2000;
const SPEAKER_EVERY_MS = 250;
/** Audio level (0–1) above which a member counts as speaking. */
const SPEAKING_LEVEL = 0.02;
/** The active speaker changes only after someone else has been louder for this long. */
const SPEAKER_HOLD_MS = 1000;

/** Bits per second for each camera sender when sending to `n` peers: less as the mesh grows. */
export function videoBitrate(n) {
  if (n <= 1) return 1_500_000;
  if (n <= 3) return 800_000;
  if (n <= 5) return 500_000;
  return 300_000;
}

/**
 * Continuity keys and this browser's identity in IndexedDB (`peerweb-call`), or in memory
 * where IndexedDB is unavailable (the keys then last as long as the page).
 */
export class KeyStore {
  constructor(name = 'peerweb-call') {
    this.name = name;
    this._memory = new Map();
    this._db = null;
  }

  async _open() {
    if (typeof indexedDB === 'undefined') return null;
    this._db ??= new Promise((resolve) => {
      const req = indexedDB.open(this.name, 1);
      req.onupgradeneeded = () => req.result.createObjectStore('kv');
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => resolve(null);
    });
    return this._db;
  }

  async _do(mode, fn) {
    const db = await this._open();
    if (!db) return fn(null);
    return new Promise((resolve, reject) => {
      const tx = db.transaction('kv', mode);
      const req = fn(tx.objectStore('kv'));
      tx.oncomplete = () => resolve(req?.result);
      tx.onerror = () => reject(tx.error);
    });
  }

  async get(key) {
    if (this._memory.has(key)) return this._memory.get(key);
    const v = await this._do('readonly', (s) => (s ? s.get(key) : null)).catch(() => null);
    return v ?? null;
  }

  async put(key, value) {
    this._memory.set(key, value);
    await this._do('readwrite', (s) => s?.put(value, key)).catch(() => {});
  }

  async delete(key) {
    this._memory.delete(key);
    await this._do('readwrite', (s) => s?.delete(key)).catch(() => {});
  }

  /** This browser's long-lived identity (32 random bytes, hex), made on first use. */
  async identity() {
    let id = await this.get('identity');
    if (!id) {
      id = toHex(crypto.getRandomValues(new Uint8Array(32)));
      await this.put('identity', id);
    }
    return id;
  }

  /** The continuity key kept for a peer identity: `{key, name, at}` or null. */
  keyFor(identity) {
    return this.get(`key:${identity}`);
  }

  putKey(identity, key, name) {
    return this.put(`key:${identity}`, { key, name: name ?? null, at: Date.now() });
  }

  /** Forgets a peer's key (the next call compares the SAS again). */
  forget(identity) {
    return this.delete(`key:${identity}`);
  }
}

/** One peer in the call: our senders to it, its tracks and state, the verification. */
class Leg {
  constructor(call, peer) {
    this.call = call;
    this.peer = peer;
    /** label → RTCRtpSender */
    this.senders = new Map();
    /** Channels the call state arrives on (ours and the remote's) and the one we send on. */
    this.out = null;
    /** The remote's last call state, or null while it is not in the call. */
    this.remote = null;
    /** mid → {track, streams} of remote tracks, and mid → label already announced. */
    this.tracks = new Map();
    this.announced = new Map();
    this.verifier = null;
    this.verification = { state: 'waiting', sas: null, by: null, error: null };
    this.quality = null;
    /** Kinds ('audio', 'video') that carry nothing with this peer: no codec in common. */
    this.noCodec = new Set();
    this._prevStats = null;
    this._stateSent = null;
  }
}

/**
 * A call in a room. Events: `track` ({peer, track, label, stream}), `trackended` ({peer,
 * label}), `peerstate` ({peer, muted, video}), `verification` ({peer, state, sas, by,
 * error}), `speaker` ({peer}), `quality` ({peer, quality}), `video` ({state}: this side's
 * camera `on` or `held` by the mesh cap), `nocodec` ({peer, kind}: no audio or video either
 * way with that peer, its browser takes none of ours), `devices` ({devices}), `error`
 * ({error}), `ended`.
 */
export class Call extends EventTarget {
  constructor(room, options, local) {
    super();
    this.room = room;
    this.options = options;
    this.maxVideoSenders = options.maxVideoSenders ?? MAX_VIDEO_SENDERS;
    this.store = options.keyStore ?? new KeyStore();
    /** The local camera and microphone (`stream`) and the screen share, if any. */
    this.localStream = local;
    this.screenTrack = null;
    this.muted = { audio: false, video: false };
    /** When this side's camera asked for a video slot (ms since the epoch). */
    this.since = Date.now();
    /** `on`, `held` (the mesh is full) or `off` (no camera). */
    this.videoState = local.getVideoTracks().length ? 'on' : 'off';
    this.ended = false;
    /** peer id → Leg */
    this.legs = new Map();
    this.speaker = null;
    this._speakerSince = 0;
    this._identity = null;
    this._onDeviceChange = () => this._deviceChange();
  }

  get audioTrack() { return this.localStream.getAudioTracks()[0] ?? null; }
  get videoTrack() { return this.localStream.getVideoTracks()[0] ?? null; }

  /** What verification needs, loaded before the call meets any peer. */
  async _prepare() {
    this._identity = await this.store.identity();
    this._words = (await import('../transfer/words.js')).WORDS;
  }

  _start() {
    for (const peer of this.room.peers.values()) this._addPeer(peer);
    this._qualityTimer = setInterval(() => this._refreshQuality(), QUALITY_EVERY_MS);
    this._speakerTimer = setInterval(() => this._refreshSpeaker(), SPEAKER_EVERY_MS);
    navigator.mediaDevices?.addEventListener?.('devicechange', this._onDeviceChange);
    this._updateVideoSlot();
  }

  _emit(type, fields = {}) {
    this.dispatchEvent(new PeerwebEvent(type, fields));
  }

  // --- peers -------------------------------------------------------------------------------

  /** A peer in the room (now or later) gets our tracks and a call channel. */
  _addPeer(peer) {
    if (this.ended || peer.closed || this.legs.has(peer.id)) return;
    const leg = new Leg(this, peer);
    this.legs.set(peer.id, leg);
    peer._openDefault();
    if (this.audioTrack) leg.senders.set('audio', peer.pc.addTrack(this.audioTrack, this.localStream));
    if (this.videoTrack && this.videoState === 'on') leg.senders.set('camera', peer.pc.addTrack(this.videoTrack, this.localStream));
    if (this.screenTrack) leg.senders.set('screen', peer.pc.addTrack(this.screenTrack, new MediaStream([this.screenTrack])));
    const dc = peer.pc.createDataChannel(CALL_LABEL);
    this._attachChannel(leg, dc, true);
    // The remote's call channel and tracks may have come while we were not in a call.
    for (const theirs of peer._callChannels) {
      if (theirs.readyState === 'open' || theirs.readyState === 'connecting') this._attachChannel(leg, theirs, false);
    }
    // Announced on the next task, after `call()` resolved and the app listens: with labels
    // from the peer's description they could be announced at once, and be missed.
    setTimeout(() => {
      if (this.legs.get(peer.id) !== leg) return;
      for (const ev of peer._trackEvents.values()) this._onTrack(peer, ev);
    }, 0);
    leg._onSignaling = () => {
      if (peer.pc.signalingState !== 'stable') return;
      this._checkCodecs(leg);
      this._sendState(leg); // mids are known now
      this._applyBitrate();
    };
    peer.pc.addEventListener('signalingstatechange', leg._onSignaling);
    this._applyBitrate();
  }

  /** A call channel to `leg`'s peer: `mine` is the one we send on. */
  _attachChannel(leg, dc, mine) {
    if (mine) leg.out = dc;
    dc.addEventListener('open', () => {
      if (mine) this._sendState(leg, true);
    });
    dc.addEventListener('message', (ev) => this._onMessage(leg, ev.data));
    dc.addEventListener('close', () => {
      if (!mine && leg.remote && !this.ended) this._remoteLeft(leg);
    });
  }

  _removePeer(peer) {
    const leg = this.legs.get(peer.id);
    if (!leg) return;
    this.legs.delete(peer.id);
    peer.pc.removeEventListener('signalingstatechange', leg._onSignaling);
    for (const label of leg.announced.values()) this._emit('trackended', { peer, label });
    if (this.speaker === peer) {
      this.speaker = null;
      this._emit('speaker', { peer: null });
    }
    this._updateVideoSlot();
    this._applyBitrate();
  }

  /** The remote hung up (its call channel closed, or it said bye): forget its call state. */
  _remoteLeft(leg) {
    for (const label of leg.announced.values()) this._emit('trackended', { peer: leg.peer, label });
    leg.announced.clear();
    leg.remote = null;
    leg.verifier = null;
    leg._verifyStarting = false;
    leg._verifyGen = (leg._verifyGen ?? 0) + 1;
    this._setVerification(leg, { state: 'waiting', sas: null, by: null, error: null });
    this._updateVideoSlot();
  }

  // --- call state --------------------------------------------------------------------------

  /** Our tracks to one peer by mid: which is which. */
  _trackLabels(leg) {
    const tracks = {};
    for (const [label, sender] of leg.senders) {
      const t = leg.peer.pc.getTransceivers().find((x) => x.sender === sender);
      if (t?.mid != null) tracks[t.mid] = label;
    }
    return tracks;
  }

  /** The labels sent with our descriptions to `peer` (see Peer._sendDescription). */
  _labelsFor(peer) {
    const leg = this.legs.get(peer.id);
    return leg && !this.ended ? this._trackLabels(leg) : null;
  }

  /** Our state to one peer: which of our tracks is which, mutes, the video slot. */
  _sendState(leg, force = false) {
    if (this.ended || leg.out?.readyState !== 'open') return;
    const tracks = this._trackLabels(leg);
    const msg = { t: 'state', v: 1, tracks, muted: this.muted, video: this.videoState, since: this.since };
    const text = JSON.stringify(msg);
    if (!force && text === leg._stateSent) return;
    leg._stateSent = text;
    leg.out.send(text);
    this._maybeVerify(leg);
  }

  _broadcastState() {
    for (const leg of this.legs.values()) this._sendState(leg);
  }

  _onMessage(leg, data) {
    if (this.ended) return;
    if (typeof data !== 'string' || data.length > MAX_MESSAGE) {
      this._verifyFailed(leg, 'a call message that is not text or too long');
      return;
    }
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      this._verifyFailed(leg, 'a call message that is not JSON');
      return;
    }
    if (m?.t === 'state') {
      this._onRemoteState(leg, m);
      return;
    }
    if (m?.t === 'bye') {
      this._remoteLeft(leg);
      return;
    }
    if (!leg.verifier && !leg._verifyStarting) {
      // Verification starts only once both sides sent their state, which comes first on
      // each channel: anything else before it breaks the protocol.
      this._verifyFailed(leg, `a verification message (${String(m?.t).slice(0, 20)}) before the call state`);
      return;
    }
    this._feed(leg, data);
  }

  _onRemoteState(leg, m) {
    const tracks = m.tracks && typeof m.tracks === 'object' ? m.tracks : {};
    const muted = { audio: m.muted?.audio === true, video: m.muted?.video === true };
    const video = ['on', 'held', 'off'].includes(m.video) ? m.video : 'off';
    const since = Number.isFinite(m.since) ? m.since : Date.now();
    const before = leg.remote;
    leg.remote = { tracks, muted, video, since };
    // A peer that just came into the call may have missed our state (sent before it listened).
    if (!before) this._sendState(leg, true);
    if (!before || before.muted.audio !== muted.audio || before.muted.video !== muted.video || before.video !== video) {
      this._emit('peerstate', { peer: leg.peer, muted, video });
    }
    this._announceTracks(leg);
    this._checkCodecs(leg);
    this._updateVideoSlot();
    this._maybeVerify(leg);
  }

  /**
   * A line negotiated away (rejected, port 0: the two sides share no codec of its kind)
   * leaves its transceiver stopped. Once the peer is in the call, each kind that died so
   * is reported once (`nocodec`) and no longer sent to it (sending again would only
   * offer the same refused line).
   */
  _checkCodecs(leg) {
    if (!leg.remote || leg.peer.pc.signalingState !== 'stable') return;
    const live = leg.peer.pc.getTransceivers().filter((t) => !t.stopped && t.currentDirection !== 'stopped');
    const dead = new Set();
    for (const [label, sender] of leg.senders) {
      if (!live.some((t) => t.sender === sender)) {
        dead.add(sender.track?.kind ?? (label === 'audio' ? 'audio' : 'video'));
        leg.senders.delete(label);
      }
    }
    for (const mid of Object.keys(leg.remote.tracks)) {
      if (!live.some((t) => t.mid === mid)) dead.add(leg.remote.tracks[mid] === 'audio' ? 'audio' : 'video');
    }
    for (const kind of dead) {
      if (leg.noCodec.has(kind)) continue;
      leg.noCodec.add(kind);
      this._emit('nocodec', { peer: leg.peer, kind });
    }
  }

  /** Remote tracks whose label is now known are announced; labels gone are ended. */
  _announceTracks(leg) {
    // The call state's labels; until it comes, those sent with the peer's description.
    const labels = leg.remote?.tracks ?? leg.peer._sdpLabels ?? {};
    for (const [mid, { track, streams }] of leg.tracks) {
      const label = typeof labels[mid] === 'string' ? labels[mid].slice(0, 32) : null;
      if (label && leg.announced.get(mid) !== label) {
        leg.announced.set(mid, label);
        this._emit('track', { peer: leg.peer, track, label, stream: streams[0] ?? new MediaStream([track]) });
      }
    }
    for (const [mid, label] of [...leg.announced]) {
      if (labels[mid] !== label) {
        leg.announced.delete(mid);
        this._emit('trackended', { peer: leg.peer, label });
      }
    }
  }

  /** From the Peer: a remote track (its label comes with the call state). */
  _onTrack(peer, ev) {
    const leg = this.legs.get(peer.id);
    if (!leg) return;
    const mid = ev.transceiver?.mid;
    if (mid == null) return;
    leg.tracks.set(mid, { track: ev.track, streams: ev.streams });
    this._announceTracks(leg);
  }

  // --- verification ------------------------------------------------------------------------

  _maybeVerify(leg) {
    if (leg.verifier || leg._verifyStarting || !leg.remote || leg._stateSent === null
      || this.options.verify === false) return;
    const pc = leg.peer.pc;
    const gen = leg._verifyGen = (leg._verifyGen ?? 0) + 1;
    leg._verifyStarting = true;
    // The channel can open, and both states cross, before this thread has seen
    // setRemoteDescription settle: the fingerprints are awaited, and the peer's first
    // verification messages wait in the queue behind the start.
    leg._verifyQueue = (async () => {
      const [localFp, remoteFp] = await fingerprints(pc, VERIFY_START_MS);
      if (leg._verifyGen !== gen) return;
      leg._verifyStarting = false;
      let v;
      try {
        v = new Verifier({
          localFp,
          remoteFp,
          identity: this._identity,
          keyFor: async (id) => (await this.store.keyFor(id))?.key ?? null,
          words: this._words,
          random: () => crypto.getRandomValues(new Uint8Array(32)),
        });
      } catch (e) {
        this._verifyFailed(leg, e.message);
        return;
      }
      leg.verifier = v;
      this._sendAll(leg, v.start());
    })();
  }

  _feed(leg, text) {
    const gen = leg._verifyGen;
    leg._verifyQueue = leg._verifyQueue.then(async () => {
      const v = leg.verifier;
      if (leg._verifyGen !== gen || !v) return;
      try {
        this._sendAll(leg, await v.receive(text));
      } catch (e) {
        if (!(e instanceof VerifyError)) throw e;
      }
      this._setVerification(leg, { state: v.state, sas: v.sas, by: v.by, error: v.error });
    });
  }

  _sendAll(leg, msgs) {
    for (const m of msgs) {
      if (leg.out?.readyState === 'open') leg.out.send(JSON.stringify(m));
    }
  }

  _verifyFailed(leg, error) {
    if (leg.verifier) {
      leg.verifier.state = 'failed';
      leg.verifier.error = error;
    }
    this._setVerification(leg, { state: 'failed', sas: null, by: null, error });
  }

  _setVerification(leg, v) {
    const was = leg.verification;
    leg.verification = v;
    if (was.state !== v.state || was.sas !== v.sas) this._emit('verification', { peer: leg.peer, ...v });
  }

  /**
   * The users compared the SAS with `peer`: `true` if it matched. A match keeps a continuity
   * key for the peer's identity, so the next call between the two verifies by itself.
   */
  async confirm(peer, matches) {
    const leg = this.legs.get(peer.id ?? peer);
    const v = leg?.verifier;
    if (!v) return;
    const key = v.confirm(matches);
    if (key) await this.store.putKey(v.remoteIdentity, key, leg.peer.meta?.name);
    this._setVerification(leg, { state: v.state, sas: v.sas, by: v.by, error: v.error });
  }

  /** What the call knows of each peer. */
  get participants() {
    return [...this.legs.values()].map((leg) => ({
      peer: leg.peer,
      inCall: leg.remote !== null,
      muted: leg.remote?.muted ?? { audio: false, video: false },
      video: leg.remote?.video ?? 'off',
      labels: [...leg.announced.values()],
      verification: leg.verification,
      quality: leg.quality,
    }));
  }

  // --- local media -------------------------------------------------------------------------

  /** Mutes `kind` ('audio' or 'video'): the track sends silence or black, the others see it. */
  mute(kind) {
    this._setMuted(kind, true);
  }

  unmute(kind) {
    this._setMuted(kind, false);
  }

  _setMuted(kind, muted) {
    if (kind !== 'audio' && kind !== 'video') throw new TypeError(`mute: kind is 'audio' or 'video', not ${kind}`);
    const track = kind === 'audio' ? this.audioTrack : this.videoTrack;
    if (track) track.enabled = !muted;
    if (this.muted[kind] === muted) return;
    this.muted = { ...this.muted, [kind]: muted };
    this._broadcastState();
  }

  /**
   * Switches to another camera or microphone (`{audio: deviceId}`, `{video: deviceId}`, or
   * constraints instead of an id) or to a given track (`{track}`): the senders' tracks are
   * replaced, with no renegotiation.
   */
  async useDevice({ audio, video, track } = {}) {
    let next = track ?? null;
    if (!next) {
      const pick = (c) => (typeof c === 'string' ? { deviceId: { exact: c } } : c);
      const constraints = audio !== undefined ? { audio: pick(audio) } : { video: pick(video) };
      const s = await navigator.mediaDevices.getUserMedia(constraints);
      next = s.getTracks()[0];
    }
    const kind = next.kind;
    const old = kind === 'audio' ? this.audioTrack : this.videoTrack;
    next.enabled = !this.muted[kind];
    const label = kind === 'audio' ? 'audio' : 'camera';
    await Promise.all([...this.legs.values()].map((leg) => leg.senders.get(label)?.replaceTrack(next)));
    if (old) {
      this.localStream.removeTrack(old);
      old.stop();
    }
    this.localStream.addTrack(next);
    this._watchEnded(next);
    return next;
  }

  /**
   * Shares the screen as a second video track labelled `screen` (`track` stands in for
   * getDisplayMedia, e.g. a canvas' captureStream). Stops when the track ends.
   */
  async shareScreen(track) {
    if (this.screenTrack) return this.screenTrack;
    const t = track ?? (await navigator.mediaDevices.getDisplayMedia({ video: true })).getVideoTracks()[0];
    this.screenTrack = t;
    const stream = new MediaStream([t]);
    for (const leg of this.legs.values()) {
      if (!leg.noCodec.has('video')) leg.senders.set('screen', leg.peer.pc.addTrack(t, stream));
    }
    t.addEventListener('ended', () => this.stopScreen());
    this._applyBitrate();
    return t;
  }

  stopScreen() {
    const t = this.screenTrack;
    if (!t) return;
    this.screenTrack = null;
    for (const leg of this.legs.values()) this._removeSender(leg, 'screen');
    t.stop();
    this._broadcastState();
  }

  _removeSender(leg, label) {
    const s = leg.senders.get(label);
    if (!s) return;
    leg.senders.delete(label);
    try {
      if (leg.peer.pc.signalingState !== 'closed') leg.peer.pc.removeTrack(s);
    } catch { /* the connection closed */ }
  }

  _watchEnded(track) {
    track.addEventListener('ended', () => this._deviceChange());
  }

  /**
   * The devices changed (plugged in or out): the list is announced, and a track whose device
   * is gone is replaced by the default device of its kind.
   */
  async _deviceChange() {
    if (this.ended) return;
    let devices = [];
    try {
      devices = await navigator.mediaDevices.enumerateDevices();
    } catch { /* none to list */ }
    this._emit('devices', { devices });
    for (const track of this.localStream.getTracks()) {
      if (track.readyState !== 'ended') continue;
      try {
        const s = await navigator.mediaDevices.getUserMedia({ [track.kind]: true });
        await this.useDevice({ track: s.getTracks()[0] });
      } catch (error) {
        this._emit('error', { error });
      }
    }
  }

  // --- the mesh cap and bitrate ------------------------------------------------------------

  /**
   * Whether our camera holds one of the room's `maxVideoSenders` slots: members wanting to
   * send video, ordered by when they asked (then by id), hold the first ones. A member that
   * lost its slot stops sending its camera; one that gained it starts.
   */
  _updateVideoSlot() {
    if (this.ended || !this.videoTrack) return;
    const wanting = [{ id: this.room.id, since: this.since }];
    for (const leg of this.legs.values()) {
      if (leg.remote && leg.remote.video !== 'off') wanting.push({ id: leg.peer.id, since: leg.remote.since });
    }
    wanting.sort((a, b) => a.since - b.since || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const rank = wanting.findIndex((w) => w.id === this.room.id);
    const state = rank < this.maxVideoSenders ? 'on' : 'held';
    if (state === this.videoState) return;
    this.videoState = state;
    for (const leg of this.legs.values()) {
      if (state === 'on' && !leg.senders.has('camera') && !leg.noCodec.has('video')) {
        leg.senders.set('camera', leg.peer.pc.addTrack(this.videoTrack, this.localStream));
      } else if (state === 'held') this._removeSender(leg, 'camera');
    }
    this._applyBitrate();
    this._broadcastState();
    this._emit('video', { state });
  }

  /** Each camera and screen sender gets a bitrate cap that shrinks as the mesh grows. */
  _applyBitrate() {
    const n = [...this.legs.values()].filter((l) => l.senders.has('camera') || l.senders.has('screen')).length;
    const max = this.options.maxBitrate ?? videoBitrate(n);
    for (const leg of this.legs.values()) {
      for (const label of ['camera', 'screen']) {
        const sender = leg.senders.get(label);
        if (!sender) continue;
        const params = sender.getParameters();
        // Not negotiated yet: applied once it is (the leg's signalingstatechange).
        if (!params.encodings?.length) continue;
        if (params.encodings.every((e) => e.maxBitrate === max)) continue;
        for (const e of params.encodings) e.maxBitrate = max;
        sender.setParameters(params).catch(() => {});
      }
    }
    this.bitrate = max;
  }

  // --- measurements ------------------------------------------------------------------------

  /** The loudest peer (from its audio receiver's level) becomes the active speaker. */
  _refreshSpeaker() {
    let best = null;
    let level = SPEAKING_LEVEL;
    for (const leg of this.legs.values()) {
      if (leg.remote?.muted.audio) continue;
      for (const r of leg.peer.pc.getReceivers()) {
        if (r.track?.kind !== 'audio') continue;
        for (const s of r.getSynchronizationSources?.() ?? []) {
          if (s.audioLevel > level) {
            level = s.audioLevel;
            best = leg.peer;
          }
        }
      }
    }
    const now = performance.now();
    if (best === this.speaker) {
      this._speakerSince = now;
      return;
    }
    if (best && this.speaker && now - this._speakerSince < SPEAKER_HOLD_MS) return;
    if (!best && this.speaker && now - this._speakerSince < SPEAKER_HOLD_MS) return;
    this.speaker = best;
    this._speakerSince = now;
    this._emit('speaker', { peer: best });
  }

  /** Per-peer quality from getStats: bitrate, frames per second, loss, RTT, freezes. */
  async _refreshQuality() {
    for (const leg of this.legs.values()) {
      let report;
      try {
        report = await leg.peer.pc.getStats();
      } catch {
        continue;
      }
      const now = performance.now();
      const q = { bitrate: null, audioBitrate: null, fps: null, width: null, height: null, framesDecoded: 0, audioLevel: null, packetsLost: 0, packetsReceived: 0, loss: 0, rtt: leg.peer.path?.rtt ?? null, freezes: 0 };
      let bytes = 0;
      let audioBytes = 0;
      report.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        q.packetsLost += Math.max(0, s.packetsLost ?? 0);
        q.packetsReceived += s.packetsReceived ?? 0;
        if (s.kind === 'video') {
          bytes += s.bytesReceived ?? 0;
          q.framesDecoded += s.framesDecoded ?? 0;
          q.freezes += s.freezeCount ?? 0;
          // The largest video (the camera, or the screen share) describes the peer.
          if ((s.frameWidth ?? 0) >= (q.width ?? 0)) {
            q.fps = s.framesPerSecond ?? q.fps;
            q.width = s.frameWidth ?? q.width;
            q.height = s.frameHeight ?? q.height;
          }
        } else if (s.kind === 'audio') {
          audioBytes += s.bytesReceived ?? 0;
          q.audioLevel = s.audioLevel ?? q.audioLevel;
        }
      });
      const prev = leg._prevStats;
      if (prev) {
        const dt = (now - prev.at) / 1000;
        q.bitrate = Math.max(0, Math.round(((bytes - prev.bytes) * 8) / dt));
        q.audioBitrate = Math.max(0, Math.round(((audioBytes - prev.audioBytes) * 8) / dt));
        const got = q.packetsReceived - prev.packetsReceived;
        const lost = q.packetsLost - prev.packetsLost;
        q.loss = got + lost > 0 ? lost / (got + lost) : 0;
      }
      leg._prevStats = { at: now, bytes, audioBytes, packetsReceived: q.packetsReceived, packetsLost: q.packetsLost };
      leg.quality = q;
      this._emit('quality', { peer: leg.peer, quality: q });
    }
  }

  // --- the end -----------------------------------------------------------------------------

  /** Leaves the call (the room stays): our tracks stop and the others see us go. */
  hangUp() {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this._qualityTimer);
    clearInterval(this._speakerTimer);
    navigator.mediaDevices?.removeEventListener?.('devicechange', this._onDeviceChange);
    for (const leg of this.legs.values()) {
      if (leg.out?.readyState === 'open') leg.out.send('{"t":"bye"}');
      for (const label of [...leg.senders.keys()]) this._removeSender(leg, label);
      leg.peer.pc.removeEventListener('signalingstatechange', leg._onSignaling);
      leg.out?.close();
    }
    this.legs.clear();
    for (const t of this.localStream.getTracks()) t.stop();
    this.screenTrack?.stop();
    if (this.room._call === this) this.room._call = null;
    this._emit('ended');
  }
}

/**
 * Starts a call in `room`: the camera and microphone as asked (`{audio, video}`, booleans or
 * constraints) or a given `stream`.
 */
export async function startCall(room, options = {}) {
  if (room._call) throw new Error('this room is in a call already');
  if (typeof RTCPeerConnection === 'undefined') throw new Error('this browser has no WebRTC');
  let stream = options.stream;
  if (!stream) {
    const audio = options.audio ?? true;
    const video = options.video ?? true;
    if (!audio && !video) stream = new MediaStream();
    else {
      if (!navigator.mediaDevices?.getUserMedia) {
        throw new Error('this page cannot use the camera or microphone (it needs https:// or localhost)');
      }
      stream = await navigator.mediaDevices.getUserMedia({ audio, video });
    }
  }
  const call = new Call(room, options, stream);
  try {
    await call._prepare();
  } catch (e) {
    for (const t of stream.getTracks()) t.stop();
    throw e;
  }
  if (room._call || room._left) {
    for (const t of stream.getTracks()) t.stop();
    throw new Error(room._left ? 'the room was left' : 'this room is in a call already');
  }
  room._call = call;
  call._start();
  return call;
}
