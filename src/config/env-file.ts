/**
 * Reads a systemd-style environment file (KEY=VALUE per line, # comments,
 * optional single or double quotes), the format of
 * /etc/channel-gateway/gateway.env. The primary re-reads it on SIGHUP when
 * GATEWAY_ENV_FILE names it. Errors name the line, never its text.
 */
import { readFileSync } from 'node:fs';
import { ConfigError, read } from './variables.js';

export function parseEnvFile(text: string, name = 'env file'): Record<string, string> {
  const out: Record<string, string> = {};
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    // Never echo the line: a typo such as "JWT_SECRET: value" holds a secret.
    if (!m) throw new ConfigError('GATEWAY_ENV_FILE', `line ${i + 1} of ${name} is not KEY=VALUE (the line is not shown: it may hold a secret)`, undefined);
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

/** The environment a reload reads: this process's, overlaid by GATEWAY_ENV_FILE if set. */
export function reloadEnv(): { env: NodeJS.ProcessEnv; overlay: Record<string, string> } {
  const file = read(process.env, 'GATEWAY_ENV_FILE');
  const overlay = file ? readEnvFile(file) : {};
  return { env: { ...process.env, ...overlay }, overlay };
}
