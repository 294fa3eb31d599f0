/**
 * The server side of bench:dispatch, run in its own process so that its CPU time (and, with
 * `--profile`, its CPU profile) is the server's alone, apart from the simulated agents.
 *
 * Serves one of two things on loopback, both on @hono/node-server behind embedded/http-listener.ts:
 * - `BENCH_ROLE=control-plane`: the real embedded control plane (embedded/control-plane-server.ts:
 *   SQLite in a temp data dir, queue workers, reaper, Host check), with open enrollment and the
 *   per-node, per-key and registration rate limits off (the bench's agents are far past what one
 *   real node sends), or, with `--count-limits`, the per-node and per-key ones counting at a limit
 *   never reached;
 * - `BENCH_ROLE=bare`: a bare hono route (`GET /bare`), the HTTP stack's own limit to compare the
 *   control plane with. In a process of its own, so that the CPU time measured per bare request is
 *   the route's alone, not the route's plus the control plane's background work (queue workers,
 *   reaper), which would make every bare request look dearer and the control plane's fraction better.
 *
 * Talks to the parent over IPC: sends `{ ready, url, adminKey }`, answers `cpu` with its
 * process.cpuUsage() (every thread of the process: the event loop, GC, SQLite and crypto) and store
 * counts, profiles its CPU between `profile` and `profiled` (written to the file named), and on
 * `stop` shuts down and exits.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Hono } from 'hono';
import { startControlPlane } from '../../embedded/control-plane-server.js';
import { close, listen } from '../../embedded/http-listener.js';
import { SqliteQueue } from '../../functions/adapters/embedded/sqlite-queue.js';
import { SqliteStore } from '../../functions/adapters/embedded/sqlite-store.js';
import { defaultRateLimits } from '../../functions/domain/security/rate-limit.js';
import type { Write } from '../../functions/ports/store.js';

export type ServerMessage =
  | { ready: true; url: string; adminKey: string }
  | { cpu: { user: number; system: number }; store: StoreCounts }
  | { profiled: string }
  | { stopped: true };
export type ParentMessage = { cmd: 'cpu' } | { cmd: 'profile' } | { cmd: 'profiled'; file: string } | { cmd: 'stop' };

/** What the control plane asked of its store and queue so far: counts that machine load does not blur. */
export interface StoreCounts {
  get: number;
  query: number;
  transact: number;
  /**
   * Items written (put, delete, add; not condition checks), by the key's kind: its pk and sk up to
   * their first '#' (`JOB/TASK`, `NONCE/NONCE`), and the write's kind where it is not a put.
   */
  writes: Record<string, number>;
  queueSend: number;
  /** Messages received (not receive calls: a long poll that times out receives none). */
  queueReceived: number;
  queueDelete: number;
}

const counts: StoreCounts = {
  get: 0,
  query: 0,
  transact: 0,
  writes: {},
  queueSend: 0,
  queueReceived: 0,
  queueDelete: 0,
};

/** A key up to its first '#': what the counts group writes by (cheap: the counting is in the CPU measured). */
function head(key: string): string {
  const end = key.indexOf('#');
  return end === -1 ? key : key.slice(0, end);
}

/**
 * Counts every store and queue call of this process by wrapping the embedded adapters' methods:
 * instrumentation only, each call still goes to the real SQLite store or queue.
 */
