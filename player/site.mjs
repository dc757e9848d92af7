/**
 * The player page's web server: player/page/ and the three libraries' browser builds from
 * player/node_modules, on 127.0.0.1. It also takes the viewers' reports: a page opened with
 * `?report=MS` POSTs its state to `/report?viewer=ID` (the last one per viewer is kept, at most
 * MAX_VIEWERS viewers, each report at most MAX_REPORT bytes), and `GET /reports` returns them
 * all. That is how a browser without a driver (Firefox ESR here) tells the test what it did;
 * Chromium pages report the same way, so both are read alike.
 * @module
 */

import { createReadStream, existsSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const PLAYER_DIR = dirname(fileURLToPath(import.meta.url));
/** The repository's root. */
export const ROOT = resolve(PLAYER_DIR, '..');
/** The repository's root. */const PAGE_DIR = join(PLAYER_DIR, 'page');
const MODULES = join(PLAYER_DIR, 'node_modules');

/** URL path -> file of an npm package's own browser build. */
const LIBS = {
  '/lib/hls.mjs': join(MODULES, 'hls.js', 'dist', 'hls.mjs'),
  // The bundle (bittorrent-tracker's client included), not lib/: no bare imports left.
  '/lib/p2p-media-loader-core.js': join(MODULES, 'p2p-media-loader-core', 'dist', 'p2p-media-loader-core.es.js'),
  '/lib/p2p-media-loader-hlsjs.js': join(MODULES, 'p2p-media-loader-hlsjs', 'dist', 'p2p-media-loader-hlsjs.es.js'),
};
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8', '.css': 'text/css' };
const MAX_VIEWERS = 256;
const MAX_REPORT = 256 * 1024;

/** Checks the libraries are installed, with the fix in the message. */
export function checkLibs() {
  const missing = Object.values(LIBS).filter((f) => !existsSync(f));
  if (missing.length) throw new Error(`missing ${missing.join(', ')}: run npm ci in ${PLAYER_DIR}`);
}

/**
 * Starts the page server.
 * @param {{port?: number}} [opts]
 */
export function startSite(opts = {}) {
  checkLibs();
  /** @type {Map<string, any>} */
  const reports = new Map();
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://site');
    if (url.pathname === '/report' && req.method === 'POST') {
      const viewer = url.searchParams.get('viewer') ?? '';
      if (!viewer || viewer.length > 64 || (!reports.has(viewer) && reports.size >= MAX_VIEWERS)) {
        res.writeHead(400).end('bad or one viewer too many');
        return;
      }
      let body = '';
      let size = 0;
      req.setEncoding('utf8');
      req.on('data', (chunk) => {
        size += Buffer.byteLength(chunk);
        if (size > MAX_REPORT) {
          res.writeHead(413).end();
          req.destroy();
          return;
        }
        body += chunk;
      });
      req.on('end', () => {
        if (size > MAX_REPORT) return;
        try {
          reports.set(viewer, { at: Date.now(), state: JSON.parse(body) });
          res.writeHead(204).end();
        } catch {
          res.writeHead(400).end('not JSON');
        }
      });
      return;
    }
    if (url.pathname === '/reports' && req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(Object.fromEntries(reports)));
      return;
    }
    if (req.method !== 'GET') {
      res.writeHead(405).end();
      return;
    }
    let file = LIBS[/** @type {keyof typeof LIBS} */ (url.pathname)];
    if (!file) {
      let path;
      try {
        path = decodeURIComponent(url.pathname);
      } catch {
        res.writeHead(400).end();
        return;
      }
      file = normalize(join(PAGE_DIR, path.endsWith('/') ? `${path}index.html` : path));
      if (!file.startsWith(`${PAGE_DIR}/`)) file = '';
    }
    if (!file || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
    createReadStream(file).pipe(res);
  });
  return new Promise((res, rej) => {
    server.on('error', rej);
    server.listen(opts.port ?? 0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
      res({
        server,
        url: `http://127.0.0.1:${port}`,
        /** @returns {Record<string, {at: number, state: any}>} */
        reports: () => Object.fromEntries(reports),
        clearReports: () => reports.clear(),
        close: () =>
          new Promise((r) => {
            server.close(() => r(undefined));
            server.closeAllConnections();
          }),
      });
    });
  });
}

/**
 * The page URL for one viewer.
 * @param {string} site the page server's URL
 * @param {{src: string, tracker: string, p2p?: boolean, window?: number, swarm?: string, viewer?: string, report?: number}} p
 */
export function pageUrl(site, p) {
  const u = new URL('/', site);
  u.searchParams.set('src', p.src);
  u.searchParams.set('tracker', p.tracker);
  if (p.p2p === false) u.searchParams.set('p2p', '0');
  if (p.window) u.searchParams.set('window', String(p.window));
  if (p.swarm) u.searchParams.set('swarm', p.swarm);
  if (p.viewer) u.searchParams.set('viewer', p.viewer);
  if (p.report) u.searchParams.set('report', String(p.report));
  return u.toString();
}

