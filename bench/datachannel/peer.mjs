// libdatachannel's side of peer-bench: two PeerConnections in this process on loopback,
// signaling passed in memory, one reliable ordered channel. Prints one JSON line:
// setup (offer created → channel open at both ends), then `bytes` sent in `msg`-byte
// messages with bufferedAmountLow backpressure, timed until the receiver has them all.
// Usage: node peer.mjs BYTES MSG
import nodeDataChannel from 'node-datachannel';

const total = Number(process.argv[2] ?? 256 * 1024 * 1024);
const msgSize = Number(process.argv[3] ?? 16 * 1024);
const HIGH = 1024 * 1024;
const LOW = 256 * 1024;
const config = { iceServers: [], bindAddress: '127.0.0.1', enableIceTcp: false };
const a = new nodeDataChannel.PeerConnection('a', config);
const b = new nodeDataChannel.PeerConnection('b', config);
a.onLocalDescription((sdp, type) => b.setRemoteDescription(sdp, type));
b.onLocalDescription((sdp, type) => a.setRemoteDescription(sdp, type));
a.onLocalCandidate((c, mid) => b.addRemoteCandidate(c, mid));
b.onLocalCandidate((c, mid) => a.addRemoteCandidate(c, mid));

const t0 = process.hrtime.bigint();
const opened = [];
const bOpen = new Promise((resolve) => b.onDataChannel((dc) => { opened.push(dc); dc.onOpen?.(() => {}); resolve(dc); }));
const dcA = a.createDataChannel('bench', { ordered: true });
const aOpen = new Promise((resolve) => dcA.onOpen(resolve));
const dcB = await bOpen;
await aOpen;
const setupMs = Number(process.hrtime.bigint() - t0) / 1e6;

let received = 0;
const done = new Promise((resolve) => dcB.onMessage((m) => {
  received += m.byteLength ?? m.length;
  if (received >= total) resolve();
}));
const payload = Buffer.alloc(msgSize, 7);
dcA.setBufferedAmountLowThreshold(LOW);
const cpu0 = process.cpuUsage();
const s0 = process.hrtime.bigint();
let sent = 0;
await new Promise((resolve) => {
  const pump = () => {
    while (sent < total) {
      if (dcA.bufferedAmount() > HIGH) return;
      dcA.sendMessageBinary(payload);
      sent += msgSize;
    }
    resolve();
  };
  dcA.onBufferedAmountLow(pump);
  pump();
});
await done;
const secs = Number(process.hrtime.bigint() - s0) / 1e9;
const cpu = process.cpuUsage(cpu0);
console.log(JSON.stringify({ setup_ms: setupMs, secs, bytes: received, cpu_s: (cpu.user + cpu.system) / 1e6 }));
a.close();
b.close();
nodeDataChannel.cleanup();
