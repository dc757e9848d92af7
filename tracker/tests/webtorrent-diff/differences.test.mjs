// The deliberate differences from the reference server (docs/WEBTORRENT.md), one test each: the
// same messages go to both, and each side must show ITS documented behaviour. The reference's is
// asserted too, so that a new reference release that changes it is noticed.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import {
  SDP, announce, binaryId, expectMessage, is, makeOffers, refusal, settle, visible
} from './harness.mjs'
import {
  difference, norm, useTargets, withSession
} from './scenarios.mjs'

// The per-connection rate limit is out of the way here (the flood test checks it): the probes
// that prove nothing more is on its way announce on one connection throughout a run.
// The swarm bound per connection lowered from 10,000 to 100 so that difference 16 stays short.
const targets = useTargets({
  TRACKER__LIMITS__MESSAGES_PER_SEC: '1000',
  TRACKER__LIMITS__BURST: '5000',
  TRACKER__WEBTORRENT__MAX_SWARMS_PER_CONNECTION: '100'
})

/**
 * What a client received, as short words: `failure`, `reply <complete>/<incomplete>` (or just
 * `reply` when not `counted`), `answer <offer_id> from <peer_id>`, ...
 */
function kinds (msgs, ids, { counted = true } = {}) {
  return msgs.map(m => {
    const n = norm(m, ids)
    if ('failure reason' in n) return 'failure'
    if ('interval' in n) return counted ? `reply ${n.complete}/${n.incomplete}` : 'reply'
    if (n.action === 'scrape') return `scrape of ${Object.keys(n.files).length}`
    if ('answer' in n) return `answer ${n.offer_id} from ${n.peer_id}${typeof n.answer === 'object' ? '' : ` (answer a ${typeof n.answer})`}`
    if ('offer' in n) return `offer ${n.offer_id} from ${n.peer_id}`
    if ('offer_id' in n) return `signal ${n.offer_id} from ${n.peer_id} without offer or answer`
    return JSON.stringify(n)
  }).sort()
}

/**
 * `peer` joins the fresh swarm `ih` (so an accepted offer or answer has somewhere to go), then `x`
 * sends `msg`; returns what `x` and `peer` received.
 */
async function sendBesidePeer (target, ids, peer, x, ih, msg) {
  await announce(peer, ih, ids.peer, { event: 'started' }, { anyReply: true })
  await visible(target, [{ client: peer, peerId: ids.peer }])
  x.send(msg)
  return settle(target, [{ client: x, peerId: ids.xSettle }, { client: peer, peerId: ids.peer }])
}

const answerMsg = (ids, from, to, offerId, ih = ids.hash) => ({
  action: 'announce', info_hash: ih, peer_id: from, to_peer_id: to, offer_id: offerId, answer: { type: 'answer', sdp: SDP.firefoxAnswer }
})

difference(targets, '1. an answer is forwarded only for an offer delivered to the answerer, once',
  (target, ids) => withSession(target, async s => {
    const [a, b, c] = await s.connectAll('a', 'b', 'c')
    await announce(a, ids.hash, ids.a, { event: 'started' })
    await visible(target, [{ client: a, peerId: ids.a }])
    const offers = makeOffers(1)
    ids.offer = offers[0].offer_id
    await announce(b, ids.hash, ids.b, { event: 'started', numwant: 1, offers }) // a is the only other peer
    await expectMessage(a, is.offer(ids.hash, ids.offer))
    await announce(c, ids.hash, ids.c, { event: 'started' }) // c joins after the offer went out
    a.send(answerMsg(ids, ids.a, ids.b, ids.unknownOffer)) // an offer_id b never sent
    c.send(answerMsg(ids, ids.c, ids.b, ids.offer)) // an offer that went to a, not c
    a.send(answerMsg(ids, ids.a, ids.nobody, ids.offer)) // to a peer_id that is not in the swarm
    const [toA, toC, toB] = await settle(target, [{ client: a, peerId: ids.a }, { client: c, peerId: ids.c }, { client: b, peerId: ids.b }])
    // Then the legitimate answer goes through on both.
    a.send(answerMsg(ids, ids.a, ids.b, ids.offer))
    const right = await expectMessage(b, is.answer(ids.hash, ids.offer))
    // Once: the same answer again.
    a.send(answerMsg(ids, ids.a, ids.b, ids.offer))
    const [againA, againB] = await settle(target, [{ client: a, peerId: ids.a }, { client: b, peerId: ids.b }])
    return {
      a: kinds(toA, ids),
      c: kinds(toC, ids),
      b: kinds(toB, ids),
      legitimate: kinds([right], ids),
      again: { a: kinds(againA, ids), b: kinds(againB, ids) }
    }
  }), {
    reference: {
      a: [],
      c: [],
      b: ['answer #offer from #c', 'answer #unknownOffer from #a'],
      legitimate: ['answer #offer from #a'],
      again: { a: [], b: ['answer #offer from #a'] }
    },
    swarmtrack: {
      a: ['failure', 'failure'],
      c: ['failure'],
      b: [],
      legitimate: ['answer #offer from #a'],
      again: { a: ['failure'], b: [] }
    }
  })

