// A malicious signaling server for tests: a WebSocket proxy in front of `peerweb serve` that
// performs a full active man-in-the-middle attack on every pair of peers. It passes the room
// traffic through, but swallows the peers' `signal` frames and answers them itself: towards
// each peer it plays the other one with its own WebRTC stack (libdatachannel through
// node-datachannel) and its own DTLS certificate, and relays data-channel messages between
// the two connections it terminated. Everything it relays is reported.
//
// It runs as its own process (`node mitm.mjs UPSTREAM`, JSON lines on stdout), started and
// killed by `startMitm` below: libdatachannel's threads then never share the test runner's
// process (its cleanup can crash, and a crashed runner would leave its server running).
import { spawn } from 'node:child_process';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import nodeDataChannel from 'node-datachannel';
import { WebSocket, WebSocketServer } from 'ws';

const LABEL = 'peerweb';

async function proxy(upstream) {
  const wsUpstream = upstream.replace(/^http/, 'ws');
  /** client id → { send(frame) } to inject frames into that client's socket. */
  const clients = new Map();
  /** `${victim}|${impersonated}` → { pc, dc, queue } */
  const legs = new Map();
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
      report({ open: key });
      for (const m of l.queue.splice(0)) sendOn(l, m);
      for (const create of (l.later ?? []).splice(0)) create();
    });
    dc.onMessage((m) => {
      // Relay to the other leg: the peer this victim thinks it talks to.
      const other = leg(impersonated, victim);
      report({ relayed: { from: victim, to: impersonated, binary: typeof m !== 'string', bytes: m.length,
        text: typeof m === 'string' ? m : undefined } });
      if (other.open) sendOn(other, m); else other.queue.push(m);
    });
    // Channels a victim opens in band (the SDK's call channel, an app's own) are relayed
    // too: the same label, opened by us towards the other victim.
    pc.onDataChannel((incoming) => {
      // Kept referenced: node-datachannel closes a channel whose object is collected.
      pcs.push(incoming);
      const label = incoming.getLabel();
      const other = leg(impersonated, victim);
      const out = { dc: null, queue: [], open: false };
      // Opened once that leg's association is up: a channel created before it gets a stream
      // id from a guessed DTLS role, which can collide with one the victim opened meanwhile.
      const create = () => {
        out.dc = other.pc.createDataChannel(label);
        pcs.push(out.dc);
        out.dc.onOpen(() => {
          out.open = true;
          for (const m of out.queue.splice(0)) sendOn(out, m);
        });
        // Both ways: a victim may answer on the channel it was given instead of its own.
        out.dc.onMessage((m) => {
          report({ relayed: { from: impersonated, to: victim, label, binary: typeof m !== 'string', bytes: m.length,
            text: typeof m === 'string' ? m : undefined } });
          sendOn({ dc: incoming }, m);
        });
      };
      if (other.open) create(); else (other.later ??= []).push(create);
      incoming.onMessage((m) => {
        report({ relayed: { from: victim, to: impersonated, label, binary: typeof m !== 'string', bytes: m.length,
          text: typeof m === 'string' ? m : undefined } });
        if (out.open) sendOn(out, m); else out.queue.push(m);
      });
    });
    return l;
  }

  function sendOn(l, m) {
    try {
      if (typeof m === 'string') l.dc.sendMessage(m); else l.dc.sendMessageBinary(m);
    } catch { /* that side closed already */ }
  }

  /**
   * Candidates are taken out of a remote description and added one by one afterwards: under load
   * libdatachannel can refuse the ones inside a description with "Got a remote candidate without
   * ICE transport" (its ICE transport is swapped in on another thread), which threw out of the
   * message handler and took the whole proxy down. One that is refused is tried again, for at
   * most two seconds.
   */
  function setRemote(l, sdp, type) {
    const mid = sdp.match(/^a=mid:(\S+)/m)?.[1] ?? '0';
    const candidates = [...sdp.matchAll(/^a=(candidate:[^\r\n]*)/gm)].map((m) => m[1]);
    l.pc.setRemoteDescription(sdp.replace(/^a=(candidate:|end-of-candidates)[^\r\n]*\r?\n/gm, ''), type);
    for (const c of candidates) addCandidate(l, c, mid);
  }

  function addCandidate(l, candidate, mid, tries = 0) {
    try {
      l.pc.addRemoteCandidate(candidate, mid);
    } catch (e) {
      if (/without ICE transport/.test(e.message) && tries < 200) {
        setTimeout(() => addCandidate(l, candidate, mid, tries + 1), 10);
      } else {
        report({ error: `candidate: ${e.message}` });
      }
    }
  }

  /** A peer signalled another: take it over. */
  function onSignal(fromId, toId, data) {
    const l = leg(fromId, toId);
    const other = leg(toId, fromId);
    if (data.description) {
      const { type, sdp } = data.description;
      if (type === 'offer') {
        setRemote(l, sdp, 'offer');
        l.pc.setLocalDescription('answer');
        // Meanwhile open the mirror connection towards the other peer with our own offer.
        if (!other.offered) {
          other.offered = true;
          other.pc.setLocalDescription('offer');
        }
      } else if (type === 'answer') {
        setRemote(l, sdp, 'answer');
      }
    } else if (data.candidate && data.candidate.candidate) {
      addCandidate(l, data.candidate.candidate, data.candidate.sdpMid ?? '0');
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
        // A step libdatachannel refuses is reported, not thrown: the proxy stays up.
        try { onSignal(myId, msg.to, msg.data); } catch (e) { report({ error: `${msg.data?.description?.type ?? 'signal'}: ${e.message}` }); }
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
  report({ url: `http://127.0.0.1:${server.address().port}` });
}

function report(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/**
 * Starts the proxy in front of `upstream`; `relayed` fills with what it relays, `openLegs()`
 * counts the connections it terminated with its own certificate that opened.
 */
export async function startMitm(upstream) {
  const proc = spawn(process.execPath, [fileURLToPath(import.meta.url), upstream], { stdio: ['ignore', 'pipe', 'inherit'] });
  const relayed = [];
  const open = new Set();
  let buf = '';
  const url = await new Promise((resolve, reject) => {
    proc.stdout.on('data', (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const m = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (m.url) resolve(m.url);
        if (m.relayed) relayed.push(m.relayed);
        if (m.open) open.add(m.open);
        if (m.error) process.stderr.write(`mitm proxy: ${m.error}\n`);
      }
    });
    proc.once('exit', (c) => reject(new Error(`mitm proxy exited with ${c}`)));
  });
  return {
    url,
    relayed,
    openLegs: () => open.size,
    /** Waits (up to 5 s) until `pred()` holds: its reports come through a pipe. */
    async settle(pred) {
      const end = Date.now() + 5000;
      while (!pred() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    },
    stop() {
      if (proc.exitCode !== null || proc.signalCode) return Promise.resolve();
      proc.kill('SIGKILL');
      return new Promise((r) => proc.once('exit', r));
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await proxy(process.argv[2]);
}
