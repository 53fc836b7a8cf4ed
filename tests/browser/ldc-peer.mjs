// A libdatachannel member of a room (npm node-datachannel), for interop tests with the native
// peer: it speaks the signaling protocol (hello, join; the joiner offers; the default channel
// `peerweb` negotiated on stream 0) with one peer connection per member, and runs as its own
// process (`node ldc-peer.mjs URL ROOM`): libdatachannel's threads never share the test
// runner's process. Driven by JSON lines on stdin:
//   {"open": {"peer", "label", "ordered"?, "maxRetransmits"?}}   a channel of its own
//   {"send": {"peer", "label", "text"} | {"peer", "label", "bytes": n}}   n bytes of (i % 251)
//   {"close": {"peer", "label"}}
// and reporting JSON lines on stdout: {"welcome": id}, {"connected": peer},
// {"open": {peer, label}}, {"message": {peer, label, text | bytes, ok}} (`ok`: the bytes are
// the (i % 251) pattern), {"closed": {peer, label}}, {"error": "..."}.
import readline from 'node:readline';
import nodeDataChannel from 'node-datachannel';
import { WebSocket } from 'ws';

const [url, room] = process.argv.slice(2);
const report = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const peers = new Map(); // id → { pc, channels: Map(label → dc), keep: [] }
let myId = null;

const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/ws`);
const signal = (to, data) => ws.send(JSON.stringify({ type: 'signal', to, data }));

function pattern(n) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = i % 251;
  return b;
}

function watch(id, dc) {
  const p = peers.get(id);
  const label = dc.getLabel();
  p.channels.set(label, dc);
  p.keep.push(dc); // node-datachannel closes a channel whose object is collected
  dc.onOpen(() => report({ open: { peer: id, label } }));
  if (dc.isOpen()) report({ open: { peer: id, label } });
  dc.onClosed(() => {
    if (p.channels.get(label) === dc) p.channels.delete(label);
    report({ closed: { peer: id, label } });
  });
  dc.onMessage((m) => {
    if (typeof m === 'string') {
      report({ message: { peer: id, label, text: m } });
    } else {
      report({ message: { peer: id, label, bytes: m.length, ok: Buffer.from(m).equals(pattern(m.length)) } });
    }
  });
}

function connection(id) {
  let p = peers.get(id);
  if (p) return p;
  const pc = new nodeDataChannel.PeerConnection(`ldc-${id}`, {
    iceServers: [], bindAddress: '127.0.0.1', enableIceTcp: false, disableAutoNegotiation: true,
  });
  p = { pc, channels: new Map(), keep: [] };
  peers.set(id, p);
  pc.onLocalDescription((sdp, type) => signal(id, { description: { type, sdp } }));
  pc.onLocalCandidate((candidate, sdpMid) => signal(id, { candidate: { candidate, sdpMid, sdpMLineIndex: 0 } }));
  pc.onStateChange((s) => { if (s === 'connected') report({ connected: id }); });
  pc.onDataChannel((dc) => watch(id, dc));
  watch(id, pc.createDataChannel('peerweb', { negotiated: true, id: 0, ordered: true }));
  return p;
}

function onSignal(from, data) {
  const p = connection(from);
  if (data.description) {
    const { type, sdp } = data.description;
    p.pc.setRemoteDescription(sdp, type);
    if (type === 'offer') p.pc.setLocalDescription('answer');
  } else if (data.candidate?.candidate) {
    p.pc.addRemoteCandidate(data.candidate.candidate, data.candidate.sdpMid ?? '0');
  }
}

ws.on('open', () => ws.send(JSON.stringify({ type: 'hello', v: 1 })));
ws.on('message', (d) => {
  let m;
  try { m = JSON.parse(d.toString()); } catch { return; }
  try {
    if (m.type === 'welcome') {
      myId = m.id;
      report({ welcome: myId });
      ws.send(JSON.stringify({ type: 'join', room }));
    } else if (m.type === 'joined') {
      // The joiner offers.
      for (const peer of m.peers) connection(peer.id).pc.setLocalDescription('offer');
    } else if (m.type === 'signal') {
      onSignal(m.from, m.data);
    }
  } catch (e) {
    report({ error: `${m.type}: ${e.message}` });
  }
});
ws.on('close', () => process.exit(0));

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  try {
    const cmd = JSON.parse(line);
    if (cmd.open) {
      const { peer, label, ordered = true, maxRetransmits } = cmd.open;
      const init = { ordered };
      if (maxRetransmits !== undefined) init.maxRetransmits = maxRetransmits;
      watch(peer, peers.get(peer).pc.createDataChannel(label, init));
    } else if (cmd.send) {
      const dc = peers.get(cmd.send.peer).channels.get(cmd.send.label);
      if (cmd.send.text !== undefined) dc.sendMessage(cmd.send.text);
      else dc.sendMessageBinary(pattern(cmd.send.bytes));
    } else if (cmd.close) {
      peers.get(cmd.close.peer).channels.get(cmd.close.label).close();
    }
  } catch (e) {
    report({ error: `${line.slice(0, 80)}: ${e.message}` });
  }
});
process.stdin.on('end', () => {
  for (const p of peers.values()) p.pc.close();
  ws.close();
  setTimeout(() => process.exit(0), 200);
});
