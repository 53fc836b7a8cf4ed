// SPAKE2 over Ed25519, run exactly as the Rust `spake2` crate that `peerweb send` uses (the
// python-spake2 / magic-wormhole variant), so a browser and the CLI agree on a key from a short
// code. The group arithmetic, SHA-256 and HKDF come from @noble/curves and @noble/hashes
// (audited, pinned in web/package-lock.json, served by peerweb under /vendor/); this file only
// fixes the protocol: its constants, message layout and transcript.
//
//   A: X = x·B + pw·M      B: Y = y·B + pw·N      (messages: side byte 'A'/'B' + 32 bytes)
//   A: K = x·(Y − pw·N)    B: K = y·(X − pw·M)
//   key = SHA-256(SHA-256(pw) ‖ SHA-256(idA) ‖ SHA-256(idB) ‖ X ‖ Y ‖ K)
import { ed25519 } from '@noble/curves/ed25519.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { hkdf } from '@noble/hashes/hkdf.js';

const Point = ed25519.Point;
const ORDER = Point.Fn.ORDER;
// The crate's blinding points (fixed by python-spake2: points with unknown discrete logs).
const M = Point.fromHex('15cfd18e385952982b6a8f8c7854963b58e34388c8e6dae891db756481a02312');
const N = Point.fromHex('f04f2e7eb734b2a8f8b472eaf9c3c632576ac64aea650b496a8a20ff00e583c3');
const SIDE = { A: 0x41, B: 0x42 };
const te = new TextEncoder();

function bigBE(bytes) {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

/** The password as a scalar: HKDF-SHA256(ikm = pw, salt = "", info = "SPAKE2 pw", 48 bytes), mod ℓ. */
export function passwordScalar(password) {
  return bigBE(hkdf(sha256, password, new Uint8Array(0), te.encode('SPAKE2 pw'), 48)) % ORDER;
}

/** The key from both messages' points and the shared point (the crate's `hash_ab`). */
export function transcriptKey(password, idA, idB, xMsg, yMsg, kBytes) {
  const t = new Uint8Array(6 * 32);
  [sha256(password), sha256(idA), sha256(idB), xMsg, yMsg, kBytes].forEach((part, i) => t.set(part, 32 * i));
  return sha256(t);
}

function randomScalar() {
  // 64 random bytes reduced mod ℓ: uniform to within 2^-250; never zero.
  const n = bigBE(crypto.getRandomValues(new Uint8Array(64))) % ORDER;
  return n === 0n ? 1n : n;
}

/** One side of an exchange: `message` goes to the peer, `finish(theirs)` gives the 32-byte key. */
export class Spake2 {
  /**
   * @param {'A'|'B'} side
   * @param {Uint8Array} password  @param {Uint8Array} idA  @param {Uint8Array} idB
   * @param {bigint} [scalar] our secret scalar (tests only; random otherwise)
   */
  constructor(side, password, idA, idB, scalar = randomScalar()) {
    if (side !== 'A' && side !== 'B') throw new Error('SPAKE2 side is A or B');
    this.side = side;
    this.password = password;
    this.ids = [idA, idB];
    this.scalar = scalar;
    this.pw = passwordScalar(password);
    const blind = side === 'A' ? M : N;
    this.point = Point.BASE.multiply(scalar).add(blind.multiplyUnsafe(this.pw)).toBytes();
    this.message = new Uint8Array([SIDE[side], ...this.point]);
  }

  /** Throws on a message of the wrong side, length or not a point. */
  finish(theirs) {
    const other = this.side === 'A' ? 'B' : 'A';
    if (!(theirs instanceof Uint8Array) || theirs.length !== 33) throw new Error('SPAKE2 message has the wrong length');
    if (theirs[0] !== SIDE[other]) throw new Error('SPAKE2 message is from the wrong side');
    const body = theirs.subarray(1);
    const peer = Point.fromBytes(body);
    const unblind = this.side === 'A' ? N : M;
    const k = peer.subtract(unblind.multiplyUnsafe(this.pw)).multiplyUnsafe(this.scalar).toBytes();
    const [x, y] = this.side === 'A' ? [this.point, body] : [body, this.point];
    return transcriptKey(this.password, this.ids[0], this.ids[1], x, y, k);
  }
}
