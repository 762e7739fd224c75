/**
 * The piscina task: validates a batch of client frames with the same code
 * the uWS thread runs inline (pipeline/validate.ts), so both paths give the
 * same answer. Frames arrive as transferred ArrayBuffers (not copied).
 */
import { decodeFrame, type Decoded } from '../pipeline/validate.js';

export interface ValidateBatch {
  frames: ArrayBuffer[];
  binary: boolean[];
}

export default function validateBatch(batch: ValidateBatch): Decoded[] {
  return batch.frames.map((f, i) => decodeFrame(f, batch.binary[i]!));
}
