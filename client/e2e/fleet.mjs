/**
 * A real fleet on loopback for the browser tests, the figures and the demo: one redis-server,
 * N trackers (the workspace's debug build) and HAProxy in front, rendered from the production
 * template haproxy/haproxy.cfg.tmpl like scripts/fleet does; plus a static HTTP server for
 * client/ so pages load the SDK from an http:// origin.
 *
 * Ports are free ones picked by binding 127.0.0.1:0. Every process is a child of this one,
 * started in its own temporary folder, and `stop()` kills exactly those pids; an exit or a
 * signal in the parent stops them too, so a failed run leaves nothing behind.
 * @module
 */

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createConnection, createServer as createTcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { until } from '../test/poll.js';

export { until };

export const CLIENT_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = resolve(CLIENT_DIR, '..');

/** Every child process alive, so the exit hook can stop them. */
const children = new Set();
function killAll() {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

/** @returns {Promise<number>} a port that was free a moment ago */
export function freePort() {
  return new Promise((res, rej) => {
    const s = createTcpServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (s.address());
      s.close(() => res(port));
    });
  });
}

/** @param {number} port */
function tcpUp(port) {
  return new Promise((res) => {
    const s = createConnection({ host: '127.0.0.1', port });
    s.on('connect', () => {
      s.destroy();
      res(true);
    });
    s.on('error', () => res(false));
  });
}

/** @param {string} url @param {RequestInit} [init] */
async function httpStatus(url, init) {
  try {
    const r = await fetch(url, { ...init, signal: AbortSignal.timeout(2000) });
    await r.arrayBuffer();
    return r.status;
  } catch {
    return 0;
  }
}

/**
 * @param {string} name
 * @param {string} cmd
 * @param {string[]} args
 * @param {string} dir
 * @param {Record<string, string>} [env]
 */
