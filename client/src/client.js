/**
 * The SDK's entry point: one WebSocket to a swarmtrack tracker (or its HAProxy front end), the
 * swarms this page has joined, and a {@link Peer} per remote viewer it is connecting or
 * connected to.
 *
 * Invariants:
 * - Only this class writes to the socket; peers hand their signals over through `signal`.
 * - The joined swarms are state, not messages: after every `welcome` (first connection,
 *   reconnect after an error, `reconnect` from a draining tracker) each one is joined again.
 * - Everything is bounded: swarms (`maxSwarms`), peers (`maxPeers`), per-peer work
 *   (peer.js), one reconnect timer, one refill timer per swarm, and a connect timeout per peer.
 * - A server message is checked (wire.js) before it is acted on, and the handler is guarded:
 *   nothing the tracker sends can throw out of the socket's event handler.
 * @module
 */

import { realTimers } from './batcher.js';
import { Emitter } from './emitter.js';
import { OfferGate } from './offers.js';
import { Peer } from './peer.js';
import { decodeServerFrame, encodeFrame, frameBytes } from './wire.js';

/**
 * Options of {@link SwarmClient}; every field is optional.
 * @typedef {object} SwarmClientOptions
 * @property {RTCIceServer[]} [iceServers] STUN/TURN servers for RTCPeerConnection (default none)
 * @property {number} [want] peers to ask the tracker for, and to keep, per swarm (default 5;
 *   clamped to the tracker's `welcome.limits.want`)
 * @property {number} [maxPeers] connections (negotiating or open) over all swarms (default 20)
 * @property {number} [connectTimeoutMs] a peer whose data channel isn't open by then is closed
 *   (default 15000)
 * @property {number} [handshakeTimeoutMs] socket open + `welcome` within this, else retry
 *   (default 10000)
 * @property {'json' | 'msgpack'} [framing] wire format (default `json`)
 * @property {boolean} [minify] send data-channel SDP and candidates minified (`m1`) (default true)
 * @property {number} [batchWindowMs] candidate coalescing window; 0 sends each alone (default 15)
 * @property {number} [backoffMinMs] first reconnect delay after an error (default 500)
 * @property {number} [backoffMaxMs] longest reconnect delay (default 30000)
 * @property {number} [refillDelayMs] least time between two joins of one swarm to find
 *   replacement peers (default 1000)
 * @property {number} [maxSwarms] swarms joined at once (default 16, the tracker's default)
 * @property {number} [retryFailedAfterMs] a peer whose negotiation failed isn't offered to again
 *   for this long, so an unreachable peer isn't retried at every refill (default 30000)
 * @property {number} [offerBurst] new negotiations (offers with a new `sid`) one remote may start
 *   at once (default 3)
 * @property {number} [offerIntervalMs] then one more per this many ms; an offer beyond that is
 *   ignored and doubles the interval (default 1000)
 * @property {number} [offerBackoffMaxMs] longest that interval grows to (default 60000)
 * @property {number} [maxReplacements] a remote that replaces its connection with this page more
 *   often than this within `replaceWindowMs` is quarantined for `retryFailedAfterMs`: its offers
 *   are ignored and it isn't offered to (default 3)
 * @property {number} [replaceWindowMs] see `maxReplacements` (default 60000)
 * @property {string} [channelLabel] data channel label (default `swarmtrack`)
 * @property {typeof WebSocket} [WebSocket] constructor to use (default the global)
 * @property {typeof RTCPeerConnection} [RTCPeerConnection] constructor (default the global)
 * @property {import('./batcher.js').Timers} [timers] timer functions (tests)
 * @property {() => number} [now] clock in ms (default performance.now)
 * @property {() => number} [random] uniform [0, 1) for jitter (default Math.random)
 */

/**
 * Counters of what this client sent and received, for measurements.
 * @typedef {object} ClientStats
 * @property {number} framesSent
 * @property {number} bytesSent payload bytes of every frame sent
 * @property {Record<string, {messages: number, bytes: number}>} sent per message type
 * @property {number} framesReceived
 * @property {number} bytesReceived
 * @property {number} malformed server frames or messages dropped
 * @property {number} peersOpened data channels opened
 * @property {number} peersFailed negotiations that ended before a channel opened
 * @property {number} connects `welcome`s received
 * @property {number} dropped messages not sent (socket down or over `max_message`)
 * @property {number} skippedFailed peers from `peers` not offered to because they failed recently
 *   or are quarantined
 * @property {number} offersLimited offers ignored: over the remote's offer rate, or from a
 *   quarantined remote
 * @property {number} quarantined remotes quarantined for replacing their connection too often
 */

