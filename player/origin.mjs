/**
 * The HTTP origin of the test stream: the CDN a P2P player falls back to. It serves one folder
 * (player/make-stream's output) and counts what it sends, so a run can say how many bytes the
 * origin served next to how many the players downloaded.
 *
 * - GET and HEAD only; single byte ranges (`Range: bytes=a-b`, `a-`, `-n`), which
 *   p2p-media-loader uses to fetch the rest of a segment a peer delivered only in part.
 * - CORS open (`*`): the player page is on another origin, as it would be in production.
 * - Counters by kind: `segment` (`.m4s`, and `.mp4` init segments), `playlist` (`.m3u8`):
 *   requests, and bytes handed to the socket (an aborted response counts what was read for it
 *   before the abort).
 *   `GET /_origin/stats` returns them as JSON; `POST /_origin/reset` zeroes them.
 * - `/live/...` is the same stream as live (live.mjs): each media playlist is a sliding window
 *   that advances with the clock from the origin's start (or last reset); every other path
 *   under `/live/` is the file without the prefix.
 * - Nothing outside the folder is served; a bad path or method gets 404/405, never a crash.
 * @module
 */

import { createReadStream, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { extname, join, normalize, resolve } from 'node:path';

import { liveWindow, parseVod } from './live.mjs';

const TYPES = {
  '.m3u8': 'application/vnd.apple.mpegurl',
  '.m4s': 'video/iso.segment',
  '.mp4': 'video/mp4',
};

/** @param {string} file @returns {'segment' | 'playlist' | 'other'} */
function kindOf(file) {
  const ext = extname(file);
  if (ext === '.m4s' || ext === '.mp4') return 'segment';
  if (ext === '.m3u8') return 'playlist';
  return 'other';
}

/**
 * Parses a single-range `Range` header against a size.
 * @param {string | undefined} header
 * @param {number} size
 * @returns {{start: number, end: number} | null | 'invalid'} null: no (usable) range
 */
export function parseRange(header, size) {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  // Multiple ranges or another unit: serve the whole file, as RFC 9110 allows.
  if (!m || (m[1] === '' && m[2] === '')) return null;
  let start;
  let end;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return 'invalid';
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start > end || start >= size) return 'invalid';
  return { start, end };
}

function emptyCounts() {
  return {
    segment: { requests: 0, bytes: 0 },
    playlist: { requests: 0, bytes: 0 },
    other: { requests: 0, bytes: 0 },
  };
}

/**
 * Starts the origin on 127.0.0.1.
 * @param {{root: string, port?: number}} opts
 */
export function startOrigin(opts) {
  const root = resolve(opts.root);
  let counts = emptyCounts();
  // The counters' start, and the live stream's.
  const since = { at: Date.now() };
  /** Parsed VOD playlists for the live windows, by file (a handful: one per rendition). */
  const vods = new Map();
  /** @param {string} file */
  const vodOf = (file) => {
    if (!vods.has(file)) vods.set(file, parseVod(readFileSync(file, 'utf8')));
    return vods.get(file);
  };

  const server = createServer((req, res) => {
    res.setHeader('access-control-allow-origin', '*');
    res.setHeader('access-control-allow-headers', 'range');
    res.setHeader('access-control-expose-headers', 'content-length, content-range');
    const url = new URL(req.url ?? '/', 'http://origin');
    if (url.pathname === '/_origin/stats') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify({ since: since.at, ...counts }));
      return;
    }
    if (url.pathname === '/_origin/reset' && req.method === 'POST') {
      counts = emptyCounts();
      since.at = Date.now();
      res.writeHead(204).end();
      return;
    }
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { 'access-control-allow-methods': 'GET, HEAD' }).end();
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    let path;
    try {
      path = decodeURIComponent(url.pathname);
    } catch {
      res.writeHead(400).end('bad path');
      return;
    }
    const live = path.startsWith('/live/');
    const file = normalize(join(root, live ? path.slice('/live'.length) : path));
    let size;
    try {
      if (!file.startsWith(`${root}/`)) throw new Error('outside');
      const st = statSync(file);
      if (!st.isFile()) throw new Error('not a file');
      size = st.size;
    } catch {
      res.writeHead(404).end('not found');
      return;
    }
    const kind = kindOf(file);
    const c = counts[kind];
    c.requests += 1;
    if (live && kind === 'playlist' && !file.endsWith('/master.m3u8')) {
      let text;
      try {
        text = liveWindow(vodOf(file), (Date.now() - since.at) / 1000);
      } catch (err) {
        res.writeHead(500).end(`bad playlist: ${/** @type {Error} */ (err).message}`);
        return;
      }
      const body = Buffer.from(text);
      res.writeHead(200, { 'content-type': TYPES['.m3u8'], 'content-length': body.length, 'cache-control': 'no-store' });
      if (req.method === 'HEAD') {
        res.end();
        return;
      }
      c.bytes += body.length;
      res.end(body);
      return;
    }
    const range = parseRange(req.headers.range, size);
    if (range === 'invalid') {
      res.writeHead(416, { 'content-range': `bytes */${size}` }).end();
      return;
    }
    const headers = {
      'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
      'accept-ranges': 'bytes',
      // Playlists are VOD and segments never change, but every viewer must count at the
      // origin: a browser cache shared by viewers in one profile would hide requests.
      'cache-control': 'no-store',
    };
    const { start, end } = range ?? { start: 0, end: size - 1 };
    const length = size === 0 ? 0 : end - start + 1;
    if (range) {
      res.writeHead(206, { ...headers, 'content-length': length, 'content-range': `bytes ${start}-${end}/${size}` });
    } else {
      res.writeHead(200, { ...headers, 'content-length': length });
    }
    if (req.method === 'HEAD' || length === 0) {
      res.end();
      return;
    }
    const stream = createReadStream(file, { start, end });
    // Count what is handed to the socket, chunk by chunk, so an aborted download counts only
    // what was read for it before the abort.
    stream.on('data', (chunk) => {
      c.bytes += chunk.length;
    });
    stream.on('error', () => res.destroy());
    res.on('close', () => stream.destroy());
    stream.pipe(res);
  });
  return new Promise((res, rej) => {
    server.on('error', rej);
    server.listen(opts.port ?? 0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
      const url = `http://127.0.0.1:${port}`;
      res({
        server,
        url,
        /** The counters since the start or the last reset. */
        stats: () => ({ since: since.at, ...structuredClone(counts) }),
        reset: () => {
          counts = emptyCounts();
          since.at = Date.now();
        },
        close: () =>
          new Promise((r) => {
            server.close(() => r(undefined));
            server.closeAllConnections();
          }),
      });
    });
  });
}
