// libdatachannel's side of peer-bench (npm node-datachannel), one reliable ordered channel,
// `bytes` sent in `msg`-byte messages with bufferedAmountLow backpressure.
//
//   node peer.mjs BYTES MSG                 both peers in this process on 127.0.0.1, signaling
//                                           in memory; prints one JSON line
//   node peer.mjs BYTES MSG offer|answer IP one peer bound to IP; signaling as JSON lines on
//                                           stdout/stdin (peer-bench relays them); the result
//                                           line is {"result": {...}}
//
// Setup is timed from channel creation (which starts the offer) to open; throughput from the
// first byte received to the last.
import readline from 'node:readline';
import nodeDataChannel from 'node-datachannel';

const total = Number(process.argv[2] ?? 256 * 1024 * 1024);
const msgSize = Number(process.argv[3] ?? 16 * 1024);
const role = process.argv[4];
const bind = process.argv[5] ?? '127.0.0.1';
const HIGH = 1024 * 1024;
const LOW = 256 * 1024;
const config = (ip) => ({ iceServers: [], bindAddress: ip, enableIceTcp: false });

/** Sends `total` bytes on `dc` with backpressure. */
function pump(dc) {
  const payload = Buffer.alloc(msgSize, 7);
  dc.setBufferedAmountLowThreshold(LOW);
  let sent = 0;
  return new Promise((resolve) => {
    const go = () => {
      while (sent < total) {
        if (dc.bufferedAmount() > HIGH) return;
        dc.sendMessageBinary(payload);
        sent += msgSize;
      }
      resolve();
    };
    dc.onBufferedAmountLow(go);
    go();
  });
}

/** Resolves with the seconds from the first byte to the last. */
function sink(dc) {
  let received = 0;
  let t0 = null;
  return new Promise((resolve) => dc.onMessage((m) => {
    t0 ??= process.hrtime.bigint();
    received += m.byteLength ?? m.length;
    if (received >= total) resolve(Number(process.hrtime.bigint() - t0) / 1e9);
  }));
}

if (!role) {
  const a = new nodeDataChannel.PeerConnection('a', config(bind));
  const b = new nodeDataChannel.PeerConnection('b', config(bind));
  a.onLocalDescription((sdp, type) => b.setRemoteDescription(sdp, type));
  b.onLocalDescription((sdp, type) => a.setRemoteDescription(sdp, type));
  a.onLocalCandidate((c, mid) => b.addRemoteCandidate(c, mid));
  b.onLocalCandidate((c, mid) => a.addRemoteCandidate(c, mid));
  const t0 = process.hrtime.bigint();
  const bOpen = new Promise((resolve) => b.onDataChannel(resolve));
  const dcA = a.createDataChannel('bench', { ordered: true });
  await new Promise((resolve) => dcA.onOpen(resolve));
  const dcB = await bOpen;
  const setupMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const cpu0 = process.cpuUsage();
  const done = sink(dcB);
  await pump(dcA);
  const secs = await done;
  const cpu = process.cpuUsage(cpu0);
  console.log(JSON.stringify({ setup_ms: setupMs, secs, bytes: total, cpu_s: (cpu.user + cpu.system) / 1e6 }));
  a.close();
  b.close();
} else {
  const pc = new nodeDataChannel.PeerConnection(role, config(bind));
  const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
  pc.onLocalDescription((sdp, type) => say({ sdp, type }));
  pc.onLocalCandidate((candidate, mid) => say({ candidate, mid }));
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    const m = JSON.parse(line);
    if (m.sdp) pc.setRemoteDescription(m.sdp, m.type);
    else if (m.candidate) pc.addRemoteCandidate(m.candidate, m.mid);
  });
  const cpu0 = process.cpuUsage();
  let result;
  if (role === 'offer') {
    const t0 = process.hrtime.bigint();
    const dc = pc.createDataChannel('bench', { ordered: true });
    await new Promise((resolve) => dc.onOpen(resolve));
    const setupMs = Number(process.hrtime.bigint() - t0) / 1e6;
    await pump(dc);
    // Stay until the receiver closes (it has everything then).
    await new Promise((resolve) => { dc.onClosed(resolve); pc.onStateChange((s) => { if (s === 'closed' || s === 'disconnected') resolve(); }); });
    result = { setup_ms: setupMs };
  } else {
    const dc = await new Promise((resolve) => pc.onDataChannel(resolve));
    const secs = await sink(dc);
    result = { secs };
    dc.close();
  }
  const cpu = process.cpuUsage(cpu0);
  say({ result: { ...result, cpu_s: (cpu.user + cpu.system) / 1e6 } });
  pc.close();
}
nodeDataChannel.cleanup();
process.exit(0);
