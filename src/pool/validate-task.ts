/**
 * The piscina task: decodes and validates a batch of client frames with the
 * same code the uWS thread runs inline (pipeline/validate.ts). It charges no
 * budget: the uWS thread does, as it delivers each result in order
 * (pipeline/validator.ts). Frames arrive as transferred ArrayBuffers (not
 * copied).
 */
import { workerData } from 'node:worker_threads';
import { decodeFrame, type Decoded, type MessageSchema } from '../pipeline/validate.js';

export interface ValidateBatch {
  frames: ArrayBuffer[];
  binary: boolean[];
  /** Per frame: the socket speaks the msgpack subprotocol. */
  msgpack: boolean[];
}

/** What the pool is started with. */
export interface ValidateWorkerData {
  schema: MessageSchema;
}

const schema = (workerData as ValidateWorkerData).schema;

export default function validateBatch(batch: ValidateBatch): Decoded[] {
  return batch.frames.map((f, i) => decodeFrame(f, batch.binary[i]!, batch.msgpack[i]!, schema));
}
