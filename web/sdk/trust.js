// The trust handshake both private apps use — file transfer (transfer/) and cameras
// (camera.js) — and the channel it runs on: both DTLS fingerprints bound to a secret the
// signaling server never sees, by a link's 128-bit secret or a short code (SPAKE2). The same
// protocol as crates/transfer/src/trust.rs. Everything here works without WebCrypto (which
// browsers withhold from plain-http pages, e.g. a phone on the LAN): the MAC, key derivation
// and SAS are BLAKE3.
import { fingerprintOf } from './verify.js';
import { Blake3, blake3 } from '../transfer/blake3.js';
import { WORDS } from '../transfer/words.js';

const STEP_MS = 30000;
const te = new TextEncoder();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ID_SEND = te.encode('peerweb-transfer-v1 sender');
const ID_RECEIVE = te.encode('peerweb-transfer-v1 receiver');

/** Raised when the other side cannot prove it holds the secret for these fingerprints. */
export class TrustError extends Error {
  constructor() {
    super('the other side could not prove it holds the secret for these DTLS fingerprints: '
      + 'a wrong code or link, or a man in the middle (e.g. the signaling server) swapped the fingerprints');
    this.name = 'TrustError';
  }
}

// --- codes --------------------------------------------------------------------------------

/**
 * `7-crimson-otter` (any case, dashes or spaces) → `{nameplate, code}` with the code in the
 * form both sides use as the SPAKE2 password; throws with what is wrong.
 */
export function parseCode(text) {
  const parts = String(text).trim().toLowerCase().split(/[-\s]+/).filter(Boolean);
  if (parts.length !== 3 || !/^\d{1,5}$/.test(parts[0])) throw new Error('a code looks like 7-crimson-otter: a number and two words');
  const nameplate = Number(parts[0]);
  if (nameplate < 1 || nameplate > 999) throw new Error('the number of a code is 1 to 999');
  for (const w of parts.slice(1)) {
    if (!WORDS.includes(w)) throw new Error(`"${w.slice(0, 32)}" is not a code word`);
  }
  return { nameplate, code: `${nameplate}-${parts[1]}-${parts[2]}` };
}

