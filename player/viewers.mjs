/**
 * Headless viewers of the player page: Chromium (Debian's /usr/bin/chromium driven by
 * playwright-core, the flags of client/e2e/browser.mjs, a fresh profile per browser) and
 * Firefox ESR (Debian's firefox-esr, started as a plain process with a fresh profile: its page
 * reports to the site server, since playwright-core drives only its own patched Firefox).
 *
 * Both read their results the same way: each page POSTs its state to the site (`?report=MS`),
 * and `site.reports()` has the last one per viewer.
 * @module
 */

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

import { CHROMIUM, FLAGS } from '../client/e2e/browser.mjs';

export const FIREFOX = process.env.FIREFOX_BIN ?? '/usr/bin/firefox-esr';

/**
 * Launches one Chromium; each `open(url)` is a viewer in its own tab. `close()` also removes
 * its profile.
 */
export async function launchChromium() {
  const userDataDir = mkdtempSync(join(tmpdir(), 'swarmtrack-player-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    // Muted autoplay is allowed anyway; this keeps a page that unmutes from stopping.
    args: [...FLAGS, '--autoplay-policy=no-user-gesture-required'],
    timeout: 30000,
  });
  /** @type {string[]} */
  const pageErrors = [];
  return {
    context,
    pageErrors,
    /** @param {string} url */
    async open(url) {
      const page = await context.newPage();
      page.on('pageerror', (err) => pageErrors.length < 32 && pageErrors.push(err.message));
      await page.goto(url);
      return page;
    },
    async close() {
      await context.close().catch(() => {});
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Firefox preferences for a headless viewer on a machine without outside network: autoplay,
 * host candidates as addresses (no mDNS), and none of the background traffic a fresh profile
 * starts (updates, telemetry, safe browsing, captive portal checks).
 */
const FIREFOX_PREFS = {
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  'media.peerconnection.ice.loopback': true,
  'browser.shell.checkDefaultBrowser': false,
  'browser.startup.homepage_override.mstone': 'ignore',
  'browser.aboutwelcome.enabled': false,
  'startup.homepage_welcome_url': '',
  'datareporting.policy.dataSubmissionEnabled': false,
  'datareporting.healthreport.uploadEnabled': false,
  'toolkit.telemetry.enabled': false,
  'app.update.enabled': false,
  'app.update.auto': false,
  'extensions.update.enabled': false,
  'browser.safebrowsing.malware.enabled': false,
  'browser.safebrowsing.phishing.enabled': false,
  'browser.safebrowsing.downloads.enabled': false,
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
  'browser.newtabpage.enabled': false,
  'browser.ping-centre.telemetry': false,
  'network.dns.disablePrefetch': true,
  'network.prefetch-next': false,
  'media.gmp-manager.updateEnabled': false,
  'browser.region.update.enabled': false,
};

/**
 * Starts Firefox ESR headless on one URL, with a fresh profile. `close()` stops exactly this
 * process and removes the profile.
 * @param {string} url
 */
export function launchFirefox(url) {
  const profile = mkdtempSync(join(tmpdir(), 'swarmtrack-player-firefox-'));
  writeFileSync(join(profile, 'user.js'), Object.entries(FIREFOX_PREFS).map(([k, v]) => `user_pref(${JSON.stringify(k)}, ${JSON.stringify(v)});`).join('\n'));
  const child = spawn(FIREFOX, ['--headless', '--no-remote', '--profile', profile, '--window-size=800,600', url], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, MOZ_HEADLESS: '1', MOZ_DISABLE_AUTO_SAFE_MODE: '1' },
  });
  let log = '';
  const keep = (/** @type {Buffer} */ d) => {
    log = (log + d.toString()).slice(-16384);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((r) => child.on('exit', r));
  // Stops with the test process too: a Firefox left running would keep its viewer in swarms.
  const kill = () => child.kill('SIGKILL');
  process.on('exit', kill);
  return {
    child,
    log: () => log,
    async close() {
      process.off('exit', kill);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
