import { queueNames } from '../../functions/domain/scheduling/messages.js';
import { generateFleet } from '../shared/index.js';
import { type EmbeddedControlPlane, embeddedControlPlane, totalCalls } from './embedded.js';
import { type BenchNode, queueTasks, registerFleet } from './populate.js';

/** The cost of one kind of request, per request. */
export interface OpCost {
  /** CPU time of this process (user + system) per request, µs: the control plane's whole work. */
  cpuUs: number;
  wallUs: number;
  /** Calls across the store port per request (get, query, transact, ...). */
  storeCalls: number;
  /** Items the store's queries returned per request. */
  itemsRead: number;
  /** Requests answered as expected (2xx), of those measured. */
  ok: number;
  requests: number;
}

export interface SizeResult {
  nodes: number;
  tasks: number;
  populateMs: number;
  /** Resident set and JS heap after populating, MiB (the in-memory SQLite database is in the RSS). */
  rssMiB: number;
  heapMiB: number;
  ops: Record<'heartbeat' | 'poll' | 'submit' | 'list' | 'reaperTick', OpCost>;
  /** Polls that got a task, of the measured polls. */
  pollHits: number;
}

export interface SizeOptions {
  nodes: number;
  tasks: number;
  /** Requests measured per kind (after a warm-up), fewer where a kind takes over 20 s. */
  ops: number;
  seed: number;
}

/** Requests sent per kind: each a real request through the HTTP app. */
type Op = (i: number) => Promise<boolean>;

/** Requests sent before measuring, to warm caches and the JIT. */
export const warmupOf = (ops: number) => Math.max(30, Math.floor(ops / 4));

/** A kind of request stops after this long (at least 5 measured): where a request takes seconds, a few tell. */
const budgetMs = 20_000;

async function measure(ecp: EmbeddedControlPlane, ops: number, op: Op): Promise<OpCost> {
  const warmup = Math.min(warmupOf(ops), ops);
  const warmStart = performance.now();
  for (let i = 0; i < warmup && performance.now() - warmStart < budgetMs / 4; i++) await op(i);
  ecp.resetCounts();
  const cpu = process.cpuUsage();
  const start = performance.now();
  let ok = 0;
  let done = 0;
  for (let i = warmup; i < warmup + ops; i++) {
    if (await op(i)) ok++;
    done++;
    if (done >= 5 && performance.now() - start > budgetMs) break;
  }
  const wallUs = ((performance.now() - start) * 1000) / done;
  const used = process.cpuUsage(cpu);
  return {
    cpuUs: Math.round((used.user + used.system) / done),
    wallUs: Math.round(wallUs),
    storeCalls: round2(totalCalls(ecp.counts) / done),
    itemsRead: round2(ecp.counts.itemsRead / done),
    ok,
    requests: done,
  };
}

const round2 = (n: number) => Math.round(n * 100) / 100;

/** Hands the schedule queue's messages to the scheduler, as its worker does (routing the new tasks). */
async function route(ecp: EmbeddedControlPlane): Promise<void> {
  for (const m of await ecp.queue.receive(queueNames.schedule, { maxMessages: 10 })) {
    await ecp.cp.scheduler.schedule(JSON.parse(m.body));
    await ecp.queue.delete(queueNames.schedule, m.receiptHandle);
  }
}

/**
 * One fleet size in this process: a fresh embedded control plane with `nodes` registered live
 * nodes (shapes from bench/shared's fleet) and `tasks` queued tasks, then `ops` requests of each
 * kind, each timed in CPU and counted at the store port.
 */
export async function measureSize(options: SizeOptions): Promise<SizeResult> {
  const clock = { now: () => Date.now() };
  // Every registered node stays live for the whole run: the bench is about a live fleet this size.
  const ecp = embeddedControlPlane(clock, { livenessMs: 24 * 3600_000 });
  try {
    const started = performance.now();
    const fleet = generateFleet({ nodes: options.nodes, seed: options.seed });
    // The nodes that send the measured requests: enough that no node sends two of a kind.
    const senders = Math.min(options.nodes, 2 * options.ops);
    const { kept, pools } = await registerFleet(
      ecp,
      fleet.map((n) => n.inventory),
      senders,
    );
    await queueTasks(ecp, pools, options.tasks, clock.now());
    const populateMs = Math.round(performance.now() - started);
    (globalThis as { gc?: () => void }).gc?.();
    const memory = process.memoryUsage();
    const node = (i: number) => kept[i % kept.length] as BenchNode;

    const heartbeat = await measure(ecp, options.ops, async (i) => {
      const n = node(i);
      const res = await ecp.signed(n.key, n.id, 'POST', `/v1/nodes/${n.id}/heartbeat`, { tasks: [] });
      return res.ok;
    });
    let hits = 0;
    const poll = await measure(ecp, options.ops, async (i) => {
      const n = node(i);
      const res = await ecp.signed(n.key, n.id, 'GET', `/v1/nodes/${n.id}/work?wait=0`);
      if (res.status === 200 && i >= Math.min(warmupOf(options.ops), options.ops)) hits++;
      return res.ok;
    });
    const submit = await measure(ecp, options.ops, async () => {
      const res = await ecp.api('POST', '/v1/jobs', {
        command: ['echo', 'ok'],
        resources: { gpus: { count: 0 } },
      });
      await route(ecp);
      return res.ok;
    });
    const list = await measure(ecp, options.ops, async () => (await ecp.api('GET', '/v1/jobs?limit=50')).ok);
    const reaperTick = await measure(ecp, Math.max(3, Math.floor(options.ops / 20)), async () => {
      await ecp.cp.reaper.tick();
      return true;
    });
    return {
      nodes: options.nodes,
      tasks: options.tasks,
      populateMs,
      rssMiB: Math.round(memory.rss / 2 ** 20),
      heapMiB: Math.round(memory.heapUsed / 2 ** 20),
      ops: { heartbeat, poll, submit, list, reaperTick },
      pollHits: hits,
    };
  } finally {
    await ecp.close();
  }
}
