/**
 * A minimal WebSocket client over net.Socket, for load generation only.
 *
 * Node WebSocket clients (ws, undici) spend more CPU per frame than uWS does
 * per frame, so a benchmark driven by them measures the client. This one
 * does the least possible: client frames use the all-zero mask key (legal;
 * the payload goes out unchanged), so a frame is encoded once and written
 * many times; server frames are parsed in place, one copy at most.
 */
import net from 'node:net';
import { randomBytes } from 'node:crypto';

/** A client->server text frame with mask key 0000 (pre-encodable). */
export function encodeFrame(payload: string | Buffer, opcode = 0x1): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const len = body.length;
  const head = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const out = Buffer.allocUnsafe(head + 4 + len);
  out[0] = 0x80 | opcode;
  if (len < 126) out[1] = 0x80 | len;
  else if (len < 65536) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(len, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeBigUInt64BE(BigInt(len), 2);
  }
  out.writeUInt32BE(0, head);
  body.copy(out, head + 4);
  return out;
}

const CLOSE_FRAME = encodeFrame(Buffer.from([0x03, 0xe8]), 0x8);

export interface WireOptions {
  host: string;
  port: number;
  path: string;
  localAddress?: string;
  /** Sec-WebSocket-Protocol to offer (e.g. "msgpack"). */
  protocols?: string;
  /** Called with each text/binary frame's payload (valid during the call only). */
  onMessage(conn: WireConn, payload: Buffer): void;
  onOpen?(conn: WireConn): void;
  onClose?(conn: WireConn, code: number): void;
  onError?(conn: WireConn, err: Error): void;
}

export class WireConn {
  readonly socket: net.Socket;
  open = false;
  closed = false;
  closeCode = 0;
  /** Free for the scenario's per-connection state. */
  state: unknown = undefined;
  #buf: Buffer | undefined;
  #handshaken = false;

  constructor(private readonly o: WireOptions) {
    this.socket = net.connect({ host: o.host, port: o.port, localAddress: o.localAddress, noDelay: true });
    const key = randomBytes(16).toString('base64');
    this.socket.on('connect', () => {
      this.socket.write(
        `GET ${o.path} HTTP/1.1\r\nHost: ${o.host}:${o.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
          (o.protocols ? `Sec-WebSocket-Protocol: ${o.protocols}\r\n` : '') +
          '\r\n',
      );
    });
    this.socket.on('data', (d) => this.#data(d));
    this.socket.on('error', (err) => o.onError?.(this, err));
    this.socket.on('close', () => {
      if (this.closed) return;
      this.closed = true;
      this.open = false;
      o.onClose?.(this, this.closeCode || 1006);
    });
  }

  send(frame: Buffer): void {
    if (this.open) this.socket.write(frame);
  }

  close(): void {
    if (this.open) this.socket.end(CLOSE_FRAME);
    else this.socket.destroy();
  }

  #data(d: Buffer): void {
    let buf = this.#buf ? Buffer.concat([this.#buf, d]) : d;
    this.#buf = undefined;
    if (!this.#handshaken) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        this.#buf = buf;
        return;
      }
      if (!buf.subarray(0, 12).toString().includes('101')) {
        this.socket.destroy();
        return;
      }
      this.#handshaken = true;
      this.open = true;
      this.o.onOpen?.(this);
      buf = buf.subarray(end + 4);
    }
    let off = 0;
    while (buf.length - off >= 2) {
      const b0 = buf[off]!;
      const b1 = buf[off + 1]!;
      let len = b1 & 0x7f;
      let head = 2;
      if (len === 126) {
        if (buf.length - off < 4) break;
        len = buf.readUInt16BE(off + 2);
        head = 4;
      } else if (len === 127) {
        if (buf.length - off < 10) break;
        len = Number(buf.readBigUInt64BE(off + 2));
        head = 10;
      }
      if (buf.length - off < head + len) break;
      const payload = buf.subarray(off + head, off + head + len);
      off += head + len;
      const opcode = b0 & 0x0f;
      if (opcode === 0x1 || opcode === 0x2) this.o.onMessage(this, payload);
      else if (opcode === 0x8) {
        this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        this.socket.end();
      } else if (opcode === 0x9) this.socket.write(encodeFrame(Buffer.from(payload), 0xa));
    }
    if (off < buf.length) this.#buf = Buffer.from(buf.subarray(off));
  }
}