export function b64url(bytes) {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function unb64url(text) {
  if (typeof text !== 'string' || text.length > 64 || !/^[A-Za-z0-9_-]*$/.test(text)) return null;
  try {
    return Uint8Array.from(atob(text.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
  } catch { return null; }
}

// --- links ------------------------------------------------------------------------------

const B32 = 'abcdefghijklmnopqrstuvwxyz234567';

export function base32(bytes) {
  let out = '';
  let bits = 0;
  let acc = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += B32[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += B32[(acc << (5 - bits)) & 31];
  return out;
}

export function unbase32(text) {
  const out = [];
  let bits = 0;
  let acc = 0;
  for (const c of text.toLowerCase()) {
    const v = B32.indexOf(c);
    if (v < 0) return null;
    acc = ((acc << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out.push((acc >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return new Uint8Array(out);
}

/** `#7-<secret>` → `{nameplate, secret}`, or null. */
export function parseFragment(hash) {
  const m = /^#?(\d{1,3})-([a-z2-7]{26})$/i.exec(hash.trim());
  if (!m) return null;
  const nameplate = Number(m[1]);
  const secret = unbase32(m[2]);
  if (nameplate < 1 || nameplate > 999 || !secret || secret.length !== 16) return null;
  return { nameplate, secret };
}

// --- trust ------------------------------------------------------------------------------

const mac = (key, text) => Blake3.keyed(key).update(te.encode(text)).hex();

/** The six-digit short authentication string, as `peerweb` prints it. */
export function sas(fpSend, fpReceive) {
  const d = blake3(te.encode(`peerweb-transfer-v1 sas\n${fpSend}\n${fpReceive}`));
  const n = (d[0] * 2 ** 24 + (d[1] << 16) + (d[2] << 8) + d[3]) % 1000000;
  return `${String(Math.floor(n / 1000)).padStart(3, '0')} ${String(n % 1000).padStart(3, '0')}`;
}

const confirmText = (role, fpS, fpR) => `peerweb-transfer-v1 confirm\n${role}\n${fpS}\n${fpR}`;

export const linkKey = (secret) => Blake3.deriveKey('peerweb-transfer-v1 link key').update(secret).digest();

/**
 * Both descriptions' DTLS fingerprints, [local, remote]. A connection can open, and its first
 * messages arrive, before this thread has seen setRemoteDescription settle (Chromium delivers
 * channel events from its network thread): until both are there, wait for the signaling
 * state to change, at most `ms`.
 */
export async function fingerprints(pc, ms) {
  const read = () => [fingerprintOf(pc.localDescription?.sdp), fingerprintOf(pc.remoteDescription?.sdp)];
  if (read().every(Boolean)) return read();
  await new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('signalingstatechange', check);
      resolve();
    };
    const check = () => { if (read().every(Boolean)) done(); };
    const timer = setTimeout(done, ms);
    pc.addEventListener('signalingstatechange', check);
  });
  return read();
}

/**
 * Runs hello + confirm as `role` ('send' | 'receive') and returns the SAS. Of the secrets, a sender
 * has `{link, code}` and takes whichever the receiver names; a receiver has one of them.
 */
export async function handshake(wire, role, { link, code }) {
  const mine = { t: 'hello', v: 1, role };
  // A sender cannot know which secret the receiver holds, so it always starts SPAKE2.
  // SPAKE2 (and the curve library under it) is loaded only when a code is used.
  const pake = code
    ? new (await import('../transfer/spake2.js')).Spake2(role === 'send' ? 'A' : 'B', te.encode(code), ID_SEND, ID_RECEIVE)
    : null;
  if (pake) mine.pake = b64url(pake.message);
  if (role === 'receive') mine.auth = code ? 'code' : 'link';
  await wire.send(mine);
  const hello = await wire.control(STEP_MS);
  if (hello.t !== 'hello') throw new Error('the other side broke the handshake');
  if (hello.v !== 1) throw new Error(`the other side speaks transfer protocol v${hello.v}`);
  if (hello.role === role) throw new Error('both sides have the same role');
  if (role === 'send' && hello.auth !== 'link' && hello.auth !== 'code') {
    await wire.abort('receiver named no secret');
    throw new Error('the other side broke the handshake: it named no secret');
  }
  let key = null; // stays null after a failed SPAKE2: a wrong guess like any other
  if (!pake || (role === 'send' && hello.auth === 'link')) key = linkKey(link);
  else {
    const peerMsg = unb64url(hello.pake);
    if (!peerMsg) {
      await wire.abort('missing or malformed SPAKE2 message');
      throw new Error('the other side broke the handshake: missing or malformed SPAKE2 message');
    }
    try {
      key = Blake3.deriveKey('peerweb-transfer-v1 code key').update(pake.finish(peerMsg)).digest();
    } catch { /* not a point: our confirm carries nothing derived from the code */ }
  }
  const [local, remote] = await fingerprints(wire.peer.pc, STEP_MS);
  if (!local || !remote) throw new Error('no DTLS fingerprints for the peer');
  const [fpS, fpR] = role === 'send' ? [local, remote] : [remote, local];
  const theirs = role === 'send' ? 'receive' : 'send';
  await wire.send({ t: 'confirm', mac: key ? mac(key, confirmText(role, fpS, fpR)) : '0'.repeat(64) });
  const confirm = await wire.control(STEP_MS);
  if (confirm.t !== 'confirm' || !key || confirm.mac !== mac(key, confirmText(theirs, fpS, fpR))) {
    await wire.abort('verification failed: wrong code or link, or a man in the middle');
    throw new TrustError();
  }
  return sas(fpS, fpR);
}

// --- the channel ------------------------------------------------------------------------

/** Messages of one peer's default channel, in order, awaited one at a time. */
export class Wire {
  constructor(peer) {
    this.peer = peer;
    this.queue = [];
    this.waiter = null;
    this.error = null;
    peer.addEventListener('message', (ev) => {
      if (ev.channel.label !== 'peerweb') return;
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = null;
        w.resolve(ev.data);
      } else this.queue.push(ev.data);
    });
    peer.addEventListener('close', () => this.fail(new Error('the other side left')));
  }

  fail(e) {
    this.error ??= e;
    if (this.waiter) this.waiter.reject(e);
    this.waiter = null;
  }

  next(ms) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`the other side went quiet for ${ms / 1000} s`));
      }, ms);
      this.waiter = {
        resolve: (d) => { clearTimeout(t); resolve(d); },
        reject: (e) => { clearTimeout(t); reject(e); },
      };
    });
  }

  async control(ms) {
    const d = await this.next(ms);
    if (typeof d !== 'string') throw new Error('the other side sent data out of turn');
    return Wire.parse(d);
  }

  /** A control message; an abort becomes the error it announces. */
  static parse(text) {
    let m;
    try { m = JSON.parse(text); } catch { throw new Error('the other side sent a bad message'); }
    if (m?.t === 'refused') {
      // A camera's refusal (camera protocol): the visit is over.
      const e = new Error(`the camera refused: ${String(m.reason).slice(0, 256)}`);
      e.fromPeer = true;
      e.refused = true;
      throw e;
    }
    if (m?.t === 'abort') {
      const e = new Error(`the other side stopped: ${String(m.reason).slice(0, 512)}`);
      e.fromPeer = true;
      throw e;
    }
    return m;
  }

  send(msg) {
    return this.peer.defaultChannel.sendWhenReady(JSON.stringify(msg));
  }

  sendBinary(buf) {
    return this.peer.defaultChannel.sendWhenReady(buf);
  }

  /** Tells the other side why we stop (once), and gives the message a moment to leave. */
  async abort(reason) {
    if (this.aborted) return;
    this.aborted = true;
    const sent = this.send({ t: 'abort', reason: String(reason).slice(0, 512) }).catch(() => {});
    await Promise.race([sent, sleep(1000)]);
    const dc = this.peer.defaultChannel?.dc;
    for (let i = 0; i < 10 && dc?.bufferedAmount > 0; i++) await sleep(50);
    await sleep(200);
  }
}

/** The first peer whose default channel opens, with its Wire attached before any message. */
export function firstPeer(room, ms) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('nobody came')), ms);
    const adopt = (peer) => {
      const wire = new Wire(peer);
      const go = () => { clearTimeout(t); resolve(wire); };
      if (peer.open) go(); else peer.addEventListener('open', go, { once: true });
    };
    for (const p of room.peers.values()) adopt(p);
    room.addEventListener('peer', ({ peer }) => adopt(peer));
  });
}
