// The swarm wire protocol (v1) and one neighbour's link, as crates/swarm/src/wire.rs and link.rs
// have them (docs/protocol.md, "Swarm wire protocol"): binary messages, every length and range
// checked against the file's size; requests both ways, an upload allowance per neighbour, and a
// group accepted only when it was asked for and verifies against the file's tree.

import { GROUP, groups, groupLen, TreeError } from './swarm-tree.js';

export const VERSION = 1;
export const MAX_RANGE = 64;
export const MAX_BITFIELD_BYTES = 16384;
export const MAX_MESSAGE = 9 + GROUP;
export const MAX_INBOUND = 256;
export const MAX_OUTSTANDING = 32;
const MAX_CANCELLED = 256;

export const T = {
  HELLO: 1, HAVE_ALL: 2, BITFIELD: 3, HAVE: 4, REQUEST: 5, DATA: 6, CANCEL: 7, REJECT: 8, CHOKE: 9, UNCHOKE: 10, FETCHING: 11,
};
const NAMES = ['', 'hello', 'have-all', 'bitfield', 'have', 'request', 'data', 'cancel', 'reject', 'choke', 'unchoke', 'fetching'];

/** A neighbour broke the protocol, or (`bad`) sent a group that failed verification. */
export class LinkError extends Error {
  constructor(message, bad = null) {
    super(message);
    this.name = 'LinkError';
    this.bad = bad;
  }
}

function msg(type, size) {
  const b = new Uint8Array(1 + size);
  b[0] = type;
  return [b, new DataView(b.buffer)];
}

const u64 = (v, o) => Number(v.getBigUint64(o, true));

export const encode = {
  hello(root, size) {
    const [b, v] = msg(T.HELLO, 41);
    b[1] = VERSION;
    b.set(root, 2);
    v.setBigUint64(34, BigInt(size), true);
    return b;
  },
  haveAll: () => Uint8Array.of(T.HAVE_ALL),
  bitfield(first, bits) {
    const [b, v] = msg(T.BITFIELD, 8 + bits.length);
    v.setBigUint64(1, BigInt(first), true);
    b.set(bits, 9);
    return b;
  },
  have(group) {
    const [b, v] = msg(T.HAVE, 8);
    v.setBigUint64(1, BigInt(group), true);
    return b;
  },
  request(first, count, deadlineMs) {
    const [b, v] = msg(T.REQUEST, 16);
    v.setBigUint64(1, BigInt(first), true);
    v.setUint32(9, count, true);
    v.setUint32(13, Math.min(deadlineMs, 0xffffffff), true);
    return b;
  },
  data(group, bytes) {
    const [b, v] = msg(T.DATA, 8 + bytes.length);
    v.setBigUint64(1, BigInt(group), true);
    b.set(bytes, 9);
    return b;
  },
  range(type, first, count) {
    const [b, v] = msg(type, 12);
    v.setBigUint64(1, BigInt(first), true);
    v.setUint32(9, count, true);
    return b;
  },
  choke(retryMs) {
    const [b, v] = msg(T.CHOKE, 4);
    v.setUint32(1, retryMs, true);
    return b;
  },
  unchoke: () => Uint8Array.of(T.UNCHOKE),
};

/** Reads one message of a link sharing a file of `size` bytes; throws LinkError. */
export function decode(b, size) {
  if (!(b instanceof Uint8Array)) b = new Uint8Array(b);
  if (b.length === 0) throw new LinkError('empty message');
  if (b.length > MAX_MESSAGE) throw new LinkError(`message of ${b.length} bytes`);
  const type = b[0];
  const body = b.length - 1;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const n = groups(size);
  const exact = (want) => { if (body !== want) throw new LinkError(`${NAMES[type] ?? type} has ${body} bytes, not ${want}`); };
  const range = (first, count) => {
    if (count === 0 || count > MAX_RANGE || first >= n || count > n - first) throw new LinkError(`groups ${first}+${count} are not a range of this file`);
  };
  switch (type) {
    case T.HELLO: exact(41); return { type, version: b[1], root: b.subarray(2, 34), size: u64(v, 34) };
    case T.HAVE_ALL: exact(0); return { type };
    case T.BITFIELD: {
      if (body < 9) throw new LinkError('short bitfield');
      const first = u64(v, 1);
      const bits = b.subarray(9);
      const end = first + bits.length * 8;
      const spare = Math.max(0, end - n);
      const fits = first % 8 === 0 && bits.length <= MAX_BITFIELD_BYTES && first < n
        && bits.length <= Math.ceil((n - first) / 8) && (spare === 0 || (bits[bits.length - 1] & ((1 << spare) - 1)) === 0);
      if (!fits) throw new LinkError(`a bitfield from group ${first} of ${bits.length} bytes does not fit the file`);
      return { type, first, bits };
    }
    case T.HAVE: { exact(8); const group = u64(v, 1); range(group, 1); return { type, group }; }
    case T.REQUEST: {
      exact(16);
      const first = u64(v, 1); const count = v.getUint32(9, true);
      range(first, count);
      return { type, first, count, deadlineMs: v.getUint32(13, true) };
    }
    case T.DATA: {
      if (body < 8) throw new LinkError('short data');
      const group = u64(v, 1);
      range(group, 1);
      const bytes = b.subarray(9);
      if (bytes.length !== groupLen(size, group)) throw new LinkError(`group ${group} has ${bytes.length} bytes`);
      return { type, group, bytes };
    }
    case T.CANCEL: case T.REJECT: case T.FETCHING: {
      exact(12);
      const first = u64(v, 1); const count = v.getUint32(9, true);
      range(first, count);
      return { type, first, count };
    }
    case T.CHOKE: exact(4); return { type, retryMs: v.getUint32(1, true) };
    case T.UNCHOKE: exact(0); return { type };
    default: throw new LinkError(`unknown message type ${type}`);
  }
}

