// Differential tests of the WebTorrent tracker protocol: the same scripted client messages go to
// the reference server (bittorrent-tracker) and to swarmtrack (one instance, and two instances
// joined by Redis); what every client receives must agree in substance. Where swarmtrack differs
// on purpose (docs/WEBTORRENT.md), `difference` asserts each side's behaviour.

import assert from 'node:assert/strict'

import {
  SDP, announce, expectMessage, is, makeOffers, refusal, settle, visible
} from './harness.mjs'
import {
  differential, norm, replyShape, useTargets, withSession
} from './scenarios.mjs'

// The per-connection rate limit is out of the way here (the flood test checks it): the probes
// that prove nothing more is on its way announce on one connection throughout a run.
const targets = useTargets({ TRACKER__LIMITS__MESSAGES_PER_SEC: '1000', TRACKER__LIMITS__BURST: '5000' })

// WebTorrent's reply interval: the reference derives it from its 10 min HTTP interval / 5.
const INTERVAL = 120
// What a reply looks like in the tests about relaying. Counts are the counting tests' business:
// with two instances each counts its own peers (see differences.test.mjs).
const REPLY = { action: 'announce', info_hash: '#hash', complete: 'number', incomplete: 'number', interval: INTERVAL }

differential(targets, 'two peers: the offer reaches the other peer, the answer returns, SDP intact',
  (target, ids) => withSession(target, async s => {
    const [alice, bob] = await s.connectAll('alice', 'bob')
    const replyAlice = await announce(alice, ids.hash, ids.alice, { event: 'started', numwant: 5 })
    await visible(target, [{ client: alice, peerId: ids.alice }])
    const offers = makeOffers(1)
    const replyBob = await announce(bob, ids.hash, ids.bob, { event: 'started', numwant: 5, offers })
    ids.offer = offers[0].offer_id
    const offer = await expectMessage(alice, is.offer(ids.hash))
    alice.send({
      action: 'announce',
      info_hash: ids.hash,
      peer_id: ids.alice,
      to_peer_id: ids.bob,
      offer_id: offer.offer_id,
      answer: { type: 'answer', sdp: SDP.firefoxAnswer }
    })
    const answer = await expectMessage(bob, is.answer(ids.hash))
    // Nothing else: in particular no reply to the answer itself.
    const rest = await settle(target, [{ client: alice, peerId: ids.alice }, { client: bob, peerId: ids.bob }])
    return [replyShape(replyAlice), replyShape(replyBob), offer, answer, rest].map(m => norm(m, ids))
  }),
  ([replyAlice, replyBob, offer, answer, rest]) => {
    assert.deepEqual(replyAlice, REPLY)
    assert.deepEqual(replyBob, REPLY)
    assert.deepEqual(offer, {
      action: 'announce', info_hash: '#hash', peer_id: '#bob', offer_id: '#offer', offer: { type: 'offer', sdp: 'sdp:chromeOffer' }
    })
    assert.deepEqual(answer, {
      action: 'announce', info_hash: '#hash', peer_id: '#alice', offer_id: '#offer', answer: { type: 'answer', sdp: 'sdp:firefoxAnswer' }
    })
    assert.deepEqual(rest, [[], []])
  })

