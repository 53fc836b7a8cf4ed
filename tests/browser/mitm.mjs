// A malicious signaling server for tests: a WebSocket proxy in front of `peerweb serve` that
// performs a full active man-in-the-middle attack on every pair of peers. It passes the room
// traffic through, but swallows the peers' `signal` frames and answers them itself: towards
// each peer it plays the other one with its own WebRTC stack (libdatachannel through
// node-datachannel) and its own DTLS certificate, and relays data-channel messages between
// the two connections it terminated. Everything it relays is recorded.
import http from 'node:http';
import nodeDataChannel from 'node-datachannel';
import { WebSocket, WebSocketServer } from 'ws';

const LABEL = 'peerweb';

export async function startMitm(upstream) {
  const wsUpstream = upstream.replace(/^http/, 'ws');
  /** client id → { send(frame) } to inject frames into that client's socket. */
  const clients = new Map();
  /** `${victim}|${impersonated}` → { pc, dc, queue } */
  const legs = new Map();
  const relayed = [];
  const pcs = [];

  function inject(victim, from, data) {
    clients.get(victim)?.send(JSON.stringify({ type: 'signal', from, data }));
  }

  /** The proxy's connection to `victim`, pretending to be `impersonated`. */
  function leg(victim, impersonated) {
    const key = `${victim}|${impersonated}`;
    let l = legs.get(key);
    if (l) return l;
    const pc = new nodeDataChannel.PeerConnection(key, {
      iceServers: [], bindAddress: '127.0.0.1', enableIceTcp: false, disableAutoNegotiation: true,
    });
    pcs.push(pc);
    l = { pc, dc: null, queue: [], open: false };
    legs.set(key, l);
    pc.onLocalDescription((sdp, type) => inject(victim, impersonated, { description: { type, sdp } }));
    pc.onLocalCandidate((candidate, sdpMid) =>
      inject(victim, impersonated, { candidate: { candidate, sdpMid, sdpMLineIndex: 0 } }));
    const dc = pc.createDataChannel(LABEL, { negotiated: true, id: 0, ordered: true });
    l.dc = dc;
    dc.onOpen(() => {
      l.open = true;
      for (const m of l.queue.splice(0)) sendOn(l, m);
    });
    dc.onMessage((m) => {
      // Relay to the other leg: the peer this victim thinks it talks to.
      const other = leg(impersonated, victim);
      relayed.push({ from: victim, to: impersonated, binary: typeof m !== 'string', bytes: m.length,
        text: typeof m === 'string' ? m : undefined });
      if (other.open) sendOn(other, m); else other.queue.push(m);
    });
    return l;
  }

  function sendOn(l, m) {
    try {
      if (typeof m === 'string') l.dc.sendMessage(m); else l.dc.sendMessageBinary(m);
    } catch { /* that side closed already */ }
  }

  /** A peer signalled another: take it over. */
  function onSignal(fromId, toId, data) {
    const l = leg(fromId, toId);
    const other = leg(toId, fromId);
    if (data.description) {
      const { type, sdp } = data.description;
      if (type === 'offer') {
        l.pc.setRemoteDescription(sdp, 'offer');
        l.pc.setLocalDescription('answer');
        // Meanwhile open the mirror connection towards the other peer with our own offer.
        if (!other.offered) {
          other.offered = true;
          other.pc.setLocalDescription('offer');
        }
      } else if (type === 'answer') {
        l.pc.setRemoteDescription(sdp, 'answer');
      }
    } else if (data.candidate && data.candidate.candidate) {
      try { l.pc.addRemoteCandidate(data.candidate.candidate, data.candidate.sdpMid ?? '0'); } catch { /* ignore */ }
    }
  }

  const server = http.createServer(async (req, res) => {
    // Plain HTTP (e.g. /api/ice) goes to the real server.
    try {
      const r = await fetch(upstream + req.url);
      res.writeHead(r.status, { 'content-type': r.headers.get('content-type') ?? 'text/plain' });
      res.end(Buffer.from(await r.arrayBuffer()));
    } catch (e) {
      res.writeHead(502).end(String(e));
    }
  });
  const wss = new WebSocketServer({ server });
  wss.on('connection', (down, req) => {
    const up = new WebSocket(wsUpstream + req.url);
    const early = [];
    let myId = null;
    up.on('open', () => { for (const f of early.splice(0)) up.send(f); });
    up.on('message', (d) => {
      const text = d.toString();
      let msg;
      try { msg = JSON.parse(text); } catch { return; }
      if (msg.type === 'welcome') {
        myId = msg.id;
        clients.set(myId, down);
      }
      if (msg.type === 'signal') return; // peers only ever hear from us
      down.send(text);
    });
    down.on('message', (d) => {
      const text = d.toString();
      let msg;
      try { msg = JSON.parse(text); } catch { msg = {}; }
      if (msg.type === 'signal' && myId) {
        onSignal(myId, msg.to, msg.data);
        return;
      }
      if (up.readyState === WebSocket.OPEN) up.send(text); else early.push(text);
    });
    const close = () => { try { up.close(); } catch { /* */ } try { down.close(); } catch { /* */ } };
    up.on('close', close);
    down.on('close', close);
    up.on('error', close);
    down.on('error', close);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    relayed,
    /** Connections the proxy terminated with its own certificate that reached open. */
    openLegs: () => [...legs.values()].filter((l) => l.open).length,
    async stop() {
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => server.close(r));
      for (const l of legs.values()) l.dc?.close();
      for (const pc of pcs) pc.close();
    },
  };
}

/** Ends libdatachannel's threads so node can exit (after the last proxy stopped). */
export function mitmCleanup() {
  nodeDataChannel.cleanup();
}