const DEFAULTS = {
  iceServers: [],
  want: 5,
  maxPeers: 20,
  connectTimeoutMs: 15000,
  handshakeTimeoutMs: 10000,
  framing: /** @type {'json'|'msgpack'} */ ('json'),
  minify: true,
  batchWindowMs: 15,
  backoffMinMs: 500,
  backoffMaxMs: 30000,
  refillDelayMs: 1000,
  maxSwarms: 16,
  retryFailedAfterMs: 30000,
  offerBurst: 3,
  offerIntervalMs: 1000,
  offerBackoffMaxMs: 60000,
  maxReplacements: 3,
  replaceWindowMs: 60000,
  channelLabel: 'swarmtrack',
};

const OPEN = 1;
/** Peers remembered as failed at most; the oldest is forgotten first. */
const MAX_FAILED = 256;
/** Close reasons that say the remote is unreachable, not that we let go of it. */
const FAILURES = new Set(['timeout', 'failed', 'negotiation failed']);
const utf8 = new TextEncoder();

/**
 * A connected peer, as given to `peer` listeners.
 * @typedef {object} PeerEvent
 * @property {string} swarm
 * @property {string} id the remote viewer's peer id
 * @property {RTCDataChannel} channel open data channel
 * @property {RTCPeerConnection} connection
 * @property {number} openAfterMs from the start of this negotiation to the open channel
 */

