import { mkdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { getConnInfo } from '@hono/node-server/conninfo';
import { LocalKeys } from '../functions/adapters/embedded/local-keys.js';
import { MemorySignal } from '../functions/adapters/embedded/memory-signal.js';
import { noCredentials, SignalWorkHints } from '../functions/adapters/embedded/signal-work-hints.js';
import { openDatabase } from '../functions/adapters/embedded/sqlite.js';
import { SqliteQueue } from '../functions/adapters/embedded/sqlite-queue.js';
import { SqliteStore } from '../functions/adapters/embedded/sqlite-store.js';
import {
  type ControlPlane,
  type ControlPlaneSettings,
  createControlPlane,
  defaultSettings,
} from '../functions/control-plane.js';
import type { JoinTokens } from '../functions/domain/resource/join-tokens.js';
import { queueNames } from '../functions/domain/scheduling/messages.js';
import { createApp } from '../functions/http/app.js';
import { systemClock } from '../functions/ports/clock.js';
import { queueDefinitions } from '../functions/workers/queues.js';
import { ensureAdminKey } from './admin-key.js';
import { type DataDirLock, lockDataDir } from './data-dir-lock.js';
import { allowedHosts, guardHost } from './host-check.js';
import { close, listen } from './http-listener.js';
import type { Log } from './log.js';
import { startQueueWorkers } from './queue-workers.js';

export interface ControlPlaneServerOptions {
  port: number;
  host: string;
  dataDir: string;
  settings?: Partial<ControlPlaneSettings>;
  reaperIntervalMs: number;
  log: Log;
  /**
   * Host header values answered besides this machine's own names (`GPUAI_ALLOWED_HOSTS`); bound to
   * loopback, any other Host is refused with 421 (embedded/host-check.ts).
   */
  allowedHosts?: readonly string[];
  /**
   * Leave loopback peers out of the per-address rate limits (`address`, `register`); default true.
   * Tests turn it off to exercise socket-address counting from this machine.
   */
  exemptLoopback?: boolean;
}

/**
 * Whether a socket peer address is this machine: 127.0.0.0/8, `::1`, or IPv4-mapped loopback
 * (`::ffff:127.x.y.z`, which a dual-stack socket reports for IPv4 peers).
 */
export function isLoopbackPeer(address: string): boolean {
  const a = address.toLowerCase();
  const v4 = a.startsWith('::ffff:') ? a.slice('::ffff:'.length) : a;
  if (/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4)) return true;
  return a === '::1' || /^(0{1,4}:){7}0{0,3}1$/.test(a);
}

export interface RunningControlPlane {
  url: string;
  /** Join tokens, for the launcher's own agent to enroll with. */
  joinTokens: JoinTokens;
  stop(): Promise<void>;
}

/** Runs the reaper every `intervalMs`, one tick at a time; the stop function waits for a tick under way. */
function startReaper(cp: ControlPlane, store: SqliteStore, intervalMs: number, log: Log): () => Promise<void> {
  let reaping = Promise.resolve();
  let ticks = 0;
  const timer = setInterval(() => {
    reaping = reaping.then(async () => {
      try {
        // Expired idempotency records and nonces are invisible already; this reclaims their rows.
        if (++ticks % 600 === 0) store.deleteExpired();
        const report = await cp.reaper.tick();
        if (report.leasesExpired + report.deadlinesEnforced > 0) log({ msg: 'reaper', ...report });
      } catch (error) {
        log({ level: 'error', msg: 'reaper failed', error: String(error) });
      }
    });
  }, intervalMs);
  return () => {
    clearInterval(timer);
    return reaping;
  };
}

/**
 * The embedded composition root: SQLite store and queue in `<dataDir>/gpuai.db`, local keys,
 * in-process wake-ups, the hono app on node's HTTP server, the queue workers and the reaper.
 *
 * The order is what a failed start leaves behind: the port is bound first, so a port someone else
 * holds fails before the data dir is touched; then the data dir is locked (data-dir-lock.ts), so a
 * second control plane on it fails before opening its database. A start that fails half-way
 * closes what it opened, so the process can exit.
 */
export async function startControlPlane(options: ControlPlaneServerOptions): Promise<RunningControlPlane> {
  const { log } = options;
  const { server, ready } = await listen(options.host, options.port);
  let lock: DataDirLock | undefined;
  let store: SqliteStore | undefined;
  let queue: SqliteQueue | undefined;
  let stopWorkers: (() => Promise<void>) | undefined;
  let stopReaper: (() => Promise<void>) | undefined;
  const stop = async () => {
    const reaped = stopReaper?.();
    await close(server);
    await stopWorkers?.();
    await reaped;
    await queue?.close();
    await store?.close();
    lock?.release();
  };

  try {
    mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
    lock = lockDataDir(options.dataDir);
    const db = openDatabase(join(options.dataDir, 'gpuai.db'));
    store = new SqliteStore(db);
    queue = new SqliteQueue(db, queueDefinitions);
    const keys = LocalKeys.open(options.dataDir);
    const signal = new MemorySignal();
    const cp = createControlPlane(
      { store, queue, keys, clock: systemClock, signal, hints: new SignalWorkHints(), credentials: noCredentials, log },
      // Long polls are woken by the signal; hints carry nothing here, so there is nothing to re-drive.
      // The data-dir lock makes this process the store's only writer (exclusiveStore): presence writes
      // and rate-limit counters need no read of the store first.
      defaultSettings(systemClock.now(), {
        hintRedriveMs: Number.POSITIVE_INFINITY,
        exclusiveStore: true,
        ...options.settings,
      }),
    );
    // The CLI on this machine finds this key by default, so the quickstart needs no setup.
    await ensureAdminKey(cp.apiKeys, options.dataDir, log);
    // The socket's peer: the address rate limits count per. Never X-Forwarded-For, which the client writes.
    // Loopback peers are not counted per address: the local agent, other agents on this host and the
    // CLI all share 127.0.0.1, so a burst from any one of them (or an unauthenticated flood from a
    // local process) would lock the agents out and fail their running tasks for want of heartbeats.
    // Nothing is given away: a process on this machine can read the data dir (the admin key, the
    // database) anyway, and the Host check (host-check.ts) stops web pages in a local browser from
    // borrowing the loopback address. The per-key, per-node and registerGlobal limits still apply.
    const exemptLoopback = options.exemptLoopback ?? true;
    const sourceAddress = (c: Parameters<typeof getConnInfo>[0]): string | undefined => {
      const address = getConnInfo(c).remote.address;
      return address !== undefined && exemptLoopback && isLoopbackPeer(address) ? undefined : address;
    };
    const app = createApp({ cp, log, sourceAddress });

    stopWorkers = startQueueWorkers(cp, queue, Object.values(queueNames), log);
    stopReaper = startReaper(cp, store, options.reaperIntervalMs, log);

    // The Host check needs the port the server got (0 asks for any).
    const { port } = server.address() as AddressInfo;
    ready(guardHost(allowedHosts(options.host, port, options.allowedHosts), app.fetch));
    const url = `http://${options.host.includes(':') ? `[${options.host}]` : options.host}:${port}`;
    return { url, joinTokens: cp.joinTokens, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
