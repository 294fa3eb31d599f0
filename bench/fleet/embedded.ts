import { LocalKeys } from '../../functions/adapters/embedded/local-keys.js';
import { MemorySignal } from '../../functions/adapters/embedded/memory-signal.js';
import { noCredentials, SignalWorkHints } from '../../functions/adapters/embedded/signal-work-hints.js';
import { openDatabase } from '../../functions/adapters/embedded/sqlite.js';
import { SqliteQueue } from '../../functions/adapters/embedded/sqlite-queue.js';
import { SqliteStore } from '../../functions/adapters/embedded/sqlite-store.js';
import {
  type ControlPlane,
  type ControlPlaneSettings,
  createControlPlane,
  defaultSettings,
} from '../../functions/control-plane.js';
import { createApp } from '../../functions/http/app.js';
import type { Clock } from '../../functions/ports/clock.js';
import type { Store } from '../../functions/ports/store.js';
import { queueDefinitions } from '../../functions/workers/queues.js';
import { type NodeKeyPair, signRequest } from '../../protocol/index.js';

/** What the store was asked, by method, and how many items its queries returned. */
export interface StoreCounts {
  calls: Record<string, number>;
  itemsRead: number;
}

/**
 * The store as the control plane sees it, counting every call it makes (whatever the port's
 * methods are called) and the items queries hand back. Calls the store makes on itself are not
 * counted: only what crosses the port, which is what a networked store (DynamoDB) bills.
 */
export function countingStore(store: Store): { store: Store; counts: StoreCounts; reset(): void } {
  const counts: StoreCounts = { calls: {}, itemsRead: 0 };
  const proxy = new Proxy(store, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver);
      if (typeof value !== 'function' || typeof name !== 'string') return value;
      return (...args: unknown[]) => {
        counts.calls[name] = (counts.calls[name] ?? 0) + 1;
        const result = (value as (...a: unknown[]) => unknown).apply(target, args);
        if (result instanceof Promise) {
          return result.then((r: unknown) => {
            const items = (r as { items?: unknown[] } | undefined)?.items;
            if (Array.isArray(items)) counts.itemsRead += items.length;
            return r;
          });
        }
        return result;
      };
    },
  });
  return {
    store: proxy,
    counts,
    reset() {
      counts.calls = {};
      counts.itemsRead = 0;
    },
  };
}

export const totalCalls = (c: StoreCounts): number => Object.values(c.calls).reduce((a, b) => a + b, 0);

/** Rate limits and quotas off: a bench drives far more requests per node and tenant than the defaults admit. */
const unlimited = { limit: 0, windowSeconds: 60 };

/**
 * The embedded control plane in this process: in-memory SQLite (store and queues), the real
 * domain and the real HTTP app, called in-process (`app.request`: the whole request pipeline,
 * signature checks included, without sockets). Open enrollment, every region, no rate limits or
 * quotas; the rest is the deployment's defaults unless `settings` says otherwise.
 */
export function embeddedControlPlane(clock: Clock, settings: Partial<ControlPlaneSettings> = {}) {
  const db = openDatabase(':memory:');
  const counting = countingStore(new SqliteStore(db, clock));
  const queue = new SqliteQueue(db, queueDefinitions, clock);
  const cp: ControlPlane = createControlPlane(
    {
      store: counting.store,
      queue,
      keys: LocalKeys.inMemory(),
      clock,
      signal: new MemorySignal(),
      hints: new SignalWorkHints(),
      credentials: noCredentials,
      log: () => {},
    },
    defaultSettings(clock.now(), {
      bootedAt: 0,
      enrollment: 'open',
      regions: '*',
      hintRedriveMs: Number.POSITIVE_INFINITY,
      rateLimits: {
        address: unlimited,
        key: unlimited,
        node: unlimited,
        register: unlimited,
        registerGlobal: unlimited,
      },
      quotas: { maxOpenTasks: 0, gpuHoursPerDay: 0 },
      ...settings,
    }),
  );
  const app = createApp({ cp, log: () => {} });
  const admin = cp.apiKeys.mint({ tenant: 'default', scopes: ['admin', 'submit', 'read'], name: 'bench' });
  const ready = counting.store.transact([admin.write]);
  const lastDate = new Map<string, number>();

  /** An application request with the admin key. */
  const api = async (method: string, path: string, body?: unknown): Promise<Response> => {
    await ready;
    return app.request(`http://gpuai.bench${path}`, {
      method,
      headers: {
        authorization: `Bearer ${admin.created.key}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  };

  /** A request signed by a node, as its agent signs it (dates strictly increasing per node). */
  const signed = async (key: NodeKeyPair, nodeId: string, method: string, path: string, body?: unknown) => {
    const text = body === undefined ? '' : JSON.stringify(body);
    const date = Math.max(clock.now(), (lastDate.get(nodeId) ?? 0) + 1);
    lastDate.set(nodeId, date);
    return app.request(`http://gpuai.bench${path}`, {
      method,
      headers: {
        ...signRequest(key, nodeId, { method, pathWithQuery: path, body: text }, date),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: text }),
    });
  };

  return {
    cp,
    app,
    db,
    store: counting.store,
    counts: counting.counts,
    resetCounts: counting.reset,
    queue,
    api,
    signed,
    /** Closes the queue, which closes the database. */
    close: () => queue.close(),
  };
}

export type EmbeddedControlPlane = ReturnType<typeof embeddedControlPlane>;
