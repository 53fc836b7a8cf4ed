// Call verification (docs/protocol.md, "Call verification"): ZRTP's idea over a data channel.
// Each side commits to a fresh random value before it sees the other's, then reveals it; the
// short authentication string (SAS) both people read aloud is derived from both values and
// both DTLS fingerprints, so a man in the middle who terminates DTLS towards each side gets
// a different SAS on each side and cannot search for a collision (he commits before he sees).
// A confirmed SAS leaves both sides a shared continuity key; the next call between the same
// two proves it with a MAC over the new transcript and is verified without reading anything.
//
// `Verifier` is the protocol without I/O: feed it the other side's messages, send what it
// returns. Keys are looked up and stored through the functions it is given.
import { Blake3, blake3, toHex } from '../transfer/blake3.js';

export const VERIFY_VERSION = 1;
/** Largest verification message accepted, in bytes of JSON text. */
export const MAX_MESSAGE = 4096;

const te = new TextEncoder();
const HEX32 = /^[0-9a-f]{64}$/;

/** `sha-256 AB:CD:…` from an SDP (algorithm lower case, digest upper case), or null. */
export function fingerprintOf(sdp) {
  const m = /a=fingerprint:(\S+) ([0-9A-Fa-f:]+)/.exec(sdp ?? '');
  return m ? `${m[1].toLowerCase()} ${m[2].toUpperCase()}` : null;
}

