/**
 * The widget in a real browser: Debian's Chromium, headless, driven by
 * playwright-core, on the demo page served by the real cluster (the SDK
 * bundle from dist/). Connect, send, typing shown, answer shown; a rolling
 * restart and kill -9 of a worker during a conversation (every answer shown
 * exactly once); the network cut and restored (the heartbeat notices, the
 * resume fills the gap); a refused token does not loop; an expired one is
 * refreshed. A screenshot of the page is kept in .tap/browser/.
 */
import t, { type Test } from 'tap';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { createSigner } from 'fast-jwt';
import { startCluster, ROOT, type RunningCluster } from './helpers/cluster.js';
import { sleep, until } from './helpers/net.js';

const CHROMIUM = '/usr/bin/chromium';

interface Seen {
  answers: Array<{ id: string; offset: number; content: string; cmid?: string }>;
  broadcasts: unknown[];
  lost: unknown[];
  statuses: Array<{ status: string; code?: number; reason?: string }>;
}

let browser: Browser;
let c: RunningCluster;
let secret: string;

t.before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: make test installs Debian's chromium package`);
  // No JWT key: the cluster generates a development secret, and /demo/token exists.
  c = await startCluster({ JWT_SECRET: '', AI_ECHO_DELAY_MS: '20', RATE_LIMIT_MESSAGES: '0', SHUTDOWN_TIMEOUT_S: '10' });
  secret = /JWT_SECRET=(\S+)/.exec(c.output())![1]!;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
t.teardown(async () => {
  await browser?.close();
  await c?.stop('SIGKILL');
});

async function openDemo(query: string): Promise<Page> {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`http://127.0.0.1:${c.port}/demo?${query}`);
  return page;
}

const seen = (page: Page) => page.evaluate(() => (window as unknown as { seen: Seen }).seen);
const state = (page: Page) => page.locator('#state').textContent();

async function say(page: Page, text: string): Promise<void> {
  await page.fill('#input', text);
  await page.click('button');
}

void t.test('connect, send, typing shown, answer shown', async (t) => {
  const page = await openDemo('creator=b1&session=s1');
  t.teardown(() => page.context().close().catch(() => {}));
  await until(async () => (await state(page)) === 'open', 10_000, 'the page open');
  // Watch the typing element from before the send: under load the dots may show for less than a poll.
  await page.evaluate(() => {
    const el = document.querySelector('#typing')!;
    new MutationObserver(() => {
      if (/typing/.test(el.textContent ?? '')) (window as unknown as { typingSeen: boolean }).typingSeen = true;
    }).observe(el, { childList: true, characterData: true, subtree: true });
  });
  await say(page, 'hello from a real browser');
  await page.waitForSelector('.ai:has-text("hello from a real browser")', { timeout: 10_000 });
  t.pass('the answer shown');
  t.equal(await page.evaluate(() => (window as unknown as { typingSeen?: boolean }).typingSeen), true, 'typing dots were shown before it');
  await until(async () => (await page.locator('#typing').textContent()) === '', 5000, 'typing gone');
  t.equal((await seen(page)).answers.length, 1);

  const dir = path.join(ROOT, '.tap/browser');
  mkdirSync(dir, { recursive: true });
  const png = await page.screenshot({ path: path.join(dir, 'demo.png') });
  // Non-blank: decode the screenshot in the page and count pixels that are not the background.
  const ink = await page.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const cv = document.createElement('canvas');
    cv.width = img.width;
    cv.height = img.height;
    const ctx = cv.getContext('2d')!;
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, img.width, img.height).data;
    const bg = [d[0], d[1], d[2]];
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i]! - bg[0]!) + Math.abs(d[i + 1]! - bg[1]!) + Math.abs(d[i + 2]! - bg[2]!) > 30) n++;
    return n / (d.length / 4);
  }, png.toString('base64'));
  t.ok(ink > 0.05, `the screenshot is not blank: ${(ink * 100).toFixed(1)}% of its pixels differ from the background (.tap/browser/demo.png)`);
  writeFileSync(path.join(dir, 'demo.txt'), `ink ${ink}\n`);
});

