// Watches the player's tracker connections, to show which tracker instance serves them.
//
// p2p-media-loader opens its tracker WebSocket inside its bundled bittorrent-tracker client and
// tells the page nothing about it but errors and warnings. This module replaces
// `window.WebSocket` with a subclass that reads (never alters) what the tracker sends. It must
// run before p2p-media-loader-core is evaluated, because the bundle keeps the WebSocket it
// finds at load: player.js imports it first. swarmtrack names its instance in every announce
// reply as `tracker id` (BEP 3's field, which bittorrent-tracker clients echo back as
// `trackerid`), so the instance is read from there.

/**
 * @typedef {object} TrackerSocket
 * @property {string} url
 * @property {'connecting'|'open'|'closed'} state
 * @property {string|null} instance the tracker instance, from `tracker id`
 * @property {number} opened
 * @property {number|null} closed
 * @property {number|null} closeCode
 * @property {number} received frames
 * @property {string[]} failures `failure reason`s received
 * @property {Record<string, number>} sent frames sent by shape (`announce event=started offers=5
 *   numwant=5`): what the player asks of a tracker, for the docs and for debugging
 */

/** Every tracker socket this page opened, newest last (bounded: reconnects add one each). */
export const trackerSockets = /** @type {TrackerSocket[]} */ ([]);
const MAX_SOCKETS = 64;
const MAX_FAILURES = 16;
const MAX_SHAPES = 32;

/** @param {unknown} data */
function shapeOf(data) {
  if (typeof data !== 'string') return 'binary';
  try {
    const m = JSON.parse(data);
    const parts = [String(m.action)];
    if (m.event !== undefined) parts.push(`event=${m.event}`);
    if (Array.isArray(m.offers)) parts.push(`offers=${m.offers.length}`);
    if (m.numwant !== undefined) parts.push(`numwant=${m.numwant}`);
    if (m.answer !== undefined) parts.push('answer');
    if (m.trackerid !== undefined) parts.push('trackerid');
    return parts.join(' ');
  } catch {
    return 'not JSON';
  }
}

const Native = window.WebSocket;

class TappedWebSocket extends Native {
  /** @param {string | URL} url @param {string | string[]} [protocols] */
  constructor(url, protocols) {
    super(url, protocols);
    /** @type {TrackerSocket} */
    const rec = { url: String(url), state: 'connecting', instance: null, opened: Date.now(), closed: null, closeCode: null, received: 0, failures: [], sent: {} };
    trackerSockets.push(rec);
    if (trackerSockets.length > MAX_SOCKETS) trackerSockets.shift();
    const send = this.send.bind(this);
    /** @param {any} data */
    this.send = (data) => {
      const shape = shapeOf(data);
      if (rec.sent[shape] !== undefined || Object.keys(rec.sent).length < MAX_SHAPES) rec.sent[shape] = (rec.sent[shape] ?? 0) + 1;
      send(data);
    };
    this.addEventListener('open', () => {
      rec.state = 'open';
    });
    this.addEventListener('close', (ev) => {
      rec.state = 'closed';
      rec.closed = Date.now();
      rec.closeCode = ev.code;
    });
    this.addEventListener('message', (ev) => {
      rec.received += 1;
      if (typeof ev.data !== 'string') return;
      try {
        const msg = JSON.parse(ev.data);
        if (typeof msg['tracker id'] === 'string') rec.instance = msg['tracker id'];
        if (typeof msg['failure reason'] === 'string' && rec.failures.length < MAX_FAILURES) rec.failures.push(msg['failure reason']);
      } catch {
        // Not JSON: the player's client handles (and reports) that itself.
      }
    });
  }
}

window.WebSocket = TappedWebSocket;
