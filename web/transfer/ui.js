// Shared bits of the two transfer pages; `window.transferState` mirrors what the page shows
// (the browser tests read it).
export const $ = (id) => document.getElementById(id);

export const state = { state: 'starting', sas: null, error: null, link: null, files: [], results: [], summary: null };
window.transferState = state;

export function setStatus(name, text) {
  state.state = name;
  $('status').textContent = text;
}

export function showError(e) {
  state.state = 'error';
  state.error = String(e?.message ?? e);
  $('error').textContent = state.error;
  $('error').hidden = false;
  $('status').textContent = 'Stopped.';
}

export function size(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function showVerified({ sas, path }) {
  state.sas = sas;
  $('sas').textContent = sas;
  $('verified').hidden = false;
  if (path) state.path = path;
}

let shownAt = -Infinity;

/**
 * `base`: bytes that were already there (resumed), not counted in the rate. The page shows it
 * ten times a second and at the end, not once per 60 KiB chunk (that was 6% of a receiving
 * page's main thread).
 */
export function showProgress(done, total, seconds, base = 0) {
  state.done = done;
  const now = performance.now();
  if (done < total && now - shownAt < 100) return;
  shownAt = now;
  $('transfer').hidden = false;
  $('progress').value = total ? done / total : 1;
  const rate = seconds > 0 ? (done - base) / seconds : 0;
  const eta = rate > 0 ? (total - done) / rate : 0;
  $('rate').textContent = `${size(done)} of ${size(total)} · ${size(rate)}/s · ${Math.ceil(eta)} s left`;
}
