/**
 * Minified data-channel SDP and candidates: the `m1` format of docs/ARCHITECTURE.md section 15,
 * byte for byte the form `simulator/src/sdp_min.rs` writes, so the SDK and the simulator
 * understand each other.
 *
 * `1,<ice-ufrag>,<ice-pwd>,<hash>:<fingerprint base64>,<setup a|c|p>,<mid>,<sctp-port>,<max-message-size>[,<candidate>...]`
 *
 * A candidate is `<foundation> <component> <transport> <priority> <address> <port> <type>`
 * followed by the `raddr`, `rport` and `tcptype` pairs when present. Everything else in a
 * browser's data-channel SDP is the same in every session, so {@link expand} puts it back.
 *
 * Only a session with exactly one `m=application ... webrtc-datachannel` section is minified;
 * anything else (audio/video, several sections) makes {@link minify} return `null` and the
 * caller sends the SDP as it is. The SDK never needs more, and a lossy minification of media
 * would break the call in ways that are hard to see.
 * @module
 */

/** Marks a minified SDP; a plain SDP starts with `v=`. */
export const M1_PREFIX = '1,';

/** Longest SDP or candidate {@link expand} accepts; the tracker's message limit is 16 KiB. */
const MAX_INPUT = 65536;
/** At most this many candidates in one minified SDP (browsers gather a handful). */
const MAX_INLINE_CANDIDATES = 64;

/** @type {Record<string, string>} */
const SETUP_TO_CODE = { actpass: 'a', active: 'c', passive: 'p' };
/** @type {Record<string, 'actpass' | 'active' | 'passive'>} */
const CODE_TO_SETUP = { a: 'actpass', c: 'active', p: 'passive' };

/** ICE ufrag/pwd characters (RFC 8839 ice-char) — also guarantees no `,` or space inside. */
const ICE_CHARS = /^[A-Za-z0-9+/]+$/;
/** A mid as browsers write them; `,` and whitespace would break the format. */
const TOKEN = /^[A-Za-z0-9!#$%&'*+\-.^_`{|}~]{1,32}$/;
const DIGITS = /^[0-9]{1,10}$/;
const HASH = /^[a-z0-9-]{1,16}$/i;
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/**
 * The value of the first `a=<name>:<value>` line, trimmed, or `null`.
 * @param {string[]} lines
 * @param {string} name
 * @returns {string | null}
 */
function attr(lines, name) {
  const prefix = `a=${name}:`;
  for (const line of lines) {
    if (line.startsWith(prefix)) return line.slice(prefix.length).trim();
  }
  return null;
}

/** @param {string} sdp @returns {string[]} */
function sdpLines(sdp) {
  return sdp.split(/\r?\n/).map((l) => l.trimEnd()).filter((l) => l.length > 0);
}

/**
 * Colon-separated hex (`3E:77:...`) to standard base64 without padding.
 * @param {string} hex
 * @returns {string | null}
 */
function hexToB64(hex) {
  const parts = hex.split(':');
  if (parts.length < 16 || parts.length > 64) return null;
  const bytes = [];
  for (const p of parts) {
    if (!/^[0-9a-fA-F]{2}$/.test(p)) return null;
    bytes.push(parseInt(p, 16));
  }
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    const chars = Math.min(4, Math.ceil(((bytes.length - i) * 8) / 6));
    for (let k = 0; k < chars; k++) out += B64[(n >> (18 - 6 * k)) & 63];
  }
  return out;
}

/**
 * Base64 (no padding) back to upper-case colon-separated hex, as browsers write fingerprints.
 * @param {string} b64
 * @returns {string | null}
 */
function b64ToHex(b64) {
  if (!/^[A-Za-z0-9+/]{22,86}$/.test(b64) || b64.length % 4 === 1) return null;
  const bytes = [];
  let acc = 0;
  let bits = 0;
  for (const ch of b64) {
    acc = (acc << 6) | B64.indexOf(ch);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes.push((acc >> bits) & 0xff);
    }
  }
  return bytes.map((b) => b.toString(16).toUpperCase().padStart(2, '0')).join(':');
}

/**
 * Minifies one ICE candidate (`candidate:...`, with or without `a=`), or returns `null` if it
 * isn't one. `generation`, `ufrag`, `network-id` and `network-cost` are dropped.
 * @param {string} line
 * @returns {string | null}
 */