/** Which groups a peer has: a bit per group, most significant first. */
export class Have {
  constructor(size) {
    this.groups = groups(size);
    this.bits = new Uint8Array(Math.ceil(this.groups / 8));
    this.count = 0;
  }

  static all(size) {
    const h = new Have(size);
    for (let g = 0; g < h.groups; g++) h.set(g);
    return h;
  }

  get complete() { return this.count === this.groups; }
  has(g) { return g < this.groups && (this.bits[g >> 3] & (0x80 >> (g & 7))) !== 0; }

  set(g) {
    if (g >= this.groups || this.has(g)) return false;
    this.bits[g >> 3] |= 0x80 >> (g & 7);
    this.count += 1;
    return true;
  }

  merge(first, bits) {
    for (let i = 0; i < bits.length; i++) {
      if (!bits[i]) continue;
      for (let j = 0; j < 8; j++) if (bits[i] & (0x80 >> j)) this.set(first + i * 8 + j);
    }
  }

  /**
   * Messages announcing `news` (groups just set): a `have` each for one or two, else
   * bitfields over their span (one message where there would be hundreds).
   */
  announceNew(news) {
    if (news.length <= 2) return news.map((g) => encode.have(g));
    if (this.complete) return [encode.haveAll()];
    let lo = Infinity;
    let hi = 0;
    for (const g of news) { lo = Math.min(lo, g >> 3); hi = Math.max(hi, (g >> 3) + 1); }
    const out = [];
    for (let at = lo; at < hi; at += MAX_BITFIELD_BYTES) {
      out.push(encode.bitfield(at * 8, this.bits.slice(at, Math.min(hi, at + MAX_BITFIELD_BYTES))));
    }
    return out;
  }

  announce() {
    if (this.complete) return [encode.haveAll()];
    const out = [];
    for (let at = 0; at < this.bits.length; at += MAX_BITFIELD_BYTES) {
      const piece = this.bits.subarray(at, at + MAX_BITFIELD_BYTES);
      if (piece.some((x) => x)) out.push(encode.bitfield(at * 8, piece));
    }
    return out;
  }
}

/** Sorted groups as runs [first, count] of at most `limit`. */
export function runs(list, limit = MAX_RANGE) {
  const out = [];
  for (const g of list) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === g && last[1] < limit) last[1] += 1;
    else out.push([g, 1]);
  }
  return out;
}

/**
 * One neighbour. `upload`: `{rate, budget}` — bytes per second (null: no cap, 0: nothing) and
 * bytes in all (null: no budget). Times are `performance.now()` milliseconds.
 */
export class Link {
  constructor(now, root, size, upload) {
    this.root = root;
    this.size = size;
    this.upload = upload;
    this.hello = false;
    this.remote = new Have(size);
    this.inbound = [];
    /** group → give-up time */
    this.asked = new Map();
    this.cancelled = [];
    this.chokedUntil = null;
    this.choking = false;
    this.tokens = burst(upload);
    this.tokensAt = now;
    this.uploaded = 0;
    this.downloaded = 0;
    this.out = [];
  }

  start(local) {
    const out = [encode.hello(this.root, this.size), ...local.announce()];
    if (this.upload.rate === 0) {
      this.choking = true;
      out.push(encode.choke(0xffffffff));
    }
    return out;
  }

  takeOut() { const o = this.out; this.out = []; return o; }
  canAsk(now) { return this.hello && this.asked.size < MAX_OUTSTANDING && (this.chokedUntil === null || now >= this.chokedUntil); }

