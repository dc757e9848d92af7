/**
 * One WebRTC connection with one remote viewer in one swarm: the RTCPeerConnection, its data
 * channel, and the negotiation (`sid`) that set it up. The owning {@link SwarmClient} routes
 * signals here and sends what this produces; a Peer never touches the WebSocket.
 *
 * Every async step (set descriptions, add candidates) runs on one promise chain, so remote
 * candidates that arrive while the remote description is still being applied wait their turn
 * instead of failing. The chain is bounded: a peer flooding candidates loses the excess.
 * @module
 */

import { CandidateBatcher } from './batcher.js';
import { expand, expandCandidate, firstMid, minify, minifyCandidate } from './sdp.js';

/** Async steps waiting on one peer's chain at most; a negotiation needs a handful. */
const MAX_PENDING_OPS = 64;

/**
 * What a Peer needs from its client.
 * @typedef {object} PeerHost
 * @property {(t: 'offer'|'answer'|'cands', peer: Peer, fields: Record<string, unknown>) => void} signal
 * @property {(peer: Peer) => void} peerOpened the data channel is open
 * @property {(peer: Peer, reason: string) => void} peerClosed the peer is gone (after cleanup)
 */

/**
 * @typedef {object} PeerOptions
 * @property {RTCConfiguration} rtcConfig
 * @property {boolean} minify
 * @property {number} batchWindowMs
 * @property {number} connectTimeoutMs
 * @property {string} channelLabel
 * @property {typeof RTCPeerConnection} RTCPeerConnection
 * @property {import('./batcher.js').Timers} timers
 * @property {() => number} now
 */

export class Peer {
  /**
   * @param {PeerHost} host
   * @param {{swarm: string, remote: string, sid: string, initiator: boolean}} ids
   * @param {PeerOptions} opts
   */
  constructor(host, ids, opts) {
    this.host = host;
    /** Swarm this connection was made for. */
    this.swarm = ids.swarm;
    /** The remote viewer's peer id. */
    this.remote = ids.remote;
    /** The negotiation's id. */
    this.sid = ids.sid;
    /** Whether we offered. */
    this.initiator = ids.initiator;
    this.opts = opts;
    this.startedAt = opts.now();
    /** @type {number | null} ms from start to open data channel */
    this.openAfterMs = null;
    /** @type {'new' | 'open' | 'closed'} */
    this.state = 'new';
    /** @type {RTCDataChannel | null} */
    this.channel = null;
    /** @type {string | null} the remote SDP's mid, for candidates */
    this.remoteMid = null;
    this.ops = Promise.resolve();
    this.pendingOps = 0;
    this.pc = new opts.RTCPeerConnection(opts.rtcConfig);
    this.batcher = new CandidateBatcher(
      (c, end) => this.host.signal('cands', this, end ? { c, end: true } : { c }),
      { windowMs: opts.batchWindowMs, timers: opts.timers },
    );
    this.pc.onicecandidate = (ev) => {
      // Chrome ends gathering with a null candidate, Firefox also with an empty string.
      if (!ev.candidate || ev.candidate.candidate === '') {
        this.batcher.end();
        return;
      }
      const full = ev.candidate.candidate;
      this.batcher.add(opts.minify ? (minifyCandidate(full) ?? full) : full);
    };
    this.pc.onconnectionstatechange = () => {
      const s = this.pc.connectionState;
      if (s === 'failed' || s === 'closed') this.close(s);
    };
    this.connectTimer = opts.timers.setTimeout(() => {
      this.connectTimer = null;
      if (this.state !== 'open') this.close('timeout');
    }, opts.connectTimeoutMs);
  }

  /**
   * Queues an async step; a failure closes the peer (a negotiation that half failed can't be
   * repaired by the next step).
   * @param {() => Promise<void>} fn
   */
  run(fn) {
    if (this.state === 'closed' || this.pendingOps >= MAX_PENDING_OPS) return;
    this.pendingOps++;
    this.ops = this.ops
      .then(() => (this.state === 'closed' ? undefined : fn()))
      .catch(() => this.close('negotiation failed'))
      .finally(() => {
        this.pendingOps--;
      });
  }

  /** Creates the data channel and sends the offer. */
  offer() {
    try {
      this.attach(this.pc.createDataChannel(this.opts.channelLabel));
    } catch {
      this.close('negotiation failed');
      return;
    }
    this.run(async () => {
      await this.pc.setLocalDescription(await this.pc.createOffer());
      this.sendDescription('offer');
    });
  }

  /**
   * Applies a remote offer and sends the answer.
   * @param {string} m plain or minified SDP
   */
  answer(m) {
    this.pc.ondatachannel = (ev) => {
      if (this.channel === null) this.attach(ev.channel);
    };
    this.run(async () => {
      await this.applyRemote('offer', m);
      await this.pc.setLocalDescription(await this.pc.createAnswer());
      this.sendDescription('answer');
    });
  }

  /**
   * Applies the remote answer to our offer.
   * @param {string} m
   */
  acceptAnswer(m) {
    this.run(() => this.applyRemote('answer', m));
  }

  /**
   * Adds remote candidates (plain or minified); `end` marks the end of them.
   * @param {string[]} c
   * @param {boolean} end
   */
  addCandidates(c, end) {
    this.run(async () => {
      for (const s of c) {
        const candidate = expandCandidate(s);
        // One unreadable candidate is no reason to drop the others.
        if (candidate === null) continue;
        try {
          await this.pc.addIceCandidate({ candidate, sdpMid: this.remoteMid ?? '0', sdpMLineIndex: 0 });
        } catch {
          // The browser refused it (e.g. an address family it can't use): skip it.
        }
      }
      if (end) {
        try {
          await this.pc.addIceCandidate();
        } catch {
          // Older browsers don't take end-of-candidates; ICE concludes without it.
        }
      }
    });
  }

  /**
   * @param {'offer'|'answer'} type
   * @param {string} m
   */
  async applyRemote(type, m) {
    const sdp = expand(m);
    if (sdp === null) throw new Error('unreadable SDP');
    this.remoteMid = firstMid(m);
    await this.pc.setRemoteDescription({ type, sdp });
  }

  /** @param {'offer'|'answer'} type */
  sendDescription(type) {
    const sdp = this.pc.localDescription?.sdp ?? '';
    const m = this.opts.minify ? (minify(sdp) ?? sdp) : sdp;
    this.host.signal(type, this, { m });
  }

  /** @param {RTCDataChannel} channel */
  attach(channel) {
    this.channel = channel;
    channel.binaryType = 'arraybuffer';
    channel.onopen = () => {
      if (this.state !== 'new') return;
      this.state = 'open';
      this.openAfterMs = this.opts.now() - this.startedAt;
      if (this.connectTimer !== null) this.opts.timers.clearTimeout(this.connectTimer);
      this.connectTimer = null;
      this.host.peerOpened(this);
    };
    channel.onclose = () => this.close('channel closed');
  }

  /**
   * Closes the connection and releases everything it holds; safe to call more than once.
   * @param {string} reason
   */
  close(reason) {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.batcher.close();
    if (this.connectTimer !== null) this.opts.timers.clearTimeout(this.connectTimer);
    this.connectTimer = null;
    this.pc.onicecandidate = null;
    this.pc.onconnectionstatechange = null;
    this.pc.ondatachannel = null;
    try {
      this.channel?.close();
      this.pc.close();
    } catch {
      // Already closed by the browser.
    }
    this.host.peerClosed(this, reason);
  }
}
