import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConflictError, NotFoundError } from '../../functions/domain/errors.js';
import { fitOnNode, gpuMatches } from '../../functions/domain/resource/fit.js';
import { LeaseLostError } from '../../functions/domain/scheduling/errors.js';
import { queueNames } from '../../functions/domain/scheduling/messages.js';
import {
  maxAttemptsKept,
  maxAttemptsStarted,
  releaseAllowance,
} from '../../functions/domain/scheduling/task-machine.js';
import {
  isTerminal,
  leaseDuePk,
  poolPk,
  type TaskRecord,
  unroutedPool,
  verifyGraceMs,
} from '../../functions/domain/scheduling/task-record.js';
import { allShardPks } from '../../functions/domain/shards.js';
import type { Assignment, JobSpecInput, NodeInventory } from '../../protocol/index.js';
import { generateNodeKeyPair, JobSpec, nodeIdFromPublicKey, resultHash, sha256Hex } from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, ManualClock } from '../support/in-process.js';

/**
 * The task state machine as a model-based test: random interleavings of submissions (with and
 * without deadlines), polls, reports (good, bad, stale), releases in a loop, node deaths,
 * cancellations, queue messages lost, delivered twice, out of order and replayed late, and the
 * passing of time with liveness on, against the real domain over the real embedded store. After
 * every step the invariants below must hold, and at the end every accepted task must reach a
 * terminal state: exactly one, with its attempts bounded, no lease left to a dead node and no
 * result accepted without the verification its job asked for.
 */

const goodOutputs = [{ name: 'stdout', sha256: sha256Hex('ok\n'), bytes: 3 }];
const goodHash = resultHash(goodOutputs);
// A lazy node's result: consistent with its own outputs (the control plane recomputes the hash), but wrong.
const badOutputs = [{ name: 'stdout', sha256: sha256Hex('lazy\n'), bytes: 5 }];
const badHash = resultHash(badOutputs);
const leaseMs = 10_000;
const heartbeatIntervalMs = 1000;
/** Liveness on: a node unseen for three heartbeats is down, and its pools' queued tasks move. */
const livenessMs = 3 * heartbeatIntervalMs;

const inventories: NodeInventory[] = [
  cpuInventory(),
  cpuInventory({
    gpus: [0, 1].map((index) => ({
      index,
      vendor: 'nvidia' as const,
      model: 'NVIDIA H100 80GB HBM3',
      vramMiB: 81559,
      uuid: `GPU-h100-${index}`,
      computeCapability: '9.0',
    })),
  }),
  cpuInventory({
    gpus: [
      { index: 0, vendor: 'amd', model: 'AMD Instinct MI300X', vramMiB: 196592, uuid: 'GPU-mi300x', gfxArch: 'gfx942' },
    ],
  }),
];

type World = ReturnType<typeof inProcessControlPlane> & {
  clock: ManualClock;
  nodes: string[];
  /** Nodes that died: they never send anything again. */
  dead: Set<string>;
  held: Assignment[];
  submitted: number;
  /** Jobs whose results must match an expected hash to be accepted. */
  verified: Set<string>;
  /** Every queue message handled so far, for late replays. */
  delivered: { queue: string; body: string }[];
};

const alive = (w: World): string[] => w.nodes.filter((n) => !w.dead.has(n));

async function allTasks(w: World): Promise<TaskRecord[]> {
  const rows = w.snapshot() as { sk: string; data: string }[];
  return rows.filter((r) => r.sk.startsWith('TASK#')).map((r) => JSON.parse(r.data) as TaskRecord);
}

/** What the queue workers do with one message; a duplicate or a stale one must change nothing it should not. */
async function handle(w: World, queue: string, body: string): Promise<void> {
  w.delivered.push({ queue, body });
  if (queue === queueNames.schedule) await w.cp.scheduler.schedule(JSON.parse(body));
  else await w.cp.verifier.verify(JSON.parse(body));
}

async function drain(w: World, queue: string): Promise<void> {
  for (const m of await w.queue.receive(queue, { maxMessages: 10 })) {
    await handle(w, queue, m.body);
    await w.queue.delete(queue, m.receiptHandle);
  }
}

