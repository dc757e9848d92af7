// What the differential tests share: the targets of a test file, one scenario session per target,
// stable ids across targets, and the normal form of what clients receive.
//
// A scenario is an async function (target, ids) -> observation. It runs once on every target with
// the SAME ids (each target is its own deployment, so they never collide), which makes the
// observations comparable literally once the random parts are normalized.

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import {
  Client, SDP, binaryId, closeClients, hexId, startReference, startSwarmtrack
} from './harness.mjs'

/** The swarmtrack binary (scripts/test sets it); without it the harness proves itself ref vs ref. */
export const TRACKER_BIN = process.env.TRACKER_BIN

/**
 * Starts the targets of a test file before its tests and stops them after: the reference, then
 * swarmtrack alone and two swarmtrack instances joined by Redis (clients alternate between them).
 * Without TRACKER_BIN the second target is another reference server, so that the harness and the
 * scenarios are proved on their own.
 */
export function useTargets (env = {}) {
  const targets = []
  before(async () => {
    targets.push(await startReference())
    if (TRACKER_BIN) {
      targets.push(await startSwarmtrack(TRACKER_BIN, { instances: 1, env }))
      targets.push(await startSwarmtrack(TRACKER_BIN, { instances: 2, env }))
    } else {
      const second = await startReference()
      second.name = 'reference #2'
      targets.push(second)
    }
  })
  after(async () => {
    for (const target of targets) await target.close()
  })
  return targets
}

/** Ids by name, drawn on first use and then stable: `ids.alice`, `ids.hashX`. */
export function idBook () {
  const book = {}
  return new Proxy(book, {
    get: (o, name) => {
      if (typeof name !== 'string') return undefined
      if (!(name in o)) o[name] = binaryId()
      return o[name]
    }
  })
}

/**
 * The comparable form of a received message: ids become `#name` (readable in a diff), an SDP
 * that is one of the fixtures becomes `sdp:<fixture>` (anything else `sdp:ALTERED` and its length,
 * so a changed SDP fails the comparison).
 */
export function norm (msg, ids) {
  const byValue = new Map(Object.entries(ids).map(([k, v]) => [v, `#${k}`]))
  const bySdp = new Map(Object.entries(SDP).map(([k, v]) => [v, `sdp:${k}`]))
  const walk = v => {
    if (typeof v === 'string') return byValue.get(v) ?? v
    if (Array.isArray(v)) return v.map(walk)
    if (v && typeof v === 'object') {
      const out = {}
      for (const [k, x] of Object.entries(v)) {
        const key = byValue.get(k) ?? k // scrape's `files` is keyed by info_hash
        out[key] = k === 'sdp' && typeof x === 'string' ? (bySdp.get(x) ?? `sdp:ALTERED(${x.length})`) : walk(x)
      }
      return out
    }
    return v
  }
  return walk(msg)
}

/** The clients of one scenario run on one target; `close()` closes them all. */
export class Session {
  constructor (target) {
    this.target = target
    this.clients = []
  }

  /** Connects client number `i` (default: the next), to the instance `target.url(i)` picks. */
  async connect (name, i = this.clients.length) {
    const client = await Client.connect(`${this.target.name}:${name}`, this.target.url(i))
    this.clients.push(client)
    return client
  }

  /** Connects one client per name, in order; returns them. */
  async connectAll (...names) {
    const clients = []
    for (const name of names) clients.push(await this.connect(name))
    return clients
  }

  async close () {
    await closeClients(this.clients)
  }
}

/** Runs `fn(session)` and closes the session's clients whatever happens. */
export async function withSession (target, fn) {
  const session = new Session(target)
  try {
    return await fn(session)
  } finally {
    await session.close()
  }
}

/**
 * A differential test: `scenario` runs on every target; `check(observation, target)` asserts what
 * matters on each, then every other target's observation must equal the reference's. `report(t)`
 * may add diagnostics (what differs legitimately, such as the texts of failure reasons).
 */
export function differential (targets, name, scenario, check = () => {}, { report } = {}) {
  test(name, async t => {
    const ids = idBook()
    const seen = []
    for (const target of targets) {
      const observation = await scenario(target, ids)
      check(observation, target)
      seen.push([target, observation])
    }
    const [[refTarget, ref], ...others] = seen
    for (const [target, observation] of others) {
      assert.deepStrictEqual(observation, ref, `${target.name} differs from ${refTarget.name}`)
    }
    t.diagnostic(`observation: ${JSON.stringify(ref).slice(0, 600)}`)
    if (report) report(t)
  })
}

/**
 * A documented deliberate difference (docs/WEBTORRENT.md): the scenario runs on every target, the
 * reference's observation must equal `expected.reference` and swarmtrack's `expected.swarmtrack`;
 * both are printed as diagnostics so the report shows them side by side.
 */
export function difference (targets, name, scenario, expected) {
  test(name, async t => {
    const ids = idBook()
    for (const target of targets) {
      const observation = await scenario(target, ids)
      const side = target.isReference ? 'reference' : 'swarmtrack'
      t.diagnostic(`${target.name}: ${JSON.stringify(observation).slice(0, 800)}`)
      assert.deepStrictEqual(observation, expected[side], `${target.name} (${side} behaviour)`)
    }
  })
}

/** For logs: a message with ids in hex and SDPs shortened. */
export function show (msg) {
  return JSON.stringify(msg, (k, v) => {
    if (k === 'sdp') return `${v.length} chars`
    if (['info_hash', 'peer_id', 'offer_id', 'to_peer_id'].includes(k) && typeof v === 'string') return hexId(v)
    return v
  })
}
