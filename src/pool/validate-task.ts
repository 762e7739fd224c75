/**
 * The piscina task: validates a batch of client frames with the same code
 * the uWS thread runs inline (pipeline/validate.ts), and charges the valid
 * user messages to the same rate-limit buckets (shared memory, given once as
 * the pool's workerData), so both paths give the same answer. Frames arrive
 * as transferred ArrayBuffers (not copied).
 */
import { workerData } from 'node:worker_threads';
import { admitDecoded, decodeFrame, type Decoded, type MessageSchema } from '../pipeline/validate.js';
import { MessageTables, type SharedMessageTables } from '../limits/admit.js';
import { nowUs } from '../limits/buckets.js';

export interface ValidateBatch {
  frames: ArrayBuffer[];
  binary: boolean[];
  /** Per frame: the socket speaks the msgpack subprotocol. */
  msgpack: boolean[];
  /** Per frame: the connection's session slot, then its creator slot. */
  slots: number[];
}

/** What the pool is started with. */
export interface ValidateWorkerData {
  tables: SharedMessageTables;
  schema: MessageSchema;
}

const data = workerData as ValidateWorkerData;
const tables = MessageTables.attach(data.tables);
const schema = data.schema;

export default function validateBatch(batch: ValidateBatch): Decoded[] {
  const now = nowUs();
  const slots = { sessionSlot: 0, creatorSlot: 0 };
  return batch.frames.map((f, i) => {
    slots.sessionSlot = batch.slots[2 * i]!;
    slots.creatorSlot = batch.slots[2 * i + 1]!;
    return admitDecoded(decodeFrame(f, batch.binary[i]!, batch.msgpack[i]!, schema), tables, slots, now);
  });
}
