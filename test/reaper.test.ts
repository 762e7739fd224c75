/**
 * The test helpers themselves: their servers die with the test file that
 * started them, even when tap kills it on a time-out (SIGALRM), when no
 * teardown runs; and a port one file holds is never handed to another file
 * running beside it.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { reserve, until } from './helpers/net.js';

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

void t.test("a port another file's process holds is not handed out, even while nothing listens on it", async (t) => {
  // A "test file" that takes a port, says it, and stops its server (as a test that kills redis-server to restart it does).
  const script = `import { freePort } from './test/helpers/net.ts';
console.log('port ' + await freePort());
setInterval(() => {}, 1000);`;
  const hold = async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const port = Number((await until(() => /port (\d+)/.exec(out), 20_000, 'the child to take a port'))?.[1]);
    const exited = new Promise((r) => child.once('exit', r));
    return { port, stop: async (signal: NodeJS.Signals) => (child.kill(signal), exited) };
  };

  const a = await hold();
  t.notOk(reserve(a.port), `port ${a.port} is refused while its holder lives`);
  await a.stop('SIGTERM');
  t.ok(reserve(a.port), 'and free once the holder has exited');

  const b = await hold();
  t.notOk(reserve(b.port), `port ${b.port} is refused while its holder lives`);
  await b.stop('SIGKILL');
  t.ok(reserve(b.port), 'a holder killed without cleaning up does not keep its port');
});
