// Private file transfer in the browser: the same protocol v1 as `peerweb send` / `peerweb
// receive` (docs/protocol.md, "File transfer"), by link (a 128-bit secret in the URL's
// fragment) or by short code (SPAKE2). The handshake is /sdk/trust.js: both sides bind both
// DTLS fingerprints to the secret before any file name or byte moves; a substituted
// fingerprint (a man in the middle at the signaling server) fails verification. The chunk
// checks are BLAKE3, with no WebCrypto needed.
import { join as sdkJoin } from '/sdk/peerweb.js';
import { pageAuth } from '/auth.js';
import { base32, firstPeer, handshake } from '/sdk/trust.js';
import { Blake3, blake3, toHex } from './blake3.js';
import { WORDS } from './words.js';
// SPAKE2 is loaded with the page, not when a code is first used: the transfer pages need it in
// most runs, and a part that fails to load must show at once (the page's script onerror).
import './spake2.js';

export { parseCode, parseFragment, sas, TrustError } from '/sdk/trust.js';

/** Joins `room`, with a token from the page password on a server that requires one. */
async function join(server, room) {
  return sdkJoin(server, room, await pageAuth(room, server));
}

export const CHUNK = 60 * 1024;
const HEADER = 4 + 8 + 32;
const FILES_PER_MESSAGE = 256;
const MAX_FILES = 100000;
const MAX_BYTES = 2 ** 44;
const STEP_MS = 30000;
const STALL_MS = 30000;
/** Bytes read from a File at a time when sending. */
const READ_AHEAD = 16 * CHUNK;
const te = new TextEncoder();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function makeCode(nameplate) {
  const [a, b] = crypto.getRandomValues(new Uint8Array(2));
  return `${nameplate}-${WORDS[a]}-${WORDS[b]}`;
}

export function makeLink(origin, nameplate, secret) {
  return `${origin}/receive#${nameplate}-${base32(secret)}`;
}

function pathText(peer) {
  const p = peer.path;
  if (!p) return null;
  return p.type === 'relay' ? 'relayed' : 'direct';
}

// --- names --------------------------------------------------------------------------------