export function minifyCandidate(line) {
  if (typeof line !== 'string' || line.length > 1024) return null;
  let body = line.trim();
  if (body.startsWith('a=')) body = body.slice(2);
  if (!body.startsWith('candidate:')) return null;
  const f = body.slice('candidate:'.length).split(/\s+/).filter((s) => s.length > 0);
  if (f.length < 8 || f[6] !== 'typ') return null;
  // A `,` would end the candidate early inside a minified SDP.
  if (f.some((s) => s.includes(','))) return null;
  const out = [...f.slice(0, 6), f[7]];
  for (let i = 8; i + 1 < f.length; i += 2) {
    if (f[i] === 'raddr' || f[i] === 'rport' || f[i] === 'tcptype') out.push(f[i], f[i + 1]);
  }
  return out.join(' ');
}

/**
 * Expands a minified candidate back to `candidate:...` (without `a=`). A string that is already
 * a full candidate is returned as is, so a receiver needn't know which form the sender chose.
 * Returns `null` for anything that is neither.
 * @param {string} min
 * @returns {string | null}
 */
export function expandCandidate(min) {
  if (typeof min !== 'string' || min.length === 0 || min.length > 1024) return null;
  if (min.startsWith('candidate:')) return minifyCandidate(min) === null ? null : min;
  const f = min.split(' ');
  if (f.length < 7 || (f.length - 7) % 2 !== 0 || f.some((s) => s.length === 0)) return null;
  if (!DIGITS.test(f[1]) || !DIGITS.test(f[3]) || !DIGITS.test(f[5])) return null;
  if (!/^[a-z]+$/i.test(f[2]) || !/^[a-z]+$/.test(f[6])) return null;
  const rest = [];
  for (let i = 7; i < f.length; i += 2) {
    if (!['raddr', 'rport', 'tcptype'].includes(f[i])) return null;
    rest.push(f[i], f[i + 1]);
  }
  return `candidate:${[...f.slice(0, 6), 'typ', f[6], ...rest].join(' ')}`;
}

/**
 * The fields of a data-channel SDP that a peer needs.
 * @typedef {object} DataChannelFields
 * @property {string} ufrag
 * @property {string} pwd
 * @property {string} hash fingerprint hash function, e.g. `sha-256`
 * @property {string} fingerprint colon-separated upper-case hex
 * @property {'actpass' | 'active' | 'passive'} setup
 * @property {string} mid
 * @property {number} sctpPort
 * @property {number} maxMessageSize
 * @property {string[]} candidates minified candidates, in SDP order
 */

/**
 * Reads the data-channel fields of an SDP, or `null` if it isn't a lone data-channel section
 * whose fields fit the `m1` format.
 * @param {string} sdp
 * @returns {DataChannelFields | null}
 */
export function parseDataChannel(sdp) {
  if (typeof sdp !== 'string' || sdp.length > MAX_INPUT) return null;
  const lines = sdpLines(sdp);
  if (lines[0] !== 'v=0') return null;
  const media = lines.filter((l) => l.startsWith('m='));
  if (media.length !== 1 || !/^m=application \d+ UDP\/DTLS\/SCTP webrtc-datachannel$/.test(media[0])) {
    return null;
  }
  const ufrag = attr(lines, 'ice-ufrag');
  const pwd = attr(lines, 'ice-pwd');
  const fp = attr(lines, 'fingerprint');
  const setup = attr(lines, 'setup');
  const mid = attr(lines, 'mid');
  const port = attr(lines, 'sctp-port');
  // RFC 8841: absent means 64 KiB, which is also what the simulator assumes.
  const mms = attr(lines, 'max-message-size') ?? '65536';
  if (!ufrag || !ICE_CHARS.test(ufrag) || !pwd || !ICE_CHARS.test(pwd)) return null;
  if (!fp || !setup || !(setup in SETUP_TO_CODE) || !mid || !TOKEN.test(mid)) return null;
  if (!port || !DIGITS.test(port) || !DIGITS.test(mms)) return null;
  const [hash, hex, ...extra] = fp.split(' ');
  if (extra.length > 0 || !HASH.test(hash) || !hex || hexToB64(hex) === null) return null;
  const candidates = [];
  for (const line of lines) {
    if (!line.startsWith('a=candidate:')) continue;
    const c = minifyCandidate(line);
    if (c === null || candidates.length >= MAX_INLINE_CANDIDATES) return null;
    candidates.push(c);
  }
  return {
    ufrag,
    pwd,
    hash,
    fingerprint: hex.toUpperCase(),
    setup: /** @type {'actpass'|'active'|'passive'} */ (setup),
    mid,
    sctpPort: Number(port),
    maxMessageSize: Number(mms),
    candidates,
  };
}

