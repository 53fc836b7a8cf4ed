// Renders the app's PNG icons (web/icons/*.png, committed) from their SVG sources in headless
// Chromium. Run it after changing an SVG: `cd tests/browser && node render-icons.mjs`.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { launchBrowser } from './lib.mjs';

const icons = fileURLToPath(new URL('../../web/icons/', import.meta.url));
const wanted = [['icon.svg', 'icon-192.png', 192], ['icon.svg', 'icon-512.png', 512],
  ['maskable.svg', 'maskable-512.png', 512], ['maskable.svg', 'apple-touch-icon.png', 180]];
const browser = await launchBrowser({ engine: 'chromium' });
try {
  const page = await browser.newPage();
  for (const [svg, png, px] of wanted) {
    await page.setViewportSize({ width: px, height: px });
    const src = readFileSync(icons + svg, 'utf8');
    await page.setContent(`<style>html,body{margin:0;background:transparent}svg{display:block;width:${px}px;height:${px}px}</style>${src}`);
    await page.locator('svg').screenshot({ path: icons + png, omitBackground: true });
    console.log(`${png}: ${px}×${px}`);
  }
} finally {
  await browser.close();
}