/** The file name to save under: the last safe component of the sender's path. */
export function saveName(path) {
  const parts = String(path).split(/[\\/]/).filter((c) => c && c !== '.' && c !== '..');
  // eslint-disable-next-line no-control-regex
  let name = (parts.pop() ?? '').replace(/[\u0000-\u001f\u007f<>:"|?*]/g, '_').replace(/[. ]+$/, '').trim();
  if (!name) name = 'file';
  if (/^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$/i.test(name)) name = `_${name}`;
  return name.slice(0, 255);
}

// --- storage -------------------------------------------------------------------------------

const STORE_DIR = 'peerweb-received';
/** Written bytes of a file kept for resuming this long after its last write. */
const KEEP_PARTIAL_MS = 7 * 24 * 3600 * 1000;
/** Verified files (the pages' save links point at them) kept this long. */
const KEEP_DONE_MS = 24 * 3600 * 1000;
/** Writes in flight to the writer worker. */
const WRITES_AHEAD = 16;

/** Where a file stages: the same key as `peerweb receive` (its path and whole-file BLAKE3). */
const stageKey = (f) => toHex(blake3(te.encode(`${f.path}\0${f.hash}`))).slice(0, 32);

/** A worker that writes in place (writer.js); each call resolves with the worker's answer. */
function startWriter() {
  const worker = new Worker(new URL('./writer.js', import.meta.url), { type: 'module' });
  const waiting = new Map();
  let next = 0;
  let broken = null;
  worker.onmessage = ({ data }) => {
    const w = waiting.get(data.id);
    waiting.delete(data.id);
    if (data.error) w?.reject(new Error(`cannot store the file: ${data.error}`));
    else w?.resolve(data);
  };
  worker.onerror = (e) => {
    broken = new Error(`the storage worker failed: ${e.message}`);
    for (const w of waiting.values()) w.reject(broken);
    waiting.clear();
  };
  return {
    call(msg, transfer = []) {
      if (broken) return Promise.reject(broken);
      const id = next++;
      return new Promise((resolve, reject) => {
        waiting.set(id, { resolve, reject });
        worker.postMessage({ id, ...msg }, transfer);
      });
    },
    stop: () => worker.terminate(),
  };
}

/**
 * Where received files go: the origin-private file system, written in place by a worker (memory
 * stays flat, and a transfer cut off resumes from what is on disk); where the browser withholds
 * it (plain-http pages), memory, without resume. `resumeFrom(files)` → bytes already here per
 * file (whole chunks); `open(f, from, hasher)` → writer with write(frame, offset) (takes the
 * ArrayBuffer over), close() → File, discard().
 */
async function openStore() {
  let dir = null;
  let writer = null;
  try {
    dir = await (await navigator.storage.getDirectory()).getDirectoryHandle(STORE_DIR, { create: true });
    writer = startWriter();
    await writer.call({ op: 'probe' });
  } catch {
    // No OPFS here, or no sync access handles in its workers.
    writer?.stop();
    dir = null;
  }
  if (!dir) {
    return {
      onDisk: false,
      resumeFrom: (files) => files.map(() => 0),
      async open(f) {
        const parts = [];
        return {
          write: async (frame, offset) => { parts.push(new Uint8Array(frame, offset).slice()); },
          close: async () => new File(parts, f.name),
          discard: async () => { parts.length = 0; },
        };
      },
      stop() {},
    };
  }
  // Old leftovers go: verified files after a day, partial ones after a week.
  const now = Date.now();
  for await (const [name, h] of dir.entries()) {
    if (h.kind !== 'file') continue;
    const age = now - (await h.getFile()).lastModified;
    if (age > (name.endsWith('.part') ? KEEP_PARTIAL_MS : KEEP_DONE_MS)) await dir.removeEntry(name).catch(() => {});
  }
  return {
    onDisk: true,
    // `.part` while arriving, `.done` once verified (a transfer cut off after it skips it).
    async resumeFrom(files) {
      const from = [];
      for (const f of files) {
        const size = async (ext) => (await (await dir.getFileHandle(`${stageKey(f)}.${ext}`)).getFile()).size;
        if ((await size('done').catch(() => -1)) === f.size) from.push(f.size);
        else from.push(Math.min(f.size, Math.floor((await size('part').catch(() => 0)) / CHUNK) * CHUNK));
      }
      return from;
    },
    /** Feeds the first `from` bytes (already here) to `hasher`, then opens for the rest. */
    async open(f, from, hasher) {
      const key = stageKey(f);
      const whole = from === f.size && (await dir.getFileHandle(`${key}.done`).then(() => true, () => false));
      const name = `${key}.${whole ? 'done' : 'part'}`;
      const handle = await dir.getFileHandle(name, { create: true });
      const file = await handle.getFile();
      for (let pos = 0; pos < from; pos += 4 << 20) {
        hasher.update(new Uint8Array(await file.slice(pos, Math.min(from, pos + (4 << 20))).arrayBuffer()));
      }
      // The worker's handle locks the file, so it opens only after the read above.
      await writer.call({ op: 'open', dir: STORE_DIR, name, size: from });
      return {
        pending: [],
        at: from,
        async write(frame, offset) {
          const length = frame.byteLength - offset;
          this.pending.push(writer.call({ op: 'write', at: this.at, data: frame, offset }, [frame]));
          this.at += length;
          if (this.pending.length >= WRITES_AHEAD) await this.pending.shift();
        },
        async close() {
          await Promise.all(this.pending);
          await writer.call({ op: 'close' });
          if (!whole) await handle.move(`${key}.done`).catch(() => {});
          return handle.getFile();
        },
        async discard() {
          await Promise.allSettled(this.pending);
          await writer.call({ op: 'close' }).catch(() => {});
          await dir.removeEntry(name).catch(() => {});
        },
      };
    },
    stop: () => writer.stop(),
  };
}

// --- receive ------------------------------------------------------------------------------

/**
 * Receives by link (`secret`, 16 bytes) or by `code` (as parseCode gives it). `ui` callbacks:
 * state(name), verified({sas, path}), offer(files, bytes) → Promise<boolean>, progress(done,
 * total), done(results). Results: [{path, name, size, blake3, file: File}].
 */
export async function receive({ server, nameplate, secret, code, ui, waitMs = 15000 }) {
  ui.state?.('joining');
  const room = await join(server, `transfer-${nameplate}`);
  let wire = null;
  try {
    wire = await firstPeer(room, waitMs).catch(() => {
      throw new Error(`nobody is sending with this ${code ? 'code' : 'link'} (expired, or already used)`);
    });
    ui.state?.('verifying');
    const shown = await handshake(wire, 'receive', code ? { code } : { link: secret });
    ui.verified?.({ sas: shown, path: pathText(wire.peer) });
    const files = [];
    let total = 0;
    for (;;) {
      const m = await wire.control(STEP_MS);
      if (m.t === 'files' && Array.isArray(m.files) && m.files.length <= FILES_PER_MESSAGE) {
        for (const f of m.files) {
          if (typeof f?.path !== 'string' || f.path.length > 4096 || !Number.isSafeInteger(f.size)
            || f.size < 0 || !/^[0-9a-f]{64}$/.test(f.hash ?? '')) throw new Error('the sender sent a bad file list');
          total += f.size;
          files.push({ path: f.path, size: f.size, hash: f.hash, name: saveName(f.path) });
        }
        if (files.length > MAX_FILES || total > MAX_BYTES) throw new Error('the sender offered too much');
      } else if (m.t === 'offer') {
        if (m.files !== files.length || m.bytes !== total) throw new Error('the offer does not match its file list');
        break;
      } else throw new Error('the sender broke the protocol');
    }
    ui.state?.('offered');
    const results = [];
    if (!(await ui.offer(files, total))) {
      await wire.send({ t: 'decline' });
      ui.state?.('declined');
      return [];
    }
    const store = await openStore();
    try {
      // Whatever an earlier, cut-off transfer of the same files left here is not sent again.
      const from = await store.resumeFrom(files);
      const resumed = from.reduce((a, b) => a + b, 0);
      ui.storage?.(store.onDisk ? 'disk' : 'memory');
      if (store.onDisk && navigator.storage.estimate) {
        const { quota, usage } = await navigator.storage.estimate();
        if (quota - usage < total - resumed) {
          await wire.abort('the receiver has no room for the files');
          throw new Error(`not enough room in this browser's storage: ${total - resumed} bytes needed, ${quota - usage} free`);
        }
      }
      await wire.send({ t: 'accept', from: files.map((f, i) => [i, Math.ceil(from[i] / CHUNK)]) });
      ui.state?.('receiving');
      let done = resumed;
      const started = performance.now();
      for (let i = 0; i < files.length; i++) {
        const f = files[i];
        const whole = new Blake3();
        const out = await store.open(f, from[i], whole);
        const chunks = Math.ceil(f.size / CHUNK);
        for (let c = Math.ceil(from[i] / CHUNK); c < chunks; c++) {
          const d = await wire.next(STALL_MS);
          if (typeof d === 'string') {
            Wire.parse(d);
            throw new Error('the sender broke the protocol');
          }
          const frame = new Uint8Array(d);
          if (frame.length < HEADER) throw new Error('a chunk frame is too short');
          const v = new DataView(d);
          const file = v.getUint32(0);
          const index = v.getUint32(4) * 2 ** 32 + v.getUint32(8);
          const payload = frame.subarray(HEADER);
          const want = Math.min(CHUNK, f.size - c * CHUNK);
          if (file !== i || index !== c || payload.length !== want) throw new Error(`chunk ${file}/${index} where ${i}/${c} was due`);
          if (toHex(blake3(payload)) !== toHex(frame.subarray(12, HEADER))) throw new Error(`chunk ${c} of ${f.name} does not match its BLAKE3 hash`);
          whole.update(payload);
          done += payload.length;
          await out.write(d, HEADER); // hands `d` over: no use of it after this
          ui.progress?.(done, total, (performance.now() - started) / 1000, resumed);
        }
        const got = whole.hex();
        if (got !== f.hash) {
          await out.discard();
          throw new Error(`${f.name} does not match its BLAKE3 hash`);
        }
        results.push({ path: f.path, name: f.name, size: f.size, blake3: got, file: await out.close() });
      }
      await wire.send({ t: 'done' });
      const seconds = (performance.now() - started) / 1000;
      ui.done?.(results, { bytes: total, resumed, seconds, path: pathText(wire.peer) });
    } finally {
      store.stop();
    }
    // Let the last message leave before the connection closes.
    await sleep(500);
    return results;
  } catch (e) {
    // Say why, so the other side stops now rather than at its timeout.
    if (wire && !e.fromPeer) await wire.abort(e.message ?? e);
    throw e;
  } finally {
    room.leave();
  }
}

// --- send ---------------------------------------------------------------------------------

/** BLAKE3 of a File, read in pieces. */
export async function hashFile(file, onBytes) {
  const h = new Blake3();
  for (let pos = 0; pos < file.size; pos += 4 << 20) {
    const buf = new Uint8Array(await file.slice(pos, pos + (4 << 20)).arrayBuffer());
    h.update(buf);
    onBytes?.(buf.length);
  }
  return h.hex();
}

/**
 * Sends `items` ([{file: File, path}]) to the first receiver that proves it holds the link or
 * the code; one try: a receiver that fails verification ends it (a guesser gets one guess).
 * `ui` callbacks: state(name), link(url, code), verified({sas, path}), progress(done, total),
 * done({bytes, seconds, path}).
 */
export async function send({ server, items, ui, origin = location.origin, expireMs = 600000 }) {
  ui.state?.('hashing');
  let hashed = 0;
  const total = items.reduce((s, it) => s + it.file.size, 0);
  const entries = [];
  for (const it of items) {
    entries.push({ path: it.path, size: it.file.size, hash: await hashFile(it.file, (n) => ui.hashing?.(hashed += n, total)) });
  }
  const secret = crypto.getRandomValues(new Uint8Array(16));
  let room = null;
  let nameplate = 0;
  for (let tries = 0; tries < 8 && !room; tries++) {
    nameplate = 1 + (crypto.getRandomValues(new Uint16Array(1))[0] % 999);
    const r = await join(server, `transfer-${nameplate}`);
    if (r.peers.size === 0) room = r; else r.leave();
  }
  if (!room) throw new Error('no free code on the server; try again');
  let wire = null;
  try {
    const code = makeCode(nameplate);
    ui.link?.(makeLink(origin, nameplate, secret), code);
    ui.state?.('waiting');
    wire = await firstPeer(room, expireMs).catch(() => { throw new Error('the code and link expired with nobody receiving'); });
    ui.state?.('verifying');
    const shown = await handshake(wire, 'send', { link: secret, code });
    ui.verified?.({ sas: shown, path: pathText(wire.peer) });
    for (let i = 0; i < entries.length; i += FILES_PER_MESSAGE) {
      await wire.send({ t: 'files', files: entries.slice(i, i + FILES_PER_MESSAGE) });
    }
    await wire.send({ t: 'offer', files: entries.length, bytes: total });
    ui.state?.('offered');
    const answer = await wire.control(expireMs);
    if (answer.t === 'decline') throw new Error('the receiver declined');
    if (answer.t !== 'accept' || !Array.isArray(answer.from) || answer.from.length !== entries.length) {
      await wire.abort('bad accept');
      throw new Error('the receiver broke the protocol');
    }
    const from = new Array(entries.length).fill(-1);
    for (const [i, c] of answer.from) {
      if (!Number.isInteger(i) || i < 0 || i >= entries.length || from[i] !== -1
        || !Number.isInteger(c) || c < 0 || c > Math.ceil(entries[i].size / CHUNK)) {
        await wire.abort('bad accept');
        throw new Error('the receiver broke the protocol');
      }
      from[i] = c;
    }
    ui.state?.('sending');
    const started = performance.now();
    let done = entries.reduce((s, e, i) => s + Math.min(e.size, from[i] * CHUNK), 0);
    // One frame buffer for every chunk: send() copies what it is given.
    const frameBuf = new Uint8Array(HEADER + CHUNK);
    const v = new DataView(frameBuf.buffer);
    for (let i = 0; i < entries.length; i++) {
      const file = items[i].file;
      for (let pos = from[i] * CHUNK; pos < file.size; pos += READ_AHEAD) {
        const block = new Uint8Array(await file.slice(pos, Math.min(file.size, pos + READ_AHEAD)).arrayBuffer());
        for (let off = 0; off < block.length; off += CHUNK) {
          const payload = block.subarray(off, off + CHUNK);
          const index = (pos + off) / CHUNK;
          const frame = frameBuf.subarray(0, HEADER + payload.length);
          v.setUint32(0, i);
          v.setUint32(4, Math.floor(index / 2 ** 32));
          v.setUint32(8, index >>> 0);
          frame.set(blake3(payload), 12);
          frame.set(payload, HEADER);
          await wire.sendBinary(frame);
          done += payload.length;
          ui.progress?.(done, total, (performance.now() - started) / 1000);
        }
      }
    }
    const last = await wire.control(STALL_MS + 30000);
    if (last.t !== 'done') throw new Error('the receiver did not confirm');
    const result = { bytes: total, seconds: (performance.now() - started) / 1000, path: pathText(wire.peer) };
    ui.done?.(result);
    return result;
  } catch (e) {
    // Say why, so the other side stops now rather than at its timeout.
    if (wire && !e.fromPeer) await wire.abort(e.message ?? e);
    throw e;
  } finally {
    room.leave();
  }
}
