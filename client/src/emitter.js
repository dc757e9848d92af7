/**
 * A minimal event emitter: the same code runs in browsers and Node without EventTarget's
 * Event-object ceremony, and a throwing listener can't break the SDK's own loop.
 * @module
 */

export class Emitter {
  constructor() {
    /** @type {Map<string, Set<(arg: any) => void>>} */
    this.listeners = new Map();
  }

  /**
   * Adds a listener; returns a function that removes it.
   * @param {string} event
   * @param {(arg: any) => void} fn
   * @returns {() => void}
   */
  on(event, fn) {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  /**
   * Removes a listener.
   * @param {string} event
   * @param {(arg: any) => void} fn
   */
  off(event, fn) {
    this.listeners.get(event)?.delete(fn);
  }

  /**
   * Calls every listener of `event`; a listener's exception is reported, not propagated, so
   * application code can't leave the SDK half way through a state change.
   * @param {string} event
   * @param {unknown} [arg]
   */
  emit(event, arg) {
    for (const fn of [...(this.listeners.get(event) ?? [])]) {
      try {
        fn(arg);
      } catch (err) {
        globalThis.queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