function countStoreCalls(): void {
  const store = SqliteStore.prototype;
  const { get, query, transact } = store;
  store.get = function (this: SqliteStore, ...args: Parameters<typeof get>) {
    counts.get++;
    return get.apply(this, args);
  } as typeof get;
  store.query = function (this: SqliteStore, ...args: Parameters<typeof query>) {
    counts.query++;
    return query.apply(this, args);
  } as typeof query;
  store.transact = function (this: SqliteStore, writes: readonly Write[]) {
    counts.transact++;
    for (const write of writes) {
      if (write.kind === 'check') continue;
      const kind = `${head(write.key.pk)}/${head(write.key.sk)}${write.kind === 'put' ? '' : `:${write.kind}`}`;
      counts.writes[kind] = (counts.writes[kind] ?? 0) + 1;
    }
    return transact.call(this, writes);
  };
  const queue = SqliteQueue.prototype;
  const { send, receive, delete: remove } = queue;
  queue.send = function (this: SqliteQueue, ...args: Parameters<typeof send>) {
    counts.queueSend++;
    return send.apply(this, args);
  };
  queue.receive = async function (this: SqliteQueue, ...args: Parameters<typeof receive>) {
    const messages = await receive.apply(this, args);
    counts.queueReceived += messages.length;
    return messages;
  };
  queue.delete = function (this: SqliteQueue, ...args: Parameters<typeof remove>) {
    counts.queueDelete++;
    return remove.apply(this, args);
  };
}

/**
 * The V8 CPU profiler of this process, started and stopped around one phase of the bench, so that
 * the profile holds that phase only (not start-up, not the bare route's phase).
 */
function profiler() {
  const session = new Session();
  session.connect();
  const post = (method: string, params?: object) =>
    new Promise<unknown>((resolve, reject) =>
      session.post(method, params, (error, result) => (error ? reject(error) : resolve(result))),
    );
  return {
    async start() {
      await post('Profiler.enable');
      await post('Profiler.setSamplingInterval', { interval: 200 });
      await post('Profiler.start');
    },
    async stop(file: string) {
      const { profile } = (await post('Profiler.stop')) as { profile: unknown };
      writeFileSync(file, JSON.stringify(profile));
    },
  };
}

const off = { limit: 0, windowSeconds: 60 };
/** `BENCH_COUNT_LIMITS=1`: the per-node and per-key scopes count every request, at a limit never reached. */
const counted = { limit: 1_000_000_000, windowSeconds: 60 };

async function main(): Promise<void> {
  const send = (message: ServerMessage) => process.send?.(message);
  const served = process.env.BENCH_ROLE === 'bare' ? await serveBare() : await serveControlPlane();
  const profile = profiler();
  process.on('message', (message: ParentMessage) => {
    if (message.cmd === 'cpu') send({ cpu: process.cpuUsage(), store: structuredClone(counts) });
    if (message.cmd === 'profile') void profile.start();
    if (message.cmd === 'profiled') void profile.stop(message.file).then(() => send({ profiled: message.file }));
    if (message.cmd === 'stop') {
      void (async () => {
        await served.stop();
        send({ stopped: true });
        process.exit(0);
      })();
    }
  });
  // An orphan (the bench was killed) must not keep serving.
  process.on('disconnect', () => process.exit(0));
  send({ ready: true, url: served.url, adminKey: served.adminKey });
}

interface Served {
  url: string;
  adminKey: string;
  stop(): Promise<void>;
}

/** The bare route on the same listener the control plane uses, and nothing else in this process. */
async function serveBare(): Promise<Served> {
  const bare = new Hono().get('/bare', (c) => c.json({ ok: true }));
  const bareServer = await listen('127.0.0.1', 0);
  bareServer.ready(bare.fetch);
  const port = (bareServer.server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${port}/bare`, adminKey: '', stop: () => close(bareServer.server) };
}

async function serveControlPlane(): Promise<Served> {
  countStoreCalls();
  const dataDir = mkdtempSync(join(tmpdir(), 'gpuai-bench-dispatch-'));
  const reaperIntervalMs = Number(process.env.BENCH_REAPER_MS ?? 1000);
  const cp = await startControlPlane({
    port: 0,
    host: '127.0.0.1',
    dataDir,
    reaperIntervalMs,
    settings: {
      enrollment: 'open',
      rateLimits: {
        ...defaultRateLimits,
        ...(process.env.BENCH_COUNT_LIMITS === '1' ? { key: counted, node: counted } : { key: off, node: off }),
        register: off,
        registerGlobal: off,
      },
    },
    log: () => undefined,
  });
  const adminKey = readFileSync(join(dataDir, 'admin-key'), 'utf8').trim();
  return {
    url: cp.url,
    adminKey,
    async stop() {
      await cp.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