  /**
   * Reads one message. Returns null or an event: `{has}`, `{verified: group, bytes}`,
   * `{lost: [groups]}`, `{fetching: [first, count]}`. Throws LinkError (with `bad` set for a
   * group that failed verification).
   */
  receive(now, bytes, tree, local) {
    const m = decode(bytes, this.size);
    if (!this.hello && m.type !== T.HELLO) throw new LinkError(`${NAMES[m.type]} before hello`);
    switch (m.type) {
      case T.HELLO:
        if (m.version !== VERSION) throw new LinkError(`swarm protocol version ${m.version}`);
        if (m.size !== this.size || !m.root.every((x, i) => x === this.root[i])) throw new LinkError('the neighbour shares another file');
        this.hello = true;
        return null;
      case T.HAVE_ALL: this.remote = Have.all(this.size); return { has: true };
      case T.BITFIELD: this.remote.merge(m.first, m.bits); return { has: true };
      case T.HAVE: this.remote.set(m.group); return { has: true };
      case T.REQUEST: {
        const refused = [];
        for (let g = m.first; g < m.first + m.count; g++) {
          if (!local.has(g) || this.choking) refused.push(g);
          else if (!this.inbound.includes(g)) {
            // A neighbour keeps at most MAX_OUTSTANDING asked: a full queue is a flood.
            if (this.inbound.length >= MAX_INBOUND) throw new LinkError(`the neighbour asked for more than ${MAX_INBOUND} groups at once`);
            this.inbound.push(g);
          }
        }
        for (const [f, c] of runs(refused)) this.out.push(encode.range(T.REJECT, f, c));
        return null;
      }
      case T.DATA: {
        if (!this.asked.delete(m.group)) {
          const i = this.cancelled.indexOf(m.group);
          if (i >= 0) { this.cancelled.splice(i, 1); return null; }
          throw new LinkError(`group ${m.group} was not asked for`);
        }
        try {
          tree.verify(m.group, m.bytes);
        } catch (e) {
          if (e instanceof TreeError) throw new LinkError(`group ${m.group} failed verification`, m.group);
          throw e;
        }
        this.downloaded += m.bytes.length;
        return { verified: m.group, bytes: m.bytes };
      }
      case T.CANCEL:
        this.inbound = this.inbound.filter((g) => g < m.first || g >= m.first + m.count);
        return null;
      case T.REJECT: {
        const lost = [];
        for (let g = m.first; g < m.first + m.count; g++) if (this.asked.delete(g)) lost.push(g);
        return { lost };
      }
      case T.CHOKE: {
        this.chokedUntil = now + m.retryMs;
        const lost = [...this.asked.keys()].sort((a, b) => a - b);
        this.asked.clear();
        return { lost };
      }
      case T.UNCHOKE: this.chokedUntil = null; return null;
      case T.FETCHING: return { fetching: [m.first, m.count] };
      default: return null;
    }
  }

  ask(now, first, count, withinMs) {
    count = Math.min(count, MAX_RANGE);
    for (let g = first; g < first + count; g++) this.asked.set(g, now + withinMs);
    return encode.request(first, count, withinMs);
  }

  cancel(group) {
    if (!this.asked.delete(group)) return null;
    if (this.cancelled.length >= MAX_CANCELLED) this.cancelled.shift();
    this.cancelled.push(group);
    return encode.range(T.CANCEL, group, 1);
  }

  /** Requests past their time: [late groups, messages to send]. */
  expire(now) {
    const late = [...this.asked].filter(([, t]) => now >= t).map(([g]) => g).sort((a, b) => a - b);
    return [late, late.map((g) => this.cancel(g)).filter(Boolean)];
  }

  /** The next group to upload: a number, `{wait: ms}`, or null. */
  serve(now) {
    if (this.inbound.length === 0) return null;
    const g = this.inbound[0];
    const len = groupLen(this.size, g);
    if (this.upload.budget != null && this.uploaded + len > this.upload.budget) {
      for (const [f, c] of runs(this.inbound.splice(0).sort((a, b) => a - b))) this.out.push(encode.range(T.REJECT, f, c));
      if (!this.choking) { this.choking = true; this.out.push(encode.choke(0xffffffff)); }
      return null;
    }
    const rate = this.upload.rate;
    if (rate == null) { this.inbound.shift(); return g; }
    if (rate === 0) return null;
    this.tokens = Math.min(burst(this.upload), this.tokens + ((now - this.tokensAt) * rate) / 1000);
    this.tokensAt = now;
    if (this.tokens >= len) { this.tokens -= len; this.inbound.shift(); return g; }
    return { wait: ((len - this.tokens) * 1000) / rate };
  }

  data(group, bytes) {
    this.uploaded += bytes.length;
    return encode.data(group, bytes);
  }
}

function burst(u) {
  return u.rate == null ? 0 : Math.max(u.rate, GROUP);
}