differential(targets, 'swarm of 5, one announce with 3 offers: 3 distinct receivers, never the announcer',
  (target, ids) => withSession(target, async s => {
    const peers = []
    for (let i = 0; i < 5; i++) peers.push({ client: await s.connect(`p${i}`), peerId: ids[`p${i}`] })
    for (const p of peers.slice(0, 4)) await announce(p.client, ids.hash, p.peerId, { event: 'started' })
    await visible(target, peers.slice(0, 4))
    const offers = makeOffers(3)
    offers.forEach((o, i) => { ids[`offer${i}`] = o.offer_id })
    const reply = await announce(peers[4].client, ids.hash, peers[4].peerId, { event: 'started', numwant: 3, offers })
    const received = await settle(target, peers)
    const perPeer = received.map(msgs => msgs.map(m => norm(m, ids)))
    return {
      reply: norm(replyShape(reply), ids),
      // Which peer got which offer is random: keep the multiset of offers and how many peers got one.
      offers: perPeer.flat().sort((a, b) => a.offer_id.localeCompare(b.offer_id)),
      offersPerPeer: perPeer.slice(0, 4).map(m => m.length).sort(),
      offersToAnnouncer: perPeer[4].length
    }
  }),
  obs => {
    assert.deepEqual(obs.reply, REPLY)
    assert.deepEqual(obs.offers, [0, 1, 2].map(i => ({
      action: 'announce',
      info_hash: '#hash',
      peer_id: '#p4',
      offer_id: `#offer${i}`,
      offer: { type: 'offer', sdp: i % 2 === 0 ? 'sdp:chromeOffer' : 'sdp:firefoxOffer' }
    })))
    assert.deepEqual(obs.offersPerPeer, [0, 1, 1, 1], 'each offer to a distinct peer')
    assert.equal(obs.offersToAnnouncer, 0)
  })

differential(targets, 'seeder and leecher counts through started, completed, update and stopped',
  (target, ids) => withSession(target, async s => {
    const [a, b, c, d] = await s.connectOnOneInstance('a', 'b', 'c', 'd')
    const counts = []
    const step = async (client, peerId, fields) => {
      const r = await announce(client, ids.hash, peerId, fields)
      counts.push([fields.event ?? 'none', r.complete, r.incomplete])
    }
    await step(a, ids.a, { event: 'started', left: 1000 })
    await step(b, ids.b, { event: 'started', left: 0 }) // a seeder from the start
    await step(c, ids.c, { event: 'started' }) // no `left`: a leecher
    await step(a, ids.a, { event: 'completed', left: 0 })
    await step(c, ids.c, { event: 'update', left: 0 }) // reaching left 0 without `completed`
    await step(c, ids.c, { left: 0 }) // no event: an update
    await step(b, ids.b, { event: 'stopped' }) // the reply still comes, without b
    await step(a, ids.a, { event: 'stopped' })
    await step(d, ids.d, {}) // a first announce without event or left: a leecher joins
    return counts
  }),
  counts => assert.deepEqual(counts, [
    ['started', 0, 1], ['started', 1, 1], ['started', 1, 2], ['completed', 2, 1],
    ['update', 3, 0], ['none', 3, 0], ['stopped', 2, 0], ['stopped', 1, 0], ['none', 1, 1]
  ]))

differential(targets, 'a stopped peer leaves the swarm: no more offers reach it',
  (target, ids) => withSession(target, async s => {
    const [a, b, c] = await s.connectAll('a', 'b', 'c')
    await announce(a, ids.hash, ids.a, { event: 'started' })
    await announce(b, ids.hash, ids.b, { event: 'started' })
    await announce(c, ids.hash, ids.c, { event: 'started' })
    const stopped = await announce(a, ids.hash, ids.a, { event: 'stopped' })
    await visible(target, [{ client: a, peerId: ids.a }, { client: b, peerId: ids.b }])
    // Two offers, only one other peer left (b): b gets one, a none.
    const offers = makeOffers(2)
    const reply = await announce(c, ids.hash, ids.c, { event: 'update', numwant: 2, offers })
    const received = await settle(target, [{ client: a, peerId: ids.a }, { client: b, peerId: ids.b }, { client: c, peerId: ids.c }])
    return {
      stopped: norm(replyShape(stopped), ids),
      reply: norm(replyShape(reply), ids),
      offersReceived: received.map(msgs => msgs.filter(is.offer(ids.hash)).length),
      other: received.map(msgs => msgs.filter(m => !is.offer(ids.hash)(m)))
    }
  }),
  obs => {
    assert.deepEqual(obs.stopped, REPLY)
    assert.deepEqual(obs.reply, REPLY)
    assert.deepEqual(obs.offersReceived, [0, 1, 0])
    assert.deepEqual(obs.other, [[], [], []])
  })

