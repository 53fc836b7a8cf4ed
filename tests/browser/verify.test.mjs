// The call verification protocol (web/sdk/verify.js) without a browser: random orders of
// delivery, replays, garbage and a man in the middle, driven from seeded random sequences.
// Every run checks: a clean pair ends with the same SAS on both sides; a man in the middle
// gets different SASes; nothing reaches `verified` without a confirmed SAS or a proof made
// with the kept key; broken messages end in `failed`, never a throw out of the protocol.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Verifier, VerifyError, continuityKey, transcript } from '../../web/sdk/verify.js';

const WORDS = Array.from({ length: 256 }, (_, i) => `w${i}`);

/** A small seeded generator (mulberry32), so a failing sequence can be replayed. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const bytes = (rand) => Uint8Array.from({ length: 32 }, () => Math.floor(rand() * 256));
const hexOf = (rand) => [...bytes(rand)].map((b) => b.toString(16).padStart(2, '0')).join('');
const fp = (rand) => `sha-256 ${[...bytes(rand)].map((b) => b.toString(16).padStart(2, '0').toUpperCase()).join(':')}`;

function side(rand, { localFp, remoteFp, identity, keys = new Map() }) {
  return new Verifier({
    localFp, remoteFp, identity, words: WORDS,
    keyFor: async (id) => keys.get(id) ?? null,
    random: () => bytes(rand),
  });
}

/**
 * Runs two verifiers to the end, delivering queued messages in a random order between the
 * two directions (each direction stays in order: a reliable ordered channel), optionally
 * with `tamper(dir, msg)` changing or adding messages. Returns the two verifiers.
 */
async function run(rand, a, b, tamper = null) {
  const q = { ab: a.start().map((m) => JSON.stringify(m)), ba: b.start().map((m) => JSON.stringify(m)) };
  for (let steps = 0; steps < 100 && (q.ab.length || q.ba.length); steps++) {
    const dir = !q.ba.length || (q.ab.length && rand() < 0.5) ? 'ab' : 'ba';
    let msg = q[dir].shift();
    if (tamper) msg = tamper(dir, msg);
    if (msg === null) continue;
    const [to, back] = dir === 'ab' ? [b, 'ba'] : [a, 'ab'];
    try {
      for (const m of await to.receive(msg)) q[back].push(JSON.stringify(m));
    } catch (e) {
      assert.ok(e instanceof VerifyError, `a protocol error, not ${e}`);
    }
  }
  return [a, b];
}

test('a clean pair: the same SAS on both sides in any order of delivery; nothing verified by itself', async () => {
  for (let seed = 1; seed <= 200; seed++) {
    const rand = rng(seed);
    const [fa, fb] = [fp(rand), fp(rand)];
    const [a, b] = await run(rand,
      side(rand, { localFp: fa, remoteFp: fb, identity: hexOf(rand) }),
      side(rand, { localFp: fb, remoteFp: fa, identity: hexOf(rand) }));
    assert.equal(a.state, 'compare', `seed ${seed}`);
    assert.equal(b.state, 'compare', `seed ${seed}`);
    assert.equal(a.sas, b.sas, `seed ${seed}`);
    assert.match(a.sas, /^w\d+ w\d+ w\d+$/);
  }
});

test('a man in the middle (other fingerprints on each side) gets different SASes', async () => {
  let same = 0;
  for (let seed = 1; seed <= 200; seed++) {
    const rand = rng(seed);
    const [fa, fb, m1, m2] = [fp(rand), fp(rand), fp(rand), fp(rand)];
    // A talks to the man as B (m1), B to the man as A (m2); he runs a verifier on each leg,
    // relaying identities, and may pick his values after seeing commitments — never reveals.
    const a = side(rand, { localFp: fa, remoteFp: m1, identity: hexOf(rand) });
    const b = side(rand, { localFp: fb, remoteFp: m2, identity: hexOf(rand) });
    const toA = side(rand, { localFp: m1, remoteFp: fa, identity: b.identity });
    const toB = side(rand, { localFp: m2, remoteFp: fb, identity: a.identity });
    await run(rand, a, toA);
    await run(rand, toB, b);
    assert.equal(a.state, 'compare');
    assert.equal(b.state, 'compare');
    if (a.sas === b.sas) same += 1;
  }
  assert.equal(same, 0, 'with 24 bits, 200 runs should never collide');
});