/** Sends `n` messages, one every `everyMs`, while `fault` happens; then checks every answer arrived exactly once. */
async function conversationThrough(t: Test, name: string, fault: () => Promise<void>, settled: () => Promise<unknown>): Promise<void> {
  const page = await openDemo(`creator=${name}&session=${name}-s`);
  await until(async () => (await state(page)) === 'open', 10_000, 'open');
  const n = 20;
  const sent: string[] = [];
  const talking = (async () => {
    for (let i = 0; i < n; i++) {
      const text = `${name} message ${i}`;
      sent.push(text);
      await page.evaluate((x) => (window as unknown as { chat: { send(s: string): void } }).chat.send(x), text);
      await sleep(150);
    }
  })();
  await sleep(700);
  await fault();
  await talking;
  await settled();
  await until(async () => (await seen(page)).answers.length >= n, 20_000, 'every answer').catch(() => {});
  const s = await seen(page);
  const contents = s.answers.map((a) => a.content).sort();
  t.same(contents, [...sent].sort(), `${name}: every answer shown exactly once (${s.answers.length} of ${n})`);
  t.equal(new Set(s.answers.map((a) => a.id)).size, s.answers.length, 'no answer twice');
  t.ok(s.statuses.some((x) => x.status === 'reconnecting'), `the page reconnected by itself (${s.statuses.filter((x) => x.status === 'reconnecting').length} times)`);
  await until(async () => (await state(page)) === 'open', 5000, 'open at the end').catch(() => {});
  t.equal(await state(page), 'open', 'and is open');
  await page.context().close();
}

void t.test('a rolling restart during a conversation: the page reconnects and shows every answer exactly once', async (t) => {
  await conversationThrough(
    t,
    'hup',
    async () => void c.proc.kill('SIGHUP'),
    () => until(() => (c.output().match(/rolling restart done/g) ?? []).length >= 1, 30_000, 'the restart done'),
  );
});

void t.test('kill -9 of the worker holding the page\'s socket during a conversation: likewise', async (t) => {
  await conversationThrough(t, 'kill', async () => {
    // The page's socket is the only one: its worker is the one with a connection.
    const text = await fetch(`http://127.0.0.1:${c.port}/metrics`).then((r) => r.text());
    const holder = [...text.matchAll(/^gateway_connections\{worker="(\d+)"\} (\d+)/gm)].find((m) => m[2] === '1');
    process.kill(Number(holder![1]), 'SIGKILL');
  }, () => until(async () => (await c.get('/readyz')).status === 200, 20_000, 'ready again'));
});

void t.test('the network cut and restored: the heartbeat notices, the resume fills the gap', async (t) => {
  const page = await openDemo('creator=net&session=net-s&heartbeat=500');
  await until(async () => (await state(page)) === 'open', 10_000, 'open');
  const service = createSigner({ key: secret, algorithm: 'HS256' })({ scope: 'publish' });
  const post = (n: number) => fetch(`http://127.0.0.1:${c.port}/api/v1/creators/net/broadcast`, { method: 'POST', headers: { authorization: `Bearer ${service}` }, body: JSON.stringify({ n }) });
  await post(1);
  await until(async () => (await seen(page)).broadcasts.length === 1, 5000, 'the first broadcast');
  await page.context().setOffline(true);
  await until(async () => (await seen(page)).statuses.some((s) => s.status === 'reconnecting'), 10_000, 'the page notices');
  t.pass(`noticed: ${JSON.stringify((await seen(page)).statuses.find((s) => s.status === 'reconnecting'))}`);
  for (let i = 2; i <= 6; i++) await post(i);
  await sleep(500);
  await page.context().setOffline(false);
  await until(async () => (await seen(page)).broadcasts.length >= 6, 10_000, 'the gap filled');
  t.same((await seen(page)).broadcasts, [1, 2, 3, 4, 5, 6].map((n) => ({ n })), 'every broadcast once, in order, the missed ones from the resume');
  t.equal(await state(page), 'open');
  await page.context().close();
});

void t.test('a token refused with 4003: no reconnect loop; 4001 with a working getToken: back in', async (t) => {
  const wrong = createSigner({ key: 'not-the-gateways-secret-123456', algorithm: 'HS256' })({ creator_id: 'tok' });
  const refused = await openDemo(`creator=tok&token=${wrong}&once=1`);
  await until(async () => (await state(refused)) === 'closed (4003)', 10_000, 'closed with 4003');
  await sleep(1500);
  const s = await seen(refused);
  t.equal(s.statuses.filter((x) => x.status === 'connecting' || x.status === 'reconnecting').length, 1, 'one attempt, then it stopped and said why');
  await refused.context().close();

  const expired = createSigner({ key: secret, algorithm: 'HS256' })({ creator_id: 'tok', exp: Math.floor(Date.now() / 1000) - 60 });
  const page = await openDemo(`creator=tok&token=${expired}`);
  await until(async () => (await state(page)) === 'open', 10_000, 'open with a fresh token from getToken');
  t.ok((await seen(page)).statuses.some((x) => x.code === 4001), 'after a 4001');
  await say(page, 'back in');
  await page.waitForSelector('.ai:has-text("back in")', { timeout: 5000 });
  t.pass('and chatting');
  await page.context().close();
});
