// A hand-driven clock for the SDK's injectable timers: time moves only when a test says so, so
// timing tests are exact and never sleep.
export class FakeClock {
  constructor() {
    this.t = 0;
    this.seq = 0;
    /** @type {Map<number, {at: number, seq: number, fn: () => void}>} */
    this.pending = new Map();
    this.timers = {
      setTimeout: (/** @type {() => void} */ fn, /** @type {number} */ ms) => {
        const id = ++this.seq;
        this.pending.set(id, { at: this.t + Math.max(0, ms), seq: id, fn });
        return id;
      },
      clearTimeout: (/** @type {unknown} */ id) => {
        this.pending.delete(/** @type {number} */ (id));
      },
    };
    this.now = () => this.t;
  }

  /** Runs every timer due up to `t` in time order, then sets the clock to `t`. */
  advanceTo(t) {
    for (;;) {
      let next = null;
      for (const [id, timer] of this.pending) {
        if (timer.at <= t && (next === null || timer.at < next[1].at || (timer.at === next[1].at && timer.seq < next[1].seq))) {
          next = [id, timer];
        }
      }
      if (next === null) break;
      this.pending.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = Math.max(this.t, t);
  }
}
