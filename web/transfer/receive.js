// The receive page: by link (the fragment after # holds the secret and never reaches the
// server) or, without one, by a code typed in (SPAKE2: the code never reaches the server either).
import { parseCode, parseFragment, receive } from './transfer.js';
import { $, setStatus, showError, showProgress, showVerified, size, state } from './ui.js';

function start(target) {
  receive({
    server: location.origin,
    ...target,
    ui: {
      state: (s) => setStatus(s, {
        joining: 'Connecting…', verifying: 'Verifying the sender…', offered: 'The sender offers:',
        receiving: 'Receiving…', declined: 'Declined.',
      }[s] ?? s),
      verified: showVerified,
      offer: (files, total) => {
        state.files = files.map((f) => ({ path: f.path, size: f.size }));
        $('summary').textContent = `${files.length} file(s), ${size(total)}`;
        const body = $('files');
        for (const f of files) {
          const tr = body.insertRow();
          tr.insertCell().textContent = f.path;
          const td = tr.insertCell();
          td.className = 'size';
          td.textContent = size(f.size);
        }
        $('offer').hidden = false;
        return new Promise((resolve) => {
          $('accept').onclick = () => { $('offer').hidden = true; resolve(true); };
          $('decline').onclick = () => { $('offer').hidden = true; resolve(false); };
        });
      },
      storage: (where) => { state.storage = where; },
      progress: showProgress,
      done: (results, summary) => {
        window.transferFiles = results;
        state.results = results.map((r) => ({ path: r.path, name: r.name, size: r.size, blake3: r.blake3 }));
        state.summary = summary;
        state.state = 'done';
        $('status').textContent = `Received ${results.length} file(s), ${size(summary.bytes)} in ${summary.seconds.toFixed(1)} s`
          + (summary.path ? ` (${summary.path})` : '');
        const list = $('downloads');
        for (const r of results) {
          const a = document.createElement('a');
          a.href = URL.createObjectURL(r.file);
          a.download = r.name;
          a.textContent = `${r.path} (${size(r.size)})`;
          list.appendChild(document.createElement('li')).appendChild(a);
        }
        $('saved').hidden = false;
      },
    },
  }).catch(showError);
}

/** What the box holds: a code, or a whole link pasted in. */
function target(text) {
  const hash = text.indexOf('#');
  if (hash >= 0) {
    const link = parseFragment(text.slice(hash));
    if (!link) throw new Error('the link is damaged (the part after # is not a whole secret)');
    return link;
  }
  return parseCode(text);
}

if (window.peerwebMissing.length) {
  setStatus('unsupported', 'This browser cannot receive (see above).');
} else if (location.hash.length > 1) {
  const link = parseFragment(location.hash);
  if (link) start(link);
  else showError('This page needs the whole link the sender shared (the part after # is missing or damaged).');
} else {
  setStatus('code', 'Enter the code to receive.');
  $('ask').hidden = false;
  $('code').focus();
  $('ask').addEventListener('submit', (ev) => {
    ev.preventDefault();
    let t;
    try {
      t = target($('code').value);
    } catch (e) {
      state.error = e.message;
      $('error').textContent = e.message;
      $('error').hidden = false;
      return;
    }
    $('error').hidden = true;
    $('ask').hidden = true;
    start(t);
  });
}

// A link opened in this tab while it shows another differs only after the #, which browsers
// treat as the same page: start over with the new one.
window.addEventListener('hashchange', () => location.reload());
