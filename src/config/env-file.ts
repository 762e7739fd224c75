/**
 * Reads a systemd-style environment file (KEY=VALUE per line, # comments,
 * optional single or double quotes), the format of
 * /etc/channel-gateway/gateway.env. The primary re-reads it on SIGHUP when
 * GATEWAY_ENV_FILE names it.
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from './index.js';

export function parseEnvFile(text: string, name = 'env file'): Record<string, string> {
  const out: Record<string, string> = {};
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) throw new ConfigError('GATEWAY_ENV_FILE', `line ${i + 1} of ${name} is not KEY=VALUE`, raw);
    let v = m[2]!;
    if ((v.startsWith('"') && v.endsWith('"') && v.length >= 2) || (v.startsWith("'") && v.endsWith("'") && v.length >= 2)) v = v.slice(1, -1);
    out[m[1]!] = v;
  });
  return out;
}

export function readEnvFile(path: string): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError('GATEWAY_ENV_FILE', `must name a readable file: ${(err as Error).message}`, path);
  }
  return parseEnvFile(text, path);
}
