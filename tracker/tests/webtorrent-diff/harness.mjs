// Harness of the differential tests: starts the servers under test (the reference
// `bittorrent-tracker` in this process; swarmtrack as child processes, one instance or two joined
// by a redis-server), connects WebSocket clients that keep everything they receive, and waits for
// messages with deadlines (never a sleep to synchronise).
//
// Invariants: every server and process started here listens on 127.0.0.1 with a free port, and
// `Target.close()` (also run on process exit) stops it; a test never depends on what another test
// left behind because every scenario draws fresh info_hashes and peer_ids.

import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

// The server entry point only: the package's index also loads the client, whose WebRTC polyfill
// needs a native module that `npm install --ignore-scripts` does not build.
import Server from 'bittorrent-tracker/server'
import WebSocket from 'ws'

const here = path.dirname(fileURLToPath(import.meta.url))

/** How long a test waits for one expected message before failing. */
export const EXPECT_TIMEOUT_MS = 5000
/** How long a server process gets to become ready. */
const START_TIMEOUT_MS = 20000

// Real browser SDP (Chrome and Firefox data-channel offers and answers, ICE gathering complete).
// The repository's browser captures (fixtures/ at its root, shared with the Rust tests).
const fixtures = path.resolve(here, '..', '..', '..', 'fixtures')
const sdp = name => readFileSync(path.join(fixtures, name), 'utf8')
export const SDP = {
  chromeOffer: sdp('chrome-datachannel-offer-complete.sdp'),
  chromeAnswer: sdp('chrome-datachannel-answer-complete.sdp'),
  firefoxOffer: sdp('firefox-datachannel-offer-complete.sdp'),
  firefoxAnswer: sdp('firefox-datachannel-answer-complete.sdp')
}

/**
 * A 20-character id whose characters are all <= U+00FF, as WebTorrent sends them (the latin1
 * reading of 20 raw bytes). Whole-range bytes, so control characters and U+0080..U+00FF (two
 * bytes in UTF-8) cross the wire too.
 */
export function binaryId () {
  return randomBytes(20).toString('latin1')
}

/** A readable id for logs: hex of the latin1 bytes. */
function hexId (id) {
  return Buffer.from(id, 'latin1').toString('hex')
}

/** An offer list of `n` entries with real SDP, alternating Chrome and Firefox captures. */
export function makeOffers (n) {
  return Array.from({ length: n }, (_, i) => ({
    offer_id: binaryId(),
    offer: { type: 'offer', sdp: i % 2 === 0 ? SDP.chromeOffer : SDP.firefoxOffer }
  }))
}

/** A port that was free a moment ago (bind-probe on 127.0.0.1). */
export function freePort () {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

async function withDeadline (what, timeoutMs, attempt) {
  const deadline = Date.now() + timeoutMs
  let last
  while (Date.now() < deadline) {
    try {
      const v = await attempt()
      if (v) return v
    } catch (err) {
      last = err
    }
    await new Promise(resolve => setTimeout(resolve, 50)) // poll interval, not synchronisation
  }
  throw new Error(`${what}: not ready after ${timeoutMs} ms${last ? ` (${last.message})` : ''}`)
}

// Every child process started here, so that a crash of the test process still stops them.
const children = new Set()
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL')
})

function startProcess (name, cmd, args, env) {
  const child = spawn(cmd, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  children.add(child)
  let output = ''
  const keep = chunk => {
    output = (output + chunk.toString()).slice(-20000) // the tail, shown when something fails
  }
  child.stdout.on('data', keep)
  child.stderr.on('data', keep)
  const exited = new Promise(resolve => child.once('exit', (code, signal) => {
    children.delete(child)
    resolve({ code, signal })
  }))
  return {
    name,
    child,
    exited,
    output: () => output,
    async stop () {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    }
  }
}

async function redisPing (port) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1')
    sock.setTimeout(1000, () => sock.destroy(new Error('timeout')))
    sock.once('error', reject)
    sock.once('connect', () => sock.write('PING\r\n'))
    sock.once('data', data => {
      sock.end()
      resolve(data.toString().startsWith('+PONG'))
    })
  })
}

async function httpStatus (url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(1000) })
  await res.arrayBuffer()
  return res.status
}

