// Waiting without sleeping to synchronise: poll a condition until it holds or a deadline passes.

/**
 * Polls `fn` (sync or async) every 10 ms until it returns something truthy, and returns that;
 * throws after `ms`, with the last error `fn` threw, if any.
 * @template T
 * @param {() => T | Promise<T>} fn
 * @param {string} what
 * @param {number} [ms]
 * @returns {Promise<T>}
 */
export async function until(fn, what, ms = 20000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last}` : ''}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
