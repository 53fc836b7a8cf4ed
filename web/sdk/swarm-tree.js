// A file's BLAKE3 tree down to 16 KiB groups, for verified swarms: every group a page gets —
// from a peer or over HTTP — is checked against the file's id (its plain BLAKE3 root, what
// `b3sum` prints) before anything uses it. The same tree as crates/swarm/src/tree.rs (checked
// byte for byte in tests/browser/swarm-verify.test.mjs):
//
//   const tree = Tree.fromOutboard(size, rootHex, outboardBytes);   // throws if forged
//   tree.verify(index, groupBytes);                                 // throws TreeError if not
//
// A file of one group (16 KiB or less) is checked whole against its root; a larger one needs its
// outboard: the parent pairs (64 bytes: left and right chaining values) in pre-order, no header.

import { Blake3, mergeParent, toHex } from '../transfer/blake3.js';

export const GROUP = 16384;

export class TreeError extends Error {
  constructor(message, index = null) {
    super(message);
    this.name = 'TreeError';
    this.index = index;
  }
}

/** Groups in a file of `size` bytes (an empty file is one empty group). */
export function groups(size) {
  return Math.max(1, Math.ceil(size / GROUP));
}

/** Bytes of group `index` of a file of `size` bytes. */
export function groupLen(size, index) {
  return Math.max(0, Math.min(GROUP, size - index * GROUP));
}

/** Where a subtree of n ≥ 2 groups splits: the largest power of two below n. */
function split(n) {
  let p = 1;
  while (p * 2 < n) p *= 2;
  return p;
}

/** The chaining value of group `index`. */
export function groupCv(index, bytes) {
  return new Blake3().setInputOffset(index * GROUP).update(bytes).digestNonRoot();
}

function equal(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

function fromHex(hex) {
  if (typeof hex !== 'string' || !/^[0-9a-f]{64}$/.test(hex)) throw new TreeError('a root is 64 lowercase hex digits');
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export class Tree {
  constructor(size, root, leaves) {
    this.size = size;
    this.root = root;
    /** Each group's chaining value (empty for a one-group file). */
    this.leaves = leaves;
  }

  get groups() { return groups(this.size); }
  get rootHex() { return toHex(this.root); }

  /** The tree of bytes in memory (what a publisher computes; tests compare it with Rust's). */
  static of(bytes) {
    const n = groups(bytes.length);
    const root = new Blake3().update(bytes).digest();
    const leaves = [];
    if (n > 1) for (let g = 0; g < n; g++) leaves.push(groupCv(g, bytes.subarray(g * GROUP, (g + 1) * GROUP)));
    return new Tree(bytes.length, root, leaves);
  }

  /**
   * A tree from a file's size, root (hex or bytes) and outboard, checked pair by pair up to
   * the root; an outboard of the wrong length is refused before it is read.
   */
  static fromOutboard(size, root, outboard) {
    if (!Number.isSafeInteger(size) || size < 0) throw new TreeError(`bad size ${size}`);
    const r = typeof root === 'string' ? fromHex(root) : root;
    const n = groups(size);
    const want = (n - 1) * 64;
    if (outboard.length !== want) throw new TreeError(`an outboard for ${size} bytes has ${want} bytes, not ${outboard.length}`);
    if (n === 1) return new Tree(size, r, []);
    const leaves = [];
    let at = 0;
    // Pre-order, iteratively: each item is a subtree (its groups) and the value it must have.
    const todo = [[n, r, true]];
    while (todo.length) {
      const [count, expected, isRoot] = todo.pop();
      if (count === 1) { leaves.push(expected); continue; }
      const l = outboard.subarray(at, at + 32);
      const rr = outboard.subarray(at + 32, at + 64);
      at += 64;
      if (!equal(mergeParent(l, rr, isRoot), expected)) throw new TreeError('the outboard does not hash to the file\'s root');
      const left = split(count);
      // Right pushed first: the left subtree comes next in pre-order.
      todo.push([count - left, rr, false], [left, l, false]);
    }
    return new Tree(size, r, leaves);
  }

  /** Throws a TreeError unless `bytes` are exactly group `index` of this file. */
  verify(index, bytes) {
    const n = this.groups;
    if (!Number.isInteger(index) || index < 0 || index >= n) throw new TreeError(`group ${index} is out of the file (${n} groups)`, index);
    const want = groupLen(this.size, index);
    if (bytes.length !== want) throw new TreeError(`group ${index} has ${bytes.length} bytes where it should have ${want}`, index);
    const ok = n === 1 ? equal(new Blake3().update(bytes).digest(), this.root) : equal(groupCv(index, bytes), this.leaves[index]);
    if (!ok) throw new TreeError(`group ${index} does not match the file's tree`, index);
  }

  /** The outboard (pre-order parent pairs). */
  outboard() {
    const out = new Uint8Array((this.groups - 1) * 64);
    let at = 0;
    const walk = (lo, hi) => {
      if (hi - lo === 1) return this.leaves[lo];
      const mine = at;
      at += 64;
      const mid = lo + split(hi - lo);
      const l = walk(lo, mid);
      const r = walk(mid, hi);
      out.set(l, mine);
      out.set(r, mine + 32);
      return mergeParent(l, r, false);
    };
    if (this.groups > 1) walk(0, this.groups);
    return out;
  }
}
