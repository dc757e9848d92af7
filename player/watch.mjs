/**
 * One watching session: N headless viewers open the player page on the same stream, one after
 * another, each watches for a set time, and the session returns what every viewer and the
 * origin counted. The end-to-end test and the bench both run it.
 *
 * Timing: viewer i opens `stagger * i` ms after the first (viewers of a video don't all press
 * play in the same millisecond, and the ones who came earlier are the peers who have the
 * segments); the session ends when the last viewer has been open for `watchSecs`. Waits for
 * state poll the reports with a deadline.
 * @module
 */

import { until } from '../client/test/poll.js';
import { pageUrl } from './site.mjs';
import { launchChromium, launchFirefox } from './viewers.mjs';

/**
 * @typedef {object} ViewerResult
 * @property {string} viewer
 * @property {'chromium'|'firefox'} browser
 * @property {number|null} startupMs from opening the page to the first `playing`
 * @property {number} stalls
 * @property {number} stallMs
 * @property {number} hlsStalls
 * @property {number} position seconds played
 * @property {{http: number, p2p: number, uploaded: number}} bytes p2p-media-loader's counters
 * @property {{http: number, p2p: number, errors: number, aborts: number}} segments
 * @property {number} peersEver
 * @property {string[]} instances tracker instances that served its tracker connections
 * @property {Record<string, number>} sent frames sent to the tracker, by shape
 * @property {string[]} errors page, player and tracker errors
 */

/**
 * @param {object} o
 * @param {{url: string, reports: () => Record<string, {at: number, state: any}>, clearReports: () => void}} o.site
 * @param {{url: string, stats: () => any, reset: () => void}} o.origin
 * @param {string} o.tracker WebTorrent announce URL
 * @param {string} o.playlist path of the master playlist on the origin
 * @param {string} o.swarm p2p-media-loader swarmId (a fresh one per session keeps sessions apart)
 * @param {boolean} o.p2p
 * @param {number} [o.window] p2p-media-loader's prefetch windows: HTTP this many seconds ahead,
 *   P2P twice as far (default: its own, 3000 s and 6000 s)
 * @param {('chromium'|'firefox')[]} o.browsers one per viewer, in opening order
 * @param {number} o.watchSecs
 * @param {number} o.staggerMs
 * @param {(msg: string) => void} [o.log]
 */
export async function watch(o) {
  const log = o.log ?? (() => {});
  o.origin.reset();
  o.site.clearReports();
  const src = new URL(o.playlist, o.origin.url).toString();
  const needChromium = o.browsers.includes('chromium');
  const chromium = needChromium ? await launchChromium() : null;
  /** @type {ReturnType<typeof launchFirefox>[]} */
  const firefoxes = [];
  /** @type {{viewer: string, browser: 'chromium'|'firefox', opened: number}[]} */
  const opened = [];
  const t0 = Date.now();
  try {
    for (const [i, browser] of o.browsers.entries()) {
      const due = t0 + i * o.staggerMs;
      if (Date.now() < due) await new Promise((r) => setTimeout(r, due - Date.now()));
      const viewer = `${browser}-${i + 1}`;
      const url = pageUrl(o.site.url, { src, tracker: o.tracker, p2p: o.p2p, window: o.window, swarm: o.swarm, viewer, report: 500 });
      if (browser === 'chromium') await chromium?.open(url);
      else firefoxes.push(launchFirefox(url));
      opened.push({ viewer, browser, opened: Date.now() });
      log(`${viewer} opened`);
    }
    const end = opened[opened.length - 1].opened + o.watchSecs * 1000;
    if (Date.now() < end) await new Promise((r) => setTimeout(r, end - Date.now()));
    // A report from after the end, from every viewer (they report every 500 ms).
    const cutoff = Date.now();
    const reports = await until(
      () => {
        const r = o.site.reports();
        return opened.every((v) => r[v.viewer] && r[v.viewer].at > cutoff) && r;
      },
      `a final report from every viewer (firefox log: ${firefoxes.map((f) => f.log().slice(-600)).join(' | ')})`,
      15000,
    );
    const origin = o.origin.stats();
    /** @type {ViewerResult[]} */
    const viewers = opened.map((v) => {
      const s = reports[v.viewer].state;
      /** @type {string[]} */
      const instances = [...new Set(s.tracker.sockets.map((/** @type {any} */ k) => k.instance).filter(Boolean))];
      return {
        viewer: v.viewer,
        browser: v.browser,
        startupMs: s.startupMs,
        stalls: s.stalls,
        stallMs: Math.round(s.stallMs),
        hlsStalls: s.hlsStalls,
        position: s.position,
        bytes: s.bytes,
        segments: s.segments,
        peersEver: s.peersEver,
        instances,
        /** frames sent to the tracker, by shape, over all its tracker sockets */
        sent: s.tracker.sockets.reduce((/** @type {Record<string, number>} */ acc, /** @type {any} */ k) => {
          for (const [shape, n] of Object.entries(k.sent)) acc[shape] = (acc[shape] ?? 0) + Number(n);
          return acc;
        }, {}),
        errors: [...s.errors, ...s.tracker.errors, ...s.tracker.sockets.flatMap((/** @type {any} */ k) => k.failures)],
      };
    });
    const p2pBytes = viewers.reduce((a, v) => a + v.bytes.p2p, 0);
    const httpBytes = viewers.reduce((a, v) => a + v.bytes.http, 0);
    return {
      viewers,
      origin,
      p2pBytes,
      httpBytes,
      /** peer bytes / all segment bytes the viewers downloaded */
      p2pShare: p2pBytes + httpBytes ? p2pBytes / (p2pBytes + httpBytes) : 0,
      pageErrors: chromium?.pageErrors ?? [],
    };
  } finally {
    await chromium?.close();
    await Promise.all(firefoxes.map((f) => f.close()));
  }
}