async function report(w: World, heldIndex: number, act: (a: Assignment, node: string) => Promise<unknown>) {
  const a = w.held[heldIndex % Math.max(1, w.held.length)];
  if (a === undefined) return;
  w.held = w.held.filter((x) => x !== a);
  const node = nodeOf(w, a);
  try {
    await act(a, node);
  } catch (error) {
    if (!(error instanceof LeaseLostError)) throw error;
  }
}

const nodeOfAssignment = new WeakMap<Assignment, string>();
const nodeOf = (_w: World, a: Assignment) => nodeOfAssignment.get(a) ?? '';

type Cmd = fc.AsyncCommand<object, World>;
const cmd = (name: string, run: (w: World) => Promise<void>): Cmd => ({
  check: () => true,
  run: async (_m, w) => {
    const before = await allTasks(w);
    await run(w);
    await checkInvariants(w, before);
  },
  toString: () => name,
});

const submit = fc
  .record({
    tasks: fc.integer({ min: 1, max: 3 }),
    // 10: a budget whose attempts outgrow the kept history (maxAttemptsKept) under releases.
    retries: fc.constantFrom(0, 1, 2, 10),
    gpus: fc.constantFrom(0, 1, 2, 3),
    vendor: fc.constantFrom(undefined, 'nvidia' as const, 'amd' as const),
    verify: fc.boolean(),
    // A quarter of the jobs have a deadline: enough to test them, few enough that most tasks run.
    deadlineMs: fc.oneof(
      { weight: 3, arbitrary: fc.constant(undefined) },
      { weight: 1, arbitrary: fc.integer({ min: 5000, max: 120_000 }) },
    ),
  })
  .map((s) =>
    cmd(`submit(${JSON.stringify(s)})`, async (w) => {
      const input: JobSpecInput = {
        command: ['echo', 'ok'],
        tasks: s.tasks,
        retries: s.retries,
        resources: { gpus: { count: s.gpus, ...(s.vendor ? { vendor: s.vendor } : {}) } },
        verification: s.verify ? { mode: 'expected-hash', sha256: goodHash } : { mode: 'none' },
        ...(s.deadlineMs === undefined ? {} : { deadline: new Date(w.clock.now() + s.deadlineMs).toISOString() }),
      };
      const { job } = await w.cp.jobs.submit('default', JobSpec.parse(input));
      if (s.verify) w.verified.add(job.id);
      w.submitted += s.tasks;
    }),
  );

const register = fc.nat(2).map((i) =>
  cmd(`register(${i})`, async (w) => {
    const key = generateNodeKeyPair().publicKey;
    const { node } = await w.cp.nodes.register({
      publicKey: key,
      agentVersion: 't',
      inventory: inventories[i] as NodeInventory,
    });
    expect(node.id).toBe(nodeIdFromPublicKey(key));
    w.nodes.push(node.id);
    w.cp.router.invalidate();
  }),
);

const poll = fc.nat(5).map((i) =>
  cmd(`poll(${i})`, async (w) => {
    const nodeId = alive(w)[i % Math.max(1, alive(w).length)];
    if (nodeId === undefined) return;
    const a = await w.cp.dispatcher.poll(nodeId, 0);
    if (a === undefined) return;
    // Invariant: a node never receives a task it does not fit, on GPUs that match the task
    // (checkInvariants: and that no other task the node holds uses).
    const node = await w.cp.nodes.get(nodeId);
    const task = (await allTasks(w)).find((t) => t.id === a.taskId) as TaskRecord;
    expect(fitOnNode(task.requirements, node.inventory)).toBeDefined();
    expect(a.gpuIndices).toHaveLength(task.requirements.gpus.count);
    for (const i of a.gpuIndices) {
      const gpu = node.inventory.gpus.find((g) => g.index === i);
      expect(gpu !== undefined && gpuMatches(task.requirements.gpus, gpu)).toBe(true);
    }
    nodeOfAssignment.set(a, nodeId);
    w.held.push(a);
  }),
);

/**
 * Runs `act` with the store's calls interleaved as concurrent requests' calls are against a
 * networked store (DynamoDB): before each `get`, `query` and `transact`, the caller waits the next
 * number of event-loop turns from `delays`. The store still applies each call atomically, so
 * only the order between concurrent callers changes, replayably.
 */