/**
 * Offers `n` offers (numwant n) to a swarm of two others: what came back (`reply`, `failure`, or
 * the server's close), how many offers were delivered, and whether the sender then goes on.
 */
async function offerMany (target, ids, n) {
  return withSession(target, async s => {
    const ih = ids[`h${n}`]
    const [a, b] = await s.connectAll('a', 'b')
    let c = await s.connect('c')
    await announce(a, ih, ids.a, { event: 'started' })
    await announce(b, ih, ids.b, { event: 'started' })
    await visible(target, [{ client: a, peerId: ids.a }, { client: b, peerId: ids.b }])
    c.send({ action: 'announce', info_hash: ih, peer_id: ids.c, event: 'started', numwant: n, offers: makeOffers(n) })
    const got = await c.waitFor(() => {
      const i = c.inbox.findIndex(m => 'interval' in m || is.failure()(m))
      return i >= 0 ? c.inbox.splice(i, 1)[0] : c.closed
    }, 'reply, failure or close')
    const reply = got === c.closed ? `closed ${got.code} ${got.reason}` : 'failure reason' in got ? 'failure' : 'reply'
    const rest = await settle(target, [{ client: a, peerId: ids.a }, { client: b, peerId: ids.b }])
    if (c.closed) c = await s.connect('c again')
    const again = await announce(c, ih, ids.c, { numwant: 1, offers: makeOffers(1) })
    return {
      reply,
      delivered: rest.flat().filter(is.offer(ih)).length,
      after: 'failure reason' in again ? 'failure' : 'reply'
    }
  })
}

difference(targets, '3, 13. more than max_offers (10) offers are refused; a frame over max_frame_bytes closes',
  async (target, ids) => ({
    ten: await offerMany(target, ids, 10),
    eleven: await offerMany(target, ids, 11),
    hundred: await offerMany(target, ids, 100)
  }), {
    // The reference takes any number (it forwards up to 82, one per other peer: here 2).
    reference: {
      ten: { reply: 'reply', delivered: 2, after: 'reply' },
      eleven: { reply: 'reply', delivered: 2, after: 'reply' },
      hundred: { reply: 'reply', delivered: 2, after: 'reply' }
    },
    // 100 real offers (about 90 KB) are over limits.max_frame_bytes (64 KiB): the connection is
    // closed before the offers are even counted.
    swarmtrack: {
      ten: { reply: 'reply', delivered: 2, after: 'reply' },
      eleven: { reply: 'failure', delivered: 0, after: 'reply' },
      hundred: { reply: 'closed 1009 frame too large', delivered: 0, after: 'reply' }
    }
  })