/**
 * The servers a scenario talks to. `url(i)` is where client number `i` connects: with two
 * instances, clients alternate between them, so every relayed message of a scenario with more
 * than one client crosses Redis at least once.
 */
class Target {
  constructor (name, urls, stopFns, extras = {}) {
    this.name = name
    this.urls = urls
    this.stopFns = stopFns
    this.isReference = name === 'reference'
    Object.assign(this, extras)
  }

  url (i = 0) {
    return this.urls[i % this.urls.length]
  }

  async close () {
    for (const probe of this.probes || []) probe.client.ws.terminate()
    for (const stop of this.stopFns.reverse()) await stop()
  }
}

/** The reference server, in this process, WebSocket only, default options (interval 10 min). */
export async function startReference () {
  const server = new Server({ http: false, udp: false, ws: true, stats: false })
  // The reference emits 'warning' for every bad input; without a listener they would be lost,
  // and an 'error' without a listener would crash the test process.
  server.warnings = []
  server.on('warning', err => server.warnings.push(err.message))
  server.on('error', err => server.warnings.push(`error: ${err.message}`))
  await new Promise(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.ws.address()
  return new Target('reference', [`ws://127.0.0.1:${port}/announce`],
    [() => new Promise(resolve => server.close(() => resolve()))], { server })
}

async function startTracker (bin, name, env, extraArgs) {
  const port = await freePort()
  const adminPort = await freePort()
  const proc = startProcess(name, bin,
    ['--listen', `127.0.0.1:${port}`, '--admin-listen', `127.0.0.1:${adminPort}`, ...extraArgs], env)
  const base = `http://127.0.0.1:${port}`
  // /metrics and /admin/* are on the admin listener only.
  const admin = `http://127.0.0.1:${adminPort}`
  try {
    await Promise.race([
      withDeadline(`${name} /readyz`, START_TIMEOUT_MS, async () => (await httpStatus(`${base}/readyz`)) === 200),
      proc.exited.then(({ code, signal }) => { throw new Error(`${name} exited (${code ?? signal})`) })
    ])
  } catch (err) {
    await proc.stop()
    err.message += `\n--- ${name} output ---\n${proc.output()}`
    throw err
  }
  return { proc, base, admin, ws: `ws://127.0.0.1:${port}/announce` }
}

/**
 * swarmtrack from `bin` (env TRACKER_BIN): one instance, or two with a fresh redis-server
 * between them. `env` adds TRACKER__SECTION__KEY settings.
 */
export async function startSwarmtrack (bin, { instances = 1, env = {} } = {}) {
  const stops = []
  const target = new Target(instances === 1 ? 'swarmtrack' : 'swarmtrack x2 (redis)', [], stops)
  try {
    const extraArgs = []
    // Trackers on Redis refuse to start without the fleet's key; both get the same one.
    env = { TRACKER_FLEET_KEY: randomBytes(32).toString('hex'), ...env }
    if (instances > 1) {
      const redisPort = await freePort()
      const redis = startProcess('redis-server', 'redis-server',
        ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {})
      stops.push(() => redis.stop())
      await withDeadline('redis-server', START_TIMEOUT_MS, () => redisPing(redisPort))
      extraArgs.push('--redis-url', `redis://127.0.0.1:${redisPort}`)
    }
    target.trackers = []
    for (let i = 0; i < instances; i++) {
      const t = await startTracker(bin, `tracker${i}`, env, extraArgs)
      stops.push(() => t.proc.stop())
      target.trackers.push(t)
      target.urls.push(t.ws)
    }
    if (instances > 1) {
      // Ready is not yet subscribed: a relayed message published before would be lost.
      for (const t of target.trackers) {
        await withDeadline(`${t.proc.name} subscribed to Redis`, START_TIMEOUT_MS,
          async () => metricSum(await fetchMetrics(t.admin), 'tracker_redis_subscribed') >= 1)
      }
    }
    return target
  } catch (err) {
    await target.close()
    throw err
  }
}

/** Text of the Prometheus exposition of a tracker (`admin`: its admin listener's base URL). */
export async function fetchMetrics (base) {
  const res = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(3000) })
  if (res.status !== 200) throw new Error(`GET /metrics: ${res.status}`)
  return res.text()
}

/**
 * Sum of the samples of `name` in a Prometheus text exposition whose labels include every pair
 * of `labels` (all label sets when empty).
 */
