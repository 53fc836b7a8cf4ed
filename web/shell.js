// What every peerweb page shares, loaded in <head> before the page draws: the theme (the
// system's, or light or dark as chosen here, remembered), the installed app's service worker,
// and a check that this browser has what the page needs (<body data-needs="...">), saying
// which part is missing instead of failing somewhere later. `window.peerwebMissing` lists the
// missing parts; the pages start nothing when it is not empty.
(() => {
  const THEMES = ['system', 'light', 'dark'];
  const KEY = 'peerweb.theme';
  const stored = () => {
    try {
      return localStorage.getItem(KEY);
    } catch {
      return null; // storage blocked: the system's theme
    }
  };
  const apply = (theme) => {
    if (theme === 'light' || theme === 'dark') document.documentElement.dataset.theme = theme;
    else delete document.documentElement.dataset.theme;
  };
  apply(stored());

  /** The parts of the platform a page can ask for, each with what it is for. */
  const PARTS = {
    RTCPeerConnection: ['WebRTC (RTCPeerConnection)', () => typeof RTCPeerConnection === 'function'],
    WebSocket: ['WebSocket', () => typeof WebSocket === 'function'],
    fetch: ['fetch', () => typeof fetch === 'function'],
    getUserMedia: [
      'the camera and microphone (navigator.mediaDevices; browsers offer it only on https:// or localhost pages)',
      () => typeof navigator.mediaDevices?.getUserMedia === 'function',
    ],
  };

  /** The parts `needs` (names from PARTS) this browser lacks, by their readable names. */
  function missing(needs) {
    const gone = [];
    // Every page is a module script with an import map; without modules nothing else runs.
    if (!('noModule' in HTMLScriptElement.prototype)) gone.push('JavaScript modules');
    for (const name of needs) {
      const part = PARTS[name];
      if (part && !part[1]()) gone.push(part[0]);
    }
    return gone;
  }

  function explain(gone) {
    const banner = document.createElement('div');
    banner.id = 'unsupported';
    banner.className = 'banner';
    banner.setAttribute('role', 'alert');
    banner.textContent = `This browser lacks ${gone.join(' and ')}, which this page needs.`;
    const more = document.createElement('p');
    if (gone.some((g) => g.startsWith('WebRTC'))) {
      more.textContent = 'WebRTC may be turned off in its settings (Firefox: media.peerconnection.enabled) or by an extension. '
        + 'Current Chromium, Firefox and Safari all have it.';
    } else if (gone.some((g) => g.startsWith('the camera')) && !window.isSecureContext) {
      more.textContent = 'This page was opened over plain http from another address: open it over https:// '
        + '(peerweb serve --acme-domain or --tls-cert) or on the server itself (localhost).';
    } else more.textContent = 'Current Chromium, Firefox and Safari all have it.';
    banner.append(more);
    document.querySelector('header.top')?.after(banner);
    for (const el of document.querySelectorAll('main > *')) el.hidden = true;
  }

  function themeButton() {
    const button = document.getElementById('theme');
    if (!button) return;
    const show = () => {
      const theme = stored() ?? 'system';
      button.textContent = { system: '◐ Auto', light: '☀ Light', dark: '☾ Dark' }[theme] ?? '◐ Auto';
      button.setAttribute('aria-label', `Theme: ${theme} (change)`);
    };
    button.addEventListener('click', () => {
      const next = THEMES[(THEMES.indexOf(stored() ?? 'system') + 1) % THEMES.length];
      try {
        if (next === 'system') localStorage.removeItem(KEY);
        else localStorage.setItem(KEY, next);
      } catch {
        // storage blocked: the choice lasts for this page only
      }
      apply(next);
      show();
    });
    show();
  }

  // Read once the body is there: by the page's module scripts (which run before
  // DOMContentLoaded) or at DOMContentLoaded, whichever comes first.
  let gone = null;
  const check = () => {
    if (gone === null && document.body) {
      gone = missing((document.body.dataset.needs ?? '').split(/\s+/).filter(Boolean));
      if (gone.length) explain(gone);
    }
    return gone ?? [];
  };
  Object.defineProperty(window, 'peerwebMissing', { get: check });
  document.addEventListener('DOMContentLoaded', () => {
    themeButton();
    check();
  });
  // Another tab changed the theme.
  window.addEventListener('storage', (e) => {
    if (e.key === KEY) apply(e.newValue);
  });

  // The service worker takes files shared to the installed app (see /sw.js). Only secure
  // pages (https, localhost) have service workers; elsewhere the pages work without one.
  if ('serviceWorker' in navigator && window.isSecureContext) {
    navigator.serviceWorker.register('/sw.js').catch((e) => console.warn('peerweb: no service worker:', e));
  }
})();