difference(targets, '4. ids are 20 characters, each at most U+00FF (the reference counts UTF-16 units and truncates to bytes)',
  (target, ids) => withSession(target, async s => {
    const [peer, x] = await s.connectAll('peer', 'x')
    const out = {}
    const nonLatin1 = 'Ā' + ids.plain.slice(1) // U+0100: 20 UTF-16 units, but not a byte
    const astral = ids.plain.slice(2) + '\u{1F600}' // 18 chars + 1 astral = 20 UTF-16 units, 19 characters
    const attempt = async (name, fields) => {
      const ih = fields.info_hash ?? ids[`swarm ${name}`]
      const offers = fields.offers ?? makeOffers(1)
      const peerId = fields.peer_id ?? ids.x
      const msg = { action: 'announce', info_hash: ih, peer_id: peerId, event: 'started', numwant: 1, ...fields, offers }
      const [toX, toPeer] = await sendBesidePeer(target, ids, peer, x, ih, msg)
      const reply = toX.find(m => 'failure reason' in m || 'interval' in m)
      const offer = toPeer.find(m => m.offer)
      const altered = offer && ['info_hash', 'peer_id', 'offer_id']
        .filter(k => offer[k] !== { info_hash: ih, peer_id: peerId, offer_id: offers[0].offer_id }[k])
      out[name] = {
        reply: 'failure reason' in reply ? 'failure' : (reply.info_hash === ih ? 'reply' : 'reply with an altered info_hash'),
        offer: !offer ? 'none' : altered.length ? `forwarded with altered ${altered.join(', ')}` : 'forwarded'
      }
    }
    await attempt('non-latin1 info_hash', { info_hash: nonLatin1 })
    await attempt('non-latin1 peer_id', { peer_id: nonLatin1 })
    await attempt('19 chars + astral peer_id', { peer_id: astral })
    await attempt('19-char offer_id', { offers: [{ offer_id: ids.plain.slice(1), offer: { type: 'offer', sdp: SDP.chromeOffer } }] })
    await attempt('non-latin1 offer_id', { offers: [{ offer_id: nonLatin1, offer: { type: 'offer', sdp: SDP.chromeOffer } }] })
    return out
  }), {
    // The reference checks `.length` (UTF-16 units) only and turns ids into bytes with
    // Buffer.from(id, 'binary'), which keeps the low byte of each unit: what it relays is not what
    // was sent (U+0100 becomes U+0000, an astral char two other characters).
    reference: {
      'non-latin1 info_hash': { reply: 'reply with an altered info_hash', offer: 'forwarded with altered info_hash' },
      'non-latin1 peer_id': { reply: 'reply', offer: 'forwarded with altered peer_id' },
      '19 chars + astral peer_id': { reply: 'reply', offer: 'forwarded with altered peer_id' },
      '19-char offer_id': { reply: 'reply', offer: 'forwarded' },
      'non-latin1 offer_id': { reply: 'reply', offer: 'forwarded' }
    },
    swarmtrack: {
      'non-latin1 info_hash': { reply: 'failure', offer: 'none' },
      'non-latin1 peer_id': { reply: 'failure', offer: 'none' },
      '19 chars + astral peer_id': { reply: 'failure', offer: 'none' },
      '19-char offer_id': { reply: 'failure', offer: 'none' },
      'non-latin1 offer_id': { reply: 'failure', offer: 'none' }
    }
  })

difference(targets, '5. a scrape without info_hash is refused (the reference lists every torrent)',
  (target, ids) => withSession(target, async s => {
    const a = await s.connect('a')
    await announce(a, ids.hash, ids.a, { event: 'started' })
    a.send({ action: 'scrape' })
    const got = await expectMessage(a, m => m.action === 'scrape' || 'failure reason' in m)
    if ('failure reason' in got) return { failure: true, action: got.action }
    return { failure: false, listsOurSwarm: ids.hash in got.files }
  }), {
    reference: { failure: false, listsOurSwarm: true },
    swarmtrack: { failure: true, action: 'scrape' }
  })

difference(targets, '6. a peer_id announced by another connection cannot be taken over; one peer_id per swarm per connection',
  (target, ids) => withSession(target, async s => {
    const [owner, thief, offerer] = await s.connectAll('owner', 'thief', 'offerer')
    await announce(owner, ids.hash, ids.p, { event: 'started' })
    await visible(target, [{ client: owner, peerId: ids.p }])
    const taken = await announce(thief, ids.hash, ids.p, { event: 'started' })
    await announce(offerer, ids.hash, ids.o, { event: 'started', numwant: 1, offers: makeOffers(1) })
    const second = await announce(owner, ids.hash, ids.q, { event: 'started' })
    const rest = await settle(target, [{ client: owner, peerId: ids.p }, { client: thief, peerId: ids.t }])
    const word = m => 'failure reason' in m ? 'failure' : 'reply'
    return {
      takeover: word(taken),
      offerReached: rest.map(msgs => msgs.filter(is.offer(ids.hash)).length),
      secondPeerId: word(second)
    }
  }), {
    // The reference answers the thief as an update of the same peer, but keeps sending that peer's
    // offers to the first socket; a second peer_id on one connection is a second peer.
    reference: { takeover: 'reply', offerReached: [1, 0], secondPeerId: 'reply' },
    swarmtrack: { takeover: 'failure', offerReached: [1, 0], secondPeerId: 'failure' },
    // The thief is on the other instance: the check is per instance (docs: difference 6), and
    // what matters holds: the thief receives nothing meant for the owner.
    'swarmtrack x2 (redis)': { takeover: 'reply', offerReached: [1, 0], secondPeerId: 'failure' }
  })

