/**
 * The widget protocol's frames, server to client. Shapes are the seed
 * Channel Service's (`../shared/seed`), kept exactly; constant frames are
 * encoded once.
 */
import { randomUUID } from 'node:crypto';

/** Error texts sent in `{"type":"error"}` frames. Clients may match on them. */
export const ERRORS = Object.freeze({
  EMPTY: 'Empty message not allowed',
  RATE_LIMITED: 'Rate limit exceeded',
  INVALID_JSON: 'Invalid JSON format',
  FAILED: 'Failed to process message',
  QUEUE_FULL: 'Too many messages awaiting an answer',
  INVALID_MESSAGE: 'Invalid message format',
  CONTENT_NOT_STRING: 'Message content must be a string',
  BUSY: 'Server busy, try again',
  AI_BUDGET: 'AI request budget exceeded, try again later',
  INVALID_MSGPACK: 'Invalid MessagePack format',
  TOO_LONG: 'Message too long',
  BAD_CMID: 'Invalid client_message_id',
  CANCEL_UNKNOWN: 'Unknown or finished message_id',
});

/** When each error text is sent (the README's table is generated from this). */
export const ERROR_DOCS: Readonly<Record<keyof typeof ERRORS, string>> = Object.freeze({
  EMPTY: '`content` is missing, null, or blank after trimming',
  RATE_LIMITED: "the session's budget (`RATE_LIMIT_*`) is spent",
  INVALID_JSON: 'unparsable text, or a binary frame that is not UTF-8 JSON',
  FAILED: 'the AI engine failed, timed out, answered garbage or too much, broke its stream, or is saturated (or its circuit is open)',
  QUEUE_FULL: '`MAX_QUEUED_MESSAGES` user messages of this connection already wait for an answer',
  INVALID_MESSAGE: 'not a JSON object, or no string `type`',
  CONTENT_NOT_STRING: '`content` is not a string',
  BUSY: "the validation pool's queue is full (`VALIDATION_MAX_QUEUE`)",
  AI_BUDGET: "the creator's `AI_BUDGET_PER_MINUTE` is spent",
  INVALID_MSGPACK: "a msgpack socket's binary frame that is not one MessagePack value",
  TOO_LONG: '`content` is longer than `MAX_MESSAGE_CHARS` characters after trimming',
  BAD_CMID: 'widget.v2: `client_message_id` is not a string of 1-64 characters',
  CANCEL_UNKNOWN: 'widget.v2: a `cancel` names no answer streaming on this connection (unknown, finished, or running on another node)',
});

/** `Unknown message type: X` (X is the JSON text of the type, cut to 64 chars). */
export function unknownTypeError(type: string): string {
  return `Unknown message type: ${type.length > 64 ? `${type.slice(0, 64)}...` : type}`;
}

let lastMs = 0;
let lastIso = '';
/** ISO-8601 time, computed at most once per millisecond (as pino's lib/time.js). */
export function isoNow(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

export const PONG = '{"type":"pong"}';

// Each frame as an object (encoded by the socket's framing: JSON, or
// MessagePack for msgpack sockets) and as JSON text (the default path).

export function connectionStatusObject(sessionId: string, connectionId: string, extra?: Record<string, unknown>) {
  return {
    type: 'connection_status',
    status: 'connected',
    details: { session_id: sessionId, connection_id: connectionId, ...extra },
    timestamp: isoNow(),
  };
}

/** connection_status as JSON text, with no `extra` (widget.v1): the same bytes as JSON.stringify of connectionStatusObject, without building the object. */
export function connectionStatus(sessionId: string, connectionId: string): string {
  return `{"type":"connection_status","status":"connected","details":{"session_id":${JSON.stringify(sessionId)},"connection_id":${JSON.stringify(connectionId)}},"timestamp":"${isoNow()}"}`;
}

export function typingObject(isTyping: boolean) {
  return { type: 'typing_indicator', is_typing: isTyping, timestamp: isoNow() };
}

export function typing(isTyping: boolean): string {
  return `{"type":"typing_indicator","is_typing":${isTyping},"timestamp":"${isoNow()}"}`;
}

/** An error frame; widget.v2 adds the client_message_id it answers and the streamed answer it ends. */
export function errorObject(message: string, clientMessageId?: string, messageId?: string) {
  const o: Record<string, unknown> = { type: 'error', error: message, timestamp: isoNow() };
  if (clientMessageId !== undefined) o.client_message_id = clientMessageId;
  if (messageId !== undefined) o.message_id = messageId;
  return o;
}

export function error(message: string, clientMessageId?: string, messageId?: string): string {
  return JSON.stringify(errorObject(message, clientMessageId, messageId));
}

/**
 * An answer's id (`message_id`): made by the gateway, a UUID, so its JSON
 * text is itself between quotes (no escaping to look for). Only
 * newMessageId makes one.
 */
export type MessageId = string & { readonly __messageId: true };

export function newMessageId(): MessageId {
  return randomUUID() as MessageId;
}

export interface Answer {
  response: string;
  confidence: number;
  sources: unknown[];
  /** The answer's id; a new one when absent (a streamed answer has its id from its first chunk). */
  messageId?: MessageId;
  /** A cancelled streamed answer: what was sent so far (widget.v2). */
  cancelled?: boolean;
}

export function aiResponseObject(a: Answer, clientMessageId?: string) {
  // One literal shape for the common answer; the optional fields extend a copy. msgpack sockets get it
  // packed; JSON sockets get aiResponse's text, the same fields in the same order.
  const o = {
    type: 'ai_response',
    content: a.response,
    confidence: a.confidence,
    sources: a.sources,
    timestamp: isoNow(),
    message_id: a.messageId ?? randomUUID(),
  };
  if (!a.cancelled && clientMessageId === undefined) return o;
  return { ...o, ...(a.cancelled ? { cancelled: true } : {}), ...(clientMessageId !== undefined ? { client_message_id: clientMessageId } : {}) };
}

/**
 * ai_response as JSON text: the same bytes as JSON.stringify of
 * aiResponseObject (a non-finite confidence is null there too), written
 * field by field. Every answer pays for it, and on Node 20 the text costs
 * far less: instructions per chat message (bench/instructions.ts) fell
 * from 42.0k to 35.3k with it (bare uWS, which builds the same frame, from
 * 37.3k to 30.6k).
 */
export function aiResponse(a: Answer, clientMessageId?: string): string {
  let s = `{"type":"ai_response","content":${JSON.stringify(a.response)},"confidence":${Number.isFinite(a.confidence) ? a.confidence : null},"sources":${a.sources.length === 0 ? '[]' : JSON.stringify(a.sources)},"timestamp":"${isoNow()}","message_id":"${a.messageId ?? randomUUID()}"`;
  if (a.cancelled) s += ',"cancelled":true';
  if (clientMessageId !== undefined) s += `,"client_message_id":${JSON.stringify(clientMessageId)}`;
  return `${s}}`;
}
