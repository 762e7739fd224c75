/**
 * A channel is one way visitors reach a creator: the web widget today,
 * WhatsApp and Telegram next (see the seed). Each channel type has one
 * handler; the `ChannelRouter` picks it by type.
 */
import type { Decoded } from '../pipeline/validate.js';

export interface ChannelHandler<Raw = unknown> {
  /** The channel type, e.g. "widget", "whatsapp". */
  readonly type: string;
  /**
   * Delivers a server frame to one recipient wherever it is connected.
   * Resolves true when some node holds the recipient, false when none does.
   */
  send(recipient: string, frame: Record<string, unknown>): Promise<boolean>;
  /**
   * Decodes an incoming message into a client message or the text of an
   * error frame; `msgpack`: the sender chose MessagePack framing. Never throws.
   */
  decode(raw: Raw, isBinary: boolean, msgpack?: boolean): Decoded;
  /** Whether `recipient` is a well-formed recipient id for this channel. */
  validateRecipient(recipient: string): boolean;
}
