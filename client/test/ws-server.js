// A minimal real WebSocket server (RFC 6455 over node:http) that says whatever a test tells it
// to, including things no tracker would: the SDK's hostile-server tests talk to it over a real
// socket on 127.0.0.1.
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';

export { until } from './poll.js';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** One accepted connection: send frames, read the client's messages. */
export class Conn {
  constructor(socket, url) {
    this.socket = socket;
    this.url = url;
    /** @type {(string | Uint8Array)[]} */
    this.received = [];
    this.buf = Buffer.alloc(0);
    this.closed = false;
    socket.on('data', (d) => this.onData(d));
    socket.on('close', () => {
      this.closed = true;
    });
    socket.on('error', () => {});
  }

  /** @param {string | Uint8Array} data */
  send(data) {
    const text = typeof data === 'string';
    const payload = text ? Buffer.from(data) : Buffer.from(data);
    this.frame(text ? 0x1 : 0x2, payload);
  }

  /** @param {number} opcode @param {Buffer} payload */
  frame(opcode, payload) {
    const n = payload.length;
    const head = n < 126 ? Buffer.from([0x80 | opcode, n]) : n < 65536
      ? Buffer.from([0x80 | opcode, 126, n >> 8, n & 0xff])
      : Buffer.concat([Buffer.from([0x80 | opcode, 127]), (() => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(n)); return b; })()]);
    if (!this.closed) this.socket.write(Buffer.concat([head, payload]));
  }

  /** Closes the TCP connection without a close frame (a crashed tracker). */
  drop() {
    this.socket.destroy();
  }

  onData(d) {
    this.buf = Buffer.concat([this.buf, d]);
    for (;;) {
      if (this.buf.length < 2) return;
      const op = this.buf[0] & 0x0f;
      let n = this.buf[1] & 0x7f;
      let off = 2;
      if (n === 126) { if (this.buf.length < 4) return; n = this.buf.readUInt16BE(2); off = 4; }
      else if (n === 127) { if (this.buf.length < 10) return; n = Number(this.buf.readBigUInt64BE(2)); off = 10; }
      if (this.buf.length < off + 4 + n) return;
      const mask = this.buf.subarray(off, off + 4);
      const payload = Buffer.from(this.buf.subarray(off + 4, off + 4 + n));
      for (let i = 0; i < n; i++) payload[i] ^= mask[i % 4];
      this.buf = this.buf.subarray(off + 4 + n);
      if (op === 0x1) this.received.push(payload.toString('utf8'));
      else if (op === 0x2) this.received.push(new Uint8Array(payload));
      else if (op === 0x8) {
        this.frame(0x8, payload.subarray(0, 2));
        this.socket.end();
      }
    }
  }
}

/**
 * Starts a server on a free 127.0.0.1 port; `conns` fills as clients connect.
 * @returns {Promise<{url: string, conns: Conn[], close: () => Promise<void>}>}
 */
export async function startServer() {
  /** @type {Conn[]} */
  const conns = [];
  const server = createServer((_req, res) => res.writeHead(404).end());
  server.on('upgrade', (req, socket) => {
    const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}${GUID}`).digest('base64');
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    conns.push(new Conn(socket, req.url));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
  return {
    url: `ws://127.0.0.1:${port}/v1/ws`,
    conns,
    close: () => {
      for (const c of conns) c.drop();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
