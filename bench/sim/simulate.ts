import { openDatabase } from '../../functions/adapters/embedded/sqlite.js';
import { SqliteStore } from '../../functions/adapters/embedded/sqlite-store.js';
import { FleetIndex, type PlacementTask, tierOf } from '../../functions/domain/scheduling/placement/index.js';
import {
  claim,
  expireLease,
  markVerified,
  recordFailure,
  recordResult,
} from '../../functions/domain/scheduling/task-machine.js';
import { newTaskRecord, putTask, type TaskRecord } from '../../functions/domain/scheduling/task-record.js';
import type { Write } from '../../functions/ports/store.js';
import { resultHash } from '../../protocol/index.js';
import type { FleetNode } from '../shared/fleet.js';
import { hashUnit, seededRandom } from '../shared/random.js';
import { Calendar } from './calendar.js';
import { type Estimates, learningView } from './learner.js';
import { makePolicy, type PolicyName } from './policies.js';
import { classSpeed, type Workload, workloadSensitivity } from './workload.js';

/**
 * One policy's run of the discrete-event simulation. Time advances in ticks; in each tick the
 * simulator applies the events due (attempts finishing, nodes crashing or leaving mid-task, leases
 * running out, nodes coming back), submits the tasks that arrived, then runs one dispatch pass in
 * which the policy places waiting tasks on the production placement index (FleetIndex, whose
 * reserve is the production fit check).
 *
 * Every task's state lives in the real embedded store (SqliteStore on an in-memory SQLite
 * database) and moves only through the production task machine (claim, recordResult +
 * markVerified, recordFailure, expireLease), written with putTask as conditional puts on the
 * version last written: a transition that raced or skipped a state would fail its condition and
 * stop the run. Writes of a tick go in transactions of up to 100 (DynamoDB's limit), as a
 * dispatcher batching its claims would. At the end the store itself is audited: every task must
 * be verified or failed there, else it counts as lost.
 *
 * Failures are drawn per (task, attempt) from the seed, not from a shared stream, so that every
 * policy meets the same luck on the same task: a node's crash rate decides whether an attempt
 * on it dies mid-run (taking the node down with every attempt it runs), and churn (node
 * departures, half abrupt and half graceful) is drawn per node and epoch.
 */
export interface SimOptions {
  seed: number;
  /** Lease: how long after a node goes silent its attempts are requeued; default 30 s. */
  leaseMs?: number;
  /** Dispatch cycle, default 250 ms: events are applied and tasks placed once per tick. */
  tickMs?: number;
  maxAttempts?: number;
  /** Share of nodes leaving per hour, default 0.05. */
  churnPerHour?: number;
  /** Mean time a departed node stays away, default 30 min. */
  churnDowntimeMs?: number;
  /** Mean time a crashed node stays away, default 10 min. */
  crashDowntimeMs?: number;
  /** Writes per store transaction, at most 100. */
  batchWrites?: number;
  /** Most failed placement attempts per tick (a dispatcher's budget per cycle), default 512. */
  failBudget?: number;
  /** Which estimates placement learns with, default the production ones. */
  estimates?: Estimates;
  /** Told each time another tenth of the tasks has ended (a long run's sign of life). */
  progress?: (ended: number, simHours: number, cpuMs: number) => void;
}

export interface PolicyResult {
  policy: PolicyName;
  nodes: number;
  tasks: number;
  verified: number;
  failed: number;
  lost: number;
  failedPct: number;
  p50QueueMs: number;
  p99QueueMs: number;
  /**
   * The same delay without the nodes' round trips: time in the queue until claimed. At a light
   * load this is the dispatch cycle alone, and the round trip is most of the queueing delay.
   */
  p99WaitMs: number;
  /** Tasks that queued longer than 10 s in all: those that waited for capacity, not for a dispatch cycle. */
  longWaits: number;
  p50JctMs: number;
  p99JctMs: number;
  utilisationPct: number;
  attempts: number;
  /** Placement decisions asked of the policy, and those that found no node. */
  decisions: number;
  failedDecisions: number;
  /** Wall time spent in the policy's decisions, and its mean per decision (µs). */
  policyMs: number;
  decisionUs: number;
  crashes: number;
  departures: number;
  storeWrites: number;
  transactions: number;
  simHours: number;
  wallMs: number;
  /** CPU time of the run (user + system), less sensitive than wall time to a busy machine. */
  cpuMs: number;
  perf: string;
}

enum Ev {
  Finish = 1,
  Crash = 2,
  Expire = 3,
  Leave = 4,
  Join = 5,
}

