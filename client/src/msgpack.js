/**
 * The MessagePack subset the native protocol uses (docs/ARCHITECTURE.md 3.1): maps with string
 * keys, strings, arrays, booleans, nil, integers, and on decode also floats and binaries (a
 * server may send any valid MessagePack; unknown fields are skipped, so they must decode).
 *
 * Decoding is bounded: nesting deeper than {@link MAX_DEPTH} (the tracker's own limit), lengths
 * past the end of the buffer, or trailing bytes throw {@link MsgpackError} instead of allocating.
 * @module
 */

/** Deepest nesting decoded, as the tracker enforces (docs/ARCHITECTURE.md 3.6). */
export const MAX_DEPTH = 16;

/** Raised for input that isn't (the supported subset of) MessagePack. */
export class MsgpackError extends Error {}

const utf8Encoder = new TextEncoder();
// fatal: invalid UTF-8 from a hostile server is an error, not silently replaced text.
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Encodes a value: `null`/`undefined`, booleans, safe integers, other numbers (as float64),
 * strings, arrays and plain objects (string keys; `undefined` values are left out).
 * @param {unknown} value
 * @returns {Uint8Array}
 */
export function encode(value) {
  scratch.pos = 0;
  try {
    scratch.value(value, 0);
    return scratch.buf.slice(0, scratch.pos);
  } finally {
    // A rare huge message mustn't pin its buffer for the page's life.
    if (scratch.buf.length > MAX_KEPT_BUFFER) scratch = new Writer();
  }
}

/** Largest encode buffer kept between calls; signals are at most 16 KiB (max_message). */
const MAX_KEPT_BUFFER = 65536;

/**
 * A growable byte buffer: one allocation per doubling, not one per byte. One instance is
 * reused by every `encode` (encoding is synchronous, so calls never overlap).
 */
class Writer {
  constructor() {
    this.buf = new Uint8Array(4096);
    this.view = new DataView(this.buf.buffer);
    this.pos = 0;
  }

  /** @param {number} n bytes about to be written */
  ensure(n) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  /** @param {number} b */
  u8(b) {
    this.ensure(1);
    this.buf[this.pos++] = b;
  }

  /** A type byte and a 1, 2 or 4-byte big-endian length or value. @param {number} t @param {number} n @param {number} bytes */
  head(t, n, bytes) {
    this.ensure(1 + bytes);
    this.buf[this.pos++] = t;
    if (bytes === 1) this.view.setUint8(this.pos, n);
    else if (bytes === 2) this.view.setUint16(this.pos, n);
    else this.view.setUint32(this.pos, n);
    this.pos += bytes;
  }

  /** @param {string} s */
  str(s) {
    if (!this.ascii(s)) this.utf8(s);
  }

  /**
   * Writes an ASCII string byte by byte; returns false (writing nothing) at the first other
   * character. Keys, ids, sids and SDP are ASCII, and for strings this short a JS loop beats
   * a call into the browser's TextEncoder binding.
   * @param {string} s
   */
  ascii(s) {
    const n = s.length;
    const hl = n < 32 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
    this.ensure(hl + n);
    const b = this.buf;
    let at = this.pos + hl;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) return false;
      b[at++] = c;
    }
    this.header(n, hl);
    this.pos += hl + n;
    return true;
  }

  /** @param {string} s */
  utf8(s) {
    // Encode straight into the buffer behind the longest possible header, then move the bytes
    // back if the real header is shorter: no intermediate array per string.
    this.ensure(5 + s.length * 3);
    const { written } = utf8Encoder.encodeInto(s, this.buf.subarray(this.pos + 5));
    const n = /** @type {number} */ (written);
    const hl = n < 32 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
    if (hl !== 5) this.buf.copyWithin(this.pos + hl, this.pos + 5, this.pos + 5 + n);
    this.header(n, hl);
    this.pos += hl + n;
  }

  /** A string header of `hl` bytes for `n` bytes of UTF-8, at `pos`. @param {number} n @param {number} hl */
  header(n, hl) {
    if (hl === 1) this.buf[this.pos] = 0xa0 | n;
    else if (hl === 2) { this.buf[this.pos] = 0xd9; this.buf[this.pos + 1] = n; }
    else if (hl === 3) { this.buf[this.pos] = 0xda; this.view.setUint16(this.pos + 1, n); }
    else { this.buf[this.pos] = 0xdb; this.view.setUint32(this.pos + 1, n); }
  }

  /** @param {number} n @param {number} fix @param {number} t16 */
  len(n, fix, t16) {
    if (n < 16) this.u8(fix | n);
    else if (n < 0x10000) this.head(t16, n, 2);
    else this.head(t16 + 1, n, 4);
  }

  /** @param {unknown} v @param {number} depth */
  value(v, depth) {
    if (depth > MAX_DEPTH) throw new MsgpackError('value nested too deeply');
    if (v === null || v === undefined) this.u8(0xc0);
    else if (v === false) this.u8(0xc2);
    else if (v === true) this.u8(0xc3);
    else if (typeof v === 'number') this.number(v);
    else if (typeof v === 'string') this.str(v);
    else if (Array.isArray(v)) {
      this.len(v.length, 0x90, 0xdc);
      for (const x of v) this.value(x, depth + 1);
    } else if (typeof v === 'object') {
      const entries = Object.entries(v).filter(([, x]) => x !== undefined);
      this.len(entries.length, 0x80, 0xde);
      for (const [k, x] of entries) {
        this.str(k);
        this.value(x, depth + 1);
      }
    } else throw new MsgpackError(`cannot encode ${typeof v}`);
  }

  /** @param {number} v */
  number(v) {
    if (Number.isSafeInteger(v)) {
      if (v >= 0) {
        if (v < 0x80) this.u8(v);
        else if (v < 0x100) this.head(0xcc, v, 1);
        else if (v < 0x10000) this.head(0xcd, v, 2);
        else if (v < 0x100000000) this.head(0xce, v, 4);
        else {
          this.ensure(9);
          this.buf[this.pos] = 0xcf;
          this.view.setBigUint64(this.pos + 1, BigInt(v));
          this.pos += 9;
        }
      } else if (v >= -32) this.u8(v & 0xff);
      else if (v >= -0x80) this.head(0xd0, v & 0xff, 1);
      else if (v >= -0x8000) this.head(0xd1, v & 0xffff, 2);
      else if (v >= -0x80000000) this.head(0xd2, v >>> 0, 4);
      else {
        this.ensure(9);
        this.buf[this.pos] = 0xd3;
        this.view.setBigInt64(this.pos + 1, BigInt(v));
        this.pos += 9;
      }
      return;
    }
    this.ensure(9);
    this.buf[this.pos] = 0xcb;
    this.view.setFloat64(this.pos + 1, v);
    this.pos += 9;
  }
}

