// The send page: pick or drop files (or a folder), share the link or the code, send to whoever
// proves it holds one of them.
import { renderSVG } from 'uqr';
import { send } from './transfer.js';
import { $, setStatus, showError, showProgress, showVerified, size, state } from './ui.js';

let started = false;

function start(items) {
  if (started || items.length === 0 || window.peerwebMissing.length) return;
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
        // Dark modules on white with a quiet zone, whatever the theme: what phone cameras read.
        $('qr').innerHTML = renderSVG(url, { border: 4, ecc: 'M' });
        $('copy').onclick = async () => {
          try {
            await navigator.clipboard.writeText(url);
            $('copy').textContent = 'Copied';
          } catch {
            $('copy').textContent = 'Select the link to copy it';
          }
        };
        // Phones: hand the link to a messenger (the Web Share API).
        if (navigator.share) {
          $('share-link').hidden = false;
          $('share-link').onclick = () => navigator.share({ title: 'Files from peerweb', url }).catch(() => {});
        }
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

/**
 * Files shared to the installed app (Share → peerweb): the service worker kept them and opened
 * this page with ?shared=…; they are sent as if picked here.
 */
async function shared(how) {
  history.replaceState(null, '', '/send');
  const why = {
    empty: 'Nothing was shared: pick the files here.',
    unreadable: 'The shared files could not be read: pick them here.',
    'too-many': `Too many files were shared at once: pick them here, or share a folder's files in parts.`,
    lost: 'The shared files did not reach this page (peerweb was not installed yet): share them again, or pick them here.',
  }[how];
  if (why) {
    $('status').textContent = why;
    return;
  }
  try {
    const sw = navigator.serviceWorker;
    const worker = sw.controller ?? (await sw.ready).active;
    const answer = await new Promise((resolve, reject) => {
      const channel = new MessageChannel();
      channel.port1.onmessage = ({ data }) => (data.error ? reject(new Error(data.error)) : resolve(data.files));
      worker.postMessage({ take: 'shared' }, [channel.port2]);
    });
    if (answer.length === 0) $('status').textContent = 'The shared files were sent or dropped already: pick them here.';
    else start(answer.map((file) => ({ file, path: file.name })));
  } catch (e) {
    showError(`The shared files could not be taken from this browser's storage: ${e.message}`);
  }
}

const sharedParam = new URLSearchParams(location.search).get('shared');
if (sharedParam !== null && !window.peerwebMissing.length) shared(sharedParam);
