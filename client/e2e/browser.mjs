/**
 * Headless Chromium for the e2e tests and the figures: Debian's /usr/bin/chromium driven by
 * playwright-core (no browser download), a fresh user-data-dir per run, removed afterwards.
 * @module
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';

/** The flags the issue asks for, plus what WebRTC needs in a headless container. */
export const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Host candidates as raw addresses instead of mDNS .local names: resolving those needs
  // multicast DNS on the machine, which a CI container may not have.
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

/** Launches Chromium; `close()` also removes its profile. */
export async function launch() {
  const userDataDir = mkdtempSync(join(tmpdir(), 'swarmtrack-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    timeout: 30000,
  });
  return {
    context,
    /**
     * A new tab with the harness page loaded.
     * @param {string} origin
     */
    async page(origin) {
      const page = await context.newPage();
      page.on('pageerror', (err) => console.error(`page error: ${err.message}`));
      await page.goto(`${origin}/e2e/page.html`);
      await page.waitForFunction(() => /** @type {any} */ (window).harnessReady === true);
      return page;
    },
    async close() {
      await context.close().catch(() => {});
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}
