// Manifests of verified swarms, read in the browser exactly as crates/swarm/src/manifest.rs reads
// them: one canonical JSON form (fields in order, no whitespace, files sorted by path), every limit
// the same, and — when signed — the Ed25519 signature over `peerweb-manifest-v1\n` and the
// canonical JSON without `sig`, checked before anything else is trusted.
//
//   const m = parseManifest(bytes, { trust: 'ed25519:…' });   // throws ManifestError
//   m.file('video/intro.mp4')  // {path, size, root, outboard?}
//
// The page imports @noble/curves through its import map (as the transfer pages do).

import { ed25519 } from '@noble/curves/ed25519.js';
import { groups } from './swarm-tree.js';

export const VERSION = 1;
export const GROUP_LOG = 4;
export const MAX_BYTES = 8 << 20;
export const MAX_FILES = 50000;
export const MAX_FILE_SIZE = 2 ** 40;
export const MAX_PATH = 1024;
const DOMAIN = 'peerweb-manifest-v1\n';
const KEY_PREFIX = 'ed25519:';
const FILE_FIELDS = ['path', 'size', 'root', 'outboard'];
const FIELDS = ['v', 'group_log', 'files', 'key', 'sig'];

export class ManifestError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ManifestError';
  }
}

const utf8 = new TextEncoder();