export function metricSum (text, name, labels = {}) {
  let sum = 0
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/)
    if (!m || m[1] !== name) continue
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map(x => [x[1], x[2]]))
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3])
  }
  return sum
}

/**
 * A WebSocket client that keeps every message it receives (parsed JSON, or
 * `{ unparsable: text }`) in `inbox` until a test takes it with `expectMessage`.
 */
export class Client {
  constructor (name, ws) {
    this.name = name
    this.ws = ws
    this.inbox = []
    this.closed = null // { code, reason } once closed
    this.waiters = new Set()
    ws.on('message', data => {
      const text = data.toString()
      let msg
      try {
        msg = JSON.parse(text)
      } catch {
        msg = { unparsable: text }
      }
      this.inbox.push(msg)
      this.wake()
    })
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() }
      this.wake()
    })
    ws.on('error', () => {}) // surfaced through 'close'
  }

  static connect (name, url) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: false })
      const client = new Client(name, ws)
      const timer = setTimeout(() => { ws.terminate(); reject(new Error(`${name}: connect timeout`)) }, EXPECT_TIMEOUT_MS)
      ws.once('open', () => { clearTimeout(timer); resolve(client) })
      ws.once('error', err => { clearTimeout(timer); reject(err) })
    })
  }

  wake () {
    for (const w of this.waiters) w()
  }

  send (msg) {
    this.ws.send(JSON.stringify(msg))
  }

  sendRaw (data, binary = false) {
    this.ws.send(data, { binary })
  }

  /** Closes the socket and waits until the server saw it (the close handshake ends). */
  async close () {
    if (this.closed) return
    this.ws.close(1000)
    await this.waitFor(() => this.closed, 'close')
  }

  /** Resolves `check()`'s truthy value as soon as there is one; rejects at the deadline. */
  waitFor (check, what, timeoutMs = EXPECT_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      const attempt = () => {
        const v = check()
        if (!v) return false
        done()
        resolve(v)
        return true
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`${this.name}: no ${what} within ${timeoutMs} ms; inbox: ${show(this.inbox).slice(0, 2000)}` +
          (this.closed ? `; closed ${JSON.stringify(this.closed)}` : '')))
      }, timeoutMs)
      const done = () => {
        clearTimeout(timer)
        this.waiters.delete(attempt)
      }
      if (attempt()) return
      this.waiters.add(attempt)
    })
  }
}

/** For logs: messages with ids in hex and SDPs as their length. */
export function show (msg) {
  return JSON.stringify(msg, (k, v) => {
    if (k === 'sdp' && typeof v === 'string') return `${v.length} chars`
    if (['info_hash', 'peer_id', 'offer_id', 'to_peer_id'].includes(k) && typeof v === 'string') return hexId(v)
    return v
  })
}

/**
 * Takes (removes from the inbox) and returns the first message `predicate` accepts, waiting for
 * it up to `timeoutMs`.
 */
export function expectMessage (client, predicate, timeoutMs = EXPECT_TIMEOUT_MS, what = 'matching message') {
  return client.waitFor(() => {
    const i = client.inbox.findIndex(predicate)
    if (i < 0) return null
    return client.inbox.splice(i, 1)[0]
  }, what, timeoutMs)
}

/** Sends one bad input; returns how it was refused: { failure } (taken from the inbox) or { close }. */
export function refusal (client, frame) {
  client.sendRaw(typeof frame === 'string' ? frame : JSON.stringify(frame))
  return client.waitFor(() => {
    const i = client.inbox.findIndex(is.failure())
    if (i >= 0) return { failure: client.inbox.splice(i, 1)[0] }
    if (client.closed) return { close: client.closed }
    return null
  }, 'failure reason or close')
}

// Predicates for the messages of the protocol.
export const is = {
  reply: ih => m => m.action === 'announce' && m.info_hash === ih && 'interval' in m,
  offer: (ih, offerId) => m => m.action === 'announce' && m.info_hash === ih && m.offer && (offerId === undefined || m.offer_id === offerId),
  answer: (ih, offerId) => m => m.action === 'announce' && m.info_hash === ih && m.answer && (offerId === undefined || m.offer_id === offerId),
  scrape: () => m => m.action === 'scrape' && !('failure reason' in m),
  failure: () => m => 'failure reason' in m
}