difference(targets, '7. numwant limits the offers forwarded (the reference forwards every offer)',
  (target, ids) => withSession(target, async s => {
    const peers = []
    for (let i = 0; i < 4; i++) peers.push({ client: await s.connect(`p${i}`), peerId: ids[`p${i}`] })
    for (const p of peers) await announce(p.client, ids.hash, p.peerId, { event: 'started' })
    await visible(target, peers)
    const a = await s.connect('a')
    await announce(a, ids.hash, ids.a, { event: 'started', numwant: 1, offers: makeOffers(3) })
    const rest = await settle(target, peers)
    return { delivered: rest.flat().filter(is.offer(ids.hash)).length }
  }), {
    reference: { delivered: 3 },
    swarmtrack: { delivered: 1 }
  })

difference(targets, '8. scrape `downloaded` counts completed events (the reference repeats `complete`); flags.min_request_interval',
  (target, ids) => withSession(target, async s => {
    const [seeder, finisher] = await s.connectOnOneInstance('seeder', 'finisher')
    await announce(seeder, ids.hash, ids.s, { event: 'started', left: 0 })
    await announce(finisher, ids.hash, ids.f, { event: 'started', left: 5 })
    await announce(finisher, ids.hash, ids.f, { event: 'completed', left: 0 })
    seeder.send({ action: 'scrape', info_hash: ids.hash })
    const got = await expectMessage(seeder, is.scrape())
    return { ...got.files[ids.hash], flags: got.flags }
  }), {
    // Not in the list: the reference's scrape flags say its HTTP interval (600 s), not the
    // 120 s it tells WebSocket announcers; swarmtrack says its announce interval.
    reference: { complete: 2, incomplete: 0, downloaded: 2, flags: { min_request_interval: 600 } },
    swarmtrack: { complete: 2, incomplete: 0, downloaded: 1, flags: { min_request_interval: 120 } }
  })

// Not a documented difference but a reference bug: a scrape whose info_hash is neither a string
// nor a list throws inside the reference's request handler, outside its try/catch, and kills the
// process (TypeError: params.info_hash.map is not a function). It cannot be sent to the reference;
// swarmtrack must refuse it and go on.
test('scrape with an info_hash that is neither a string nor a list is refused (it crashes the reference)', async t => {
  const ours = targets.filter(target => !target.isReference)
  if (ours.length === 0) return t.skip('no swarmtrack binary (TRACKER_BIN)')
  for (const target of ours) {
    await withSession(target, async s => {
      let client = await s.connect('a')
      for (const infoHash of [123, {}, true]) {
        await refusal(client, { action: 'scrape', info_hash: infoHash })
        if (client.closed) client = await s.connect('a')
        const reply = await announce(client, binaryId(), binaryId(), { event: 'started' })
        assert.equal(reply.interval, 120, `${target.name}: goes on after scrape info_hash ${JSON.stringify(infoHash)}`)
      }
    })
  }
})

