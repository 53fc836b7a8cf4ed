// The send page: pick or drop files (or a folder), share the link or the code, send to whoever
// proves it holds one of them.
import { send } from './transfer.js';
import { $, setStatus, showError, showProgress, showVerified, size, state } from './ui.js';

let started = false;

function start(items) {
  if (started || items.length === 0) return;
  started = true;
  $('pick').hidden = true;
  state.files = items.map((it) => ({ path: it.path, size: it.file.size }));
  send({
    server: location.origin,
    items,
    ui: {
      state: (s) => setStatus(s, {
        hashing: 'Preparing…', waiting: 'Waiting for the receiver…', verifying: 'Verifying the receiver…',
        offered: 'Waiting for the receiver to accept…', sending: 'Sending…',
      }[s] ?? s),
      hashing: (done, total) => { $('status').textContent = `Preparing… ${size(done)} of ${size(total)}`; },
      link: (url, code) => {
        state.link = url;
        state.code = code;
        $('link').textContent = url;
        $('code').textContent = code;
        $('code-cmd').textContent = code;
        $('share').hidden = false;
        $('copy').onclick = () => navigator.clipboard?.writeText(url);
      },
      verified: (v) => { $('share').hidden = true; showVerified(v); },
      progress: showProgress,
      done: (summary) => {
        state.summary = summary;
        state.state = 'done';
        $('status').textContent = `Sent ${items.length} file(s), ${size(summary.bytes)} in ${summary.seconds.toFixed(1)} s`
          + (summary.path ? ` (${summary.path})` : '');
      },
    },
  }).catch(showError);
}

$('files').addEventListener('change', (ev) => start([...ev.target.files].map((file) => ({ file, path: file.name }))));
$('folder').addEventListener('change', (ev) => start([...ev.target.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }))));
const drop = $('drop');
drop.addEventListener('dragover', (ev) => { ev.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (ev) => {
  ev.preventDefault();
  drop.classList.remove('over');
  start([...ev.dataTransfer.files].map((file) => ({ file, path: file.name })));
});