async function interleaved<T>(w: World, delays: readonly number[], act: () => Promise<T>): Promise<T> {
  const store = w.store as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const names = ['get', 'query', 'transact'] as const;
  let call = 0;
  for (const name of names) {
    const original = store[name] as (...args: unknown[]) => Promise<unknown>;
    store[name] = async (...args: unknown[]) => {
      for (let turns = delays[call++ % delays.length] ?? 0; turns > 0; turns--) {
        await new Promise((resolve) => setImmediate(resolve));
      }
      return original.apply(w.store, args);
    };
  }
  try {
    return await act();
  } finally {
    for (const name of names) delete store[name]; // the class's own methods again
  }
}

/**
 * Every live node polls, and claims the first queued tasks by name (as from a work hint), all at
 * once with their store calls interleaved. Invariant: of nodes racing for a task, exactly one
 * wins: no attempt is handed to two nodes, and each assignment is the attempt the store holds.
 */
const racingClaims = fc.array(fc.nat(3), { minLength: 1, maxLength: 12 }).map((delays) =>
  cmd(`racing polls and claims(${delays.join(',')})`, async (w) => {
    const nodes = alive(w);
    const queued = (await allTasks(w)).filter((t) => t.state === 'queued' && t.pool !== undefined).slice(0, 2);
    const claimed = await interleaved(w, delays, () =>
      Promise.all([
        ...nodes.map(async (nodeId) => ({ nodeId, a: await w.cp.dispatcher.poll(nodeId, 0) })),
        ...nodes.flatMap((nodeId) =>
          queued.map(async (t) => {
            try {
              return { nodeId, a: await w.cp.dispatcher.claim(nodeId, t.id) };
            } catch (error) {
              if (!(error instanceof ConflictError) && !(error instanceof NotFoundError)) throw error;
              return { nodeId, a: undefined };
            }
          }),
        ),
      ]),
    );
    const handedTo = new Map<string, string>();
    const tasks = await allTasks(w);
    for (const { nodeId, a } of claimed) {
      if (a === undefined) continue;
      const key = `${a.taskId} attempt ${a.attempt}`;
      expect(handedTo.get(key), `${key} handed to two nodes`).toBeUndefined();
      handedTo.set(key, nodeId);
      const stored = tasks.find((t) => t.id === a.taskId)?.attempts.find((x) => x.number === a.attempt);
      expect(stored?.nodeId, `${key}: the stored attempt's node`).toBe(nodeId);
      nodeOfAssignment.set(a, nodeId);
      w.held.push(a);
    }
  }),
);

const progress = fc.nat(5).map((i) =>
  cmd(`progress(${i})`, async (w) => {
    const a = w.held[i % Math.max(1, w.held.length)];
    if (a === undefined) return;
    try {
      await w.cp.reports.progress(nodeOf(w, a), a.taskId, { attempt: a.attempt, percent: 50 });
    } catch (error) {
      if (!(error instanceof LeaseLostError)) throw error;
      w.held = w.held.filter((x) => x !== a);
    }
  }),
);

const result = fc.tuple(fc.nat(5), fc.constantFrom(0, 0, 1), fc.boolean()).map(([i, exitCode, good]) =>
  cmd(`result(${i}, exit ${exitCode}, ${good ? 'good' : 'bad'} hash)`, (w) =>
    report(w, i, (a, node) =>
      w.cp.reports.result(node, a.taskId, {
        attempt: a.attempt,
        exitCode,
        resultHash: good ? goodHash : badHash,
        outputs: good ? goodOutputs : badOutputs,
        metrics: { wallMs: 1 },
      }),
    ),
  ),
);

/** A lazy node: exit 0 and a result consistent with its outputs, but not the one its job expects. */
const lazyResult = fc.nat(5).map((i) =>
  cmd(`lazy result(${i})`, (w) =>
    report(w, i, (a, node) =>
      w.cp.reports.result(node, a.taskId, {
        attempt: a.attempt,
        exitCode: 0,
        resultHash: badHash,
        outputs: badOutputs,
        metrics: { wallMs: 1 },
      }),
    ),
  ),
);

const fail = fc
  .tuple(fc.nat(5), fc.constantFrom('error' as const, 'timeout' as const, 'released' as const))
  .map(([i, reason]) =>
    cmd(`fail(${i}, ${reason})`, (w) =>
      report(w, i, (a, node) => w.cp.reports.fail(node, a.taskId, { attempt: a.attempt, reason, message: 'x' })),
    ),
  );

