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
  /** @type {number[]} */
  const out = [];
  write(out, value, 0);
  return Uint8Array.from(out);
}

/** @param {number[]} out @param {number} n @param {number} bytes */
function be(out, n, bytes) {
  for (let i = bytes - 1; i >= 0; i--) out.push(Math.floor(n / 2 ** (8 * i)) & 0xff);
}

/** @param {number[]} out @param {string} s */
function writeStr(out, s) {
  const b = utf8Encoder.encode(s);
  const n = b.length;
  if (n < 32) out.push(0xa0 | n);
  else if (n < 0x100) out.push(0xd9, n);
  else if (n < 0x10000) { out.push(0xda); be(out, n, 2); }
  else { out.push(0xdb); be(out, n, 4); }
  for (const x of b) out.push(x);
}

/** @param {number[]} out @param {unknown} v @param {number} depth */
function write(out, v, depth) {
  if (depth > MAX_DEPTH) throw new MsgpackError('value nested too deeply');
  if (v === null || v === undefined) out.push(0xc0);
  else if (v === false) out.push(0xc2);
  else if (v === true) out.push(0xc3);
  else if (typeof v === 'number') writeNumber(out, v);
  else if (typeof v === 'string') writeStr(out, v);
  else if (Array.isArray(v)) {
    const n = v.length;
    if (n < 16) out.push(0x90 | n);
    else if (n < 0x10000) { out.push(0xdc); be(out, n, 2); }
    else { out.push(0xdd); be(out, n, 4); }
    for (const x of v) write(out, x, depth + 1);
  } else if (typeof v === 'object') {
    const entries = Object.entries(v).filter(([, x]) => x !== undefined);
    const n = entries.length;
    if (n < 16) out.push(0x80 | n);
    else if (n < 0x10000) { out.push(0xde); be(out, n, 2); }
    else { out.push(0xdf); be(out, n, 4); }
    for (const [k, x] of entries) {
      writeStr(out, k);
      write(out, x, depth + 1);
    }
  } else throw new MsgpackError(`cannot encode ${typeof v}`);
}

/** @param {number[]} out @param {number} v */
function writeNumber(out, v) {
  if (Number.isSafeInteger(v)) {
    if (v >= 0) {
      if (v < 0x80) out.push(v);
      else if (v < 0x100) out.push(0xcc, v);
      else if (v < 0x10000) { out.push(0xcd); be(out, v, 2); }
      else if (v < 0x100000000) { out.push(0xce); be(out, v, 4); }
      else { out.push(0xcf); be(out, v, 8); }
    } else if (v >= -32) out.push(v & 0xff);
    else if (v >= -0x80) out.push(0xd0, v & 0xff);
    else if (v >= -0x8000) { out.push(0xd1); be(out, v & 0xffff, 2); }
    else if (v >= -0x80000000) { out.push(0xd2); be(out, v >>> 0, 4); }
    else {
      const b = new Uint8Array(8);
      new DataView(b.buffer).setBigInt64(0, BigInt(v));
      out.push(0xd3, ...b);
    }
    return;
  }
  const b = new Uint8Array(8);
  new DataView(b.buffer).setFloat64(0, v);
  out.push(0xcb, ...b);
}

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
