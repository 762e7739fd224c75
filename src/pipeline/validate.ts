/**
 * Client frame decoding and validation: one pure function, no I/O, so it can
 * run inline on the uWS thread or in the worker pool and give the same
 * answer. Every outcome is either a valid message or the text of an error
 * frame; nothing a client sends can make it throw.
 *
 * The schema, one per client message type, is written out as code (nothing
 * is interpreted per frame):
 * - `{"type":"ping"}`;
 * - `{"type":"user_message","content":S}`: S a string, trimmed, not empty,
 *   at most `maxContentChars` characters after trimming; widget.v2 may add
 *   `"client_message_id"` (a string of 1-64 characters);
 * - `{"type":"cancel","message_id":M}` (widget.v2).
 * Unknown fields are ignored on purpose, so that a newer widget can send a
 * field an older gateway does not know (forward compatibility); they never
 * reach the engine. An unknown type is an error.
 */
import { ERRORS, unknownTypeError } from '../protocol/frames.js';
import { fromMsgpack } from '../protocol/msgpack.js';
import type { MessageLimit } from '../limits/admit.js';
import { Buffer } from 'node:buffer';

/** The bounds of the schema (from the config). */
export interface MessageSchema {
  /** MAX_MESSAGE_CHARS. */
  maxContentChars: number;
}

export const DEFAULT_SCHEMA: MessageSchema = Object.freeze({ maxContentChars: 16_000 });

/**
 * A valid client message. widget.v2 adds `client_message_id` (a retry is
 * answered once) and `cancel`; a widget.v1 socket ignores the former and
 * answers the latter "Unknown message type", as before.
 */
export type ClientMessage =
  | { type: 'ping' }
  | { type: 'user_message'; content: string; cmid?: string; badCmid?: true }
  | { type: 'cancel'; messageId: string | undefined };

/** A valid message, or an error frame's text. `limited`: the budget that refused a user_message (answered in order by the chat pipeline). */
export type Decoded = { ok: true; msg: ClientMessage; limited?: MessageLimit } | { ok: false; error: string };

const INVALID_JSON: Decoded = Object.freeze({ ok: false, error: ERRORS.INVALID_JSON });
const INVALID_MESSAGE: Decoded = Object.freeze({ ok: false, error: ERRORS.INVALID_MESSAGE });
const INVALID_MSGPACK: Decoded = Object.freeze({ ok: false, error: ERRORS.INVALID_MSGPACK });
const PING: Decoded = Object.freeze({ ok: true, msg: Object.freeze({ type: 'ping' as const }) });

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Decodes one client frame: JSON text, or a binary frame holding UTF-8 JSON
 * or, for a socket that chose the msgpack subprotocol, MessagePack. Either
 * way the value then goes through the same message schema.
 */
export function decodeFrame(data: ArrayBuffer | Uint8Array, isBinary: boolean, msgpack = false, schema: MessageSchema = DEFAULT_SCHEMA): Decoded {
  if (isBinary && msgpack) {
    let value: unknown;
    try {
      value = fromMsgpack(data instanceof Uint8Array ? data : new Uint8Array(data));
    } catch {
      return INVALID_MSGPACK;
    }
    return validateMessage(value, schema);
  }
  let text: string;
  if (isBinary) {
    // Binary frames are accepted when they hold UTF-8 JSON; anything else is
    // "Invalid JSON format". (uWS has already validated text frames' UTF-8.)
    try {
      text = utf8.decode(data);
    } catch {
      return INVALID_JSON;
    }
  } else {
    text = Buffer.from(data as ArrayBuffer).toString('utf8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return INVALID_JSON;
  }
  return validateMessage(value, schema);
}

/** Validates a parsed JSON value as a client message. */
export function validateMessage(value: unknown, schema: MessageSchema = DEFAULT_SCHEMA): Decoded {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return INVALID_MESSAGE;
  const type = (value as { type?: unknown }).type;
  if (typeof type !== 'string') return INVALID_MESSAGE;
  if (type === 'ping') return PING;
  if (type === 'user_message') {
    const content = (value as { content?: unknown }).content;
    if (content === undefined || content === null) return { ok: false, error: ERRORS.EMPTY };
    if (typeof content !== 'string') return { ok: false, error: ERRORS.CONTENT_NOT_STRING };
    const trimmed = content.trim();
    if (trimmed === '') return { ok: false, error: ERRORS.EMPTY };
    if (trimmed.length > schema.maxContentChars) return { ok: false, error: ERRORS.TOO_LONG };
    const cmid = (value as { client_message_id?: unknown }).client_message_id;
    if (cmid === undefined) return { ok: true, msg: { type: 'user_message', content: trimmed } };
    if (typeof cmid === 'string' && cmid.length >= 1 && cmid.length <= 64) return { ok: true, msg: { type: 'user_message', content: trimmed, cmid } };
    return { ok: true, msg: { type: 'user_message', content: trimmed, badCmid: true } };
  }
  if (type === 'cancel') {
    const id = (value as { message_id?: unknown }).message_id;
    return { ok: true, msg: { type: 'cancel', messageId: typeof id === 'string' && id.length <= 64 ? id : undefined } };
  }
  return { ok: false, error: unknownTypeError(type) };
}