test('continuity: after a confirmed SAS the next call verifies itself; a man in the middle then shows `changed`', async () => {
  const rand = rng(7);
  const [ia, ib] = [hexOf(rand), hexOf(rand)];
  const keysA = new Map();
  const keysB = new Map();
  let [fa, fb] = [fp(rand), fp(rand)];
  const [a1, b1] = await run(rand,
    side(rand, { localFp: fa, remoteFp: fb, identity: ia, keys: keysA }),
    side(rand, { localFp: fb, remoteFp: fa, identity: ib, keys: keysB }));
  assert.equal(a1.sas, b1.sas);
  keysA.set(ib, a1.confirm(true));
  keysB.set(ia, b1.confirm(true));
  assert.equal(keysA.get(ib), keysB.get(ia), 'both keep the same key');
  assert.equal(a1.state, 'verified');
  assert.equal(a1.by, 'sas');

  // Second call, new certificates: verified with no SAS read.
  [fa, fb] = [fp(rand), fp(rand)];
  const [a2, b2] = await run(rand,
    side(rand, { localFp: fa, remoteFp: fb, identity: ia, keys: keysA }),
    side(rand, { localFp: fb, remoteFp: fa, identity: ib, keys: keysB }));
  assert.deepEqual([a2.state, a2.by, b2.state, b2.by], ['verified', 'continuity', 'verified', 'continuity']);

  // Third call through a man in the middle who relays identities but has no key.
  const [m1, m2] = [fp(rand), fp(rand)];
  const a3 = side(rand, { localFp: fa, remoteFp: m1, identity: ia, keys: keysA });
  const b3 = side(rand, { localFp: fb, remoteFp: m2, identity: ib, keys: keysB });
  await run(rand, a3, side(rand, { localFp: m1, remoteFp: fa, identity: ib }));
  await run(rand, side(rand, { localFp: m2, remoteFp: fb, identity: ia }), b3);
  assert.equal(a3.state, 'changed');
  assert.equal(b3.state, 'changed');
  // Even replaying the real B's proof from the second call does not help him.
  const a4 = side(rand, { localFp: fa, remoteFp: m1, identity: ia, keys: keysA });
  await run(rand, a4, side(rand, { localFp: m1, remoteFp: fa, identity: ib }), (dir, msg) => {
    const m = JSON.parse(msg);
    return dir === 'ba' && m.t === 'proof' ? JSON.stringify({ t: 'proof', mac: continuityKey(transcript(fb, hexOf(rand), fa, hexOf(rand))) }) : msg;
  });
  assert.equal(a4.state, 'changed');
});

test('garbage, replays, reveals that do not match and out-of-order messages end in `failed`, never `verified`', async () => {
  const broken = [
    'not json', '[]', 'null', '{"t":"commit"}', '{"t":"commit","v":2,"id":"00","c":"00"}', 'x'.repeat(5000),
    JSON.stringify({ t: 'reveal', r: '00'.repeat(32) }), JSON.stringify({ t: 'proof', mac: 'zz' }),
  ];
  for (let seed = 1; seed <= 300; seed++) {
    const rand = rng(seed);
    const [fa, fb] = [fp(rand), fp(rand)];
    const keys = new Map();
    const a = side(rand, { localFp: fa, remoteFp: fb, identity: hexOf(rand), keys });
    const b = side(rand, { localFp: fb, remoteFp: fa, identity: hexOf(rand), keys });
    const seen = [];
    const kind = Math.floor(rand() * 4);
    await run(rand, a, b, (dir, msg) => {
      seen.push(msg);
      if (dir !== 'ba' || rand() < 0.5) return msg;
      if (kind === 0) return broken[Math.floor(rand() * broken.length)];
      if (kind === 1) return seen[Math.floor(rand() * seen.length)]; // a replay
      if (kind === 2) {
        const m = JSON.parse(msg);
        if (m.t === 'reveal') return JSON.stringify({ t: 'reveal', r: hexOf(rand) }); // not what was committed
        return msg;
      }
      return null; // lost
    });
    for (const v of [a, b]) {
      assert.notEqual(v.state, 'verified', `seed ${seed}: verified without a confirmed SAS`);
      assert.ok(['waiting', 'compare', 'failed'].includes(v.state), `seed ${seed}: ${v.state}`);
      if (v.state === 'failed') assert.ok(v.error, 'a failure says why');
    }
    // Lost messages leave a side waiting; changed ones may leave both comparing, with SASes
    // that differ (what the users catch), unless nothing reached them changed.
    if (kind === 3 && a.state === 'compare' && b.state === 'compare') assert.equal(a.sas, b.sas, `seed ${seed}`);
  }
});

test('known answers, shared with the Rust side (crates/call): transcript, SAS bytes, continuity key, proof', async () => {
  const { Blake3, toHex } = await import('../../web/transfer/blake3.js');
  const { proofOf } = await import('../../web/sdk/verify.js');
  const [fpA, fpB] = ['sha-256 AA:BB:CC', 'sha-256 11:22:33'];
  const t = transcript(fpA, '01'.repeat(32), fpB, 'fe'.repeat(32));
  assert.equal(new TextDecoder().decode(t), `${fpB}\n${fpA}\n${'fe'.repeat(32)}\n${'01'.repeat(32)}`);
  assert.equal(toHex(Blake3.deriveKey('peerweb call v1 sas').update(t).digest()).slice(0, 6), '13d0f8');
  const k = continuityKey(t);
  assert.equal(k, '0204167ab4a18aa6232c3718682bbc4c4a3c6d2f0011e6469f91da5e07b864f6');
  assert.equal(proofOf(k, fpA, t), '5785062635b8d1796a7281baee1aa314ba7f2f99fc8c88f733540b152666ed81');
});