// Not in the list of deliberate differences the lead gave: input of the wrong type that the
// reference tolerates (JavaScript coercion) and swarmtrack refuses or reads strictly. Asserted
// as observed so that a change on either side shows; reported for docs/WEBTORRENT.md.
difference(targets, 'not in the docs: wrong types the reference tolerates: offers, numwant, answer, offer_id with an answer, left, empty scrape',
  (target, ids) => withSession(target, async s => {
    const [peer, x] = await s.connectOnOneInstance('peer', 'x') // `left` shows in the counts
    const out = {}
    const attempt = async (name, msg) => {
      const ih = ids[`swarm ${name}`]
      const [toX, toPeer] = await sendBesidePeer(target, ids, peer, x, ih, msg(ih, ids.x))
      out[name] = { sender: kinds(toX, ids).join(', '), peer: kinds(toPeer, ids).join(', ') }
    }
    const base = (ih, me) => ({ action: 'announce', info_hash: ih, peer_id: me, event: 'started' })
    const answer = { type: 'answer', sdp: SDP.chromeAnswer }
    await attempt('offers a number', (ih, me) => ({ ...base(ih, me), numwant: 1, offers: 5 }))
    await attempt('offers an object', (ih, me) => ({ ...base(ih, me), numwant: 1, offers: {} }))
    await attempt('an offer without `offer`', (ih, me) => ({ ...base(ih, me), numwant: 1, offers: [{ offer_id: ids.o }] }))
    await attempt('numwant a string', (ih, me) => ({ ...base(ih, me), numwant: 'x' }))
    await attempt('an answer without offer_id', (ih, me) => ({ ...base(ih, me), to_peer_id: ids.peer, answer }))
    await attempt('an answer that is a string', (ih, me) => ({ ...base(ih, me), to_peer_id: ids.peer, offer_id: ids.o, answer: SDP.chromeAnswer }))
    await attempt('left null', (ih, me) => ({ ...base(ih, me), left: null }))
    await attempt('left empty string', (ih, me) => ({ ...base(ih, me), left: '' }))
    await attempt('left "0"', (ih, me) => ({ ...base(ih, me), left: '0' }))
    await attempt('scrape of an empty list', ih => ({ action: 'scrape', info_hash: [] }))
    return out
  }), {
    reference: {
      'offers a number': { sender: 'reply 0/2', peer: '' },
      'offers an object': { sender: 'reply 0/2', peer: '' },
      'an offer without `offer`': { sender: 'reply 0/2', peer: 'signal #o from #x without offer or answer' },
      'numwant a string': { sender: 'reply 0/2', peer: '' },
      'an answer without offer_id': { sender: '', peer: 'answer undefined from #x' },
      'an answer that is a string': { sender: '', peer: 'answer #o from #x (answer a string)' },
      'left null': { sender: 'reply 1/1', peer: '' },
      'left empty string': { sender: 'reply 1/1', peer: '' },
      'left "0"': { sender: 'reply 1/1', peer: '' },
      'scrape of an empty list': { sender: 'scrape of 0', peer: '' }
    },
    swarmtrack: {
      'offers a number': { sender: 'failure', peer: '' },
      'offers an object': { sender: 'failure', peer: '' },
      'an offer without `offer`': { sender: 'failure', peer: '' },
      'numwant a string': { sender: 'failure', peer: '' },
      'an answer without offer_id': { sender: 'failure', peer: '' },
      'an answer that is a string': { sender: 'failure', peer: '' },
      'left null': { sender: 'reply 0/2', peer: '' },
      'left empty string': { sender: 'reply 0/2', peer: '' },
      'left "0"': { sender: 'reply 1/1', peer: '' },
      'scrape of an empty list': { sender: 'failure', peer: '' }
    }
  })

// Not in the list either: with two instances, `complete`, `incomplete` (announce replies and
// scrapes) and `downloaded` are the counts of the instance that answers, not of the swarm. The
// reference is one process; swarmtrack alone agrees with it.
difference(targets, '9. counts across two instances: each instance reports its own peers',
  (target, ids) => withSession(target, async s => {
    // With two instances a and c are on the first, b (a seeder) on the second.
    const [a, b, c] = await s.connectAll('a', 'b', 'c')
    const counts = []
    const step = async (client, peerId, fields) => {
      const r = await announce(client, ids.hash, peerId, fields)
      counts.push(`${r.complete}/${r.incomplete}`)
    }
    await step(a, ids.a, { event: 'started', left: 10 })
    await step(b, ids.b, { event: 'started', left: 0 })
    await visible(target, [{ client: a, peerId: ids.a }, { client: b, peerId: ids.b }])
    await step(c, ids.c, { event: 'started', left: 10 })
    b.send({ action: 'scrape', info_hash: ids.hash })
    const scrape = (await expectMessage(b, is.scrape())).files[ids.hash]
    return { replies: counts, scrapeFromB: `${scrape.complete}/${scrape.incomplete}` }
  }), {
    reference: { replies: ['0/1', '1/1', '1/2'], scrapeFromB: '1/2' },
    swarmtrack: { replies: ['0/1', '1/1', '1/2'], scrapeFromB: '1/2' },
    'swarmtrack x2 (redis)': { replies: ['0/1', '1/0', '0/2'], scrapeFromB: '1/0' }
  })

// Difference 16: swarmtrack bounds the swarms one connection may be in
// (webtorrent.max_swarms_per_connection: 10,000 by default, 100 in these tests); the reference
// has no bound.
difference(targets, '16. swarms per connection: at most 100 at once (the reference has no bound)',
  (target, ids) => withSession(target, async s => {
    const [a] = await s.connectAll('a')
    const words = []
    for (let i = 0; i < 101; i++) {
      const r = await announce(a, ids[`h${i}`], ids.a, { event: 'started' })
      words.push('failure reason' in r ? 'failure' : 'reply')
    }
    await announce(a, ids.h0, ids.a, { event: 'stopped' }) // leaving one makes room
    const r = await announce(a, ids.h100, ids.a, { event: 'started' })
    return { first100: words.slice(0, 100).every(w => w === 'reply'), next: words[100], afterLeaving: 'failure reason' in r ? 'failure' : 'reply' }
  }), {
    reference: { first100: true, next: 'reply', afterLeaving: 'reply' },
    swarmtrack: { first100: true, next: 'failure', afterLeaving: 'reply' }
  })

