/**
 * Coalesces trickled ICE candidates into one `cands` message per window.
 *
 * A browser gathers its candidates within a few tens of milliseconds (Chrome's host candidates in
 * a median of 18-27 ms, shared/fixtures/README.md); sending each alone costs a frame, a tracker
 * rate token and a relay hop apiece. The first candidate after a flush opens a window of
 * `windowMs`; everything that arrives inside it leaves in one message when it closes.
 * End-of-candidates flushes at once with `end: true` (nothing left to wait for), and a full
 * batch flushes early so one message stays small.
 *
 * Timers are injected so tests can drive time by hand.
 * @module
 */

/**
 * @typedef {object} Timers
 * @property {(fn: () => void, ms: number) => unknown} setTimeout
 * @property {(handle: unknown) => void} clearTimeout
 */

/** @type {Timers} */
export const realTimers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (h) => globalThis.clearTimeout(/** @type {any} */ (h)),
};

/** Default coalescing window: inside the 10-25 ms and what the simulator assumes. */
export const DEFAULT_WINDOW_MS = 15;
/** A batch never holds more candidates than this (browsers gather 2-12 per session). */
export const DEFAULT_MAX_BATCH = 32;

export class CandidateBatcher {
  /**
   * @param {(candidates: string[], end: boolean) => void} send called once per flush
   * @param {{windowMs?: number, maxBatch?: number, timers?: Timers}} [opts] `windowMs` 0 sends
   *   every candidate alone (for comparison)
   */
  constructor(send, opts = {}) {
    this.send = send;
    this.windowMs = opts.windowMs ?? DEFAULT_WINDOW_MS;
    this.maxBatch = Math.max(1, opts.maxBatch ?? DEFAULT_MAX_BATCH);
    this.timers = opts.timers ?? realTimers;
    /** @type {string[]} */
    this.pending = [];
    /** @type {unknown} */
    this.timer = null;
    this.closed = false;
  }

  /**
   * Queues one candidate.
   * @param {string} candidate
   */
  add(candidate) {
    if (this.closed) return;
    this.pending.push(candidate);
    if (this.windowMs <= 0 || this.pending.length >= this.maxBatch) {
      this.flush(false);
    } else if (this.timer === null) {
      this.timer = this.timers.setTimeout(() => {
        this.timer = null;
        this.flush(false);
      }, this.windowMs);
    }
  }

  /** End of candidates: sends what is pending now, marked `end`; later candidates are ignored. */
  end() {
    if (this.closed) return;
    this.flush(true);
    this.close();
  }

  /** Drops whatever is pending and stops the timer (the negotiation is over). */
  close() {
    this.closed = true;
    this.pending = [];
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
  }

  /** @param {boolean} end */
  flush(end) {
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    const batch = this.pending;
    this.pending = [];
    if (batch.length > 0 || end) this.send(batch, end);
  }
}
