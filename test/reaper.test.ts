/**
 * The test helpers' servers die with the test file that started them, even
 * when tap kills it on a time-out (SIGALRM), when no teardown runs.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { until } from './helpers/net.js';

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

void t.test('a redis-server started by a file that tap kills on a time-out (SIGALRM) is killed with it', async (t) => {
  // A "test file" that starts a server, says its pid, and hangs as a timed-out file does.
  const script = `import { startRedis } from './test/helpers/redis.ts';
const r = await startRedis();
console.log('redis ' + r.pid());
setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  const pid = Number((await until(() => /redis (\d+)/.exec(out), 20_000, 'the child to start redis'))?.[1]);
  t.ok(alive(pid), `redis-server ${pid} runs`);
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGALRM');
  await exited;
  await until(() => !alive(pid), 5000, 'the redis-server to be gone').catch(() => undefined);
  t.notOk(alive(pid), 'the redis-server died with the file');
  if (alive(pid)) process.kill(pid, 'SIGKILL');
});
