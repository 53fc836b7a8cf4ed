// The /watch page: pair with a `peerweb camera` by its link (the secret after # never reaches
// the server) or a typed code, keep the key in this browser, and watch — the camera's name,
// size, frame rate, estimated delay, path and viewer count shown live; it waits for the camera
// when it is away. `window.watchState` mirrors what the page shows, for tests and tools.
import { pageAuth } from '/auth.js';
import { pairCamera, watchCamera, cameraRoom, pairingRoom } from '/sdk/camera.js';
import { parseCode, parseFragment } from '/sdk/trust.js';

const KEY = 'peerweb-cameras';
const $ = (id) => document.getElementById(id);
const state = { state: 'idle', cameras: [] };
window.watchState = state;
let current = null;

function load() {
  try {
    const list = JSON.parse(localStorage.getItem(KEY) ?? '[]');
    return Array.isArray(list) ? list.filter((c) => c && typeof c.camera === 'string' && typeof c.key === 'string') : [];
  } catch { return []; }
}

function save(list) {
  localStorage.setItem(KEY, JSON.stringify(list.slice(-64)));
  state.cameras = list.map((c) => ({ camera: c.camera, name: c.name }));
}

function status(text) {
  $('status').textContent = text;
}

function showError(e) {
  state.error = String(e?.message ?? e);
  $('error').textContent = state.error;
  $('error').hidden = false;
}

function render() {
  const list = load();
  save(list);
  const ul = $('list');
  ul.replaceChildren();
  for (const c of list) {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.textContent = c.name || c.camera;
    const go = document.createElement('button');
    go.textContent = 'Watch';
    go.onclick = () => start(c);
    const forget = document.createElement('button');
    forget.textContent = 'Forget';
    forget.className = 'secondary';
    forget.onclick = () => { save(load().filter((x) => x.camera !== c.camera)); render(); };
    li.append(name, go, forget);
    ul.append(li);
  }
  $('cameras').hidden = list.length === 0;
}

async function pair(target) {
  $('error').hidden = true;
  state.state = 'pairing';
  status('Pairing…');
  const auth = await pageAuth(pairingRoom(target.nameplate ?? parseCode(target.code).nameplate));
  const rec = await pairCamera(location.origin, target, { ...auth, name: navigator.userAgentData?.platform || 'browser' });
  state.paired = { camera: rec.camera, name: rec.name, sas: rec.sas };
  save([...load().filter((c) => c.camera !== rec.camera), rec]);
  render();
  return rec;
}

async function start(rec) {
  current?.stop();
  $('error').hidden = true;
  Object.assign(state, { state: 'connecting', camera: rec.camera, name: rec.name, status: null, stats: null, error: null });
  status(`Connecting to ${rec.name}…`);
  history.replaceState(null, '', `/watch?camera=${rec.camera}`);
  const auth = await pageAuth(cameraRoom(rec.camera));
  const w = await watchCamera(rec, { ...auth, name: 'browser' });
  current = w;
  window.cameraWatch = w;
  $('name').textContent = rec.name;
  const v = $('video');
  w.addEventListener('track', ({ stream }) => {
    if (v.srcObject === stream) return;
    v.srcObject = stream;
    v.play().catch(() => {});
    // When the first picture showed, in ms since this page began to load.
    if (state.firstFrame == null && v.requestVideoFrameCallback) {
      v.requestVideoFrameCallback(() => { state.firstFrame ??= Math.round(performance.now()); });
    }
  });
  w.addEventListener('state', ({ state: s }) => {
    state.state = s;
    status({
      waiting: `Waiting for ${rec.name} to come online…`, verifying: 'Verifying the camera…',
      watching: `Watching ${rec.name}.`, refused: 'The camera refused.', stopped: 'Stopped.',
    }[s] ?? s);
    $('viewer').hidden = s !== 'watching';
  });
  w.addEventListener('watching', ({ sas }) => { state.sas = sas; $('sas').textContent = sas; });
  w.addEventListener('status', (s) => { state.status = { viewers: s.viewers, width: s.width, height: s.height, fps: s.fps }; });
  w.addEventListener('refused', ({ error }) => showError(error));
  if (w.state === 'waiting') status(`Waiting for ${rec.name} to come online…`);
  const timer = setInterval(async () => {
    if (w.state === 'stopped' || w.state === 'refused') { clearInterval(timer); return; }
    const s = await w.stats().catch(() => null);
    if (!s) return;
    state.stats = s;
    const parts = [];
    if (s.width) parts.push(`${s.width}×${s.height}`);
    if (s.fps != null) parts.push(`${Math.round(s.fps)} fps`);
    parts.push(`≈ ${s.latencyMs} ms delay`);
    if (s.path) parts.push(s.path.type === 'relay' ? 'relayed' : 'direct');
    if (state.status?.viewers != null) parts.push(`${state.status.viewers} watching`);
    $('facts').textContent = parts.join(' · ');
    // Sound starts muted (browsers play muted video without a tap); offered once it comes.
    $('sound').hidden = !s.audio;
  }, 1000);
}

$('stop').onclick = () => { current?.stop(); $('viewer').hidden = true; };
$('sound').onclick = () => {
  const v = $('video');
  v.muted = !v.muted;
  $('sound').textContent = v.muted ? 'Sound on' : 'Sound off';
  v.play().catch(() => {});
};

$('ask').onsubmit = (ev) => {
  ev.preventDefault();
  const text = $('code').value.trim();
  const hash = text.indexOf('#');
  const target = hash >= 0 ? parseFragment(text.slice(hash)) : { code: text };
  if (!target) { showError(new Error('that link is damaged')); return; }
  pair(target).then(start).catch((e) => { state.state = 'error'; status('Not paired.'); showError(e); });
};

render();
const link = parseFragment(location.hash);
const wanted = new URLSearchParams(location.search).get('camera');
const list = load();
if (link) {
  // The secret leaves the address bar (and history) before anything else happens.
  history.replaceState(null, '', '/watch');
  pair(link).then(start).catch((e) => { state.state = 'error'; status('Not paired.'); showError(e); });
} else if (wanted || list.length === 1) {
  const rec = list.find((c) => c.camera === wanted) ?? (wanted ? null : list[0]);
  if (rec) start(rec).catch(showError);
  else { status('This camera is not paired in this browser.'); state.state = 'idle'; }
} else {
  status(list.length ? 'Choose a camera.' : 'No camera paired in this browser yet.');
}
