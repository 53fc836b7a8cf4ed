// The call page: join a room's call, see and hear everyone, compare the words with each peer.
// `window.callPage` mirrors what the page shows (the browser tests read it).
import { join } from '/sdk/peerweb.js';
import { pageAuth } from '/auth.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.hash.slice(1));
const randomRoom = () => `call-${[...crypto.getRandomValues(new Uint8Array(12))].map((b) => 'abcdefghijkmnpqrstuvwxyz23456789'[b & 31]).join('')}`;
$('room').value = params.get('room') ?? randomRoom();
$('name').value = localStorage.getItem('peerweb.name') ?? '';

const page = { state: 'idle', error: null, peers: {}, video: null, speaker: null };
window.callPage = page;

let room = null;
let call = null;
/** peer id → {tile, audio, screen, state} */
const shown = new Map();

const nameOf = (peer) => (typeof peer.meta?.name === 'string' && peer.meta.name) || peer.id.slice(0, 6);

function badge(text, cls = '') {
  const s = document.createElement('span');
  s.className = `badge ${cls}`;
  s.textContent = text;
  return s;
}

function newTile(cls) {
  const tile = $('tile').content.firstElementChild.cloneNode(true);
  if (cls) tile.classList.add(cls);
  $('grid').append(tile);
  return tile;
}

/** The tiles and audio of one peer, made on first use. */
function entry(peer) {
  let e = shown.get(peer.id);
  if (!e) {
    const tile = newTile();
    tile.dataset.peer = peer.id;
    const audio = document.createElement('audio');
    audio.autoplay = true;
    tile.append(audio);
    tile.querySelector('.yes').onclick = () => call.confirm(peer, true);
    tile.querySelector('.no').onclick = () => call.confirm(peer, false);
    e = { peer, tile, audio, screen: null, noCodec: [], state: { muted: { audio: false, video: false }, video: 'off' }, verification: { state: 'waiting' }, quality: null };
    shown.set(peer.id, e);
    page.peers[peer.id] = { name: nameOf(peer), labels: [], verification: 'waiting', sas: null, muted: e.state.muted, video: 'off', quality: null };
  }
  return e;
}

function drop(peer) {
  const e = shown.get(peer.id);
  if (!e) return;
  e.tile.remove();
  e.screen?.remove();
  shown.delete(peer.id);
  delete page.peers[peer.id];
  render();
}

function render() {
  $('alone').hidden = shown.size > 0;
  for (const e of shown.values()) {
    const p = page.peers[e.peer.id];
    e.tile.querySelector('.who').textContent = nameOf(e.peer);
    const badges = e.tile.querySelector('.badges');
    badges.replaceChildren();
    for (const kind of e.noCodec) badges.append(badge(`no ${kind}: no codec in common`, 'bad'));
    if (e.state.muted.audio) badges.append(badge('muted', 'warn'));
    if (e.state.video === 'held') badges.append(badge('audio only: the call is full', 'warn'));
    else if (e.state.muted.video) badges.append(badge('camera off', 'warn'));
    const v = e.verification;
    if (v.state === 'verified') badges.append(badge(v.by === 'continuity' ? '✓ verified (known key)' : '✓ verified', 'ok'));
    else if (v.state === 'mismatch') badges.append(badge('✗ words differed', 'bad'));
    else if (v.state === 'failed') badges.append(badge('✗ verification broke', 'bad'));
    const q = e.quality;
    if (q) {
      const poor = q.loss > 0.05 || (q.rtt ?? 0) > 0.4 || (q.fps !== null && q.fps < 10 && !e.state.muted.video && e.state.video === 'on');
      const parts = [];
      if (q.width) parts.push(`${q.width}×${q.height}`);
      if (q.fps !== null) parts.push(`${Math.round(q.fps)} fps`);
      if (q.bitrate !== null) parts.push(`${Math.round((q.bitrate + q.audioBitrate) / 1000)} kb/s`);
      if (q.rtt !== null) parts.push(`${Math.round(q.rtt * 1000)} ms`);
      if (q.loss > 0.005) parts.push(`${(q.loss * 100).toFixed(1)}% loss`);
      badges.append(badge(parts.join(' · '), poor ? 'bad' : ''));
    }
    const box = e.tile.querySelector('.verify');
    const ask = v.state === 'compare' || v.state === 'changed';
    box.hidden = !ask;
    box.classList.toggle('changed', v.state === 'changed');
    if (ask) {
      box.querySelector('.verify-text').textContent = v.state === 'changed'
        ? `⚠ ${nameOf(e.peer)}'s security key changed since your last call. Someone may be listening in. Read the words aloud:`
        : `Read these words aloud with ${nameOf(e.peer)}; they must be the same on both screens:`;
      box.querySelector('.sas').textContent = v.sas ?? '';
    }
    e.tile.classList.toggle('speaking', call?.speaker === e.peer);
    Object.assign(p, { noCodec: e.noCodec, muted: e.state.muted, video: e.state.video, verification: v.state, by: v.by ?? null, sas: v.sas ?? null, error: v.error ?? null, quality: q });
  }
  const alerts = $('alerts');
  alerts.replaceChildren();
  for (const e of shown.values()) {
    if (e.verification.state === 'changed' || e.verification.state === 'mismatch') {
      const d = document.createElement('div');
      d.className = 'alert';
      d.setAttribute('role', 'alert');
      d.textContent = e.verification.state === 'changed'
        ? `Warning: ${nameOf(e.peer)}'s security key is not the one from your last call. Compare the words before you say anything private.`
        : `The words with ${nameOf(e.peer)} did not match: someone may be in the middle of this call. Leave it and meet again another way.`;
      alerts.append(d);
    }
  }
}

