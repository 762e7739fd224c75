/**
 * pino, JSON to stdout. Tokens never reach a log line: the code logs paths
 * without query strings, and the redaction list below is a second fence for
 * anything that would carry one.
 */
import pino, { type Logger } from 'pino';
import type { LogLevel } from '../config/index.js';

export type { Logger };

export const REDACT = [
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'query',
  '*.query',
  'url',
  '*.url',
  'jwt',
  '*.jwt',
];

export function createLogger(level: LogLevel, bindings: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { pid: process.pid, ...bindings },
    redact: { paths: REDACT, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}