differential(targets, 'scrape: one info_hash as a string, several as a list, an unknown one',
  (target, ids) => withSession(target, async s => {
    const [seeder, l1, l2, l3, q] = await s.connectOnOneInstance('seeder', 'l1', 'l2', 'l3', 'q')
    await announce(seeder, ids.x, ids.seeder, { event: 'started', left: 0 })
    await announce(l1, ids.x, ids.l1, { event: 'started', left: 10 })
    await announce(l2, ids.x, ids.l2, { event: 'started', left: 10 })
    await announce(l3, ids.y, ids.l3, { event: 'started', left: 10 })
    q.send({ action: 'scrape', info_hash: ids.x })
    const one = await expectMessage(q, m => m.action === 'scrape' || 'failure reason' in m)
    q.send({ action: 'scrape', info_hash: [ids.x, ids.y, ids.unknown] })
    const list = await expectMessage(q, m => m.action === 'scrape' || 'failure reason' in m)
    // `downloaded` and `flags` differ (difference test 7); compare the rest.
    const withoutDownloaded = msg => {
      const out = norm(msg, ids)
      for (const f of Object.values(out.files ?? {})) delete f.downloaded
      delete out.flags
      return out
    }
    return [withoutDownloaded(one), withoutDownloaded(list)]
  }),
  ([one, list]) => {
    assert.deepEqual(one.files, { '#x': { complete: 1, incomplete: 2 } })
    assert.deepEqual(list.files, {
      '#x': { complete: 1, incomplete: 2 },
      '#y': { complete: 0, incomplete: 1 },
      '#unknown': { complete: 0, incomplete: 0 }
    })
  })

differential(targets, 'one connection in two swarms with one peer_id: offers and answers keep their info_hash',
  (target, ids) => withSession(target, async s => {
    const [a, b, c] = await s.connectAll('a', 'b', 'c')
    await announce(a, ids.x, ids.a, { event: 'started' })
    await announce(a, ids.y, ids.a, { event: 'started' })
    await visible(target, [{ client: a, peerId: ids.a }])
    await announce(b, ids.x, ids.b, { event: 'started', numwant: 1, offers: makeOffers(1) })
    await announce(c, ids.y, ids.c, { event: 'started', numwant: 1, offers: makeOffers(1) })
    const offerX = await expectMessage(a, is.offer(ids.x))
    const offerY = await expectMessage(a, is.offer(ids.y))
    ids.offerX = offerX.offer_id
    ids.offerY = offerY.offer_id
    for (const [ih, to, offer] of [[ids.x, ids.b, offerX], [ids.y, ids.c, offerY]]) {
      a.send({
        action: 'announce', info_hash: ih, peer_id: ids.a, to_peer_id: to, offer_id: offer.offer_id, answer: { type: 'answer', sdp: SDP.chromeAnswer }
      })
    }
    const answerB = await expectMessage(b, is.answer(ids.x))
    const answerC = await expectMessage(c, is.answer(ids.y))
    const rest = await settle(target, [{ client: a, peerId: ids.a }, { client: b, peerId: ids.b }, { client: c, peerId: ids.c }])
    return [offerX, offerY, answerB, answerC, rest].map(m => norm(m, ids))
  }),
  ([offerX, offerY, answerB, answerC, rest]) => {
    assert.equal(offerX.peer_id, '#b')
    assert.equal(offerY.peer_id, '#c')
    assert.deepEqual(answerB, {
      action: 'announce', info_hash: '#x', peer_id: '#a', offer_id: '#offerX', answer: { type: 'answer', sdp: 'sdp:chromeAnswer' }
    })
    assert.deepEqual(answerC, {
      action: 'announce', info_hash: '#y', peer_id: '#a', offer_id: '#offerY', answer: { type: 'answer', sdp: 'sdp:chromeAnswer' }
    })
    assert.deepEqual(rest, [[], [], []])
  })

/** Scrapes `ih` from `client` until `accept(counts)` or the deadline (the server handles a close asynchronously). */
async function scrapeUntil (client, ih, accept, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs
  let last
  while (Date.now() < deadline) {
    client.send({ action: 'scrape', info_hash: ih })
    last = (await expectMessage(client, is.scrape())).files[ih]
    if (accept(last)) return last
  }
  throw new Error(`scrape never accepted: ${JSON.stringify(last)}`)
}