const start = Date.UTC(2026, 0, 1);
const outputs = [{ name: 'out.bin', sha256: 'a'.repeat(64), bytes: 1 }];
const hash = resultHash(outputs);
const crockford = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** `job_` + the index in Crockford base32, padded to 26: a valid JobId, unique per index. */
export function simJobId(index: number): string {
  let text = '';
  let n = index;
  do {
    text = (crockford[n % 32] ?? '0') + text;
    n = Math.floor(n / 32);
  } while (n > 0);
  return `job_${text.padStart(26, '0')}`;
}

function percentile(values: Float64Array, p: number): number {
  if (values.length === 0) return 0;
  const sorted = values.slice().sort();
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number;
}

export async function simulate(
  policyName: PolicyName,
  fleet: readonly FleetNode[],
  work: Workload,
  options: SimOptions,
): Promise<PolicyResult> {
  const wallStart = performance.now();
  const cpuStart = process.cpuUsage();
  const seed = options.seed;
  const leaseMs = options.leaseMs ?? 30_000;
  const tickMs = options.tickMs ?? 250;
  const maxAttempts = options.maxAttempts ?? 3;
  const churnMeanMs = 3_600_000 / (options.churnPerHour ?? 0.05);
  const churnDowntimeMs = options.churnDowntimeMs ?? 1_800_000;
  const crashDowntimeMs = options.crashDowntimeMs ?? 600_000;
  const batchLimit = Math.min(100, options.batchWrites ?? 100);
  const failBudget = options.failBudget ?? 512;
  const random = seededRandom(seed ^ 0x90110c7);
  let now = start;
  const perf = learningView(options.estimates ?? 'production', () => now);
  const policy = makePolicy(policyName, perf, random);

  const db = openDatabase(':memory:');
  const store = new SqliteStore(db, { now: () => now });
  const index = new FleetIndex(perf);
  const calendar = new Calendar(tickMs);
  let tick = 0;
  const at = (time: number, kind: Ev, a: number, b: number) => calendar.add(time - start, tick + 1, kind, a, b);

  // Nodes.
  const N = fleet.length;
  const online = new Uint8Array(N);
  const epoch = new Int32Array(N);
  const running: number[][] = Array.from({ length: N }, () => []);
  const nodeIndex = new Map<string, number>(fleet.map((n, i) => [n.id, i]));
  let onlineGpus = 0;
  let usedGpus = 0;
  let departures = 0;
  let crashes = 0;
  /** Tick at which some node last had at least tier t's worth of GPUs freed. */
  const freedAt = new Float64Array(8).fill(0);
  const join = (n: number) => {
    const node = fleet[n] as FleetNode;
    online[n] = 1;
    onlineGpus += node.inventory.gpus.length;
    index.add({ id: node.id, inventory: node.inventory, trust: 1 });
    for (let t = 0; t <= tierOf(node.inventory.gpus.length); t++) freedAt[t] = tick;
    const leaveIn = hashUnit(seed, n, epoch[n] as number, 7);
    at(now + -Math.log(1 - leaveIn) * churnMeanMs, Ev.Leave, n, epoch[n] as number);
  };

  // Tasks.
  const T = work.count;
  const version = new Int32Array(T);
  const records: (TaskRecord | undefined)[] = new Array(T);
  const nodeOf = new Int32Array(T).fill(-1);
  const gpusOf = new Uint8Array(T);
  /** The node epoch an attempt started in: it is alive only while its node is still in that epoch. */
  const runEpoch = new Int32Array(T);
  const queuedSince = new Float64Array(T);
  const queueMs = new Float64Array(T);
  const waitMs = new Float64Array(T);
  const doneMs = new Float64Array(T);
  const avoid: (string[] | undefined)[] = new Array(T);
  let verified = 0;
  let failed = 0;
  let decisions = 0;
  let policyMs = 0;
  let failedDecisions = 0;
  let attempts = 0;

  // Store writes, batched into transactions.
  let pending: Write[] = [];
  const pendingStamp = new Int32Array(T).fill(-1);
  let batch = 0;
  let storeWrites = 0;
  let transactions = 0;
  // SqliteStore applies a transaction before its promise settles (better-sqlite3 is synchronous),
  // so writes land in call order; a refused condition is kept and ends the run after the tick.
  let storeError: unknown;
  const flush = () => {
    if (pending.length === 0) return;
    storeWrites += pending.length;
    transactions++;
    store.transact(pending).catch((error: unknown) => {
      storeError ??= error;
    });
    pending = [];
    batch++;
  };
  const write = (task: number, record: TaskRecord) => {
    if (pendingStamp[task] === batch) flush();
    for (const w of ([] as Write[]).concat(putTask(record, version[task] as number))) pending.push(w);
    version[task] = (version[task] as number) + 1;
    pendingStamp[task] = batch;
    if (pending.length >= batchLimit - 3) flush();
  };

  // Waiting tasks: one FIFO per shape, shapes visited by priority then by their oldest task.
  const S = work.shapes.length;
  const queues: number[][] = Array.from({ length: S }, () => []);
  const heads = new Int32Array(S);
  const blockedAt = new Float64Array(S).fill(-1);
  const order = work.shapes
    .map((s) => s.id)
    .sort((a, b) => (work.shapes[b]?.priority ?? 0) - (work.shapes[a]?.priority ?? 0) || a - b);
  const enqueue = (task: number) => {
    queues[work.shape[task] as number]?.push(task);
    queuedSince[task] = now;
  };

  const finishTask = (task: number, record: TaskRecord) => {
    records[task] = undefined;
    doneMs[task] = now - start - (work.arrivalMs[task] as number);
    if (record.state === 'verified') verified++;
    else failed++;
  };

  /**
   * Ends the task's current attempt on its node (released there) and tells the estimates how it
   * went; a node handing work back as it leaves says nothing about the node, so is not told.
   */
  const endAttempt = (task: number, outcome: 'completed' | 'lost' | 'released', runtimeMs?: number) => {
    const n = nodeOf[task] as number;
    const node = fleet[n] as FleetNode;
    const record = records[task] as TaskRecord;
    // Still on its node (not orphaned by a crash or a departure): give back what it held there.
    const list = running[n] as number[];
    const i = online[n] === 1 && runEpoch[task] === epoch[n] ? list.indexOf(task) : -1;
    if (i >= 0) {
      list[i] = list[list.length - 1] as number;
      list.pop();
      index.release(node.id, record.id);
      usedGpus -= gpusOf[task] as number;
      for (let t = 0; t <= tierOf(index.get(node.id)?.freeGpus ?? 0); t++) freedAt[t] = tick;
    }
    nodeOf[task] = -1;
    const shape = work.shapes[work.shape[task] as number];
    if (outcome === 'released') return;
    perf.observe(node.id, node.acceleratorClass, shape?.workload ?? '', outcome === 'completed', runtimeMs);
    if (online[n] === 1) index.refreshPerformance(node.id);
  };

  const afterFailure = (task: number, next: TaskRecord, nodeId: string) => {
    write(task, next);
    if (next.state === 'queued') {
      records[task] = next;
      avoid[task] = [...(avoid[task] ?? []).slice(-3), nodeId];
      enqueue(task);
    } else finishTask(task, next);
  };

  /** The node goes away; its attempts end now (graceful) or when their leases run out (crash). */
  const takeDown = (n: number, graceful: boolean, downtimeMs: number) => {
    const node = fleet[n] as FleetNode;
    const list = running[n] as number[];
    running[n] = [];
    for (const task of list) usedGpus -= gpusOf[task] as number;
    online[n] = 0;
    onlineGpus -= node.inventory.gpus.length;
    index.remove(node.id);
    epoch[n] = (epoch[n] as number) + 1;
    for (const task of list) {
      const record = records[task] as TaskRecord;
      if (graceful) {
        endAttempt(task, 'released');
        afterFailure(task, recordFailure(record, 'released', 'node leaving', now), node.id);
      } else {
        at(now + leaseMs, Ev.Expire, task, record.attempt);
      }
    }
    at(now + random.exponential(downtimeMs), Ev.Join, n, epoch[n] as number);
  };

  const startAttempt = (task: number, n: number, gpuIndices: number[]) => {
    const node = fleet[n] as FleetNode;
    const record = records[task] as TaskRecord;
    const uuids = gpuIndices.map((g) => node.inventory.gpus[g]?.uuid ?? '');
    const next = claim(record, node.id, gpuIndices, uuids, now, leaseMs);
    records[task] = next;
    write(task, next);
    attempts++;
    nodeOf[task] = n;
    runEpoch[task] = epoch[n] as number;
    (running[n] as number[]).push(task);
    const gpus = gpuIndices.length;
    gpusOf[task] = gpus;
    usedGpus += gpus;
    queueMs[task] = (queueMs[task] as number) + (now - (queuedSince[task] as number)) + node.latencyMs;
    waitMs[task] = (waitMs[task] as number) + (now - (queuedSince[task] as number));
    perf.observeLatency(node.id, node.latencyMs);
    const shape = work.shapes[work.shape[task] as number];
    const sensitivity = workloadSensitivity[shape?.workload ?? ''] ?? 1;
    const speed = (classSpeed[node.acceleratorClass] ?? 1.5) ** sensitivity;
    const noise = Math.exp(0.1 * (hashUnit(seed, task, next.attempt, 3) * 2 - 1));
    const runtime = (work.baseRuntimeMs[task] as number) * speed * node.slowdown * noise;
    const begin = now + node.latencyMs;
    if (hashUnit(seed, task, next.attempt, 1) < node.crashRate) {
      at(begin + runtime * hashUnit(seed, task, next.attempt, 2), Ev.Crash, n, epoch[n] as number);
    } else {
      at(begin + runtime, Ev.Finish, task, next.attempt);
    }
  };

  const apply = (kind: number, a: number, b: number) => {
    switch (kind) {
      case Ev.Finish: {
        const record = records[a];
        if (record === undefined || record.attempt !== b || nodeOf[a] === -1) return;
        const n = nodeOf[a] as number;
        // Its node crashed or left after it started: the lease, not the result, ends this attempt.
        if (online[n] !== 1 || epoch[n] !== runEpoch[a]) return;
        const runtimeMs = now - (record.updatedAt + (fleet[n]?.latencyMs ?? 0));
        endAttempt(a, 'completed', runtimeMs);
        const reported = recordResult(
          record,
          { attempt: b, exitCode: 0, resultHash: hash, outputs, metrics: { wallMs: Math.round(runtimeMs) } },
          now,
        );
        const done = markVerified(reported, now);
        write(a, done);
        finishTask(a, done);
        return;
      }
      case Ev.Crash:
        if (online[a] !== 1 || epoch[a] !== b) return;
        crashes++;
        takeDown(a, false, crashDowntimeMs);
        return;
      case Ev.Expire: {
        const record = records[a];
        if (record === undefined || record.attempt !== b || record.state !== 'assigned') return;
        const n = nodeOf[a] as number;
        const node = fleet[n] as FleetNode;
        endAttempt(a, 'lost');
        afterFailure(a, expireLease(record, now), node.id);
        return;
      }
      case Ev.Leave:
        if (online[a] !== 1 || epoch[a] !== b) return;
        departures++;
        takeDown(a, hashUnit(seed, a, b, 8) < 0.5, churnDowntimeMs);
        return;
      case Ev.Join:
        if (online[a] === 1 || epoch[a] !== b) return;
        join(a);
        return;
    }
  };

  /** One dispatch pass; true when it stopped at its budget with tasks it did not try. */
  const dispatch = (): boolean => {
    let failures = 0;
    for (const s of order) {
      const queue = queues[s] as number[];
      let head = heads[s] as number;
      if (head >= queue.length) continue;
      const shape = work.shapes[s];
      if (shape === undefined) continue;
      const need = tierOf(shape.requirements.gpus.count);
      // Blocked since its last failure and no node has freed enough GPUs since: nothing to try.
      if ((blockedAt[s] as number) >= 0 && (freedAt[need] as number) < (blockedAt[s] as number)) continue;
      if (failures >= failBudget) return true;
      blockedAt[s] = -1;
      while (head < queue.length) {
        const task = queue[head] as number;
        const record = records[task] as TaskRecord;
        const ptask: PlacementTask = {
          id: record.id,
          requirements: shape.requirements,
          workload: shape.workload,
          ...(avoid[task] === undefined ? {} : { avoidNodes: avoid[task] }),
        };
        decisions++;
        const before = performance.now();
        const nodeId = policy(index, ptask, now);
        policyMs += performance.now() - before;
        const gpuIndices =
          nodeId === undefined ? undefined : index.reserve(nodeId, record.id, shape.requirements, record.attempt + 1);
        if (nodeId === undefined || gpuIndices === undefined) {
          blockedAt[s] = tick;
          failures++;
          failedDecisions++;
          break;
        }
        head++;
        startAttempt(task, nodeIndex.get(nodeId) as number, gpuIndices);
      }
      if (head > 1024 && head * 2 > queue.length) {
        queue.splice(0, head);
        head = 0;
      }
      heads[s] = head;
    }
    return false;
  };

  // Run.
  for (let n = 0; n < N; n++) join(n);
  let nextArrival = 0;
  let utilSum = 0;
  let utilTime = 0;
  let again = false;
  let nextReport = Math.ceil(T / 10);
  const lastArrival = T > 0 ? (work.arrivalMs[T - 1] as number) : 0;
  while (verified + failed < T) {
    // Jump to the next tick where something happens: between events nothing can unblock a task.
    const arrivalTick =
      nextArrival < T ? Math.ceil((work.arrivalMs[nextArrival] as number) / tickMs) : Number.POSITIVE_INFINITY;
    const next = again ? tick + 1 : Math.min(calendar.nextTick(tick), Math.max(tick + 1, arrivalTick));
    if (next === Number.POSITIVE_INFINITY) break;
    const windowEnd = Math.min(next * tickMs, lastArrival);
    if (windowEnd > tick * tickMs) {
      utilSum += (onlineGpus > 0 ? usedGpus / onlineGpus : 0) * (windowEnd - tick * tickMs);
      utilTime += windowEnd - tick * tickMs;
    }
    tick = next;
    now = start + tick * tickMs;
    for (let list = calendar.take(tick); list !== undefined; list = calendar.take(tick)) {
      for (let i = 0; i < list.length; i += 3) apply(list[i] as number, list[i + 1] as number, list[i + 2] as number);
    }
    flush();
    while (nextArrival < T && (work.arrivalMs[nextArrival] as number) <= now - start) {
      const task = nextArrival++;
      const shape = work.shapes[work.shape[task] as number];
      if (shape === undefined) throw new Error(`task ${task} has no shape`);
      const record = newTaskRecord(simJobId(task), 0, 1, maxAttempts, shape.requirements, 7 * 86_400, undefined, now);
      records[task] = record;
      write(task, record);
      enqueue(task);
      queuedSince[task] = start + (work.arrivalMs[task] as number);
    }
    flush();
    again = dispatch();
    flush();
    if (options.progress !== undefined && verified + failed >= nextReport) {
      nextReport += Math.max(1, Math.ceil(T / 10));
      const cpu = process.cpuUsage(cpuStart);
      options.progress(verified + failed, (now - start) / 3_600_000, (cpu.user + cpu.system) / 1000);
    }
    // SqliteStore applied the writes synchronously; one await lets a refused condition's rejection
    // reach its handler, so that the run stops at the tick that broke it, not never.
    await undefined;
    if (storeError !== undefined) throw storeError;
  }

  if (process.env.SIM_DEBUG) {
    const slow = [...doneMs.keys()].sort((a, b) => (doneMs[b] as number) - (doneMs[a] as number)).slice(0, 5);
    for (const t of slow)
      console.error('slow', t, doneMs[t], queueMs[t], JSON.stringify(work.shapes[work.shape[t] as number]));
  }
  // Audit the store: every task must have ended there.
  const rows = db
    .prepare(
      `SELECT json_extract(data, '$.state') AS state, count(*) AS n FROM items WHERE sk LIKE 'TASK#%' GROUP BY state`,
    )
    .all() as { state: string; n: number }[];
  const inStore = Object.fromEntries(rows.map((r) => [r.state, r.n]));
  const lost = T - ((inStore.verified ?? 0) + (inStore.failed ?? 0));
  await store.close();

  return {
    policy: policyName,
    nodes: N,
    tasks: T,
    verified: inStore.verified ?? 0,
    failed: inStore.failed ?? 0,
    lost,
    failedPct: T === 0 ? 0 : (100 * failed) / T,
    p50QueueMs: Math.round(percentile(queueMs, 0.5)),
    p99QueueMs: Math.round(percentile(queueMs, 0.99)),
    p99WaitMs: Math.round(percentile(waitMs, 0.99)),
    longWaits: queueMs.reduce((n, ms) => (ms > 10_000 ? n + 1 : n), 0),
    p50JctMs: Math.round(percentile(doneMs, 0.5)),
    p99JctMs: Math.round(percentile(doneMs, 0.99)),
    utilisationPct: utilTime === 0 ? 0 : Math.round((1000 * utilSum) / utilTime) / 10,
    attempts,
    decisions,
    failedDecisions,
    policyMs: Math.round(policyMs),
    decisionUs: decisions === 0 ? 0 : Math.round((1000 * policyMs) / decisions) / 1,
    crashes,
    departures,
    storeWrites,
    transactions,
    simHours: Math.round(((now - start) / 3_600_000) * 100) / 100,
    wallMs: Math.round(performance.now() - wallStart),
    cpuMs: Math.round((process.cpuUsage(cpuStart).user + process.cpuUsage(cpuStart).system) / 1000),
    perf: perf.source,
  };
}
