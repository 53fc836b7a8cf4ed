// peerweb's service worker. It does two things:
// - takes files shared to the installed app ("Share → peerweb" on Android: a POST to /share,
//   see the manifest's share_target), keeps them in IndexedDB in this browser, and opens the
//   send page, which asks for them ({take: 'shared'} on a MessageChannel). The files never
//   reach the server.
// - answers a page load that fails because the network is gone with a page that says so.
// Nothing else is cached: the pages come from the server, revalidated, like the app itself.
const DB = 'peerweb-share';
const STORE = 'pending';
/** Files kept from one share, at most (Android lets a user share many at once). */
const MAX_FILES = 1000;

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('fetch', (event) => {
  const { request } = event;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (request.method === 'POST' && url.pathname === '/share') {
    event.respondWith(share(request));
  } else if (request.mode === 'navigate' && request.method === 'GET') {
    event.respondWith(fetch(request).catch(() => offline()));
  }
});

self.addEventListener('message', (event) => {
  if (event.data?.take === 'shared' && event.ports[0]) {
    event.waitUntil(take().then(
      (files) => event.ports[0].postMessage({ files }),
      (e) => event.ports[0].postMessage({ error: String(e?.message ?? e) }),
    ));
  }
});

/** A share: its files (or, with none, its text as shared.txt) kept for the send page. */
async function share(request) {
  let files;
  try {
    const form = await request.formData();
    files = form.getAll('files').filter((f) => f instanceof File);
    if (files.length === 0) {
      const text = ['title', 'text', 'url'].map((k) => form.get(k)).filter((v) => typeof v === 'string' && v);
      if (text.length) files = [new File([text.join('\n')], 'shared.txt', { type: 'text/plain' })];
    }
  } catch {
    return Response.redirect('/send?shared=unreadable', 303);
  }
  if (files.length === 0) return Response.redirect('/send?shared=empty', 303);
  if (files.length > MAX_FILES) return Response.redirect(`/send?shared=too-many&max=${MAX_FILES}`, 303);
  await keep(files);
  return Response.redirect('/send?shared=1', 303);
}

function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** Runs `fn(store)` in one transaction; resolves with the value of the request it returns. */
async function withStore(mode, fn) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const req = fn(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(req?.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error('the browser refused to keep the shared files'));
    });
  } finally {
    db.close();
  }
}

/** The latest share replaces one the send page never took. */
const keep = (files) => withStore('readwrite', (s) => s.put(files, 'files'));

async function take() {
  let files;
  await withStore('readwrite', (s) => {
    const req = s.get('files');
    req.onsuccess = () => {
      files = req.result ?? [];
      s.delete('files');
    };
    return req;
  });
  return files;
}

function offline() {
  const html = `<!doctype html><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark"><title>peerweb — offline</title>
<style>body { font: 16px/1.5 system-ui, sans-serif; max-width: 34rem; margin: 3rem auto; padding: 0 1rem; }</style>
<main><h1>This device is offline</h1><p>peerweb connects devices directly, but its server has to introduce them first. Reload when the network is back.</p></main>`;
  return new Response(html, { status: 503, headers: { 'content-type': 'text/html; charset=utf-8' } });
}
