// Remote cameras in the browser: pair with a `peerweb camera` by the code or link it shows,
// then watch it — the camera protocol v1 (docs/protocol.md, "Camera"), the same as
// `peerweb watch`. The camera streams to nobody it has not paired with: pairing proves the
// code (SPAKE2) or link over both DTLS fingerprints (trust.js) and gives this viewer a key;
// every visit proves that key the same way, so the signaling server cannot watch.
//
//   import { pairCamera, watchCamera } from '/sdk/camera.js';
//   const rec = await pairCamera(location.origin, { code: '7-crimson-otter' }, { name: 'phone' });
//   const w = await watchCamera(rec);          // keep `rec` (its key) to come back
//   w.addEventListener('track', ({ stream }) => { video.srcObject = stream; });
import { join, PeerwebEvent } from './peerweb.js';
import { firstPeer, handshake, parseCode, Wire } from './trust.js';

export const CAMERA_PROTOCOL = 1;
const STEP_MS = 30000;
/** Longest wait for a message once watching (a camera sends status only on changes). */
const FOREVER_MS = 2 ** 31 - 1;

export const pairingRoom = (nameplate) => `camera-pair-${nameplate}`;
export const cameraRoom = (id) => `camera-${id}`;

const hexBytes = (hex) => Uint8Array.from(hex.match(/../g), (b) => parseInt(b, 16));
const clean = (s) => String(s ?? '').replace(/[\u0000-\u001f\u007f]/g, '').trim().slice(0, 64);

function viewerOptions(options, media = false) {
  const { name, waitMs, ...rest } = options;
  return { ...rest, meta: { role: 'viewer' }, onlyRole: 'camera', ...(media ? { receive: { video: true, audio: true } } : {}) };
}

/**
 * Pairs with the camera showing a code (`{code: '7-crimson-otter'}`) or a link's
 * `{nameplate, secret}` (parseFragment of its `#…`). Resolves to the record to keep:
 * `{camera, name, server, viewer, key, sas}` — `key` is this viewer's secret; `sas` can be
 * compared with what the camera prints. Rejects with a `TrustError` when the camera cannot
 * prove the code (a wrong code, or a man in the middle), or the camera's refusal.
 */
export async function pairCamera(serverUrl, { code, nameplate, secret }, options = {}) {
  let pake = null;
  if (code) ({ nameplate, code: pake } = parseCode(code));
  const room = await join(serverUrl, pairingRoom(nameplate), viewerOptions(options));
  try {
    const wire = await firstPeer(room, options.waitMs ?? 15000)
      .catch(() => { throw new Error('no camera showed that code (it may have expired)'); });
    await wire.send({ t: 'visit', v: CAMERA_PROTOCOL, name: clean(options.name ?? 'browser') });
    const sas = await handshake(wire, 'receive', pake ? { code: pake } : { link: secret });
    const w = await wire.control(STEP_MS);
    if (w.t !== 'welcome' || !/^[a-z2-7]{16}$/.test(w.camera) || !/^[0-9a-f]{32}$/i.test(w.key ?? '')
      || typeof w.viewer !== 'string' || !w.viewer || w.viewer.length > 64) {
      throw new Error('the camera sent a malformed welcome');
    }
    return {
      camera: w.camera, name: clean(w.name), server: serverUrl, viewer: w.viewer, key: w.key.toLowerCase(), sas,
    };
  } finally {
    room.leave();
  }
}

/**
 * Watches a paired camera (a record from `pairCamera`); resolves once in its room. The watch
 * waits for the camera when it is away and comes back by itself.
 * Events: `state` ({state: 'waiting'|'verifying'|'watching'|'refused'|'stopped'}), `watching`
 * ({name, sas}), `track` ({track, stream}), `status` ({viewers, width, height, fps}),
 * `lost` (the camera went away), `refused` ({error}: revoked, or a failed proof — final).
 */
export async function watchCamera(record, options = {}) {
  const w = new CameraWatch(record, options);
  await w._start();
  return w;
}

export class CameraWatch extends EventTarget {
  constructor(record, options) {
    super();
    this.record = record;
    this.options = options;
    this.state = 'waiting';
    /** The camera's current peer, once verified. */
    this.peer = null;
    this.stream = null;
    this.status = null;
    this.sas = null;
  }

