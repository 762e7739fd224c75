/**
 * The web widget channel: recipients are connection ids, frames are JSON text
 * (or MessagePack, for sockets that chose it) over the widget WebSocket, delivered through the fan-out (local uWS topic
 * plus the bus to other nodes).
 */
import type { ChannelHandler } from './channel.js';
import { decodeFrame, type Decoded, type MessageSchema } from '../pipeline/validate.js';
import { isValidId } from '../auth/ids.js';
import type { Fanout } from '../gateway/fanout.js';

export class WidgetChannel implements ChannelHandler<ArrayBuffer> {
  readonly type = 'widget';

  constructor(
    private readonly fanout: Fanout,
    private readonly schema: MessageSchema,
  ) {}

  async send(connectionId: string, frame: Record<string, unknown>): Promise<boolean> {
    return this.fanout.sendTo(connectionId, JSON.stringify(frame));
  }

  decode(raw: ArrayBuffer, isBinary: boolean, msgpack = false): Decoded {
    return decodeFrame(raw, isBinary, msgpack, this.schema);
  }

  validateRecipient(connectionId: string): boolean {
    return isValidId(connectionId);
  }
}