export class SwarmClient extends Emitter {
  /**
   * @param {string} url tracker WebSocket URL, e.g. `wss://tracker.example/v1/ws`
   * @param {SwarmClientOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    const o = { ...DEFAULTS, ...options };
    if (o.framing !== 'json' && o.framing !== 'msgpack') throw new TypeError('framing: json or msgpack');
    this.url = url;
    this.o = o;
    this.timers = options.timers ?? realTimers;
    this.now = options.now ?? (() => globalThis.performance.now());
    this.random = options.random ?? Math.random;
    this.WS = options.WebSocket ?? globalThis.WebSocket;
    this.PC = options.RTCPeerConnection ?? globalThis.RTCPeerConnection;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** Our peer id on the current connection (null until `welcome`). @type {string | null} */
    this.peerId = null;
    /** The tracker instance of the current connection. @type {string | null} */
    this.instance = null;
    this.trackerWant = 16;
    this.maxMessage = 16384;
    /** @type {Map<string, {refillTimer: unknown, lastJoinAt: number}>} */
    this.swarms = new Map();
    /** @type {Map<string, Peer>} key: swarm + "\n" + remote id */
    this.peers = new Map();
    /** @type {Map<string, number>} same key -> time until which we don't offer to it */
    this.failed = new Map();
    /** Incoming offers per remote: rate with back-off, quarantine (offers.js). */
    this.offerGate = new OfferGate({
      intervalMs: o.offerIntervalMs,
      burst: o.offerBurst,
      maxIntervalMs: o.offerBackoffMaxMs,
      maxReplacements: o.maxReplacements,
      replaceWindowMs: o.replaceWindowMs,
      quarantineMs: o.retryFailedAfterMs,
      now: () => this.now(),
      maxRemotes: MAX_FAILED,
    });
    this.attempt = 0;
    /** Reconnecting because a draining tracker said `reconnect` (until the next `welcome`). */
    this.moved = false;
    /** @type {unknown} */
    this.reconnectTimer = null;
    /** @type {unknown} */
    this.handshakeTimer = null;
    this.sidCounter = 0;
    this.closed = false;
    /** @type {ClientStats} */
    this.stats = {
      framesSent: 0,
      bytesSent: 0,
      sent: {},
      framesReceived: 0,
      bytesReceived: 0,
      malformed: 0,
      peersOpened: 0,
      peersFailed: 0,
      connects: 0,
      dropped: 0,
      skippedFailed: 0,
      offersLimited: 0,
      quarantined: 0,
    };
  }

  /**
   * Joins a swarm (connecting first if needed) and keeps it joined across reconnects.
   * @param {string} swarm 1..256 bytes of UTF-8
   */
  join(swarm) {
    const bytes = typeof swarm === 'string' ? utf8.encode(swarm).length : 0;
    if (bytes < 1 || bytes > 256) throw new RangeError('swarm: 1..256 bytes');
    if (this.closed) throw new Error('client is closed');
    if (!this.swarms.has(swarm)) {
      if (this.swarms.size >= this.o.maxSwarms) throw new RangeError(`at most ${this.o.maxSwarms} swarms`);
      this.swarms.set(swarm, { refillTimer: null, lastJoinAt: -Infinity });
    }
    if (this.peerId !== null) this.sendJoin(swarm);
    else this.connect();
  }

  /**
   * Leaves a swarm: tells the tracker and closes this swarm's peers.
   * @param {string} swarm
   */
  leave(swarm) {
    const s = this.swarms.get(swarm);
    if (!s) return;
    if (s.refillTimer !== null) this.timers.clearTimeout(s.refillTimer);
    this.swarms.delete(swarm);
    this.send({ t: 'leave', swarm });
    for (const p of [...this.peers.values()]) if (p.swarm === swarm) p.close('left');
  }

  /** Leaves every swarm, closes every peer and the socket; the client can't be used again. */
  close() {
    if (this.closed) return;
    for (const swarm of [...this.swarms.keys()]) this.leave(swarm);
    this.closed = true;
    for (const p of [...this.peers.values()]) p.close('client closed');
    if (this.reconnectTimer !== null) this.timers.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.dropSocket(1000, 'bye');
  }

  /**
   * The peers whose data channel is open.
   * @returns {PeerEvent[]}
   */
  connections() {
    return [...this.peers.values()].filter((p) => p.state === 'open').map((p) => this.peerEvent(p));
  }

  /**
   * Closes the connection with one remote viewer (e.g. a peer that serves too slowly); the
   * swarm is refilled from the tracker later.
   * @param {string} swarm
   * @param {string} id
   */
  disconnectPeer(swarm, id) {
    this.peers.get(`${swarm}\n${id}`)?.close('disconnected');
  }

  // ---- socket --------------------------------------------------------------------------------

  /** Opens the socket unless one is open or opening. Called by `join`; safe to call again. */
  connect() {
    if (this.closed || this.ws !== null || this.reconnectTimer !== null) return;
    let url;
    try {
      url = new URL(this.url, globalThis.location?.href);
      url.searchParams.set('format', this.o.framing);
      // Lets a swarm-affine front end route on the swarm (the tracker ignores it).
      const first = this.swarms.keys().next();
      if (!first.done) url.searchParams.set('swarm', first.value);
      // Tells the tracker this viewer was moved by a drain, not a new arrival (its autoscaler
      // must not scale out for it).
      if (this.moved) url.searchParams.set('reconnect', '1');
    } catch {
      this.emit('error', { code: 'bad_url', msg: String(this.url), ref: null, sid: null });
      return;
    }
    /** @type {WebSocket} */
    let ws;
    try {
      ws = new this.WS(url.toString());
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      try {
        this.onFrame(ev.data);
      } catch {
        // checkServerMsg keeps malformed input out; this guards against our own bugs so the
        // socket's event loop survives them.
        this.stats.malformed++;
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.peerId = null;
      this.clearHandshake();
      this.emit('disconnected', { code: ev.code, reason: ev.reason });
      this.scheduleReconnect();
    };
    this.handshakeTimer = this.timers.setTimeout(() => {
      this.handshakeTimer = null;
      if (this.ws === ws && this.peerId === null) {
        this.dropSocket(4000, 'no welcome');
        this.scheduleReconnect();
      }
    }, this.o.handshakeTimeoutMs);
  }

  clearHandshake() {
    if (this.handshakeTimer !== null) this.timers.clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
  }

  /**
   * Forgets the current socket (its handlers stop acting) and closes it.
   * @param {number} code
   * @param {string} reason
   */
  dropSocket(code, reason) {
    const ws = this.ws;
    this.ws = null;
    this.peerId = null;
    this.clearHandshake();
    if (!ws) return;
    ws.onmessage = null;
    ws.onclose = null;
    try {
      ws.close(code, reason);
    } catch {
      // Already closing.
    }
  }

  /** Reconnects after a jittered, exponentially growing delay (reset by each `welcome`). */
  scheduleReconnect() {
    if (this.closed || this.reconnectTimer !== null || this.swarms.size === 0) return;
    const cap = Math.min(this.o.backoffMaxMs, this.o.backoffMinMs * 2 ** Math.min(this.attempt, 20));
    this.attempt++;
    // Half fixed, half random: spreads a fleet's viewers after an outage yet never retries at 0.
    this.reconnectAfter(cap / 2 + this.random() * (cap / 2));
  }

  /** @param {number} ms */
  reconnectAfter(ms) {
    if (this.reconnectTimer !== null) this.timers.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = this.timers.setTimeout(() => {
      this.reconnectTimer = null;
      this.dropSocket(1000, 'reconnecting');
      this.connect();
    }, ms);
  }

  /**
   * Sends one message; dropped (and counted) when the socket isn't ready or it is too large.
   * @param {Record<string, unknown>} msg
   * @returns {boolean}
   */
  send(msg) {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN || this.peerId === null) {
      this.stats.dropped++;
      return false;
    }
    const frame = encodeFrame(msg, this.o.framing);
    const bytes = frameBytes(frame);
    if (bytes > this.maxMessage) {
      this.stats.dropped++;
      return false;
    }
    ws.send(frame);
    this.stats.framesSent++;
    this.stats.bytesSent += bytes;
    const t = /** @type {string} */ (msg.t);
    const per = (this.stats.sent[t] ??= { messages: 0, bytes: 0 });
    per.messages++;
    per.bytes += bytes;
    return true;
  }

  /** @param {string} swarm */
  sendJoin(swarm) {
    const s = this.swarms.get(swarm);
    if (!s) return;
    s.lastJoinAt = this.now();
    this.send({ t: 'join', swarm, want: Math.max(1, Math.min(this.o.want, this.trackerWant)) });
  }

  // ---- server messages -----------------------------------------------------------------------

  /** @param {string | ArrayBuffer} data */
  onFrame(data) {
    this.stats.framesReceived++;
    this.stats.bytesReceived += typeof data === 'string' ? data.length : data.byteLength;
    const msgs = decodeServerFrame(data);
    if (msgs.length === 0) this.stats.malformed++;
    for (const m of msgs) this.onMessage(m);
  }

  /** @param {import('./wire.js').ServerMsg} m */
  onMessage(m) {
    switch (m.t) {
      case 'welcome':
        if (this.peerId !== null) return; // a second welcome is a server bug
        this.peerId = m.peer;
        this.instance = m.instance;
        this.trackerWant = Math.max(1, m.limits.want);
        this.maxMessage = Math.max(1024, m.limits.max_message);
        this.attempt = 0;
        this.moved = false;
        this.clearHandshake();
        this.stats.connects++;
        this.emit('connected', { peer: m.peer, instance: m.instance });
        for (const swarm of this.swarms.keys()) this.sendJoin(swarm);
        return;
      case 'peers':
        return this.onPeers(m.swarm, m.peers);
      case 'offer':
        return this.onOffer(m.swarm, m.from, m.sid, m.m);
      case 'answer': {
        const p = this.peers.get(`${m.swarm}\n${m.from}`);
        if (p && p.initiator && p.sid === m.sid) p.acceptAnswer(m.m);
        return;
      }
      case 'cands': {
        const p = this.peers.get(`${m.swarm}\n${m.from}`);
        if (p && p.sid === m.sid) p.addCandidates(m.c, m.end);
        return;
      }
      case 'reconnect':
        this.emit('reconnect', { afterMs: m.after_ms });
        this.attempt = 0;
        this.moved = true;
        this.reconnectAfter(m.after_ms);
        return;
      case 'error':
        if (m.sid !== null) {
          // The tracker refused a signal of this negotiation: the peer is gone, stop waiting.
          for (const p of [...this.peers.values()]) {
            if (p.sid === m.sid && p.state === 'new') p.close(`tracker: ${m.code}`);
          }
        }
        this.emit('error', m);
        return;
      default:
    }
  }

  /**
   * @param {string} swarm
   * @param {string[]} ids
   */
  onPeers(swarm, ids) {
    if (!this.swarms.has(swarm)) return;
    const now = this.now();
    for (const id of ids) {
      const key = `${swarm}\n${id}`;
      if (id === this.peerId || this.peers.has(key)) continue;
      if ((this.failed.get(key) ?? -Infinity) > now || this.offerGate.quarantined(id)) {
        this.stats.skippedFailed++;
        continue;
      }
      if (this.peers.size >= this.o.maxPeers || this.countIn(swarm) >= this.o.want) break;
      this.startPeer(swarm, id, this.newSid(), true)?.offer();
    }
  }

  /**
   * @param {string} swarm
   * @param {string} from
   * @param {string} sid
   * @param {string} m
   */
  onOffer(swarm, from, sid, m) {
    if (!this.swarms.has(swarm) || this.peerId === null) return;
    const key = `${swarm}\n${from}`;
    const existing = this.peers.get(key);
    if (existing?.sid === sid) return; // a duplicate
    // A new negotiation costs an RTCPeerConnection: at most one per interval per remote.
    if (this.offerGate.admit(from) !== 'ok') {
      this.stats.offersLimited++;
      return;
    }
    if (existing) {
      // Both sides offered at once: the lower peer id keeps its offer, the other answers.
      if (existing.state === 'new' && existing.initiator && this.peerId < from) return;
      if (this.offerGate.replaced(from)) {
        // Replacing its connection again and again: treated as a failed peer.
        this.stats.quarantined++;
        existing.close('quarantined');
        this.markFailed(key);
        return;
      }
      existing.close('replaced');
    }
    if (this.peers.size >= this.o.maxPeers) return;
    this.startPeer(swarm, from, sid, false)?.answer(m);
  }

  /**
   * @param {string} swarm
   * @param {string} remote
   * @param {string} sid
   * @param {boolean} initiator
   * @returns {Peer | null} null if the browser refused to create the connection
   */
  startPeer(swarm, remote, sid, initiator) {
    let peer;
    try {
      peer = new Peer(this, { swarm, remote, sid, initiator }, {
        rtcConfig: { iceServers: this.o.iceServers },
        minify: this.o.minify,
        batchWindowMs: this.o.batchWindowMs,
        connectTimeoutMs: this.o.connectTimeoutMs,
        channelLabel: this.o.channelLabel,
        RTCPeerConnection: this.PC,
        timers: this.timers,
        now: this.now,
      });
    } catch (err) {
      // The browser refused the configuration (e.g. a malformed ICE server URL): the
      // application must hear of it, and nothing is left half made.
      this.emit('error', { code: 'rtc_config', msg: String(err), ref: null, sid: null });
      return null;
    }
    this.peers.set(`${swarm}\n${remote}`, peer);
    return peer;
  }


  /** @param {string} swarm */
  countIn(swarm) {
    let n = 0;
    for (const p of this.peers.values()) if (p.swarm === swarm) n++;
    return n;
  }

  newSid() {
    const r = new Uint32Array(1);
    globalThis.crypto.getRandomValues(r);
    this.sidCounter = (this.sidCounter + 1) % 1e9;
    return `${this.sidCounter.toString(36)}-${r[0].toString(36)}`;
  }

  // ---- PeerHost ------------------------------------------------------------------------------

  /**
   * @param {'offer'|'answer'|'cands'} t
   * @param {Peer} peer
   * @param {Record<string, unknown>} fields
   */
  signal(t, peer, fields) {
    if (this.peers.get(`${peer.swarm}\n${peer.remote}`) !== peer) return;
    this.send({ t, swarm: peer.swarm, to: peer.remote, sid: peer.sid, ...fields });
  }

  /** @param {Peer} peer */
  peerOpened(peer) {
    this.stats.peersOpened++;
    this.emit('peer', this.peerEvent(peer));
  }

  /**
   * @param {Peer} peer
   * @param {string} reason
   */
  peerClosed(peer, reason) {
    const key = `${peer.swarm}\n${peer.remote}`;
    if (this.peers.get(key) === peer) this.peers.delete(key);
    if (peer.openAfterMs !== null) {
      this.emit('peerclose', { swarm: peer.swarm, id: peer.remote, reason });
    } else {
      this.stats.peersFailed++;
      if (peer.initiator && !this.closed && (FAILURES.has(reason) || reason.startsWith('tracker:'))) {
        this.markFailed(key);
      }
    }
    if (!this.closed) this.scheduleRefill(peer.swarm);
  }

  /**
   * Remembers a peer as failed: not offered to for `retryFailedAfterMs`.
   * @param {string} key swarm + "\n" + remote id
   */
  markFailed(key) {
    this.failed.delete(key);
    this.failed.set(key, this.now() + this.o.retryFailedAfterMs);
    if (this.failed.size > MAX_FAILED) this.failed.delete(/** @type {string} */ (this.failed.keys().next().value));
  }

  /**
   * Asks the tracker for fresh peers once this swarm has fewer than `want`, at most once per
   * `refillDelayMs`.
   * @param {string} swarm
   */
  scheduleRefill(swarm) {
    const s = this.swarms.get(swarm);
    if (!s || s.refillTimer !== null) return;
    const wait = Math.max(0, s.lastJoinAt + this.o.refillDelayMs - this.now());
    s.refillTimer = this.timers.setTimeout(() => {
      s.refillTimer = null;
      if (this.swarms.get(swarm) === s && this.peerId !== null && this.countIn(swarm) < this.o.want) {
        this.sendJoin(swarm);
      }
    }, wait + this.random() * 100);
  }

  /**
   * @param {Peer} p
   * @returns {PeerEvent}
   */
  peerEvent(p) {
    return {
      swarm: p.swarm,
      id: p.remote,
      channel: /** @type {RTCDataChannel} */ (p.channel),
      connection: p.pc,
      openAfterMs: /** @type {number} */ (p.openAfterMs),
    };
  }
}