const staleReport = fc.nat(5).map((i) =>
  cmd(`staleReport(${i})`, async (w) => {
    const a = w.held[i % Math.max(1, w.held.length)];
    if (a === undefined) return;
    const before = w.snapshot();
    await expect(
      w.cp.reports.fail(nodeOf(w, a), a.taskId, { attempt: a.attempt + 1, reason: 'error', message: 'stale' }),
    ).rejects.toBeInstanceOf(LeaseLostError);
    expect(w.snapshot()).toEqual(before);
  }),
);

const heartbeat = fc.nat(3).map((i) =>
  cmd(`heartbeat(${i})`, async (w) => {
    const nodeId = alive(w)[i % Math.max(1, alive(w).length)];
    if (nodeId === undefined) return;
    const mine = w.held.filter((a) => nodeOf(w, a) === nodeId);
    const { abort } = await w.cp.reports.heartbeat(nodeId, {
      tasks: mine.map((a) => ({ taskId: a.taskId, attempt: a.attempt })),
    });
    w.held = w.held.filter((a) => !abort.some((x) => x.taskId === a.taskId && x.attempt === a.attempt));
  }),
);

const advance = fc.constantFrom(500, livenessMs + 1, leaseMs / 2, leaseMs + 1).map((ms) =>
  cmd(`advance(${ms}) + reaper`, async (w) => {
    w.clock.advance(ms);
    await w.cp.reaper.tick();
    await checkRedriven(w);
  }),
);

const kill = fc.nat(3).map((i) =>
  cmd(`kill node(${i})`, async (w) => {
    const nodeId = alive(w)[i % Math.max(1, alive(w).length)];
    if (nodeId === undefined) return;
    w.dead.add(nodeId);
    w.held = w.held.filter((a) => nodeOf(w, a) !== nodeId);
  }),
);

const releaseLoop = fc.nat(3).map((i) =>
  cmd(`claim and release in a loop(${i})`, async (w) => {
    const nodeId = alive(w)[i % Math.max(1, alive(w).length)];
    if (nodeId === undefined) return;
    // Enough rounds to pass a 10-retry task's free releases and its kept history.
    for (let round = 0; round < 40; round++) {
      const a = await w.cp.dispatcher.poll(nodeId, 0);
      if (a === undefined) return;
      await w.cp.reports.fail(nodeId, a.taskId, { attempt: a.attempt, reason: 'released', message: 'shutting down' });
      await drain(w, queueNames.schedule); // the released task is routed again
    }
  }),
);

const deliverTwice = fc.constantFrom(queueNames.schedule, queueNames.verify).map((queue) =>
  cmd(`deliver ${queue} twice, out of order`, async (w) => {
    const messages = await w.queue.receive(queue, { maxMessages: 10 });
    for (const m of [...messages].reverse()) await handle(w, queue, m.body);
    for (const m of messages) await handle(w, queue, m.body);
    for (const m of messages) await w.queue.delete(queue, m.receiptHandle);
  }),
);

const replay = fc.nat(50).map((i) =>
  cmd(`replay an old message(${i})`, async (w) => {
    const old = w.delivered[i % Math.max(1, w.delivered.length)];
    if (old !== undefined) await handle(w, old.queue, old.body);
  }),
);

const drainSchedule = fc.constant(cmd('drain schedule queue', (w) => drain(w, queueNames.schedule)));

const drainVerify = fc.constant(cmd('drain verify queue', (w) => drain(w, queueNames.verify)));

const lose = fc.constant(
  cmd('lose a queue message', async (w) => {
    for (const q of [queueNames.schedule, queueNames.verify]) {
      const [m] = await w.queue.receive(q);
      if (m) await w.queue.delete(q, m.receiptHandle);
    }
  }),
);

const cancel = fc.nat(5).map((i) =>
  cmd(`cancel(${i})`, async (w) => {
    const { jobs } = await w.cp.jobs.list('default', 10);
    const job = jobs[i % Math.max(1, jobs.length)];
    if (job === undefined) return;
    try {
      await w.cp.jobs.cancel('default', job.id);
    } catch (error) {
      expect((error as { code?: string }).code).toBe('job_finished');
    }
  }),
);

/**
 * Keeps the time passing while the live nodes do what agents do every heartbeat interval: report
 * the tasks they hold (dropping those the server aborts). Their leases hold; only dead nodes and
 * silent stretches (`advance`) lose theirs.
 */