export function fromHex(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/**
 * The transcript both sides hash: both fingerprints in sorted order, each side's revealed
 * value in the order of its fingerprint.
 */
export function transcript(fpA, rA, fpB, rB) {
  const [lo, hi] = fpA < fpB ? [[fpA, rA], [fpB, rB]] : [[fpB, rB], [fpA, rA]];
  return te.encode(`${lo[0]}\n${hi[0]}\n${lo[1]}\n${hi[1]}`);
}

/** Three words (24 bits) of the SAS from a 256-word list. */
export function sasOf(t, words) {
  const d = Blake3.deriveKey('peerweb call v1 sas').update(t).digest();
  return [d[0], d[1], d[2]].map((b) => words[b]).join(' ');
}

/** The continuity key two sides keep once they confirmed the SAS of this transcript. */
export function continuityKey(t) {
  return toHex(Blake3.deriveKey('peerweb call v1 continuity').update(t).digest());
}

/** The proof that the side with fingerprint `fp` holds continuity key `key` (hex). */
export function proofOf(key, fp, t) {
  return toHex(Blake3.keyed(fromHex(key)).update(te.encode(`peerweb call v1 proof\n${fp}\n`)).update(t).digest());
}

/** Raised for a message that breaks the protocol: the exchange stops, nothing is verified. */
export class VerifyError extends Error {}

/**
 * One verification exchange between this side and one peer.
 *
 * States: `waiting` (exchanging), `compare` (show `sas`; the users compare it and call
 * `confirm(true|false)`), `verified` (by the users, or `by: 'continuity'`), `changed` (this
 * side kept a key for that identity and the other side could not prove it: SSH's "host key
 * changed"; the SAS is shown to compare again), `mismatch` (the users said the SAS differ),
 * `failed` (a broken message; `error` says which).
 *
 * `keyFor(identity)` → hex key or null (may be async); `random()` → 32 random bytes.
 */
export class Verifier {
  constructor({ localFp, remoteFp, identity, keyFor, words, random }) {
    if (!localFp || !remoteFp) throw new VerifyError('no DTLS fingerprints to verify');
    this.localFp = localFp;
    this.remoteFp = remoteFp;
    this.identity = identity;
    this.keyFor = keyFor;
    this.words = words;
    this.r = random();
    this.state = 'waiting';
    this.sas = null;
    this.by = null;
    this.error = null;
    /** The other side's long-lived identity (hex), once its commit arrived. */
    this.remoteIdentity = null;
    this._theirCommit = null;
    this._theirR = null;
    this._myKey = null;
    this._theirProof = undefined;
    this._t = null;
  }

  /** The first message: our commitment. */
  start() {
    return [{ t: 'commit', v: VERIFY_VERSION, id: this.identity, c: toHex(blake3(this.r)) }];
  }

  /**
   * Takes one message from the other side (raw JSON text); returns the messages to send.
   * A message that breaks the protocol puts the verifier in `failed` and throws VerifyError.
   */
  async receive(text) {
    if (['failed', 'mismatch'].includes(this.state)) return [];
    try {
      return await this._receive(text);
    } catch (e) {
      this.state = 'failed';
      this.error = e instanceof VerifyError ? e.message : `verification: ${e?.message ?? e}`;
      throw e instanceof VerifyError ? e : new VerifyError(this.error);
    }
  }

  async _receive(text) {
    if (typeof text !== 'string' || text.length > MAX_MESSAGE) throw new VerifyError('verification message is not text or too long');
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      throw new VerifyError('verification message is not JSON');
    }
    if (!m || typeof m !== 'object') throw new VerifyError('verification message is not an object');
    switch (m.t) {
      case 'commit': {
        if (m.v !== VERIFY_VERSION) throw new VerifyError(`the other side speaks call verification v${m.v}`);
        if (this._theirCommit !== null) throw new VerifyError('a second commitment (replayed or repeated)');
        if (typeof m.c !== 'string' || !HEX32.test(m.c)) throw new VerifyError('a malformed commitment');
        if (typeof m.id !== 'string' || !HEX32.test(m.id)) throw new VerifyError('a malformed identity');
        if (m.c === toHex(blake3(this.r))) throw new VerifyError('our own commitment came back (reflected)');
        this._theirCommit = m.c;
        this.remoteIdentity = m.id;
        this._myKey = (await this.keyFor(m.id)) ?? null;
        // Only now, with their value fixed, is ours revealed.
        return [{ t: 'reveal', r: toHex(this.r) }];
      }
      case 'reveal': {
        if (this._theirCommit === null) throw new VerifyError('a reveal before its commitment');
        if (this._theirR !== null) throw new VerifyError('a second reveal (replayed or repeated)');
        if (typeof m.r !== 'string' || !HEX32.test(m.r)) throw new VerifyError('a malformed reveal');
        if (toHex(blake3(fromHex(m.r))) !== this._theirCommit) throw new VerifyError('the reveal does not match its commitment');
        this._theirR = m.r;
        this._t = transcript(this.localFp, toHex(this.r), this.remoteFp, m.r);
        this.sas = sasOf(this._t, this.words);
        const proof = this._myKey ? proofOf(this._myKey, this.localFp, this._t) : null;
        const out = [{ t: 'proof', mac: proof }];
        if (this._theirProof !== undefined) this._settle();
        return out;
      }
      case 'proof': {
        if (this._theirProof !== undefined) throw new VerifyError('a second proof (replayed or repeated)');
        if (m.mac !== null && (typeof m.mac !== 'string' || !HEX32.test(m.mac))) throw new VerifyError('a malformed proof');
        this._theirProof = m.mac;
        if (this._t) this._settle();
        return [];
      }
      default:
        // Other messages share the channel (call state) or come from a newer version.
        return [];
    }
  }

  /** Both values and the other side's proof are in: verified by continuity, or compare. */
  _settle() {
    if (!this._myKey) {
      this.state = 'compare';
      return;
    }
    const want = proofOf(this._myKey, this.remoteFp, this._t);
    if (this._theirProof === want) {
      this.state = 'verified';
      this.by = 'continuity';
    } else {
      this.state = 'changed';
    }
  }

  /**
   * The users compared the SAS: `true` when it matched. Returns the continuity key to keep
   * for `remoteIdentity` (hex), or null.
   */
  confirm(matches) {
    if (!['compare', 'changed'].includes(this.state)) return null;
    if (!matches) {
      this.state = 'mismatch';
      return null;
    }
    this.state = 'verified';
    this.by = 'sas';
    return continuityKey(this._t);
  }
}
