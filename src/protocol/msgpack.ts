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

/** A JSON frame as MessagePack. */
export function toMsgpack(json: string | Uint8Array): Uint8Array {
  return packr.pack(JSON.parse(typeof json === 'string' ? json : Buffer.from(json).toString('utf8')));
}

/** Decodes a client's MessagePack frame; throws on anything that is not exactly one MessagePack value. */
export function fromMsgpack(data: Uint8Array): unknown {
  return unpackr.unpack(data);
}

/** The uWS topic msgpack sockets listen on for `topic` (same bus topic: the bus carries JSON). */
export const msgpackTopic = (topic: string): string => `m${topic}`;

/** The bus topic of a uWS topic. */
export const busTopic = (uwsTopic: string): string => (uwsTopic.startsWith('m') ? uwsTopic.slice(1) : uwsTopic);
