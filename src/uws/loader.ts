/**
 * Loads the native uWebSockets.js module, and nothing else.
 *
 * Order of preference:
 *   1. the official `uWebSockets.js` package, where a user has installed it
 *      (it is published on GitHub only, so it is never a dependency here);
 *   2. the native binary shipped inside `@trufflesuite/uws-js-unofficial`
 *      (uWS.js v20.30), loaded by path.
 *
 * `@trufflesuite/uws-js-unofficial`'s own entry point (`src/uws.js`) silently
 * falls back to a JavaScript imitation when the binary does not load. That
 * imitation must never serve traffic, so we never `require` the package entry:
 * if no native binary loads, we throw a `UwsLoadError` listing every binary
 * tried and why it failed.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type * as UwsTypes from '@trufflesuite/uws-js-unofficial';
import { GatewayError } from '../errors.js';

export type Uws = typeof UwsTypes;

export interface LoadedUws {
  uws: Uws;
  /** npm package the binary came from. */
  source: 'uWebSockets.js' | '@trufflesuite/uws-js-unofficial';
  /** Version of that package (uWS.js release). */
  version: string;
  /** Absolute path of the `.node` file. */
  binary: string;
}

export class UwsLoadError extends GatewayError {
  constructor(readonly attempts: ReadonlyArray<{ binary: string; error: string }>) {
    super(
      'GW_ERR_UWS_LOAD',
      'no native uWebSockets.js binary could be loaded (the JS fallback is never used):\n' +
        attempts.map((a) => `  - ${a.binary}: ${a.error}`).join('\n'),
    );
  }
}

const require = createRequire(import.meta.url);
const binaryName = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;

export interface Candidate {
  source: LoadedUws['source'];
  /** Resolves the package's package.json, throws if not installed. */
  pkgJson: () => string;
  /** Directory of the binary relative to the package root. */
  dir: string;
}

export const CANDIDATES: readonly Candidate[] = [
  { source: 'uWebSockets.js', pkgJson: () => require.resolve('uWebSockets.js/package.json'), dir: '.' },
  {
    source: '@trufflesuite/uws-js-unofficial',
    pkgJson: () => require.resolve('@trufflesuite/uws-js-unofficial/package.json'),
    dir: 'binaries',
  },
];

let cached: LoadedUws | undefined;

/**
 * Returns the native uWS module (cached after the first successful load).
 * `candidates` is for tests of the failure path.
 */
export function loadUws(candidates: readonly Candidate[] = CANDIDATES): LoadedUws {
  if (cached && candidates === CANDIDATES) return cached;
  const attempts: Array<{ binary: string; error: string }> = [];
  for (const c of candidates) {
    let pkgJsonPath: string;
    try {
      pkgJsonPath = c.pkgJson();
    } catch {
      attempts.push({ binary: `${c.source}/${c.dir}/${binaryName}`, error: 'package not installed' });
      continue;
    }
    const root = path.dirname(pkgJsonPath);
    const binary = path.join(root, c.dir, binaryName);
    try {
      const uws = require(binary) as Uws;
      if (typeof uws.App !== 'function') throw new Error('module does not export App()');
      const version = (require(pkgJsonPath) as { version: string }).version;
      const loaded: LoadedUws = { uws, source: c.source, version, binary };
      if (candidates === CANDIDATES) cached = loaded;
      return loaded;
    } catch (err) {
      attempts.push({ binary, error: (err as Error).message.split('\n')[0] ?? String(err) });
    }
  }
  throw new UwsLoadError(attempts);
}
