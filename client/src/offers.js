/**
 * What a remote viewer may make this page do with its offers. Every offer with a new `sid`
 * costs the page an RTCPeerConnection, and one that replaces a connection throws away the
 * old one; a hostile swarm member sending offers as fast as the tracker relays them (~50 a
 * second) would make the browser create and tear down connections without end. So, per
 * remote peer id:
 *
 * - **Rate with back-off.** New negotiations from one remote draw on a token bucket of
 *   `offerBurst` (3) tokens, refilled one per interval (`offerIntervalMs`, 1 s): a legitimate
 *   remote re-offers after a lost connection, a refill or glare a few times at most. An offer
 *   with the bucket empty is ignored and doubles the interval (up to `offerBackoffMaxMs`,
 *   60 s), so a remote that keeps flooding gets about one offer through per minute; each
 *   accepted offer halves the interval back toward `offerIntervalMs`.
 * - **Quarantine.** A remote that replaces its connection with this page (a new `sid` while
 *   one is negotiating or open) more than `maxReplacements` times within `replaceWindowMs` is
 *   quarantined for `quarantineMs` (the client's `retryFailedAfterMs`, as a failed peer): its
 *   offers are ignored and it isn't offered to.
 *
 * State is kept for at most `maxRemotes` remotes, the least recently seen forgotten first; a
 * quarantined remote is forgotten last.
 * @module
 */

/**
 * @typedef {object} OfferGateOptions
 * @property {number} intervalMs time to refill one token of a remote's bucket
 * @property {number} burst tokens in a full bucket
 * @property {number} maxIntervalMs longest interval the back-off reaches
 * @property {number} maxReplacements replacements allowed within `replaceWindowMs`
 * @property {number} replaceWindowMs
 * @property {number} quarantineMs
 * @property {() => number} now clock in ms
 * @property {number} [maxRemotes] remotes remembered (default 256)
 */

/**
 * @typedef {object} RemoteState
 * @property {number} tokens offers the remote may still start now (fractional while refilling)
 * @property {number} at when `tokens` was last brought up to date
 * @property {number} interval the current refill interval
 * @property {number[]} replacements times of recent replacements (at most maxReplacements + 1)
 * @property {number} until quarantined until this time
 */

/** @typedef {'ok' | 'limited' | 'quarantined'} Admission */

export class OfferGate {
  /** @param {OfferGateOptions} o */
  constructor(o) {
    this.o = o;
    this.maxRemotes = o.maxRemotes ?? 256;
    /** @type {Map<string, RemoteState>} insertion order = least recently seen first */
    this.remotes = new Map();
  }

  /**
   * The state of `remote`, marked as just seen.
   * @param {string} remote
   * @returns {RemoteState}
   */
  state(remote) {
    let s = this.remotes.get(remote);
    if (s) {
      this.remotes.delete(remote);
    } else {
      s = { tokens: this.o.burst, at: this.o.now(), interval: this.o.intervalMs, replacements: [], until: -Infinity };
    }
    this.remotes.set(remote, s);
    if (this.remotes.size > this.maxRemotes) this.forgetOne();
    return s;
  }

  /** Forgets the least recently seen remote that isn't quarantined (or, if all are, the first). */
  forgetOne() {
    const now = this.o.now();
    for (const [id, s] of this.remotes) {
      if (s.until <= now) {
        this.remotes.delete(id);
        return;
      }
    }
    this.remotes.delete(/** @type {string} */ (this.remotes.keys().next().value));
  }

  /**
   * Whether a new negotiation (an offer with a new `sid`) from `remote` may start now.
   * @param {string} remote
   * @returns {Admission}
   */
  admit(remote) {
    const now = this.o.now();
    const s = this.state(remote);
    if (s.until > now) return 'quarantined';
    s.tokens = Math.min(this.o.burst, s.tokens + Math.max(0, now - s.at) / s.interval);
    s.at = now;
    if (s.tokens < 1) {
      s.interval = Math.min(s.interval * 2, this.o.maxIntervalMs);
      return 'limited';
    }
    s.tokens -= 1;
    s.interval = Math.max(this.o.intervalMs, s.interval / 2);
    return 'ok';
  }

  /**
   * Records that `remote` replaced its connection with this page.
   * @param {string} remote
   * @returns {boolean} true when that made it quarantined
   */
  replaced(remote) {
    const now = this.o.now();
    const s = this.state(remote);
    s.replacements = s.replacements.filter((t) => t > now - this.o.replaceWindowMs);
    s.replacements.push(now);
    if (s.replacements.length <= this.o.maxReplacements) return false;
    s.replacements = [];
    s.until = now + this.o.quarantineMs;
    return true;
  }

  /**
   * @param {string} remote
   * @returns {boolean}
   */
  quarantined(remote) {
    const s = this.remotes.get(remote);
    return s !== undefined && s.until > this.o.now();
  }
}