/**
 * Minifies a data-channel SDP (offer or answer, trickle or complete) into `m1`, or returns
 * `null` when the SDP isn't a lone data-channel section (the caller then sends it unchanged).
 * @param {string} sdp
 * @returns {string | null}
 */
export function minify(sdp) {
  const f = parseDataChannel(sdp);
  if (f === null) return null;
  const fp = hexToB64(f.fingerprint);
  return [
    '1',
    f.ufrag,
    f.pwd,
    `${f.hash}:${fp}`,
    SETUP_TO_CODE[f.setup],
    f.mid,
    f.sctpPort,
    f.maxMessageSize,
    ...f.candidates,
  ].join(',');
}

/**
 * Reads a minified SDP into its fields, or `null` if it is malformed.
 * @param {string} m
 * @returns {DataChannelFields | null}
 */
export function parseMinified(m) {
  if (typeof m !== 'string' || m.length > MAX_INPUT || !m.startsWith(M1_PREFIX)) return null;
  const p = m.split(',');
  if (p.length < 8 || p.length > 8 + MAX_INLINE_CANDIDATES) return null;
  const [, ufrag, pwd, fp, setupCode, mid, port, mms, ...cands] = p;
  if (!ICE_CHARS.test(ufrag) || !ICE_CHARS.test(pwd) || !TOKEN.test(mid)) return null;
  if (!(setupCode in CODE_TO_SETUP) || !DIGITS.test(port) || !DIGITS.test(mms)) return null;
  const colon = fp.indexOf(':');
  const hash = fp.slice(0, colon);
  const hex = colon > 0 ? b64ToHex(fp.slice(colon + 1)) : null;
  if (hex === null || !HASH.test(hash)) return null;
  if (cands.some((c) => expandCandidate(c) === null || c.startsWith('candidate:'))) return null;
  return {
    ufrag,
    pwd,
    hash,
    fingerprint: hex,
    setup: /** @type {'actpass'|'active'|'passive'} */ (CODE_TO_SETUP[setupCode]),
    mid,
    sctpPort: Number(port),
    maxMessageSize: Number(mms),
    candidates: cands,
  };
}

/**
 * Expands a minified SDP into an SDP the browser accepts, in the shape Chromium writes. A
 * plain SDP (starting `v=0`) is returned unchanged. Returns `null` if `m` is neither.
 * @param {string} m
 * @param {{sessionId?: string}} [opts] `sessionId`: digits for the `o=` line (random if absent)
 * @returns {string | null}
 */
export function expand(m, opts = {}) {
  if (typeof m !== 'string') return null;
  if (m.startsWith('v=0')) return m.length <= MAX_INPUT ? m : null;
  const f = parseMinified(m);
  if (f === null) return null;
  const sessionId = opts.sessionId ?? randomSessionId();
  const lines = [
    'v=0',
    `o=- ${sessionId} 2 IN IP4 127.0.0.1`,
    's=-',
    't=0 0',
    `a=group:BUNDLE ${f.mid}`,
    'a=msid-semantic: WMS',
    'm=application 9 UDP/DTLS/SCTP webrtc-datachannel',
    'c=IN IP4 0.0.0.0',
    ...f.candidates.map((c) => `a=${expandCandidate(c)}`),
    `a=ice-ufrag:${f.ufrag}`,
    `a=ice-pwd:${f.pwd}`,
    'a=ice-options:trickle',
    `a=fingerprint:${f.hash} ${f.fingerprint}`,
    `a=setup:${f.setup}`,
    `a=mid:${f.mid}`,
    `a=sctp-port:${f.sctpPort}`,
    `a=max-message-size:${f.maxMessageSize}`,
  ];
  return `${lines.join('\r\n')}\r\n`;
}

/** @returns {string} a positive 63-bit decimal, as browsers put in `o=` */
function randomSessionId() {
  const b = new Uint32Array(2);
  globalThis.crypto.getRandomValues(b);
  return ((BigInt(b[0] & 0x7fffffff) << 32n) | BigInt(b[1])).toString() || '1';
}

/**
 * The `mid` of an SDP's first media section (plain or minified), for addIceCandidate.
 * @param {string} m
 * @returns {string | null}
 */
export function firstMid(m) {
  if (typeof m !== 'string') return null;
  if (m.startsWith(M1_PREFIX)) return parseMinified(m)?.mid ?? null;
  return attr(sdpLines(m), 'mid');
}