function hexBytes(hex, n) {
  if (typeof hex !== 'string' || hex.length !== 2 * n || !/^[0-9a-f]*$/.test(hex)) return null;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** Byte order of UTF-8 (what Rust sorts by), not UTF-16 code units. */
function compareUtf8(a, b) {
  const x = utf8.encode(a);
  const y = utf8.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

function checkPath(path) {
  const bad = (why) => new ManifestError(`path ${JSON.stringify(String(path).slice(0, 80))}: ${why}`);
  if (typeof path !== 'string' || path.length === 0 || utf8.encode(path).length > MAX_PATH) throw bad('empty or longer than 1024 bytes');
  // Rust's char::is_control: C0, DEL and C1.
  if (/[\u0000-\u001f\u007f-\u009f\\]/.test(path)) throw bad('a control character or backslash');
  if (path.split('/').some((c) => c === '' || c === '.' || c === '..')) throw bad('not relative, or an empty, `.` or `..` component');
}

/** The canonical JSON of a manifest object (`withSig`: with its signature). */
function canonical(m, withSig) {
  const o = { v: m.v, group_log: m.group_log, files: m.files.map((f) => {
    const e = { path: f.path, size: f.size, root: f.root };
    if (f.outboard !== undefined) e.outboard = f.outboard;
    return e;
  }) };
  if (m.key !== undefined) o.key = m.key;
  if (withSig && m.sig !== undefined) o.sig = m.sig;
  return JSON.stringify(o);
}

export class Manifest {
  constructor(m) {
    this.v = m.v;
    this.groupLog = m.group_log;
    this.files = m.files;
    /** `ed25519:…` of the signer, or null. */
    this.key = m.key ?? null;
    this._byPath = new Map(m.files.map((f) => [f.path, f]));
  }

  /** The entry for `path`, or undefined. */
  file(path) {
    return this._byPath.get(path);
  }

  /** The entry with this content id (BLAKE3 root, hex), or undefined. */
  byRoot(root) {
    return this.files.find((f) => f.root === root);
  }
}

/**
 * Reads a manifest (bytes or text): limits, fields, paths, canonical form, and its signature
 * if signed. With `trust` (a key as `ed25519:` and 64 hex digits), a manifest not signed by it
 * is refused.
 */
export function parseManifest(input, { trust } = {}) {
  const bytes = typeof input === 'string' ? utf8.encode(input) : input;
  if (bytes.length > MAX_BYTES) throw new ManifestError(`the manifest has ${bytes.length} bytes; the most is ${MAX_BYTES}`);
  let text;
  let m;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    m = JSON.parse(text);
  } catch (e) {
    throw new ManifestError(`not a manifest: ${e.message}`);
  }
  if (m === null || typeof m !== 'object' || Array.isArray(m)) throw new ManifestError('not a manifest: not an object');
  for (const k of Object.keys(m)) if (!FIELDS.includes(k)) throw new ManifestError(`not a manifest: unknown field ${k}`);
  if (m.v !== VERSION) throw new ManifestError(`manifest version ${m.v} is not supported (this page reads version ${VERSION})`);
  if (m.group_log !== GROUP_LOG) throw new ManifestError(`group_log ${m.group_log} is not supported (16 KiB groups: ${GROUP_LOG})`);
  if (!Array.isArray(m.files)) throw new ManifestError('not a manifest: files is not a list');
  if (m.files.length > MAX_FILES) throw new ManifestError(`the manifest lists ${m.files.length} files; the most is ${MAX_FILES}`);
  if (m.files.length === 0) throw new ManifestError('the manifest lists no file');
  m.files.forEach((f, i) => {
    if (f === null || typeof f !== 'object' || Array.isArray(f)) throw new ManifestError('not a manifest: a file is not an object');
    for (const k of Object.keys(f)) if (!FILE_FIELDS.includes(k)) throw new ManifestError(`not a manifest: unknown field ${k}`);
    checkPath(f.path);
    if (i > 0 && compareUtf8(m.files[i - 1].path, f.path) >= 0) throw new ManifestError(`files are not sorted by path, or ${JSON.stringify(f.path)} is listed twice`);
    if (!Number.isSafeInteger(f.size) || f.size < 0) throw new ManifestError(`not a manifest: ${JSON.stringify(f.path)} has no size`);
    if (f.size > MAX_FILE_SIZE) throw new ManifestError(`${JSON.stringify(f.path)} claims ${f.size} bytes; the most is ${MAX_FILE_SIZE}`);
    if (typeof f.root !== 'string' || !/^[0-9a-f]{64}$/.test(f.root)) throw new ManifestError(`${JSON.stringify(f.path)}: the root is not 64 lowercase hex digits`);
    const needs = groups(f.size) > 1;
    if (f.outboard !== undefined && !needs) throw new ManifestError(`${JSON.stringify(f.path)}: a file of one group has no outboard`);
    if (f.outboard === undefined && needs) throw new ManifestError(`${JSON.stringify(f.path)}: a file above 16 KiB needs an outboard`);
    if (f.outboard !== undefined) {
      try { checkPath(f.outboard); } catch { throw new ManifestError(`${JSON.stringify(f.path)}: its outboard's path is not a safe relative path`); }
    }
  });
  const body = text.endsWith('\n') ? text.slice(0, -1) : text;
  if (canonical(m, true) !== body) throw new ManifestError('the manifest is not in canonical form (reformatted or edited)');
  if ((m.key === undefined) !== (m.sig === undefined)) throw new ManifestError('the manifest has a key but no signature, or a signature but no key');
  if (m.key !== undefined) {
    const pub = typeof m.key === 'string' && m.key.startsWith(KEY_PREFIX) ? hexBytes(m.key.slice(KEY_PREFIX.length), 32) : null;
    if (!pub) throw new ManifestError(`the key is not an Ed25519 public key (${KEY_PREFIX} and 64 hex digits)`);
    const sig = hexBytes(m.sig, 64);
    let ok = false;
    try {
      ok = sig !== null && ed25519.verify(sig, utf8.encode(DOMAIN + canonical(m, false)), pub);
    } catch { ok = false; }
    if (!ok) throw new ManifestError('the manifest\'s signature does not verify');
  }
  if (trust !== undefined) {
    if (m.key === undefined) throw new ManifestError('the manifest is not signed, and a signature is required');
    if (m.key !== trust) throw new ManifestError(`the manifest is signed by ${m.key}, not by ${trust}`);
  }
  return new Manifest(m);
}
