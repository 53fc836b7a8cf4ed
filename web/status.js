// The /status page: connectivity and swarm offload as the peers report them (GET /api/status),
// refreshed live.
const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);
const pct = (a, b) => (b ? `${Math.round((100 * a) / b)}%` : '–');

function bytes(n) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** The bucket bound below which half the connections connected (ms), or null. */
function median({ bounds, counts, count }) {
  let seen = 0;
  for (const [i, n] of counts.entries()) {
    seen += n;
    if (count && seen * 2 >= count) return i < bounds.length ? bounds[i] : null;
  }
  return null;
}

function rows(table, list) {
  const body = $(table).tBodies[0];
  const max = Math.max(1, ...list.map((r) => r[1]));
  body.replaceChildren(...list.map(([label, n]) => {
    const tr = document.createElement('tr');
    const name = document.createElement('td');
    name.textContent = label;
    const bar = document.createElement('td');
    bar.className = 'bar';
    const fill = document.createElement('span');
    fill.style.width = `${(100 * n) / max}%`;
    bar.append(fill);
    const num = document.createElement('td');
    num.className = 'n';
    num.textContent = String(n);
    tr.append(name, bar, num);
    return tr;
  }));
}

function chart(minutes) {
  const svg = $('chart');
  const ns = 'http://www.w3.org/2000/svg';
  const w = 600 / minutes.length;
  const max = Math.max(1, ...minutes.map((m) => m.direct + m.relayed + m.failed));
  const bars = [];
  minutes.forEach((m, i) => {
    let y = 140;
    for (const kind of ['direct', 'relayed', 'failed']) {
      const h = (m[kind] / max) * 130;
      if (!h) continue;
      y -= h;
      const r = document.createElementNS(ns, 'rect');
      r.setAttribute('class', kind);
      r.setAttribute('x', String(i * w + 1));
      r.setAttribute('width', String(Math.max(1, w - 2)));
      r.setAttribute('y', String(y));
      r.setAttribute('height', String(h));
      const t = document.createElementNS(ns, 'title');
      t.textContent = `${new Date(m.t * 1000).toLocaleTimeString()}: ${m[kind]} ${kind}`;
      r.append(t);
      bars.push(r);
    }
  });
  svg.replaceChildren(...bars);
  const total = minutes.reduce((a, m) => a + m.direct + m.relayed + m.failed, 0);
  const turn = minutes.reduce((a, m) => a + m.turn_bytes, 0);
  $('chart-note').textContent = `${total} connection reports and ${bytes(turn)} relayed by TURN in the last hour (busiest minute: ${max === 1 && !total ? 0 : max}).`;
}

/** Offload: the share of content that came from peers rather than from the origin. */
const offload = (http, p2p) => pct(p2p, http + p2p);

function swarms(s) {
  const last = s.minutes.at(-1) ?? { swarm_http: 0, swarm_p2p: 0 };
  const b = s.swarms.bytes;
  $('offload').textContent = offload(last.swarm_http, last.swarm_p2p);
  $('offload-detail').textContent = `${offload(b.http, b.p2p)} since start: ${bytes(b.p2p)} from peers, ${bytes(b.http)} from origins`;
  $('swarms').tBodies[0].replaceChildren(...s.swarms.top.map((w) => {
    const tr = document.createElement('tr');
    const cells = [w.id.slice(0, 16) + '…', String(w.members), String(w.seeds), bytes(w.http), bytes(w.p2p), offload(w.http, w.p2p)];
    cells.forEach((text, i) => {
      const td = document.createElement('td');
      td.textContent = text;
      if (i) td.className = 'n';
      else td.title = w.id;
      tr.append(td);
    });
    return tr;
  }));
  $('swarms-note').textContent = `${s.swarms.count} swarms with ${s.swarms.members} members now${s.swarms.top.length < s.swarms.count ? ` (the ${s.swarms.top.length} largest shown)` : ''}.`;
}

function render(s) {
  const t = s.totals;
  const reports = t.connected + t.failed;
  $('success').textContent = pct(t.connected, reports);
  $('success-detail').textContent = `${t.connected} connected, ${t.failed} failed`;
  $('direct').textContent = t.connected ? `${pct(t.direct, t.connected)} / ${pct(t.relayed, t.connected)}` : '–';
  $('direct-detail').textContent = `${t.direct} direct, ${t.relayed} relayed`;
  const med = median(s.connect_ms);
  $('median').textContent = s.connect_ms.count ? (med === null ? `> ${s.connect_ms.bounds.at(-1) / 1000} s` : `≤ ${med < 1000 ? `${med} ms` : `${med / 1000} s`}`) : '–';
  $('median-detail').textContent = s.connect_ms.count ? `mean ${Math.round(s.connect_ms.sum_ms / s.connect_ms.count)} ms over ${s.connect_ms.count}` : 'no connection yet';
  const restarts = t.restarts_recovered + t.restarts_failed;
  $('restarts').textContent = pct(t.restarts_recovered, restarts);
  $('restarts-detail').textContent = `${t.restarts_recovered} of ${restarts}`;
  $('turn').textContent = bytes(t.turn_bytes);
  $('live').textContent = `now: ${s.live.connections} signaling connections, ${s.live.rooms} rooms, ${s.live.turn_allocations} TURN allocations`;
  const b = s.connect_ms.bounds;
  rows('ttc', s.connect_ms.counts.map((n, i) => [i < b.length ? `≤ ${b[i] < 1000 ? `${b[i]} ms` : `${b[i] / 1000} s`}` : `> ${b.at(-1) / 1000} s`, n]));
  rows('paths', s.by_path);
  rows('clients', s.by_client.map(([k, [ok, failed]]) => [failed ? `${k} (${failed} failed)` : k, ok]));
  chart(s.minutes);
  swarms(s);
  window.statusData = s;
}

async function refresh() {
  try {
    const res = await fetch('/api/status', { cache: 'no-store' });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    render(await res.json());
    $('status-error').textContent = '';
  } catch (e) {
    $('status-error').textContent = `Cannot read the server's status (${e.message}); retrying.`;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