const advanceWithHeartbeats = fc.constantFrom(2 * heartbeatIntervalMs, leaseMs + 1).map((ms) =>
  cmd(`advance(${ms}) with heartbeats + reaper`, async (w) => {
    for (let passed = 0; passed < ms; passed += heartbeatIntervalMs) {
      w.clock.advance(Math.min(heartbeatIntervalMs, ms - passed));
      for (const nodeId of alive(w)) {
        const mine = w.held.filter((a) => nodeOf(w, a) === nodeId);
        const { abort } = await w.cp.reports.heartbeat(nodeId, {
          tasks: mine.map((a) => ({ taskId: a.taskId, attempt: a.attempt })),
        });
        w.held = w.held.filter((a) => !abort.some((x) => x.taskId === a.taskId && x.attempt === a.attempt));
      }
    }
    await w.cp.reaper.tick();
    await checkRedriven(w);
  }),
);

/**
 * How often each command comes up: an agent's everyday calls (poll, report) and the queue
 * workers more often than the faults, so that runs reach claims, verification and retries.
 */
const commands = [
  submit,
  submit,
  register,
  poll,
  poll,
  poll,
  poll,
  racingClaims,
  progress,
  result,
  result,
  result,
  lazyResult,
  lazyResult,
  fail,
  staleReport,
  heartbeat,
  advance,
  advanceWithHeartbeats,
  advanceWithHeartbeats,
  kill,
  releaseLoop,
  deliverTwice,
  replay,
  drainSchedule,
  drainSchedule,
  drainVerify,
  drainVerify,
  lose,
  cancel,
];

async function checkInvariants(w: World, before: TaskRecord[]): Promise<void> {
  const tasks = await allTasks(w);
  const pooled = new Set<string>();
  const leased = new Set<string>();
  for (const pool of new Set(tasks.map((t) => t.pool ?? unroutedPool))) {
    const page = await w.store.query<TaskRecord>({ index: 'byPool', pk: poolPk(pool), limit: 1000 });
    for (const item of page.items) pooled.add(item.data.id);
  }
  for (const pk of allShardPks(leaseDuePk)) {
    for (const item of (await w.store.query<TaskRecord>({ index: 'byDue', pk, limit: 1000 })).items) {
      leased.add(item.data.id);
    }
  }
  expect(tasks).toHaveLength(w.submitted); // no accepted task is lost
  const gpusInUse = new Set<string>(); // no two tasks a node holds share a GPU
  for (const t of tasks) {
    if (t.state !== 'assigned' && t.state !== 'running') continue;
    for (const i of t.gpuIndices ?? []) {
      expect(gpusInUse.has(`${t.nodeId}#${i}`)).toBe(false);
      gpusInUse.add(`${t.nodeId}#${i}`);
    }
  }
  for (const t of tasks) {
    // Attempts are bounded, and the history is bounded whatever the attempts.
    expect(t.attempt).toBeLessThanOrEqual(maxAttemptsStarted(t.maxAttempts));
    expect(t.attempts.length).toBeLessThanOrEqual(maxAttemptsKept);
    expect(t.attempts.length + (t.attemptsDropped ?? 0)).toBe(t.attempt);
    const open = t.attempts.filter((a) => a.outcome === undefined).length;
    expect(open).toBe(t.state === 'assigned' || t.state === 'running' ? 1 : 0);
    const releases = t.attempts.filter((a) => a.outcome === 'released').length + (t.attemptsDropped ?? 0);
    expect(t.releases ?? 0).toBeLessThanOrEqual(releases);
    const counted =
      t.attempts.filter((a) => ['failed', 'lease-expired', 'rejected'].includes(a.outcome ?? '')).length +
      Math.max(0, (t.releases ?? 0) - releaseAllowance(t.maxAttempts));
    if ((t.attemptsDropped ?? 0) === 0) expect(t.failedAttempts).toBe(counted);
    else expect(t.failedAttempts).toBeGreaterThanOrEqual(counted - (t.attemptsDropped ?? 0));
    expect(t.failedAttempts).toBeLessThanOrEqual(t.maxAttempts);
    expect(t.error?.code === 'retries_exhausted').toBe(t.state === 'failed' && t.failedAttempts === t.maxAttempts);
    if (t.state === 'verified') expect(t.result?.exitCode).toBe(0);
    // No result accepted without the verification its job asked for.
    if (t.state === 'verified' && w.verified.has(t.jobId)) expect(t.result?.resultHash).toBe(goodHash);
    expect(pooled.has(t.id)).toBe(t.state === 'queued');
    expect(leased.has(t.id)).toBe(t.state === 'assigned' || t.state === 'running');
    const previous = before.find((p) => p.id === t.id);
    if (previous && ['verified', 'failed', 'cancelled'].includes(previous.state)) {
      expect(t.state).toBe(previous.state); // terminal states are final
      expect(t.attempts).toEqual(previous.attempts);
    }
  }
}

