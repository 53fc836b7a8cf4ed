// The demo app: join a room, see each peer's path and RTT, chat over data channels.
import { join } from '/sdk/peerweb.js';
import { pageAuth } from '/auth.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.hash.slice(1));
// A new room gets a name nobody can guess (60 random bits; the share link carries it); any
// name can be typed instead.
const randomRoom = () => `room-${[...crypto.getRandomValues(new Uint8Array(12))].map((b) => 'abcdefghijkmnpqrstuvwxyz23456789'[b & 31]).join('')}`;
$('room').value = params.get('room') ?? randomRoom();
$('name').value = localStorage.getItem('peerweb.name') ?? '';

let room = null;
const names = new Map();

function nameOf(peer) {
  return (peer.meta && typeof peer.meta.name === 'string' && peer.meta.name) || peer.id.slice(0, 6);
}

function log(text, cls, who) {
  const li = document.createElement('li');
  if (cls) li.className = cls;
  if (who) {
    const b = document.createElement('span');
    b.className = 'who';
    b.textContent = who;
    li.append(b);
  }
  li.append(document.createTextNode(text));
  $('log').append(li);
  $('log').scrollTop = $('log').scrollHeight;
}

function badge(text, cls) {
  const s = document.createElement('span');
  s.className = `badge ${cls ?? ''}`;
  s.textContent = text;
  return s;
}

function renderPeers() {
  const ul = $('peers');
  ul.replaceChildren();
  for (const peer of room.peers.values()) {
    const li = document.createElement('li');
    li.dataset.peer = peer.id;
    const n = document.createElement('span');
    n.className = 'peer-name';
    n.textContent = nameOf(peer);
    const id = document.createElement('span');
    id.className = 'peer-id';
    id.textContent = peer.id;
    const badges = document.createElement('div');
    badges.className = 'badges';
    const st = peer.state;
    badges.append(badge(st, st === 'connected' ? 'ok' : st === 'failed' ? 'bad' : 'warn'));
    if (peer.path) {
      const p = peer.path;
      badges.append(badge(p.type === 'relay' ? `relay/${p.relayProtocol ?? p.protocol}` : `${p.type} ${p.protocol}`, p.type === 'relay' ? 'relay' : 'ok'));
      if (p.rtt !== null) badges.append(badge(`${Math.round(p.rtt * 1000)} ms`, 'rtt'));
    }
    li.append(n, id, badges);
    ul.append(li);
  }
  $('count').textContent = `(${room.peers.size})`;
  $('alone').hidden = room.peers.size > 0;
}

function showSignaling(state) {
  const b = $('sig');
  b.hidden = false;
  b.textContent = `signaling: ${state}`;
  b.className = `badge ${state === 'open' ? 'ok' : state === 'closed' ? 'bad' : 'warn'}`;
}

$('join-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (window.peerwebMissing.length) return; // the page says what this browser lacks
  const roomName = $('room').value.trim();
  const name = $('name').value.trim();
  localStorage.setItem('peerweb.name', name);
  $('join-error').textContent = '';
  try {
    const auth = await pageAuth(roomName);
    room = await join(location.origin, roomName, { meta: name ? { name } : undefined, ...auth });
  } catch (e) {
    $('join-error').textContent = `Could not join: ${e.message}`;
    return;
  }
  location.hash = new URLSearchParams({ room: roomName }).toString();
  $('join-form').hidden = true;
  $('room-view').hidden = false;
  $('me').textContent = name || room.id.slice(0, 6);
  $('room-name').textContent = roomName;
  $('share').href = `${location.origin}/#${new URLSearchParams({ room: roomName })}`;
  $('share').addEventListener('click', (e) => {
    e.preventDefault();
    navigator.clipboard?.writeText($('share').href);
    $('share').textContent = 'Copied';
  });
  showSignaling(room.signalingState);
  room.addEventListener('signaling', (e) => showSignaling(e.state));
  room.addEventListener('peer', ({ peer }) => {
    names.set(peer.id, nameOf(peer));
    for (const t of ['state', 'path']) peer.addEventListener(t, renderPeers);
    peer.addEventListener('open', () => log(`${nameOf(peer)} connected directly`, 'system'));
    renderPeers();
  });
  room.addEventListener('peerleft', ({ peer }) => {
    log(`${nameOf(peer)} left`, 'system');
    renderPeers();
  });
  room.addEventListener('message', ({ peer, data }) => {
    if (typeof data === 'string') log(data, '', nameOf(peer));
  });
  room.addEventListener('error', ({ error }) => log(`error: ${error.code}`, 'system'));
  renderPeers();
  setInterval(renderPeers, 2000);
  $('msg').focus();
});

$('chat-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = $('msg').value;
  if (!text || !room) return;
  room.broadcast(text);
  log(text, 'mine', 'you');
  $('msg').value = '';
});