difference(targets, '2. an answer to an offerer that left: a failure when it was on this instance',
  (target, ids) => withSession(target, async s => {
    const [a, b] = await s.connectAll('a', 'b') // with two instances b is on the other one
    await announce(a, ids.hash, ids.a, { event: 'started' })
    await visible(target, [{ client: a, peerId: ids.a }])
    const offers = makeOffers(1)
    await announce(b, ids.hash, ids.b, { event: 'started', numwant: 1, offers })
    await expectMessage(a, is.offer(ids.hash, offers[0].offer_id))
    await b.close()
    a.send(answerMsg(ids, ids.a, ids.b, offers[0].offer_id))
    const [toA] = await settle(target, [{ client: a, peerId: ids.a }])
    return { answerer: kinds(toA, ids) }
  }), {
    reference: { answerer: [] },
    // Across instances too: the refusal comes back through Redis (ARCHITECTURE.md section 6).
    swarmtrack: { answerer: ['failure'] }
  })

difference(targets, '10. offers in an announce that carries an answer, or a stopped one, are ignored',
  (target, ids) => withSession(target, async s => {
    const [a, b, c] = await s.connectAll('a', 'b', 'c')
    await announce(a, ids.hash, ids.a, { event: 'started' })
    await announce(c, ids.hash, ids.c, { event: 'started' })
    await visible(target, [{ client: a, peerId: ids.a }, { client: c, peerId: ids.c }])
    const offers = makeOffers(1)
    await announce(b, ids.hash, ids.b, { event: 'started', numwant: 1, offers })
    const [toA, toC] = await settle(target, [{ client: a, peerId: ids.a }, { client: c, peerId: ids.c }])
    const [answerer, answererId] = toA.length ? [a, ids.a] : [c, ids.c]
    assert.equal(toA.length + toC.length, 1, 'one offer, one receiver')
    // The answer carries two offers of its own, the stop one more.
    answerer.send({ ...answerMsg(ids, answererId, ids.b, offers[0].offer_id), numwant: 2, offers: makeOffers(2) })
    await expectMessage(b, is.answer(ids.hash, offers[0].offer_id))
    await announce(b, ids.hash, ids.b, { event: 'stopped', numwant: 1, offers: makeOffers(1) })
    const rest = await settle(target, [{ client: a, peerId: ids.a }, { client: c, peerId: ids.c }])
    return { offersForwarded: rest.flat().filter(is.offer(ids.hash)).length }
  }), {
    // The reference forwards the answer's two offers (to b and the third peer) and the stopped
    // announce's one.
    reference: { offersForwarded: 2 },
    swarmtrack: { offersForwarded: 0 }
  })

difference(targets, '19. announce replies name the tracker instance (`tracker id`), which clients echo as `trackerid`',
  (target, ids) => withSession(target, async s => {
    // Clients alternate between the instances of a two-instance target: a on the first, b on
    // the second.
    const [a, b] = await s.connectAll('a', 'b')
    const ra = await announce(a, ids.hash, ids.a, { event: 'started' })
    const rb = await announce(b, ids.hash, ids.b, { event: 'started' })
    // bittorrent-tracker's client (p2p-media-loader's) sends the id back in its next announces.
    const again = await announce(a, ids.hash, ids.a, { trackerid: ra['tracker id'] ?? 'x' })
    const id = r => r['tracker id']
    return {
      sent: [ra, rb, again].map(r => typeof id(r) === 'string' && /^[0-9a-f]{8}$/.test(id(r))),
      sameOnOneConnection: id(ra) === id(again),
      sameForBoth: id(ra) === id(rb),
      echoAccepted: !('failure reason' in again)
    }
  }), {
    reference: { sent: [false, false, false], sameOnOneConnection: true, sameForBoth: true, echoAccepted: true },
    swarmtrack: { sent: [true, true, true], sameOnOneConnection: true, sameForBoth: true, echoAccepted: true },
    // One client on each instance: two different ids.
    'swarmtrack x2 (redis)': { sent: [true, true, true], sameOnOneConnection: true, sameForBoth: false, echoAccepted: true }
  })
