/**
 * "Nothing lost" and "AI answers streamed" on the real cluster: widget.v2
 * clients keep every frame, exactly once and in order, through a cut TCP
 * connection, a rolling restart, kill -9 of a worker, a slow-consumer close,
 * and (Redis mode) kill -9 of a whole host (a session whose worker is killed
 * is told continuity_lost: the worker numbered its frames and may have
 * delivered some it never stored); answers are kept for sockets that
 * left, streamed answers resume on another worker or host, and a retried
 * client_message_id reaches the engine once.
 */
import t, { type Test } from 'tap';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Pool } from 'undici';
import { startCluster, type RunningCluster } from './helpers/cluster.js';
import { post } from './helpers/hosts.js';
import { V2Client } from './helpers/v2.js';
import { serviceToken, widgetToken } from './helpers/tokens.js';
import { startRedis } from './helpers/redis.js';
import { sleep, until } from './helpers/net.js';

/** A real HTTP engine: `delayMs` before answering, or a stream of `pieces` `gapMs` apart (NDJSON). Counts requests. */
async function engineServer() {
  const state = { requests: 0, delayMs: 0, pieces: undefined as string[] | undefined, gapMs: 20, bodies: [] as string[], streamed: 0 };
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      state.requests++;
      state.bodies.push(body);
      const q = (JSON.parse(body) as { query: string }).query;
      const pieces = state.pieces;
      if (!pieces) {
        setTimeout(() => {
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify({ response: `re: ${q}`, confidence: 1, sources: [] }));
        }, state.delayMs);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      let i = 0;
      const next = () => {
        if (res.destroyed) return;
        if (i < pieces.length) {
          const ok = res.write(`${JSON.stringify({ delta: pieces[i++] })}\n`);
          if (state.gapMs > 0) setTimeout(next, state.gapMs);
          else if (ok) setImmediate(next);
          else res.once('drain', next);
        } else {
          res.end(`${JSON.stringify({ confidence: 0.8, sources: [] })}\n`);
          state.streamed++;
        }
      };
      next();
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    state,
    url: `http://127.0.0.1:${(srv.address() as { port: number }).port}/answer`,
    close: () =>
      new Promise<void>((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  };
}

/** A cluster asking the test's own HTTP engine; both stopped when `t` ends. */
async function engineCluster(t: Test, env: Record<string, string> = {}): Promise<{ eng: Awaited<ReturnType<typeof engineServer>>; c: RunningCluster }> {
  const eng = await engineServer();
  const c = await startCluster({ ...env, AI_ENGINE_URL: eng.url });
  t.teardown(async () => {
    await c.stop('SIGKILL');
    await eng.close();
  });
  return { eng, c };
}

/** Open sockets per worker pid, from the host's metrics (through the primary). */
async function perWorker(c: RunningCluster): Promise<Map<string, number>> {
  const text = await fetch(`http://127.0.0.1:${c.port}/metrics`).then((r) => r.text());
  return new Map([...text.matchAll(/^gateway_connections\{worker="(\d+)"\} (\d+)/gm)].map((m) => [m[1]!, Number(m[2])]));
}

/** The worker holding `client`'s socket (the only socket of the host while asked). */
async function workerOf(c: RunningCluster): Promise<string> {
  const m = await until<string | undefined>(async () => {
    const w = await perWorker(c);
    const held = [...w].filter(([, n]) => n === 1);
    return held.length === 1 ? held[0]![0] : undefined;
  }, 3000, 'one socket on one worker');
  return m!;
}

/** Publishes `n` broadcasts at about `perSecond`, retrying refusals and failures, through `ports` in turn. */
async function publish(ports: () => number[], creator: string, n: number, perSecond: number): Promise<number> {
  const pools = new Map<number, Pool>();
  const pool = (p: number) => pools.get(p) ?? pools.set(p, new Pool(`http://127.0.0.1:${p}`, { connections: 4 })).get(p)!;
  let attempts = 0;
  const started = Date.now();
  for (let i = 1; i <= n; i++) {
    for (let tries = 0; ; tries++) {
      if (tries > 300) throw new Error(`broadcast ${i} refused 300 times`);
      attempts++;
      const p = ports()[attempts % ports().length]!;
      try {
        const r = await pool(p).request({
          method: 'POST',
          path: `/api/v1/creators/${creator}/broadcast`,
          headers: { authorization: `Bearer ${serviceToken()}`, 'content-type': 'application/json' },
          body: JSON.stringify({ n: i }),
          headersTimeout: 3000,
        });
        await r.body.dump();
        if (r.statusCode === 202) break;
      } catch {
        /* the worker went away: try again */
      }
      await sleep(20);
    }
    const due = started + (i * 1000) / perSecond;
    if (due > Date.now()) await sleep(due - Date.now());
  }
  await Promise.all([...pools.values()].map((p) => p.close()));
  return attempts;
}

/** Every client holds broadcast offsets 1..top exactly once, in order. */
async function allHoldEverything(t: Test, clients: V2Client[], least: number): Promise<void> {
  await until(() => clients.every((c) => (c.offsets('broadcast').at(-1) ?? 0) >= least), 20_000, `every client to reach offset ${least}`).catch(() => {});
  const top = Math.max(...clients.map((c) => c.offsets('broadcast').at(-1) ?? 0));
  // A frame re-published after a failed request makes the top one higher: wait for it everywhere too.
  await until(() => clients.every((c) => (c.offsets('broadcast').at(-1) ?? 0) >= top), 10_000, `every client to reach offset ${top}`).catch(() => {});
  let bad = 0;
  for (const c of clients) {
    const got = c.offsets('broadcast');
    const ok = got.length === top && got.every((o, i) => o === i + 1);
    if (!ok) {
      bad++;
      if (bad <= 3) t.comment(`client holds ${got.length} of ${top}: first missing ${Array.from({ length: top }, (_, i) => i + 1).find((o) => !got.includes(o))}, duplicates ${got.length - new Set(got).size}`);
    }
  }
  t.equal(bad, 0, `${clients.length} clients each hold offsets 1..${top} exactly once, in order (${top - least} re-published after a failed request)`);
  const reconnects = clients.reduce((a, c) => a + c.closes.length, 0);
  t.comment(`${reconnects} reconnects in all`);
}

void t.test('a v2 client cut while the engine answers reconnects on another worker and gets that answer exactly once', async (t) => {
  const { eng, c } = await engineCluster(t);
  eng.state.delayMs = 1500;
  const client = new V2Client(`ws://127.0.0.1:${c.port}`, 'cut', widgetToken('cut'), 'cut-session');
  await client.connect();
  const first = await workerOf(c);
  client.send({ type: 'user_message', content: 'take your time' });
  await client.next((f) => f.type === 'typing_indicator');
  client.cut();
  // Reconnect until the socket lands on the other worker (SO_REUSEPORT picks).
  let other = first;
  for (let i = 0; i < 30 && other === first; i++) {
    if (i > 0) client.cut();
    await until(async () => [...(await perWorker(c)).values()].every((n) => n === 0), 3000, 'no socket left');
    await client.connect();
    other = await workerOf(c);
  }
  t.not(other, first, 'resumed on the other worker');
  await client.next((f) => f.type === 'ai_response', 5000);
  await sleep(300);
  const answers = client.frames.filter((f) => f.type === 'ai_response');
  t.equal(answers.length, 1, 'the answer arrived exactly once');
  t.match(answers[0], { content: 're: take your time', offset: 1 });
  t.equal(eng.state.requests, 1, 'the engine was asked once');
  client.stop();
});

void t.test('20 clients through a rolling restart, and through kill -9 of a worker: every broadcast exactly once, in order', async (t) => {
  const c = await startCluster({ SHUTDOWN_TIMEOUT_S: '10' });
  t.teardown(() => c.stop('SIGKILL'));
  for (const [fault, act] of [
    ['SIGHUP (rolling restart)', async () => c.proc.kill('SIGHUP')],
    ['kill -9 of a worker', async () => process.kill(Number((await c.get('/api/v1/stats')).body && c.workerPids()[0]), 'SIGKILL')],
  ] as const) {
    await t.test(fault, async (t) => {
      const creator = `fan-${randomBytes(2).toString('hex')}`;
      const clients = Array.from({ length: 20 }, () => new V2Client(`ws://127.0.0.1:${c.port}`, creator, widgetToken(creator)));
      await Promise.all(clients.map((x) => x.connect()));
      clients.forEach((x) => x.keepConnected());
      const publishing = publish(() => [c.port], creator, 2000, 500);
      await sleep(1500);
      await act();
      await publishing;
      await allHoldEverything(t, clients, 2000);
      clients.forEach((x) => x.stop());
      await until(async () => (await c.get('/readyz')).status === 200, 20_000, 'the host ready again');
    });
  }
});

void t.test("a session's offsets held by its worker: a rolling restart keeps the session whole; kill -9 of that worker is told as continuity_lost, never a silent gap", async (t) => {
  const c = await startCluster({ SHUTDOWN_TIMEOUT_S: '10' });
  t.teardown(() => c.stop('SIGKILL'));
  const client = new V2Client(`ws://127.0.0.1:${c.port}`, 'held', widgetToken('held'), 'held-session');
  await client.connect();
  const ask = async (content: string) => {
    const from = client.frames.length;
    client.send({ type: 'user_message', content });
    return client.next((f) => f.type === 'ai_response' && f.content === content, 5000, from);
  };
  const reconnected = async (from: number) => client.next((f) => f.type === 'connection_status', 20_000, from);
  t.match(await ask('one'), { offset: 1 });
  const epoch = client.session!.epoch;
  client.keepConnected();

  let from = client.frames.length;
  c.proc.kill('SIGHUP');
  const afterRestart = await reconnected(from);
  t.match(afterRestart.details, { recovered: { session: true } }, 'a rolling restart: the worker ended its lease in order, the session resumed');
  t.equal(client.session!.epoch, epoch, 'same epoch');
  t.match(await ask('two'), { offset: 2 }, 'and its offsets go on');
  await until(async () => (await c.get('/readyz')).status === 200, 20_000, 'the host ready again');

  from = client.frames.length;
  process.kill(Number(await workerOf(c)), 'SIGKILL');
  const afterKill = await reconnected(from);
  t.match(afterKill.details, { recovered: { session: false } }, 'kill -9 of the worker holding the session: not recovered (it may have delivered frames it never stored)');
  t.match(client.frames.slice(from).find((f) => f.type === 'continuity_lost' && f.stream === 'session'), { offset: 0 }, 'told as continuity_lost');
  t.not(client.session!.epoch, epoch, 'a new epoch');
  t.match(await ask('three'), { offset: 1 }, 'offsets start again in it: none given twice in the old epoch');
  client.stop();
});

void t.test('a slow consumer closed with 4009 resumes without a gap', async (t) => {
  const c = await startCluster({ WORKERS: '1', HISTORY_SIZE: '500' });
  t.teardown(() => c.stop('SIGKILL'));
  const client = new V2Client(`ws://127.0.0.1:${c.port}`, 'slow', widgetToken('slow'), 'slow-session');
  await client.connect();
  client.ws.pause();
  const pad = 'x'.repeat(60_000);
  const broadcast = () => post(c, '/api/v1/creators/slow/broadcast', { pad }).then((r) => r.status);
  // Every accepted broadcast (202) is stored with the next offset. One refused under load (503) was
  // refused before it was stored, or timed out and may be stored anyway: the client must end up with
  // offsets 1..N, every accepted one among them, however many of the refused were stored.
  const statuses: number[] = [];
  for (let i = 0; i < 200; i += 20) statuses.push(...(await Promise.all(Array.from({ length: 20 }, broadcast))));
  const accepted = statuses.filter((x) => x === 202).length;
  const refused = statuses.filter((x) => x !== 202);
  t.same(refused.filter((x) => x !== 503), [], `every broadcast accepted or refused with 503 (${refused.length} refused)`);
  client.ws.resume();
  await until(() => client.closes.length === 1, 5000, 'the close');
  t.same(client.closes[0], { code: 4009, reason: 'Slow consumer' });
  const before = client.offsets('broadcast').length;
  t.ok(before > 0 && before < accepted, `${before} of ${accepted} accepted read before the close`);
  const st = await client.connect();
  t.same((st.details as { recovered: object }).recovered, { session: true, broadcast: true });
  await until(() => client.offsets('broadcast').length >= accepted, 20_000, 'the rest replayed').catch((err: Error) => {
    const got = client.offsets('broadcast');
    throw new Error(`${err.message}: ${got.length} offsets of ${accepted} accepted (last ${String(got.at(-1))}), closes ${JSON.stringify(client.closes)}, socket state ${client.ws.readyState}`);
  });
  await sleep(200);
  const got = client.offsets('broadcast');
  t.ok(got.length <= 200, `${got.length} stored, of ${accepted} accepted and ${refused.length} refused`);
  t.same(got, Array.from({ length: got.length }, (_, i) => i + 1), 'each once, in order, with no gap');
  client.stop();
});

void t.test('a broadcast the primary does not confirm in time answers 503 "timeout", and may be delivered anyway (README, HTTP API)', async (t) => {
  const c = await startCluster({ WORKERS: '1', HISTORY_SIZE: '100' });
  t.teardown(() => c.stop('SIGKILL'));
  const client = new V2Client(`ws://127.0.0.1:${c.port}`, 'stall', widgetToken('stall'), 'stall-session');
  await client.connect();
  t.teardown(() => client.stop());
  const broadcast = (i: number) => post(c, '/api/v1/creators/stall/broadcast', { i }).then(async (r) => ({ status: r.status, body: (await r.json()) as unknown }));
  t.equal((await broadcast(1)).status, 202);
  // The primary (which stores and numbers broadcasts) stops answering for longer than the worker's IPC deadline.
  process.kill(c.proc.pid!, 'SIGSTOP');
  const stalled = broadcast(2);
  await sleep(2500);
  process.kill(c.proc.pid!, 'SIGCONT');
  t.same(await stalled, { status: 503, body: { error: 'Publish failed', reason: 'timeout' } }, 'not confirmed in time: 503, reason timeout');
  t.equal((await broadcast(3)).status, 202);
  await client.next((f) => f.type === 'broadcast' && (f.data as { i?: number }).i === 3, 5000);
  t.same(client.frames.filter((f) => f.type === 'broadcast').map((f) => (f.data as { i: number }).i), [1, 2, 3], 'the unconfirmed one was stored and delivered after all, in order: a retry would deliver it twice');
  t.same(client.offsets('broadcast'), [1, 2, 3]);
});

void t.test('a retried client_message_id reaches the engine once, whichever worker the retry lands on', async (t) => {
  const { eng, c } = await engineCluster(t);
  eng.state.delayMs = 300;
  const tabs = Array.from({ length: 6 }, () => new V2Client(`ws://127.0.0.1:${c.port}`, 'cm', widgetToken('cm'), 'cm-session'));
  await Promise.all(tabs.map((x) => x.connect()));
  // The same message sent from six sockets of one session (both workers) at once, as retries would be.
  for (const x of tabs) x.send({ type: 'user_message', content: 'just once', client_message_id: 'q-1' });
  for (const x of tabs) await x.next((f) => f.type === 'ai_response', 5000);
  t.equal(eng.state.requests, 1, 'the engine was asked once');
  t.ok(tabs.every((x) => x.frames.filter((f) => f.type === 'ai_response').length === 1), 'each socket got the answer once');
  tabs.forEach((x) => x.stop());
});

void t.test('streamed answers on the real cluster: resumed on the other worker mid-answer, whole once, engine asked once', async (t) => {
  const { eng, c } = await engineCluster(t);
  eng.state.pieces = Array.from({ length: 40 }, (_, i) => `word${i} `);
  eng.state.gapMs = 40;
  const client = new V2Client(`ws://127.0.0.1:${c.port}`, 'sm', widgetToken('sm'), 'sm-session');
  await client.connect();
  const first = await workerOf(c);
  client.send({ type: 'user_message', content: 'tell me everything' });
  await client.next((f) => f.type === 'ai_response_chunk' && (f.delta as string).includes('word2'));
  let other = first;
  let from = 0;
  for (let i = 0; i < 30 && other === first; i++) {
    client.cut();
    await until(async () => [...(await perWorker(c)).values()].every((n) => n === 0), 3000, 'no socket left');
    from = client.frames.length;
    await client.connect();
    other = await workerOf(c);
  }
  t.not(other, first, 'resumed on the other worker');
  const final = await client.next((f) => f.type === 'ai_response', 10_000, from);
  const chunks = client.frames.slice(from).filter((f) => f.type === 'ai_response_chunk');
  t.equal(chunks[0]?.index, 0, 'the first chunk after the reconnect is the text so far');
  t.equal(chunks.map((x) => x.delta).join(''), final.content, 'then the rest live: the deltas add up to the final content');
  t.equal(final.content, eng.state.pieces.join(''));
  t.equal(client.frames.filter((f) => f.type === 'ai_response').length, 1, 'the final answer once');
  t.equal(eng.state.requests, 1, 'the engine was asked once');
  client.stop();
});

void t.test('two tabs of one session on the two workers: the other tab gets every piece as it comes; answers asked in either tab take one order', async (t) => {
  const { eng, c } = await engineCluster(t);
  eng.state.pieces = Array.from({ length: 12 }, (_, i) => `p${i} `);
  eng.state.gapMs = 60;
  const asker = new V2Client(`ws://127.0.0.1:${c.port}`, 'tabs', widgetToken('tabs'), 'tabs-session');
  await asker.connect();
  const first = await workerOf(c);
  // The second tab, reconnected until it lands on the other worker (SO_REUSEPORT picks).
  const tab = new V2Client(`ws://127.0.0.1:${c.port}`, 'tabs', widgetToken('tabs'), 'tabs-session');
  let apart = false;
  for (let i = 0; i < 30 && !apart; i++) {
    if (i > 0) {
      tab.cut();
      await until(async () => [...(await perWorker(c)).values()].reduce((a, b) => a + b, 0) === 1, 3000, 'the tab gone');
    }
    await tab.connect();
    const w = await until(async () => {
      const m = await perWorker(c);
      return [...m.values()].reduce((a, b) => a + b, 0) === 2 ? m : undefined;
    }, 3000, 'both tabs counted');
    apart = w!.get(first) === 1;
  }
  t.ok(apart, 'the tabs are on different workers');
  const from = tab.frames.length;
  asker.send({ type: 'user_message', content: 'two tabs' });
  const final = await tab.next((f) => f.type === 'ai_response', 10_000, from);
  const chunks = tab.frames.slice(from).filter((f) => f.type === 'ai_response_chunk');
  // Held pieces would come merged, every 250 ms: 3 or 4 chunks for 12 pieces 60 ms apart.
  t.ok(chunks.length >= 9, `the other tab got ${chunks.length} chunks for 12 pieces 60 ms apart: as they came, not held`);
  t.equal(chunks.map((x) => x.delta).join(''), final.content, 'adding up to the final content');

  // The tabs ask in turn, three times each: one worker numbers the session
  // (the first to follow it), the other's answers are forwarded to it, and
  // the holder's own answers after those take the offsets after theirs.
  eng.state.pieces = undefined;
  const answers = (x: V2Client) => x.frames.filter((f) => f.type === 'ai_response');
  for (let i = 0; i < 3; i++) {
    for (const [x, name] of [[asker, 'asker'], [tab, 'tab']] as const) {
      x.send({ type: 'user_message', content: `${name} ${i}` });
      await until(() => answers(asker).length === answers(tab).length && answers(tab).at(-1)?.content === `re: ${name} ${i}`, 5000, `both tabs to get ${name} ${i}`);
    }
  }
  const seen = (x: V2Client) => answers(x).map((f) => `${f.offset} ${f.content}`);
  t.same(seen(asker), seen(tab), 'both tabs hold the same answers at the same offsets');
  t.same(answers(tab).map((f) => f.offset), [1, 2, 3, 4, 5, 6, 7], 'offsets 1..7, each once, in order');
  t.equal(tab.frames.filter((f) => f.type === 'continuity_lost').length, 0, 'nothing lost');
  asker.stop();
  tab.stop();
});

void t.test('a slow reader under a fast engine (4 MB/s): chunks merged, the worker\'s memory as with a fast reader, content intact', async (t) => {
  const { eng, c } = await engineCluster(t, { WORKERS: '1', AI_ENGINE_MAX_RESPONSE_BYTES: String(32 << 20) });
  // 12 MB, more than the kernel's socket buffers hide, a piece every millisecond or so. Not
  // "as fast as the engine can": on a loaded box the gateway then read the whole answer in a
  // few event-loop turns, sent it as a few big chunks before the socket was full, and had
  // nothing left to merge (a CI run failed 'chunks were merged' that way).
  eng.state.pieces = Array.from({ length: 3000 }, (_, i) => `${String(i).padStart(6, '0')}-${'z'.repeat(3992)} `);
  eng.state.gapMs = 1;
  const [pid] = c.workerPids();
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
  /** One streamed answer to a reader that reads (or does not read until the engine has sent it all): the worker's peak growth and what the reader got. */
  const run = async (session: string, pause: boolean) => {
    const client = new V2Client(`ws://127.0.0.1:${c.port}`, 'fast', widgetToken('fast'), session);
    await client.connect();
    const rss0 = rss();
    if (pause) client.ws.pause();
    const streamed = eng.state.streamed;
    client.send({ type: 'user_message', content: 'everything, fast' });
    let peak = 0;
    const sample = setInterval(() => (peak = Math.max(peak, rss() - rss0)), 50);
    if (pause) {
      // Not reading until the whole answer has passed through the gateway (a fixed pause was shorter than a slow run's stream).
      await until(() => eng.state.streamed > streamed, 30_000, 'the engine to send the whole answer');
      await sleep(300);
      client.ws.resume();
    }
    let final = await client.next((f) => f.type === 'ai_response', 15_000).catch(() => undefined);
    const chunks = client.frames.filter((f) => f.type === 'ai_response_chunk');
    let closed: object | undefined;
    if (final === undefined) {
      // The 12 MB final frame found the socket still full: 4009, and the resume brings it from the history.
      closed = client.closes.at(-1);
      const from = client.frames.length;
      await client.connect();
      final = await client.next((f) => f.type === 'ai_response', 15_000, from);
    }
    clearInterval(sample);
    client.stop();
    return { peak, chunks, final, closed };
  };
  t.teardown(() => { if (t.counts.fail) t.comment(c.output().slice(-2500)); });
  const fast = await run('fast-reader', false);
  const slow = await run('slow-reader', true);
  if (slow.closed) t.same(slow.closed, { code: 4009, reason: 'Slow consumer' }, 'only the final answer closed the still-full socket (4009), and a resume brought it');
  const m = await fetch(`http://127.0.0.1:${c.port}/metrics`).then((r) => r.text());
  t.match(m, /gateway_stream_chunks_merged_total [1-9]/, 'chunks were merged');
  t.ok(slow.chunks.length < 3000, `${slow.chunks.length} chunks to the slow reader for 3,000 pieces (${fast.chunks.length} to the fast one: pieces arriving in one event-loop turn are one chunk)`);
  for (const { chunks, final } of [fast, slow]) {
    let at = 0;
    for (const x of chunks) {
      if (x.index !== at) t.fail(`a chunk at ${x.index}, expected ${at}`);
      at += (x.delta as string).length;
    }
    t.equal((final.content as string).length, 3000 * 4000, 'the final answer is whole');
    t.ok((final.content as string).startsWith(chunks.map((x) => x.delta).join('')), 'the chunks are its beginning: nothing dropped or doubled');
  }
  t.ok(slow.peak < fast.peak + 48, `the worker grew at most ${slow.peak.toFixed(0)} MiB with a reader that did not read, ${fast.peak.toFixed(0)} MiB with one that did`);
});

void t.test('Redis mode, two hosts: kill -9 of a whole host; its clients resume on the other host without a gap', async (t) => {
  const redis = await startRedis();
  const prefix = `nl${randomBytes(3).toString('hex')}:`;
  const env = { REDIS_URL: redis.url, REDIS_PREFIX: prefix, REGISTRY_LEASE_S: '3' };
  const A = await startCluster(env);
  const B = await startCluster(env);
  let alive = [A.port, B.port];
  t.teardown(async () => {
    await A.stop('SIGKILL');
    await B.stop('SIGKILL');
    await redis.stop();
  });
  // Clients spread over both hosts; when one dies, a client reconnects to the other (as a balancer would send it).
  const clients = Array.from({ length: 20 }, (_, i) => new V2Client(`ws://127.0.0.1:${i % 2 ? A.port : B.port}`, 'hosts', widgetToken('hosts')));
  await Promise.all(clients.map((x) => x.connect()));
  clients.forEach((x) => x.keepConnected());
  const publishing = publish(() => alive, 'hosts', 2000, 500);
  await sleep(1500);
  await B.killHost();
  alive = [A.port];
  for (const x of clients) (x as unknown as { base: string }).base = `ws://127.0.0.1:${A.port}`;
  await publishing;
  await allHoldEverything(t, clients, 2000);

  await t.test('a streamed answer resumed on the other host', async (t) => {
    const eng = await engineServer();
    t.teardown(() => eng.close());
    const C = await startCluster({ ...env, AI_ENGINE_URL: eng.url });
    t.teardown(() => C.stop('SIGKILL'));
    eng.state.pieces = Array.from({ length: 40 }, (_, i) => `w${i} `);
    eng.state.gapMs = 40;
    const client = new V2Client(`ws://127.0.0.1:${C.port}`, 'xh', widgetToken('xh'), 'xh-session');
    await client.connect();
    client.send({ type: 'user_message', content: 'across hosts' });
    await client.next((f) => f.type === 'ai_response_chunk' && (f.delta as string).includes('w2'));
    client.cut();
    (client as unknown as { base: string }).base = `ws://127.0.0.1:${A.port}`;
    const from = client.frames.length;
    await client.connect();
    const final = await client.next((f) => f.type === 'ai_response', 10_000, from);
    const chunks = client.frames.slice(from).filter((f) => f.type === 'ai_response_chunk');
    t.equal(chunks[0]?.index, 0, 'the text so far first');
    t.equal(chunks.map((x) => x.delta).join(''), final.content, 'then the rest: it adds up');
    t.equal(eng.state.requests, 1, 'the engine was asked once');
    client.stop();
  });

  await t.test('Redis restarted empty: a new epoch, told as continuity_lost', async (t) => {
    const x = new V2Client(`ws://127.0.0.1:${A.port}`, 'hosts', widgetToken('hosts'));
    await x.connect();
    const epoch = x.broadcast!.epoch;
    await redis.kill();
    await redis.restart();
    await until(async () => (await A.get('/readyz')).status === 200, 15_000, 'ready again');
    await until(async () => (await fetch(`http://127.0.0.1:${A.port}/api/v1/creators/hosts/broadcast`, { method: 'POST', headers: { authorization: `Bearer ${serviceToken()}` }, body: '{"after":1}' })).status === 202, 10_000, 'a broadcast accepted');
    const lost = await x.next((f) => f.type === 'continuity_lost', 10_000);
    t.equal(lost.stream, 'broadcast');
    t.not(lost.epoch, epoch, 'a new epoch');
    const after = await x.next((f) => f.type === 'broadcast' && (f.data as { after?: number }).after === 1, 5000);
    t.equal(after.offset, 1, 'offsets start again at 1 in the new epoch');
    x.stop();
    clients.forEach((c) => c.stop());
  });
});
