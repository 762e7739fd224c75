/**
 * The optional MessagePack framing of the widget protocol. A client that
 * offers the `msgpack` subprotocol (Sec-WebSocket-Protocol) gets it: it
 * sends binary frames holding MessagePack maps of the same shapes as the
 * JSON messages, and receives every frame (answers, errors, broadcasts,
 * targeted sends) as a binary MessagePack frame. JSON text stays the
 * default, and a msgpack client's text frames are still read as JSON.
 *
 * A socket's own frames (answers, errors, typing, pong) are packed from
 * their objects directly. Broadcasts and targeted sends arrive as JSON (the
 * bus carries JSON) and are transcoded once per worker, only when a msgpack
 * socket listens (see gateway/fanout.ts).
 */
import { Packr, Unpackr } from 'msgpackr';
import { isoNow, typingObject } from './frames.js';
import { Buffer } from 'node:buffer';

export const MSGPACK_PROTOCOL = 'msgpack';

// Plain maps and arrays only: no records or structured-clone extensions
// either way, so any MessagePack library can talk to the gateway.
// variableMapSize: the smallest map header (fixmap for our frames), not map16.
const packr = new Packr({ useRecords: false, moreTypes: false, variableMapSize: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

/** A frame object as MessagePack. */
export function packFrame(frame: object): Uint8Array {
  return packr.pack(frame);
}

/** Typing indicators packed once per millisecond (their only variable part is the timestamp), as pino's lib/time.js. */
const typingCache = [
  { at: '', bytes: new Uint8Array(0) as Uint8Array<ArrayBufferLike> },
  { at: '', bytes: new Uint8Array(0) as Uint8Array<ArrayBufferLike> },
];

/** A typing indicator as MessagePack (uWS copies what it sends, so the cached bytes can be sent again). */
export function packTyping(isTyping: boolean): Uint8Array {
  const c = typingCache[isTyping ? 1 : 0]!;
  const at = isoNow();
  if (c.at !== at) {
    c.at = at;
    c.bytes = packr.pack(typingObject(isTyping));
  }
  return c.bytes;
}

/** A JSON frame (text, or its UTF-8 bytes) as MessagePack; throws if it is not JSON. */
export function toMsgpack(json: string | Uint8Array): Uint8Array {
  return packr.pack(JSON.parse(typeof json === 'string' ? json : Buffer.from(json.buffer, json.byteOffset, json.byteLength).toString('utf8')));
}

/** Decodes a client's MessagePack frame; throws on anything that is not exactly one MessagePack value. */
export function fromMsgpack(data: Uint8Array): unknown {
  return unpackr.unpack(data);
}

/** The uWS topic msgpack sockets listen on for `topic` (same bus topic: the bus carries JSON). */
export const msgpackTopic = (topic: string): string => `m${topic}`;

/** The bus topic of a uWS topic. */
export const busTopic = (uwsTopic: string): string => (uwsTopic.startsWith('m') ? uwsTopic.slice(1) : uwsTopic);
