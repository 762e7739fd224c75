/** Routes a send or a decode to the handler of a channel type. */
import type { ChannelHandler } from './channel.js';
import { GatewayError } from '../errors.js';

export class UnknownChannelError extends GatewayError {
  constructor(readonly channelType: string) {
    super('GW_ERR_CHANNEL', `no handler for channel type "${channelType}"`);
  }
}

export class ChannelRouter {
  readonly #handlers = new Map<string, ChannelHandler>();

  register(handler: ChannelHandler): this {
    if (this.#handlers.has(handler.type)) throw new Error(`channel type "${handler.type}" registered twice`);
    this.#handlers.set(handler.type, handler);
    return this;
  }

  /** The handler for `type`; throws UnknownChannelError. */
  get<H extends ChannelHandler = ChannelHandler>(type: string): H {
    const h = this.#handlers.get(type);
    if (!h) throw new UnknownChannelError(type);
    return h as H;
  }

  /**
   * Sends through the channel: 'invalid' when the recipient id is malformed,
   * 'absent' when no node holds it, 'sent' otherwise.
   */
  async send(type: string, recipient: string, frame: Record<string, unknown>): Promise<'sent' | 'absent' | 'invalid'> {
    const h = this.get(type);
    if (!h.validateRecipient(recipient)) return 'invalid';
    return (await h.send(recipient, frame)) ? 'sent' : 'absent';
  }
}