/**
 * Right after a reaper tick, from table state alone: no lease is held past its expiry (a dead
 * node's included), no report waits for a lost verify message past its grace, and no task of a
 * job past its deadline is still open.
 */
async function checkRedriven(w: World): Promise<void> {
  const now = w.clock.now();
  for (const t of await allTasks(w)) {
    if (t.state === 'assigned' || t.state === 'running') expect(t.leaseExpiresAt ?? 0).toBeGreaterThanOrEqual(now);
    if (t.state === 'reported') expect(t.updatedAt + verifyGraceMs).toBeGreaterThanOrEqual(now);
    if (t.deadline !== undefined && t.deadline < now) expect(isTerminal(t.state)).toBe(true);
  }
}

/** Runs every live node honestly until nothing is left: every accepted task must end. */
async function settle(w: World): Promise<void> {
  for (let round = 0; round < 200; round++) {
    const tasks = await allTasks(w);
    if (tasks.every((t) => isTerminal(t.state))) break;
    w.clock.advance(leaseMs + 1);
    // The live nodes say so before the reaper looks, so their pools keep their tasks.
    for (const nodeId of alive(w)) await w.cp.reports.heartbeat(nodeId, { tasks: [] });
    await w.cp.reaper.tick();
    await checkRedriven(w);
    await drain(w, queueNames.schedule);
    for (const nodeId of alive(w)) {
      const a = await w.cp.dispatcher.poll(nodeId, 0);
      if (a) {
        await w.cp.reports.result(nodeId, a.taskId, {
          attempt: a.attempt,
          exitCode: 0,
          resultHash: goodHash,
          outputs: goodOutputs,
          metrics: { wallMs: 1 },
        });
      }
    }
    await drain(w, queueNames.verify);
  }
  const stuck = (await allTasks(w)).filter((t) => !isTerminal(t.state));
  // Only queued tasks no live node can ever fit may wait, and only without a deadline; no task is
  // left to a dead node.
  for (const t of stuck) {
    expect(t.state).toBe('queued');
    expect(t.deadline).toBeUndefined();
    for (const nodeId of alive(w))
      expect(fitOnNode(t.requirements, (await w.cp.nodes.get(nodeId)).inventory)).toBeUndefined();
  }
}

describe('task lifecycle (model-based)', () => {
  it('keeps its invariants under any interleaving, and loses no accepted task', async () => {
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: 80, size: 'max' }), async (cmds) => {
        const clock = new ManualClock();
        const h = inProcessControlPlane({
          clock,
          settings: { leaseMs, heartbeatIdleMs: heartbeatIntervalMs, livenessMs },
        });
        const w: World = {
          ...h,
          clock,
          nodes: [],
          dead: new Set(),
          held: [],
          submitted: 0,
          verified: new Set(),
          delivered: [],
        };
        try {
          // One node of each kind is there from the start, so that runs reach claims early.
          for (const inventory of inventories) {
            const { node } = await w.cp.nodes.register({
              publicKey: generateNodeKeyPair().publicKey,
              agentVersion: 't',
              inventory,
            });
            w.nodes.push(node.id);
          }
          w.cp.router.invalidate();
          await fc.asyncModelRun(() => ({ model: {}, real: w }), cmds);
          // An honest CPU node joins so that every CPU task has somewhere to run.
          const { node } = await w.cp.nodes.register({
            publicKey: generateNodeKeyPair().publicKey,
            agentVersion: 't',
            inventory: inventories[1] as NodeInventory,
          });
          w.nodes.push(node.id);
          w.cp.router.invalidate();
          await settle(w);
        } finally {
          await h.close();
        }
      }),
      { numRuns: 60 },
    );
  }, 300_000);
});
