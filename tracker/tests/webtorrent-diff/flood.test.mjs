// A flood of bad frames from one client: the server refuses them (failure reasons, possibly
// rate-limited) or closes that connection with a reason, counts them in /metrics, and the other
// clients' signaling goes on meanwhile and after.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import {
  SDP, announce, binaryId, expectMessage, fetchMetrics, is, makeOffers, metricSum, show, visible
} from './harness.mjs'
import { idBook, useTargets, withSession } from './scenarios.mjs'

const targets = useTargets()

/** Bad frames sent back to back. */
const FLOOD = 3000
/** How long the flooded server gets to let the flooder and the others go on. */
const RECOVERY_MS = 15000

/** A complete offer/answer exchange between `a` (in the swarm) and `b` (offering); its duration. */
async function exchange (a, b, ids, label) {
  const t0 = Date.now()
  const offers = makeOffers(1)
  await announce(b, ids.hash, ids.b, { numwant: 1, offers })
  await expectMessage(a, is.offer(ids.hash, offers[0].offer_id), undefined, `offer (${label})`)
  a.send({
    action: 'announce', info_hash: ids.hash, peer_id: ids.a, to_peer_id: ids.b, offer_id: offers[0].offer_id, answer: { type: 'answer', sdp: SDP.chromeAnswer }
  })
  await expectMessage(b, is.answer(ids.hash, offers[0].offer_id), undefined, `answer (${label})`)
  return Date.now() - t0
}

/**
 * Polls the flooder with good announces until one is answered (it is past the flood and, if
 * rate-limited, past the limit) or the server closed it. Frames on one socket are handled in
 * order, so every reply to the flood has arrived by then.
 */
async function pastTheFlood (flooder) {
  const deadline = Date.now() + RECOVERY_MS
  while (Date.now() < deadline) {
    if (flooder.closed) return 'closed'
    flooder.send({ action: 'announce', info_hash: binaryId(), peer_id: binaryId(), numwant: 0, event: 'started' })
    const got = await flooder.waitFor(() => flooder.inbox.find(m => m.action === 'announce' && 'interval' in m) || flooder.closed, 'reply', 500)
      .catch(() => null) // not yet: this announce may have been dropped by the rate limit
    if (got) return flooder.closed ? 'closed' : 'answered'
  }
  throw new Error(`flooder neither answered nor closed within ${RECOVERY_MS} ms`)
}

test(`a flood of ${FLOOD} bad frames from one client: refused or closed, counted; others unaffected`, async t => {
  for (const target of targets) {
    const ids = idBook()
    await t.test(target.name, t => withSession(target, async s => {
      // a and the flooder share an instance (the flooded one); b is on the other when there are two.
      const a = await s.connect('a', 0)
      const b = await s.connect('b', 1)
      const flooder = await s.connect('flooder', 2)
      await announce(a, ids.hash, ids.a, { event: 'started' })
      await announce(b, ids.hash, ids.b, { event: 'started' })
      await visible(target, [{ client: a, peerId: ids.a }])
      const metricsUrl = target.trackers?.[0].admin
      const before = metricsUrl && await fetchMetrics(metricsUrl)

      const frames = [
        'not json',
        JSON.stringify({ action: 'announce', info_hash: 'short', peer_id: 'short' }),
        JSON.stringify({ action: 'hello' }),
        JSON.stringify({ action: 'scrape', info_hash: ['x'] })
      ]
      const t0 = Date.now()
      for (let i = 0; i < FLOOD; i++) flooder.sendRaw(frames[i % frames.length])
      const during = await exchange(a, b, ids, 'during the flood')
      const flooderState = await pastTheFlood(flooder)
      const floodMs = Date.now() - t0
      const after = await exchange(a, b, ids, 'after the flood')

      const failures = flooder.inbox.filter(is.failure())
      const reasons = [...new Set(failures.map(f => f['failure reason']))]
      t.diagnostic(`${failures.length} failure replies, flooder ${flooderState}` +
        `${flooder.closed ? ` ${JSON.stringify(flooder.closed)}` : ''}, ${floodMs} ms; exchange during ${during} ms, after ${after} ms; reasons: ${JSON.stringify(reasons)}`)

      if (target.isReference) {
        // The reference answers every bad frame.
        assert.equal(failures.length, FLOOD)
        return
      }
      // swarmtrack: every bad frame refused or dropped under the rate limit, and said so.
      if (flooder.closed) {
        assert.ok(flooder.closed.reason.length > 0, `closed with a reason: ${JSON.stringify(flooder.closed)}`)
      } else {
        assert.ok(failures.length >= 1 && failures.length <= FLOOD, `${failures.length} failures`)
        assert.ok(failures.some(f => /rate/i.test(f['failure reason'])) || failures.length === FLOOD,
          `the flooder is told it is over the rate, or every frame is answered: ${show(failures.at(-1))}`)
      }
      const metrics = await fetchMetrics(metricsUrl)
      const delta = (name, labels) => metricSum(metrics, name, labels) - metricSum(before, name, labels)
      const counted = {
        failures: delta('tracker_webtorrent_failures_total'),
        invalid: delta('tracker_messages_received_total', { kind: 'invalid' }),
        rateLimited: delta('tracker_messages_dropped_total', { reason: 'rate_limited' })
      }
      t.diagnostic(`metrics delta: ${JSON.stringify(counted)}`)
      // Each failure reply the flooder got is counted once (nothing else fails on this instance now).
      assert.equal(counted.failures, failures.length, 'tracker_webtorrent_failures_total counts every failure reply')
      // Every bad frame is counted as an invalid message, answered or dropped.
      assert.ok(counted.invalid >= FLOOD, `tracker_messages_received_total{kind="invalid"} grew by ${counted.invalid}`)
      // And every one was either answered with its own failure or dropped under the rate limit.
      const answered = failures.filter(f => !/rate/i.test(f['failure reason'])).length
      assert.ok(answered + counted.rateLimited >= FLOOD,
        `${answered} answered + ${counted.rateLimited} dropped (rate_limited) < ${FLOOD}`)
    }))
  }
})
