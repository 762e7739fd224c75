/**
 * Deployment through the Makefile: a release tarball, `make install` into a
 * DESTDIR from the unpacked release, the layout and modes, the systemd unit
 * checked by systemd-analyze, the installed tree actually serving, uninstall,
 * and `make deploy` in dry-run mode.
 */
import t from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT } from './helpers/cluster.js';
import { freePort, until } from './helpers/net.js';
import { connectWidget } from './helpers/client.js';
import { SECRET, widgetToken } from './helpers/tokens.js';
import { parseEnvFile } from '../src/config/env-file.js';

/**
 * Runs a command the way a user does: tap's coverage hook puts its loaders in
 * NODE_OPTIONS of every child, and `env -u` takes them out again (tsc and npm
 * do not run under them).
 */
const run = (cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) =>
  execFileSync('env', ['-u', 'NODE_OPTIONS', cmd, ...args], {
    cwd: opts.cwd ?? ROOT,
    env: opts.env ?? process.env,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
const make = (args: string[], cwd = ROOT) => run('make', ['--no-print-directory', ...args], { cwd });
const mode = (p: string) => (statSync(p).mode & 0o777).toString(8);

const work = mkdtempSync(path.join(tmpdir(), 'cgw-deploy-'));
const version = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version as string;
let releaseDir = '';
const D = path.join(work, 'root');

void t.test('make release builds a versioned tarball with code, package files and deploy files', async (t) => {
  // RELEASE_NEEDS=: the dist/ that `make test` built, not rebuilt under the tests running beside this one.
  const out = make(['release', 'RELEASE_NEEDS=']);
  const tarball = path.join(ROOT, `release/channel-gateway-${version}.tar.gz`);
  t.match(out, `channel-gateway-${version}.tar.gz`);
  const list = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).split('\n');
  for (const f of ['dist/main.js', 'package.json', 'package-lock.json', 'Makefile', 'deploy/channel-gateway.service.in', 'deploy/sysctl.conf', 'deploy/gateway.env.example']) {
    t.ok(list.includes(`channel-gateway-${version}/${f}`), f);
  }
  t.notOk(list.some((f) => f.includes('node_modules') || f.includes('/src/') || f.includes('/test/')), 'no node_modules, sources or tests');
  execFileSync('tar', ['-C', work, '-xzf', tarball]);
  releaseDir = path.join(work, `channel-gateway-${version}`);
});

void t.test('make install DESTDIR=... from the unpacked release lays out the files with their modes', async (t) => {
  make(['install', `DESTDIR=${D}`], releaseDir);
  const prefix = path.join(D, 'opt/channel-gateway');
  t.ok(existsSync(path.join(prefix, 'dist/main.js')), 'code under PREFIX');
  t.ok(existsSync(path.join(prefix, 'node_modules/@trufflesuite/uws-js-unofficial/package.json')), 'production dependencies installed');
  t.notOk(existsSync(path.join(prefix, 'node_modules/tap')), 'no dev dependencies');
  const unit = path.join(D, 'etc/systemd/system/channel-gateway.service');
  t.equal(mode(unit), '644');
  t.equal(mode(path.join(D, 'etc/channel-gateway')), '750');
  t.equal(mode(path.join(D, 'etc/channel-gateway/gateway.env')), '640');
  t.equal(mode(path.join(D, 'etc/sysctl.d/60-channel-gateway.conf')), '644');
  const u = readFileSync(unit, 'utf8');
  t.match(u, /^ExecStart=\/\S+node \/opt\/channel-gateway\/dist\/main\.js$/m);
  t.match(u, /^Restart=on-failure$/m);
  t.match(u, /^KillMode=mixed$/m);
  t.match(u, /^TimeoutStopSec=40$/m, 'SHUTDOWN_TIMEOUT_S (30) + 10');
  t.match(u, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
  t.match(u, /^LimitNOFILE=\d{5,}$/m);
  t.match(u, /^EnvironmentFile=\/etc\/channel-gateway\/gateway\.env$/m);
  t.notMatch(u, /@[A-Z]+@/, 'every placeholder replaced');
  const sysctl = readFileSync(path.join(D, 'etc/sysctl.d/60-channel-gateway.conf'), 'utf8');
  for (const key of ['net.core.somaxconn', 'net.ipv4.tcp_max_syn_backlog', 'net.ipv4.ip_local_port_range', 'fs.file-max', 'net.ipv4.tcp_migrate_req']) {
    t.match(sysctl, new RegExp(`#[^\\n]*\\n(#[^\\n]*\\n)*${key.replace(/\./g, '\\.')} = `), `${key} with a comment saying why`);
  }
});

void t.test('systemd-analyze verify accepts the unit', async (t) => {
  let analyze = '';
  try {
    analyze = execFileSync('sh', ['-c', 'command -v systemd-analyze'], { encoding: 'utf8' }).trim();
  } catch {
    /* absent */
  }
  if (!analyze) {
    t.comment('systemd-analyze is not installed here: this one check is skipped (the Debian package "systemd" provides it)');
    return;
  }
  // The unit names paths of the installed system; give it a copy pointing into DESTDIR.
  const unit = readFileSync(path.join(D, 'etc/systemd/system/channel-gateway.service'), 'utf8')
    .replaceAll('/opt/channel-gateway', path.join(D, 'opt/channel-gateway'))
    .replaceAll('/etc/channel-gateway', path.join(D, 'etc/channel-gateway'))
    .replace(/^(User|Group)=.*$/gm, '$1=root');
  const copy = path.join(work, 'channel-gateway.service');
  writeFileSync(copy, unit);
  let out = '';
  try {
    out = execFileSync(analyze, ['verify', copy], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string };
    out = `${e.stdout ?? ''}${e.stderr ?? ''}`;
  }
  const problems = out.split('\n').filter((l) => l.includes('channel-gateway.service') && !/Cannot add dependency job|Failed to add dependency/.test(l));
  t.same(problems, [], 'no complaint about the unit');
  // The check is live: a broken copy is refused.
  writeFileSync(copy, unit.replace(/^ExecStart=\S+/m, 'ExecStart=relative/node'));
  let refused = false;
  try {
    execFileSync(analyze, ['verify', copy], { stdio: 'ignore' });
  } catch {
    refused = true;
  }
  t.ok(refused, 'systemd-analyze refuses a unit with a relative ExecStart');
});

void t.test('the installed tree starts with the unit\'s command and environment file, serves, and stops on SIGTERM', async (t) => {
  const unit = readFileSync(path.join(D, 'etc/systemd/system/channel-gateway.service'), 'utf8');
  const [node, main] = /^ExecStart=(\S+) (\S+)$/m.exec(unit)!.slice(1) as [string, string];
  const envFile = path.join(D, 'etc/channel-gateway/gateway.env');
  const port = await freePort();
  appendFileSync(envFile, `\nJWT_SECRET=${SECRET}\nPORT=${port}\nADMIN_PORT=${await freePort()}\nHOST=127.0.0.1\nWORKERS=2\n`);
  const env = { PATH: process.env.PATH, NODE_ENV: 'production', GATEWAY_ENV_FILE: envFile, ...parseEnvFile(readFileSync(envFile, 'utf8')) };
  const proc = spawn(node, [path.join(D, main)], { cwd: path.join(D, 'opt/channel-gateway'), env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => proc.on('exit', r));
  t.teardown(() => proc.kill('SIGKILL'));
  await until(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 20_000, `installed gateway ready\n${out}`);
  const c = await connectWidget(port, 'alice', widgetToken('alice'));
  t.equal((await c.ask('installed')).content, 'installed');
  proc.kill('SIGTERM');
  t.equal(await exited, 0, 'exit 0 on SIGTERM');
  t.equal((await c.closed).code, 1001);
});

void t.test('a second install keeps the environment file; uninstall keeps it and removes the rest', async (t) => {
  const envFile = path.join(D, 'etc/channel-gateway/gateway.env');
  const before = readFileSync(envFile, 'utf8');
  const out = make(['install', `DESTDIR=${D}`], releaseDir);
  t.match(out, /keeping existing/);
  t.equal(readFileSync(envFile, 'utf8'), before, 'not overwritten');
  make(['uninstall', `DESTDIR=${D}`], releaseDir);
  t.notOk(existsSync(path.join(D, 'opt/channel-gateway')), 'code removed');
  t.notOk(existsSync(path.join(D, 'etc/systemd/system/channel-gateway.service')), 'unit removed');
  t.notOk(existsSync(path.join(D, 'etc/sysctl.d/60-channel-gateway.conf')), 'sysctl drop-in removed');
  t.ok(existsSync(envFile), 'environment file kept');
});

void t.test('make deploy DRY_RUN=1 prints the rolling sequence host by host', async (t) => {
  const out = make(['deploy', 'DRY_RUN=1', 'HOSTS=gw1 gw2']);
  const lines = out.split('\n').filter((l) => /^(scp|ssh) /.test(l));
  const tarball = `release/channel-gateway-${version}.tar.gz`;
  t.equal(lines.length, 8, out);
  for (const [i, host] of ['gw1', 'gw2'].entries()) {
    const [copy, install, reload, ready] = lines.slice(i * 4, i * 4 + 4);
    t.equal(copy, `scp ${tarball} ${host}:/tmp/channel-gateway-${version}.tar.gz`);
    t.match(install, `ssh ${host} rm -rf /tmp/channel-gateway-${version} && tar -C /tmp -xzf /tmp/channel-gateway-${version}.tar.gz && sudo make -C /tmp/channel-gateway-${version} install`);
    t.equal(reload, `ssh ${host} sudo systemctl reload-or-restart channel-gateway`);
    t.match(ready, new RegExp(`^ssh ${host} .*curl -fsS -o /dev/null http://127\\.0\\.0\\.1:9001/readyz`));
  }
});

void t.test('make deploy stops at the first host that fails and names it', async (t) => {
  const fakeBin = path.join(work, 'bin');
  execFileSync('mkdir', ['-p', fakeBin]);
  // An ssh that fails for host "bad" only; scp always succeeds.
  writeFileSync(path.join(fakeBin, 'ssh'), '#!/bin/sh\n[ "$1" = bad ] && exit 1\nexit 0\n', { mode: 0o755 });
  writeFileSync(path.join(fakeBin, 'scp'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  let stderr = '';
  try {
    run('deploy/deploy.sh', [path.join(ROOT, `release/channel-gateway-${version}.tar.gz`), 'good', 'bad', 'never'], {
      env: { ...process.env, PATH: `${fakeBin}:${process.env.PATH}` },
    });
    t.fail('deploy should fail');
  } catch (err) {
    stderr = (err as { stderr: string }).stderr;
  }
  t.match(stderr, /deploy: good ready/);
  t.match(stderr, /FAILED on bad at step 'install'/);
  t.notMatch(stderr, /deploy: never/, 'the host after it was not touched');
});