function start(name, cmd, args, dir, env = {}) {
  const log = join(dir, `${name}.log`);
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let text = '';
  const keep = (/** @type {Buffer} */ d) => {
    // The last 64 KiB is plenty to explain a failure, and bounds memory on a chatty process.
    text = (text + d.toString()).slice(-65536);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.on('exit', () => {
    children.delete(child);
    writeFileSync(log, text);
  });
  return { name, child, log: () => text, exited: () => child.exitCode !== null || child.signalCode !== null };
}

/** The tracker binary: $TRACKER_BIN, else the workspace's debug build (built if missing). */
export function trackerBin() {
  if (process.env.TRACKER_BIN) return process.env.TRACKER_BIN;
  const bin = join(REPO, 'target', 'debug', 'tracker');
  if (!existsSync(bin)) {
    const r = spawnSync('cargo', ['build', '-q', '-p', 'tracker'], { cwd: REPO, stdio: 'inherit' });
    if (r.status !== 0) throw new Error('cargo build -p tracker failed');
  }
  return bin;
}

/**
 * @typedef {object} Tracker
 * @property {string} name `t1`, `t2`, ...
 * @property {number} port
 * @property {number} adminPort
 * @property {string} instance 8 hex digits, from its start-up log
 * @property {() => boolean} exited
 */

/**
 * Starts the fleet.
 * @param {{trackers?: number, env?: Record<string, string>}} [opts] `env`: TRACKER__* overrides
 */
export async function startFleet(opts = {}) {
  const n = opts.trackers ?? 2;
  const dir = mkdtempSync(join(tmpdir(), 'swarmtrack-e2e-'));
  const token = randomBytes(16).toString('hex');
  // Trackers on Redis refuse to start without the fleet's key.
  const fleetKey = randomBytes(32).toString('hex');
  /** @type {ReturnType<typeof start>[]} */
  const procs = [];
  const fleet = {
    dir,
    token,
    /** @type {Tracker[]} */
    trackers: [],
    frontUrl: '',
    pageOrigin: '',
    /** @type {import('node:http').Server | null} */
    web: null,
    stop: async () => {
      for (const p of procs) if (!p.exited()) p.child.kill('SIGKILL');
      await until(() => procs.every((p) => p.exited()), 'fleet processes to exit', 5000);
      if (fleet.web) await new Promise((r) => fleet.web?.close(() => r(undefined)));
      fleet.web?.closeAllConnections();
      if (!process.env.KEEP_E2E_LOGS) rmSync(dir, { recursive: true, force: true });
    },
    /** Starts a drain of one tracker over its admin API. @param {Tracker} t */
    drain: async (t) => {
      const status = await httpStatus(`http://127.0.0.1:${t.adminPort}/admin/drain`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}` },
      });
      if (status !== 202) throw new Error(`drain ${t.name}: HTTP ${status}`);
    },
    /** @param {string} instance @returns {Tracker | undefined} */
    byInstance: (instance) => fleet.trackers.find((t) => t.instance === instance),
    /** Logs of every process, for a failure message. */
    logs: () => procs.map((p) => `--- ${p.name}\n${p.log().slice(-4000)}`).join('\n'),
  };
  try {
    const redisPort = await freePort();
    const redis = start('redis', 'redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], dir);
    procs.push(redis);
    await until(async () => !redis.exited() && (await tcpUp(redisPort)), 'redis-server');

    const bin = trackerBin();
    for (let i = 1; i <= n; i++) {
      const port = await freePort();
      const adminPort = await freePort();
      const p = start(`t${i}`, bin, ['--listen', `127.0.0.1:${port}`, '--admin-listen', `127.0.0.1:${adminPort}`, '--redis-url', `redis://127.0.0.1:${redisPort}`], dir, {
        TRACKER_ADMIN_TOKEN: token,
        TRACKER_FLEET_KEY: fleetKey,
        RUST_LOG: 'info',
        NO_COLOR: '1',
        ...opts.env,
      });
      procs.push(p);
      fleet.trackers.push({ name: `t${i}`, port, adminPort, instance: '', exited: p.exited });
    }
    for (const [i, t] of fleet.trackers.entries()) {
      const p = procs[i + 1];
      await until(async () => {
        if (p.exited()) throw new Error(`${t.name} exited:\n${p.log()}`);
        return (await httpStatus(`http://127.0.0.1:${t.port}/readyz`)) === 200;
      }, `${t.name} /readyz`);
      // The listener answers /readyz a moment before the "tracker started" line reaches
      // our pipe: wait for the line rather than read the log once.
      const m = await until(() => {
        if (p.exited()) throw new Error(`${t.name} exited:\n${p.log()}`);
        // eslint-disable-next-line no-control-regex
        return /tracker started.*?instance[=:]\s*"?([0-9a-f]{8})/.exec(p.log().replace(/\x1b\[[0-9;]*m/g, ''));
      }, `${t.name}: instance id in its log`);
      t.instance = m[1];
    }

    const front = await freePort();
    const stats = await freePort();
    const servers = fleet.trackers.map((t) => `    server ${t.name} 127.0.0.1:${t.port}`).join('\n');
    const values = {
      GLOBAL_MAXCONN: '256',
      RUNTIME_SOCKET: join(dir, 'haproxy.sock'),
      FRONT_BIND: `127.0.0.1:${front}`,
      RUN_AS: '# ',
      TLS: '# ',
      TLS_BIND: '127.0.0.1:1',
      TLS_CERT: join(dir, 'none.pem'),
      LEASTCONN: '',
      SWARM: '# ',
      HASH_BALANCE_FACTOR: '150',
      CHECK_INTER: '200ms',
      CHECK_FASTINTER: '100ms',
      CHECK_FALL: '2',
      CHECK_RISE: '1',
      SLOWSTART: '0s',
      SERVER_MAXCONN: '200',
      SERVERS: servers,
      STATS_BIND: `127.0.0.1:${stats}`,
      SOCKET_OWNER: '',
      // Per-source limits out of the way: every viewer of these tests comes from 127.0.0.1.
      SRC_TABLE_SIZE: '1k',
      SRC_EXPIRE: '60s',
      SRC_RATE_PERIOD: '10s',
      SRC_MAX_CONN: '100000',
      SRC_CONN_RATE: '100000',
      SRC_UPGRADE_RATE: '100000',
    };
    let cfg = readFileSync(join(REPO, 'haproxy', 'haproxy.cfg.tmpl'), 'utf8');
    for (const [k, v] of Object.entries(values)) cfg = cfg.replaceAll(`@${k}@`, v);
    const left = /@[A-Z_]+@/.exec(cfg);
    if (left) throw new Error(`haproxy.cfg.tmpl: no value for ${left[0]}`);
    writeFileSync(join(dir, 'haproxy.cfg'), cfg);
    const hap = start('haproxy', 'haproxy', ['-db', '-f', join(dir, 'haproxy.cfg')], dir);
    procs.push(hap);
    // HAProxy answers /healthz itself once at least one tracker passed its checks; wait for
    // all of them through the stats page, so leastconn really has two servers to choose from.
    await until(async () => {
      if (hap.exited()) throw new Error(`haproxy exited:\n${hap.log()}`);
      const r = await fetch(`http://127.0.0.1:${stats}/stats;csv`, { signal: AbortSignal.timeout(2000) });
      const up = (await r.text()).split('\n').filter((l) => l.startsWith('trackers,t') && l.split(',')[17] === 'UP');
      return up.length === n;
    }, 'every tracker UP in haproxy');
    fleet.frontUrl = `ws://127.0.0.1:${front}/v1/ws`;

    fleet.web = await serveStatic(CLIENT_DIR);
    const { port } = /** @type {import('node:net').AddressInfo} */ (fleet.web.address());
    fleet.pageOrigin = `http://127.0.0.1:${port}`;
    return fleet;
  } catch (err) {
    await fleet.stop().catch(() => {});
    throw err;
  }
}

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8', '.css': 'text/css', '.json': 'application/json', '.ts': 'text/plain' };

/**
 * A static file server for `root` on a free 127.0.0.1 port (GET only, no directory listing,
 * nothing outside `root`, node_modules and tests excluded).
 * @param {string} root
 * @param {number} [port]
 * @returns {Promise<import('node:http').Server>}
 */
export function serveStatic(root, port = 0) {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = normalize(join(root, path.endsWith('/') ? `${path}index.html` : path));
    const inside = file.startsWith(`${root}/`) && !/\/(node_modules|test)\//.test(file.slice(root.length));
    if (req.method !== 'GET' || !inside || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
    createReadStream(file).pipe(res);
  });
  return new Promise((res) => server.listen(port, '127.0.0.1', () => res(server)));
}

/**
 * A tracker's `tracker_connections` gauge (open sessions), from its admin listener.
 * @param {Tracker} t
 * @returns {Promise<number>}
 */
export async function connections(t) {
  const r = await fetch(`http://127.0.0.1:${t.adminPort}/metrics`, { signal: AbortSignal.timeout(2000) });
  const m = /^tracker_connections (\d+)/m.exec(await r.text());
  if (!m) throw new Error(`${t.name}: no tracker_connections in /metrics`);
  return Number(m[1]);
}