/**
 * Announces and waits for the announcer's reply (counts) or failure; returns it. The reply is
 * the one for `ih`; a failure counts if it names `ih` or no info_hash (the reference's parse
 * errors name none). `{ anyReply: true }` takes any reply: the reference alters a non-latin1
 * info_hash in its reply.
 */
export async function announce (client, ih, peerId, fields = {}, { anyReply = false } = {}) {
  client.send({ action: 'announce', info_hash: ih, peer_id: peerId, numwant: 0, ...fields })
  return expectMessage(client, m => (m.action === 'announce' && 'interval' in m && (anyReply || m.info_hash === ih)) ||
    (is.failure()(m) && (anyReply || m.info_hash === ih || !('info_hash' in m))),
  EXPECT_TIMEOUT_MS, 'announce reply')
}

/**
 * Proves that nothing more is on its way to `clients` (each { client, peerId }), then returns and
 * takes what is left in their inboxes (to be asserted empty, or inspected). A scenario calls it
 * before a negative assertion such as "the stopped peer got no offer".
 */
export async function settle (target, clients) {
  await sentinelRound(target, clients)
  return clients.map(({ client }) => client.inbox.splice(0))
}

/**
 * Waits until what `clients` did so far (joins, stops) is seen by every instance. With two
 * instances, a join without offers reaches Redis through a queue a moment after its reply, so an
 * offer from the other instance right then would miss it: scenarios call this after such joins,
 * where the reference (one process) needs nothing. Leaves the inboxes as they are.
 */
export async function visible (target, clients) {
  await sentinelRound(target, clients)
}

/**
 * For every instance, each client and a probe connected to that instance form a fresh sentinel
 * swarm, and the probe offers there until its offer reaches the client (only it can get one).
 * So: what an instance queued for the client before that sentinel offer arrived first (on one
 * instance the socket's queue is FIFO; across instances the probe's offer takes the same relay
 * route after them), and the client's sentinel membership, queued after its earlier joins and
 * leaves, reached the probe's instance, so they did too (one writer, in order).
 */
async function sentinelRound (target, clients) {
  if (!target.probes) {
    target.probes = []
    for (let i = 0; i < target.urls.length; i++) {
      target.probes.push({ client: await Client.connect(`probe${i}`, target.url(i)), peerId: binaryId() })
    }
  }
  const sentinels = new Set()
  for (const { client, peerId } of clients) {
    if (client.closed) continue
    for (const probe of target.probes) {
      const sentinel = binaryId()
      sentinels.add(sentinel)
      await sentinelAnnounce(client, sentinel, peerId, { event: 'started' })
      await sentinelAnnounce(probe.client, sentinel, probe.peerId, { event: 'started' })
      const deadline = Date.now() + EXPECT_TIMEOUT_MS
      for (;;) {
        const offers = makeOffers(1)
        await sentinelAnnounce(probe.client, sentinel, probe.peerId, { numwant: 1, offers })
        const got = await expectMessage(client, is.offer(sentinel), 250, 'sentinel offer').catch(() => null)
        if (got) break
        if (Date.now() > deadline) throw new Error(`${client.name}: no sentinel offer within ${EXPECT_TIMEOUT_MS} ms`)
      }
      await sentinelAnnounce(probe.client, sentinel, probe.peerId, { event: 'stopped' })
      await sentinelAnnounce(client, sentinel, peerId, { event: 'stopped' })
    }
  }
  for (const { client } of clients) {
    client.inbox = client.inbox.filter(m => !sentinels.has(m.info_hash)) // late duplicates of the sentinel
  }
}

/** An announce in a sentinel swarm: only its own reply counts, never another failure. */
async function sentinelAnnounce (client, ih, peerId, fields) {
  client.send({ action: 'announce', info_hash: ih, peer_id: peerId, numwant: 0, ...fields })
  const got = await expectMessage(client, m => m.info_hash === ih && ('interval' in m || is.failure()(m)),
    EXPECT_TIMEOUT_MS, 'sentinel announce reply')
  if (is.failure()(got)) throw new Error(`${client.name}: sentinel announce refused: ${got['failure reason']}`)
  return got
}

/** Closes every client and probe of a target (so that nothing keeps the event loop alive). */
export async function closeClients (clients) {
  await Promise.all(clients.map(c => c.close().catch(() => {})))
}