differential(targets, 'closing the socket removes its peer from every swarm it announced in',
  (target, ids) => withSession(target, async s => {
    // a, b and c count on one instance; the newcomer d is on the other one when there are two.
    const [a, b, c] = await s.connectOnOneInstance('a', 'b', 'c')
    await announce(a, ids.x, ids.a, { event: 'started' })
    await announce(a, ids.y, ids.a, { event: 'started' })
    await announce(b, ids.x, ids.b, { event: 'started' })
    await announce(c, ids.y, ids.c, { event: 'started' })
    await a.close()
    const x = await scrapeUntil(b, ids.x, f => f.incomplete === 1)
    const y = await scrapeUntil(c, ids.y, f => f.incomplete === 1)
    // An offer in x now has no one to go to but a newcomer d.
    const d = await s.connect('d', 1)
    await announce(d, ids.x, ids.d, { event: 'started' })
    await visible(target, [{ client: d, peerId: ids.d }])
    await announce(b, ids.x, ids.b, { numwant: 5, offers: makeOffers(2) })
    const rest = await settle(target, [{ client: b, peerId: ids.b }, { client: d, peerId: ids.d }])
    return { x: x.complete + '/' + x.incomplete, y: y.complete + '/' + y.incomplete, offers: rest.map(m => m.filter(is.offer(ids.x)).length) }
  }),
  obs => assert.deepEqual(obs, { x: '0/1', y: '0/1', offers: [0, 1] }),
  {
    todo: {
      'swarmtrack x2 (redis)': "b already announced in x: its instance draws remote peers from its last sample of the swarm, not from Redis, renewed in the background once over a second old, so a newcomer on the other instance is offered to about a second later (a re-announce waits for no Redis command: issue 14; docs/WEBTORRENT.md)"
    }
  })

differential(targets, 'a binary frame holding JSON is handled like a text frame',
  (target, ids) => withSession(target, async s => {
    const [a, b] = await s.connectAll('a', 'b')
    a.sendRaw(Buffer.from(JSON.stringify({ action: 'announce', info_hash: ids.hash, peer_id: ids.a, event: 'started', numwant: 0 })), true)
    const reply = await expectMessage(a, is.reply(ids.hash))
    await visible(target, [{ client: a, peerId: ids.a }])
    const offers = makeOffers(1)
    ids.offer = offers[0].offer_id
    await announce(b, ids.hash, ids.b, { event: 'started', numwant: 1, offers })
    const offer = await expectMessage(a, is.offer(ids.hash, ids.offer))
    a.sendRaw(Buffer.from(JSON.stringify({
      action: 'announce', info_hash: ids.hash, peer_id: ids.a, to_peer_id: ids.b, offer_id: ids.offer, answer: { type: 'answer', sdp: SDP.chromeAnswer }
    })), true)
    const answer = await expectMessage(b, is.answer(ids.hash, ids.offer))
    return [replyShape(reply), offer, answer].map(m => norm(m, ids))
  }),
  ([reply, offer, answer]) => {
    assert.deepEqual(reply, REPLY)
    assert.equal(offer.offer.sdp, 'sdp:chromeOffer')
    assert.equal(answer.answer.sdp, 'sdp:chromeAnswer')
  })

