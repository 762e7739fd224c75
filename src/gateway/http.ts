/**
 * Small helpers for uWS HTTP responses, written around uWS's lifetime rules:
 * copy what you need out of `req` before any await, always attach
 * `onAborted`, and cork every write that happens after an await.
 */
import type { HttpResponse } from '@trufflesuite/uws-js-unofficial';
import { Buffer } from 'node:buffer';

/** uWS's HttpResponse with the members its typings leave as `any`. */
export interface Res extends HttpResponse {
  writeStatus(status: string): Res;
  writeHeader(key: string, value: string): Res;
  end(body?: string | Uint8Array, closeConnection?: boolean): Res;
  onAborted(cb: () => void): Res;
  onData(cb: (chunk: ArrayBuffer, isLast: boolean) => void): Res;
  close(): Res;
  getRemoteAddressAsText(): ArrayBuffer;
  getProxiedRemoteAddressAsText(): ArrayBuffer;
  /** Set by `guard`: true once the client went away or we answered. */
  done?: boolean;
}

const STATUS: Record<number, string> = {
  200: '200 OK',
  202: '202 Accepted',
  400: '400 Bad Request',
  401: '401 Unauthorized',
  403: '403 Forbidden',
  404: '404 Not Found',
  405: '405 Method Not Allowed',
  413: '413 Payload Too Large',
  415: '415 Unsupported Media Type',
  500: '500 Internal Server Error',
  503: '503 Service Unavailable',
};

/** Marks the response as done when the client aborts. Call first in every async handler. */
export function guard(res: Res): Res {
  res.onAborted(() => {
    res.done = true;
  });
  return res;
}

/** Writes a JSON response (corked), unless the request was aborted or answered. */
export function sendJson(res: Res, status: number, body: unknown, closeConnection = false): void {
  if (res.done) return;
  res.done = true;
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.cork(() => {
    res.writeStatus(STATUS[status] ?? String(status)).writeHeader('content-type', 'application/json').end(text, closeConnection);
  });
}

export class BodyTooLarge extends Error {}

/**
 * Reads the whole request body, at most `limit` bytes. Rejects with
 * BodyTooLarge as soon as the limit is passed (the caller answers 413 and
 * closes the connection), and never resolves if the request is aborted.
 */
export function readBody(res: Res, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    res.onData((chunk, isLast) => {
      if (failed) return;
      size += chunk.byteLength;
      if (size > limit) {
        failed = true;
        reject(new BodyTooLarge());
        return;
      }
      // uWS reuses the chunk's memory after this callback: copy it.
      chunks.push(Buffer.from(Buffer.from(chunk)));
      if (isLast) resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    });
  });
}

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearer(header: string): string | undefined {
  const m = /^Bearer[ ]+([^ ]+)$/i.exec(header);
  return m?.[1];
}