  _emit(type, fields = {}) {
    this.dispatchEvent(new PeerwebEvent(type, fields));
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', { state });
  }

  async _start() {
    const server = this.options.server ?? this.record.server;
    this.room = await join(server, cameraRoom(this.record.camera), viewerOptions(this.options, true));
    for (const p of this.room.peers.values()) this._adopt(p);
    this.room.addEventListener('peer', ({ peer }) => this._adopt(peer));
  }

  _adopt(peer) {
    const wire = new Wire(peer);
    peer.addEventListener('track', ({ track }) => {
      if (this.state === 'refused') return;
      if (track.kind === 'video') {
        // A new stream for a new picture, with the sound the camera sends (if any).
        this.stream = new MediaStream([track, ...(this.stream?.getAudioTracks() ?? [])]);
      } else if (this.stream) {
        for (const old of this.stream.getAudioTracks()) this.stream.removeTrack(old);
        this.stream.addTrack(track);
      } else {
        this.stream = new MediaStream([track]);
      }
      this._emit('track', { track, stream: this.stream, peer });
    });
    const go = () => this._visit(peer, wire).catch((error) => {
      if (this.state === 'stopped' || this.state === 'refused') return;
      if (error.refused || error.name === 'TrustError') {
        this._setState('refused');
        this._emit('refused', { error });
        this.stop('refused');
      } else if (this.peer === peer || this.state === 'verifying') {
        this.peer = null;
        this._setState('waiting');
        this._emit('lost');
      }
    });
    if (peer.open) go(); else peer.addEventListener('open', go, { once: true });
  }

  async _visit(peer, wire) {
    this._setState('verifying');
    await wire.send({ t: 'visit', v: CAMERA_PROTOCOL, viewer: this.record.viewer, name: clean(this.options.name ?? 'browser') });
    this.sas = await handshake(wire, 'receive', { link: hexBytes(this.record.key) });
    const w = await wire.control(STEP_MS);
    if (w.t !== 'welcome' || w.camera !== this.record.camera) throw new Error('the camera sent a malformed welcome');
    this.peer = peer;
    this._setState('watching');
    this._emit('watching', { name: clean(w.name), sas: this.sas, peer });
    for (;;) {
      const m = await wire.control(FOREVER_MS);
      if (m.t === 'status') {
        const num = (v) => (Number.isInteger(v) && v >= 0 && v < 1e6 ? v : null);
        this.status = { viewers: num(m.viewers), width: num(m.width), height: num(m.height), fps: num(m.fps) };
        this._emit('status', this.status);
      }
    }
  }

  /**
   * What the video looks like now, from getStats: decoded size and rate, frames so far, the
   * path, and an estimate of the delay from camera to screen (half the round trip, the
   * jitter buffer and decoding).
   */
  async stats() {
    const pc = this.peer?.pc;
    if (!pc) return null;
    const report = await pc.getStats();
    let video = null;
    let audio = null;
    let rtt = null;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') video = s;
      if (s.type === 'inbound-rtp' && s.kind === 'audio') audio = s;
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') rtt = s.currentRoundTripTime ?? rtt;
    });
    if (!video) return { framesDecoded: 0, path: this.peer.path };
    const per = (total, count) => (count > 0 ? (total / count) * 1000 : 0);
    const latencyMs = (rtt ?? 0) * 500
      + per(video.jitterBufferDelay ?? 0, video.jitterBufferEmittedCount ?? 0)
      + per(video.totalDecodeTime ?? 0, video.framesDecoded ?? 0);
    return {
      framesDecoded: video.framesDecoded ?? 0,
      fps: video.framesPerSecond ?? null,
      width: video.frameWidth ?? null,
      height: video.frameHeight ?? null,
      freezes: video.freezeCount ?? 0,
      latencyMs: Math.round(latencyMs),
      path: this.peer.path,
      // The camera's sound, when it sends some: packets so far and the energy played.
      audio: audio?.packetsReceived ? { packets: audio.packetsReceived, energy: audio.totalAudioEnergy ?? 0 } : null,
    };
  }

  /** Stops watching (leaves the camera's room). */
  stop(state = 'stopped') {
    if (state === 'stopped') this._setState('stopped');
    this.room?.leave();
  }
}
