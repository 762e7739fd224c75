/** A throw-away redis-server on a free port, for the Redis-mode scenarios. */
import { spawn } from 'node:child_process';
import net from 'node:net';
import { reap } from '../../test/helpers/reaper.js';
import { freePort } from './targets.js';

export async function startRedis(): Promise<{ url: string; stop(): void }> {
  const port = await freePort();
  const p = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  p.once('exit', reap(p.pid!));
  for (let i = 0; i < 100; i++) {
    await new Promise((r) => setTimeout(r, 50));
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.end();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) break;
  }
  return { url: `redis://127.0.0.1:${port}`, stop: () => p.kill('SIGKILL') };
}