function setToggle(id, on, onText, offText) {
  $(id).setAttribute('aria-pressed', String(on));
  $(id).textContent = on ? onText : offText;
}

async function fillDevices() {
  let devices = [];
  try {
    devices = await navigator.mediaDevices.enumerateDevices();
  } catch { /* none */ }
  for (const [kind, id, track] of [['audioinput', 'mic-pick', call.audioTrack], ['videoinput', 'cam-pick', call.videoTrack]]) {
    const select = $(id);
    const current = track?.getSettings?.().deviceId;
    select.replaceChildren(...devices.filter((d) => d.kind === kind).map((d, i) => {
      const o = document.createElement('option');
      o.value = d.deviceId;
      o.textContent = d.label || `${kind === 'audioinput' ? 'Microphone' : 'Camera'} ${i + 1}`;
      o.selected = d.deviceId === current;
      return o;
    }));
    select.hidden = select.options.length < 2;
  }
}

function showLocal() {
  const tile = newTile('me');
  const video = tile.querySelector('video');
  video.muted = true;
  video.srcObject = call.localStream;
  tile.querySelector('.who').textContent = 'You';
  $('grid').prepend(tile);
  return tile;
}

$('join-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (window.peerwebMissing.length) return;
  const roomName = $('room').value.trim();
  const name = $('name').value.trim();
  localStorage.setItem('peerweb.name', name);
  $('join-error').textContent = '';
  page.state = 'joining';
  try {
    const auth = await pageAuth(roomName);
    room = await join(location.origin, roomName, { meta: name ? { name } : undefined, ...auth });
    call = await room.call({ audio: $('want-audio').checked, video: $('want-video').checked });
  } catch (e) {
    room?.leave();
    page.state = 'error';
    page.error = e.message;
    $('join-error').textContent = `Could not join the call: ${e.message}`;
    return;
  }
  window.call = call;
  location.hash = new URLSearchParams({ room: roomName }).toString();
  $('share').onclick = (e) => {
    e.preventDefault();
    navigator.clipboard?.writeText(location.href).then(() => { $('share').textContent = 'Copied'; }, () => {});
  };
  $('join-form').hidden = true;
  $('intro').hidden = true;
  $('call-view').hidden = false;
  showLocal();
  for (const peer of room.peers.values()) entry(peer);
  room.addEventListener('peer', ({ peer }) => { entry(peer); render(); });
  room.addEventListener('peerleft', ({ peer }) => drop(peer));
  call.addEventListener('track', ({ peer, track, label, stream }) => {
    const e = entry(peer);
    page.peers[peer.id].labels = [...new Set([...page.peers[peer.id].labels, label])];
    if (label === 'audio') e.audio.srcObject = new MediaStream([track]);
    else if (label === 'screen') {
      e.screen ??= newTile('screen');
      e.screen.querySelector('.who').textContent = `${nameOf(peer)}'s screen`;
      e.screen.querySelector('video').srcObject = new MediaStream([track]);
    } else {
      const v = e.tile.querySelector('video');
      v.muted = true; // its sound plays from the audio element
      v.srcObject = stream.getVideoTracks().length ? new MediaStream([track]) : stream;
    }
    render();
  });
  call.addEventListener('trackended', ({ peer, label }) => {
    const e = shown.get(peer.id);
    if (!e) return;
    page.peers[peer.id].labels = page.peers[peer.id].labels.filter((l) => l !== label);
    if (label === 'screen') {
      e.screen?.remove();
      e.screen = null;
    } else if (label === 'camera') e.tile.querySelector('video').srcObject = null;
    render();
  });
  call.addEventListener('peerstate', ({ peer, muted, video }) => {
    entry(peer).state = { muted, video };
    render();
  });
  call.addEventListener('nocodec', ({ peer, kind }) => {
    entry(peer).noCodec.push(kind);
    render();
  });
  call.addEventListener('verification', ({ peer, state, sas, by, error }) => {
    entry(peer).verification = { state, sas, by, error };
    render();
  });
  call.addEventListener('quality', ({ peer, quality }) => {
    const e = shown.get(peer.id);
    if (e) e.quality = quality;
    render();
  });
  call.addEventListener('speaker', ({ peer }) => {
    page.speaker = peer?.id ?? null;
    render();
  });
  call.addEventListener('video', ({ state }) => {
    page.video = state;
  });
  call.addEventListener('devices', fillDevices);
  page.video = call.videoState;
  $('mic').onclick = () => {
    if (call.muted.audio) call.unmute('audio'); else call.mute('audio');
    setToggle('mic', call.muted.audio, 'Unmute', 'Mute');
  };
  $('cam').onclick = () => {
    if (call.muted.video) call.unmute('video'); else call.mute('video');
    setToggle('cam', call.muted.video, 'Camera on', 'Camera off');
  };
  $('mic').disabled = !call.audioTrack;
  $('cam').disabled = !call.videoTrack;
  $('screen').hidden = !navigator.mediaDevices.getDisplayMedia;
  $('screen').onclick = async () => {
    try {
      if (call.screenTrack) call.stopScreen();
      else await call.shareScreen();
    } catch { /* the user chose nothing */ }
    $('screen').textContent = call.screenTrack ? 'Stop sharing' : 'Share screen';
  };
  $('mic-pick').onchange = () => call.useDevice({ audio: $('mic-pick').value }).catch((e) => { $('join-error').textContent = e.message; });
  $('cam-pick').onchange = () => call.useDevice({ video: $('cam-pick').value }).catch((e) => { $('join-error').textContent = e.message; });
  $('hangup').onclick = () => {
    call.hangUp();
    room.leave();
    page.state = 'left';
    location.hash = '';
    location.reload();
  };
  await fillDevices();
  page.state = 'in-call';
  render();
});
