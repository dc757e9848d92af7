/**
 * Frames of the native protocol v1 (docs/ARCHITECTURE.md section 3): encoding client messages
 * in JSON (text frames) or MessagePack (binary frames), and reading server frames into checked
 * messages. Whatever the server sends, {@link decodeServerFrame} returns a list of well-formed
 * messages and drops the rest: a buggy or hostile tracker can't make the SDK throw.
 * @module
 */

import { decode as mpDecode, encode as mpEncode } from './msgpack.js';

/** A frame holding more messages than this is cut (the tracker coalesces at most 64). */
export const MAX_BATCH = 256;
/** Frames above this many bytes are ignored (the tracker's frame limit is 64 KiB). */
export const MAX_FRAME_BYTES = 1 << 20;

const PEER_ID = /^[A-Za-z0-9_-]{22}$/;
const utf8 = new TextEncoder();

/**
 * @typedef {{t: 'welcome', peer: string, instance: string, limits: {want: number, max_message: number, rate: number, burst: number}}
 *   | {t: 'peers', swarm: string, peers: string[]}
 *   | {t: 'offer' | 'answer', swarm: string, from: string, sid: string, m: string}
 *   | {t: 'cands', swarm: string, from: string, sid: string, c: string[], end: boolean}
 *   | {t: 'reconnect', after_ms: number}
 *   | {t: 'error', code: string, msg: string, ref: string | null, sid: string | null}
 *   | {t: 'pong'}} ServerMsg
 */

/**
 * Encodes one client message (or a `batch`) as a frame in the given framing.
 * @param {Record<string, unknown>} msg
 * @param {'json' | 'msgpack'} framing
 * @returns {string | Uint8Array}
 */
export function encodeFrame(msg, framing) {
  return framing === 'msgpack' ? mpEncode(msg) : JSON.stringify(msg);
}

/**
 * Payload bytes of a frame, as the tracker counts them against `max_message`.
 * @param {string | Uint8Array} frame
 * @returns {number}
 */
export function frameBytes(frame) {
  return typeof frame === 'string' ? utf8.encode(frame).length : frame.length;
}

/** @param {unknown} v @returns {v is string} */
const isStr = (v) => typeof v === 'string';
/** @param {unknown} v @returns {v is number} */
const isNat = (v) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
/** @param {unknown} v @returns {v is string} */
const isPeer = (v) => isStr(v) && PEER_ID.test(v);
/** @param {unknown} v @returns {v is string} */
const isSwarm = (v) => isStr(v) && v.length > 0 && v.length <= 256;
/** @param {unknown} v @returns {v is string} */
const isSid = (v) => isStr(v) && v.length <= 32;

/**
 * One server object to a checked message, or `null`.
 * @param {unknown} o
 * @returns {ServerMsg | null}
 */
export function checkServerMsg(o) {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) return null;
  const m = /** @type {Record<string, unknown>} */ (o);
  switch (m.t) {
    case 'welcome': {
      const l = /** @type {Record<string, unknown>} */ (m.limits ?? {});
      if (!isPeer(m.peer) || !isStr(m.instance) || typeof l !== 'object') return null;
      const num = (/** @type {unknown} */ v, /** @type {number} */ d) => (isNat(v) ? v : d);
      return {
        t: 'welcome',
        peer: /** @type {string} */ (m.peer),
        instance: m.instance.slice(0, 16),
        limits: {
          want: num(l.want, 16),
          max_message: num(l.max_message, 16384),
          rate: num(l.rate, 50),
          burst: num(l.burst, 200),
        },
      };
    }
    case 'peers':
      if (!isSwarm(m.swarm) || !Array.isArray(m.peers)) return null;
      return { t: 'peers', swarm: m.swarm, peers: m.peers.filter(isPeer).slice(0, 64) };
    case 'offer':
    case 'answer':
      if (!isSwarm(m.swarm) || !isPeer(m.from) || !isSid(m.sid) || !isStr(m.m)) return null;
      return { t: m.t, swarm: m.swarm, from: m.from, sid: m.sid, m: m.m };
    case 'cands':
      if (!isSwarm(m.swarm) || !isPeer(m.from) || !isSid(m.sid) || !Array.isArray(m.c)) return null;
      return {
        t: 'cands',
        swarm: m.swarm,
        from: m.from,
        sid: m.sid,
        c: m.c.filter(isStr).slice(0, 64),
        end: m.end === true,
      };
    case 'reconnect':
      // A server may not hold a viewer for hours: cap the wait it can ask for.
      return { t: 'reconnect', after_ms: isNat(m.after_ms) ? Math.min(m.after_ms, 60000) : 0 };
    case 'error':
      if (!isStr(m.code)) return null;
      return {
        t: 'error',
        code: m.code.slice(0, 64),
        msg: isStr(m.msg) ? m.msg.slice(0, 256) : '',
        ref: isStr(m.ref) ? m.ref : null,
        sid: isSid(m.sid) ? m.sid : null,
      };
    case 'pong':
      return { t: 'pong' };
    default:
      return null;
  }
}

/**
 * Decodes one server frame (text: JSON, binary: MessagePack) into its messages, a `batch`
 * flattened; malformed parts are dropped.
 * @param {string | ArrayBuffer | Uint8Array} data
 * @returns {ServerMsg[]}
 */
export function decodeServerFrame(data) {
  /** @type {unknown} */
  let o;
  try {
    if (typeof data === 'string') {
      if (data.length > MAX_FRAME_BYTES) return [];
      o = JSON.parse(data);
    } else {
      if (data.byteLength > MAX_FRAME_BYTES) return [];
      o = mpDecode(data);
    }
  } catch {
    return [];
  }
  if (o !== null && typeof o === 'object' && /** @type {any} */ (o).t === 'batch') {
    const msgs = /** @type {any} */ (o).msgs;
    if (!Array.isArray(msgs)) return [];
    /** @type {ServerMsg[]} */
    const out = [];
    for (const x of msgs.slice(0, MAX_BATCH)) {
      const msg = checkServerMsg(x);
      if (msg) out.push(msg);
    }
    return out;
  }
  const msg = checkServerMsg(o);
  return msg ? [msg] : [];
}