let scratch = new Writer();

/**
 * Decodes exactly one value filling the whole buffer.
 * @param {Uint8Array | ArrayBuffer} input
 * @returns {unknown}
 * @throws {MsgpackError} on malformed, truncated, too deep or trailing input
 */
export function decode(input) {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  const r = new Reader(bytes);
  const v = r.value(0);
  if (r.pos !== bytes.length) throw new MsgpackError('trailing bytes');
  return v;
}

class Reader {
  /** @param {Uint8Array} b */
  constructor(b) {
    this.b = b;
    this.view = new DataView(b.buffer, b.byteOffset, b.byteLength);
    this.pos = 0;
  }

  /** @param {number} n */
  need(n) {
    if (this.pos + n > this.b.length) throw new MsgpackError('truncated');
    const at = this.pos;
    this.pos += n;
    return at;
  }

  u8() { return this.view.getUint8(this.need(1)); }
  u16() { return this.view.getUint16(this.need(2)); }
  u32() { return this.view.getUint32(this.need(4)); }

  /** @param {number} n */
  str(n) {
    const at = this.need(n);
    // Short ASCII strings (keys, ids, candidates) are most of a frame; TextDecoder's call cost
    // dominates at that size.
    if (n <= 64) {
      let ascii = '';
      let i = at;
      for (; i < at + n && this.b[i] < 0x80; i++) ascii += String.fromCharCode(this.b[i]);
      if (i === at + n) return ascii;
    }
    try {
      return utf8Decoder.decode(this.b.subarray(at, at + n));
    } catch {
      throw new MsgpackError('invalid UTF-8');
    }
  }

  /** @param {number} n */
  bin(n) {
    const at = this.need(n);
    return this.b.slice(at, at + n);
  }

  /** @param {number} n @param {number} depth */
  array(n, depth) {
    // Each element takes at least one byte: a length beyond the buffer is a lie, not a reason
    // to allocate.
    if (n > this.b.length - this.pos) throw new MsgpackError('truncated');
    const a = [];
    for (let i = 0; i < n; i++) a.push(this.value(depth + 1));
    return a;
  }

  /** @param {number} n @param {number} depth */
  map(n, depth) {
    if (n * 2 > this.b.length - this.pos) throw new MsgpackError('truncated');
    /** @type {Record<string, unknown>} */
    const o = Object.create(null);
    for (let i = 0; i < n; i++) {
      const k = this.value(depth + 1);
      if (typeof k !== 'string') throw new MsgpackError('map key is not a string');
      o[k] = this.value(depth + 1);
    }
    return o;
  }

  /** @param {number} depth @returns {unknown} */
  value(depth) {
    if (depth > MAX_DEPTH) throw new MsgpackError('nested too deeply');
    const t = this.u8();
    if (t < 0x80) return t;
    if (t >= 0xe0) return t - 0x100;
    if ((t & 0xf0) === 0x80) return this.map(t & 0x0f, depth);
    if ((t & 0xf0) === 0x90) return this.array(t & 0x0f, depth);
    if ((t & 0xe0) === 0xa0) return this.str(t & 0x1f);
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return this.bin(this.u8());
      case 0xc5: return this.bin(this.u16());
      case 0xc6: return this.bin(this.u32());
      case 0xca: return this.view.getFloat32(this.need(4));
      case 0xcb: return this.view.getFloat64(this.need(8));
      case 0xcc: return this.u8();
      case 0xcd: return this.u16();
      case 0xce: return this.u32();
      case 0xcf: return Number(this.view.getBigUint64(this.need(8)));
      case 0xd0: return this.view.getInt8(this.need(1));
      case 0xd1: return this.view.getInt16(this.need(2));
      case 0xd2: return this.view.getInt32(this.need(4));
      case 0xd3: return Number(this.view.getBigInt64(this.need(8)));
      case 0xd9: return this.str(this.u8());
      case 0xda: return this.str(this.u16());
      case 0xdb: return this.str(this.u32());
      case 0xdc: return this.array(this.u16(), depth);
      case 0xdd: return this.array(this.u32(), depth);
      case 0xde: return this.map(this.u16(), depth);
      case 0xdf: return this.map(this.u32(), depth);
      default: throw new MsgpackError(`unsupported type 0x${t.toString(16)}`);
    }
  }
}
