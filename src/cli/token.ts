/**
 * Mints a token for the gateway (development and tests).
 *
 *   JWT_SECRET=... npm run token -- --creator demo [--scope publish] [--ttl 3600]
 *   JWT_PRIVATE_KEY_FILE=key.pem JWT_ALGORITHMS=RS256 npm run token -- --creator demo
 *
 * Prints the token alone on stdout.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createSigner } from 'fast-jwt';

function usage(msg?: string): never {
  if (msg) process.stderr.write(`token: ${msg}\n`);
  process.stderr.write(
    'usage: JWT_SECRET=... npm run token -- [--creator ID] [--scope "publish"] [--ttl SECONDS]\n' +
      '       (or JWT_PRIVATE_KEY_FILE=key.pem JWT_ALGORITHMS=RS256|ES256|EdDSA)\n' +
      '  --creator ID   creator_id claim (required unless --scope is given)\n' +
      '  --scope S      scope claim, e.g. "publish" for the broadcast API\n' +
      '  --ttl N        lifetime in seconds (default 3600)\n',
  );
  process.exit(2);
}

const { values } = parseArgs({
  options: {
    creator: { type: 'string' },
    scope: { type: 'string' },
    ttl: { type: 'string', default: '3600' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) usage();
if (!values.creator && !values.scope) usage('give --creator and/or --scope');
const ttl = Number(values.ttl);
if (!Number.isInteger(ttl) || ttl <= 0) usage('--ttl must be a positive integer');

const secret = process.env.JWT_SECRET;
const keyFile = process.env.JWT_PRIVATE_KEY_FILE;
let key: string;
let algorithm: string;
if (keyFile) {
  key = readFileSync(keyFile, 'utf8');
  algorithm = (process.env.JWT_ALGORITHMS ?? 'RS256').split(',')[0]!.trim();
} else if (secret) {
  key = secret;
  algorithm = (process.env.JWT_ALGORITHMS ?? 'HS256').split(',')[0]!.trim();
} else {
  usage('set JWT_SECRET (or JWT_PRIVATE_KEY_FILE) to the key the gateway uses');
}

const sign = createSigner({ key, algorithm: algorithm as 'HS256', expiresIn: ttl * 1000 });
const claims: Record<string, unknown> = {};
if (values.creator) claims.creator_id = values.creator;
if (values.scope) claims.scope = values.scope;
process.stdout.write(`${sign(claims)}\n`);
