// The bundled pages on a server that requires access tokens (`peerweb serve --auth-secret
// … --page-password …`): the operator's page password buys a short-lived token for one room
// (POST /api/auth). It is asked for once per tab, and each token is reused until shortly
// before it expires.
const KEY = 'peerweb.pagePassword';
const tokens = new Map(); // room → {token, until}

/**
 * Extra `join` options for `room`: none on an open server, else a `token` function.
 * Throws when the server requires tokens its pages cannot get.
 */
export async function pageAuth(room, server = location.origin) {
  let info = { required: false };
  try {
    const res = await fetch(`${server}/api/auth`, { cache: 'no-store' });
    if (res.ok) info = await res.json();
  } catch {
    // An older server, or the network: join will say what is wrong.
  }
  if (!info.required) return {};
  if (!info.pageLogin) {
    throw new Error('this server requires an access token, and its pages have no password: ask its operator');
  }
  return { token: () => tokenFor(server, room) };
}

async function tokenFor(server, room) {
  const have = tokens.get(room);
  if (have && have.until > Date.now()) return have.token;
  let note = '';
  for (;;) {
    const password = sessionStorage.getItem(KEY) ?? await askPassword(note);
    const res = await fetch(`${server}/api/auth`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ password, room }),
    });
    const body = await res.json().catch(() => ({}));
    if (res.ok) {
      sessionStorage.setItem(KEY, password);
      tokens.set(room, { token: body.token, until: Date.now() + (body.ttl - 60) * 1000 });
      return body.token;
    }
    sessionStorage.removeItem(KEY);
    if (res.status !== 401) throw new Error(body.message ?? `the server said ${res.status}`);
    note = body.message ?? 'wrong password';
  }
}

/** A small dialog asking for the server's page password; resolves with what was typed. */
function askPassword(note) {
  return new Promise((resolve) => {
    const d = document.createElement('dialog');
    d.className = 'card';
    d.innerHTML = `<form method="dialog">
      <p><strong>This server asks for its password.</strong></p>
      <p class="muted small">Its operator gave it to you; it lets this page into the room.</p>
      <label>Password <input id="page-password" type="password" required autocomplete="current-password"></label>
      <p class="error" role="alert"></p>
      <button type="submit">Continue</button>
    </form>`;
    d.querySelector('.error').textContent = note;
    d.addEventListener('cancel', (e) => e.preventDefault());
    d.querySelector('form').addEventListener('submit', () => {
      const v = d.querySelector('input').value;
      d.remove();
      resolve(v);
    });
    document.body.append(d);
    d.showModal();
  });
}