// Bad input, where both servers refuse: the refusal (a `failure reason`, or for swarmtrack possibly
// a close with a reason) and that the client can go on (on the same connection, or a fresh one
// if the server closed it). The reasons' texts differ and are printed, not compared.
const badInputs = ids => {
  const ok = { action: 'announce', info_hash: ids.badHash, peer_id: ids.me, numwant: 0 }
  return [
    ['malformed JSON', '{"action":"announce",'],
    ['not JSON at all', 'hello'],
    ['an empty frame', ''],
    ['JSON number', '42'],
    ['JSON string', '"announce"'],
    ['JSON null', 'null'],
    ['JSON true', 'true'],
    ['JSON array holding an announce', JSON.stringify([ok])],
    ['no action', { ...ok, action: undefined }],
    ['unknown action', { ...ok, action: 'connect' }],
    ['action not a string', { ...ok, action: 1 }],
    ['announce without info_hash', { ...ok, info_hash: undefined }],
    ['info_hash a number', { ...ok, info_hash: 12345678901234567890 }],
    ['info_hash a list', { ...ok, info_hash: [ids.badHash] }],
    ['info_hash null', { ...ok, info_hash: null }],
    ['info_hash of 19 chars', { ...ok, info_hash: ids.badHash.slice(1) }],
    ['info_hash of 21 chars', { ...ok, info_hash: ids.badHash + 'x' }],
    ['info_hash of 19 chars and an astral char (21 UTF-16 units)', { ...ok, info_hash: ids.badHash.slice(1) + '\u{1F600}' }],
    ['announce without peer_id', { ...ok, peer_id: undefined }],
    ['peer_id a number', { ...ok, peer_id: 7 }],
    ['peer_id of 19 chars', { ...ok, peer_id: ids.me.slice(1) }],
    ['peer_id of 21 chars', { ...ok, peer_id: ids.me + 'x' }],
    ['answer without to_peer_id', { ...ok, offer_id: ids.someOffer, answer: { type: 'answer', sdp: SDP.chromeAnswer } }],
    ['answer with a 19-char to_peer_id', { ...ok, to_peer_id: ids.other.slice(1), offer_id: ids.someOffer, answer: { type: 'answer', sdp: SDP.chromeAnswer } }],
    ['unknown event', { ...ok, event: 'paused-forever' }],
    ['scrape list holding a 19-char info_hash', { action: 'scrape', info_hash: [ids.badHash.slice(1)] }],
    ['scrape list holding a number', { action: 'scrape', info_hash: [5] }]
  ]
}

const refusals = {} // case -> target -> the refusal, for the report

differential(targets, 'bad input: refused with a failure reason (or a close), and the client goes on',
  (target, ids) => withSession(target, async s => {
    let client = await s.connect('bad')
    const outcome = []
    for (const [name, frame] of badInputs(ids)) {
      const got = await refusal(client, frame)
      ;(refusals[name] ??= {})[target.name] = got.failure ? got.failure['failure reason'] : `close ${JSON.stringify(got.close)}`
      if (target.isReference === false && got.failure) checkFailureFields(name, frame, got.failure, ids)
      if (client.closed) client = await s.connect('bad')
      // The client goes on: a good announce in a fresh swarm gets its reply.
      const ih = ids[`after ${name}`]
      const reply = await announce(client, ih, ids.me, { event: 'started' })
      outcome.push([name, 'refused', reply.incomplete === 1 ? 'goes on' : `reply ${JSON.stringify(reply)}`])
      // And leaves, to stay under swarmtrack's limit of swarms per connection.
      await announce(client, ih, ids.me, { event: 'stopped' })
    }
    // No stray message (a second failure, or a reply to the bad input) is left behind.
    const [rest] = await settle(target, [{ client, peerId: ids.me }])
    return { outcome, rest }
  }),
  obs => assert.deepEqual(obs.rest, []),
  {
    report: t => {
      for (const [name, byTarget] of Object.entries(refusals)) t.diagnostic(`${name}: ${JSON.stringify(byTarget)}`)
    }
  })

/**
 * swarmtrack's failure messages name the `action` when it is announce or scrape, and the
 * `info_hash` when it is valid too (the reference names them only for errors after parsing).
 */
function checkFailureFields (name, frame, failure, ids) {
  assert.equal(typeof failure['failure reason'], 'string', name)
  assert.ok(failure['failure reason'].length > 0, name)
  if (typeof frame !== 'object' || frame === null) return
  if (frame.action !== 'announce' && frame.action !== 'scrape') return
  assert.equal(failure.action, frame.action, `${name}: failure names the action`)
  if (frame.info_hash === ids.badHash) {
    assert.equal(failure.info_hash, ids.badHash, `${name}: failure names the info_hash`)
  }
}
