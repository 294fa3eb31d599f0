import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fitOnNode } from '../../functions/domain/resource/fit.js';
import { LeaseLostError } from '../../functions/domain/scheduling/errors.js';
import { queueNames } from '../../functions/domain/scheduling/messages.js';
import { isTerminal, type TaskRecord } from '../../functions/domain/scheduling/task-record.js';
import type { Assignment, JobSpecInput, NodeInventory } from '../../protocol/index.js';
import { generateNodeKeyPair, JobSpec, resultHash, sha256Hex } from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, ManualClock } from '../support/in-process.js';

/**
 * The scheduler at fleet scale as a model-based test: more than 1,000 registered nodes, liveness
 * and deadlines on, against the real domain over the real embedded store. The fleet turns over as
 * fleets do: most of the oldest registrations are machines that have left since (a registration
 * outlives its node by days), a few old ones remain until they are retired together, single nodes
 * leave, new ones join. Random interleavings of that churn with submissions, polls, reports,
 * heartbeats, the passing of time and reaper ticks must keep these invariants:
 *
 * - a reaper tick never takes a queued task out of a pool that has a live node (one that
 *   heartbeated within half the liveness window), unless its job's deadline passed: the reaper
 *   used to read only the first 1,000 node registrations (the oldest), so once those of a pool
 *   were gone it saw the pool as dead and pulled its tasks out, away from the live newer nodes;
 * - right after a tick, no lease is held past its expiry and no task of a job past its deadline
 *   is still open;
 * - no accepted task is lost, and at the end every task ends (or waits, without a deadline, for a
 *   kind of node that is not there).
 */

const goodOutputs = [{ name: 'stdout', sha256: sha256Hex('ok\n'), bytes: 3 }];
const goodHash = resultHash(goodOutputs);
const heartbeatIntervalMs = 1000;
const livenessMs = 3 * heartbeatIntervalMs;
const leaseMs = 6000;
/** More registrations than one 1,000-item page, all older than any node that joins later. */
const firstWave = 1020;
/** Every this many of the first wave is still there when the run starts; the others have left. */
const survivorEvery = 34;

const h100 = (index: number) => ({
  index,
  vendor: 'nvidia' as const,
  model: 'NVIDIA H100 80GB HBM3',
  vramMiB: 81559,
  uuid: `GPU-h100-${index}`,
  computeCapability: '9.0',
});
const kinds = {
  cpu: cpuInventory(),
  h100: cpuInventory({ gpus: [h100(0), h100(1)] }),
  mi300x: cpuInventory({
    gpus: [
      { index: 0, vendor: 'amd', model: 'AMD Instinct MI300X', vramMiB: 196592, uuid: 'GPU-mi300x', gfxArch: 'gfx942' },
    ],
  }),
} satisfies Record<string, NodeInventory>;
type Kind = keyof typeof kinds;
const kindNames = Object.keys(kinds) as Kind[];

interface FleetNode {
  id: string;
  kind: Kind;
  pools: string[];
  wave: 'first' | 'later';
  /** When it last heartbeated (model time); `undefined` once it left. */
  seenAt: number | undefined;
}

type World = ReturnType<typeof inProcessControlPlane> & {
  clock: ManualClock;
  nodes: FleetNode[];
  held: { a: Assignment; node: string }[];
  submitted: number;
};

const alive = (w: World) => w.nodes.filter((n) => n.seenAt !== undefined);

async function allTasks(w: World): Promise<TaskRecord[]> {
  const rows = w.snapshot() as { sk: string; data: string }[];
  return rows.filter((r) => r.sk.startsWith('TASK#')).map((r) => JSON.parse(r.data) as TaskRecord);
}

async function join(w: World, kind: Kind, wave: FleetNode['wave']): Promise<void> {
  const { node } = await w.cp.nodes.register({
    publicKey: generateNodeKeyPair().publicKey,
    agentVersion: 't',
    inventory: kinds[kind],
  });
  w.nodes.push({ id: node.id, kind, pools: node.pools, wave, seenAt: w.clock.now() });
}

/** Every live node heartbeats, reporting the tasks it holds; those the server aborts are dropped. */
async function heartbeatAll(w: World): Promise<void> {
  const now = w.clock.now();
  for (const n of alive(w)) {
    const mine = w.held.filter((h) => h.node === n.id);
    const { abort } = await w.cp.reports.heartbeat(n.id, {
      tasks: mine.map((h) => ({ taskId: h.a.taskId, attempt: h.a.attempt })),
    });
    n.seenAt = now;
    w.held = w.held.filter((h) => !abort.some((x) => x.taskId === h.a.taskId && x.attempt === h.a.attempt));
  }
}

async function drain(w: World, queue: string): Promise<void> {
  for (const m of await w.queue.receive(queue, { maxMessages: 10 })) {
    if (queue === queueNames.schedule) await w.cp.scheduler.schedule(JSON.parse(m.body));
    else await w.cp.verifier.verify(JSON.parse(m.body));
    await w.queue.delete(queue, m.receiptHandle);
  }
}

/** A reaper tick, with the invariants that only a tick can break checked around it. */
async function reap(w: World): Promise<void> {
  const now = w.clock.now();
  const livePools = new Map<string, number>();
  for (const n of alive(w)) {
    if (now - (n.seenAt ?? 0) > livenessMs / 2) continue;
    for (const pool of n.pools) livePools.set(pool, (livePools.get(pool) ?? 0) + 1);
  }
  const before = (await allTasks(w)).filter((t) => t.state === 'queued' && t.pool !== undefined);
  await w.cp.reaper.tick();
  const after = new Map((await allTasks(w)).map((t) => [t.id, t]));
  for (const t of before) {
    const live = livePools.get(t.pool as string) ?? 0;
    if (live === 0) continue;
    const next = after.get(t.id) as TaskRecord;
    if (next.deadline !== undefined && next.deadline < now) continue;
    expect(
      { state: next.state, pool: next.pool },
      `the reaper took task ${t.id} out of pool ${t.pool}, where ${live} nodes are live (${w.nodes.length} registered)`,
    ).toEqual({ state: 'queued', pool: t.pool });
  }
  for (const t of after.values()) {
    if (t.state === 'assigned' || t.state === 'running') expect(t.leaseExpiresAt ?? 0).toBeGreaterThanOrEqual(now);
    if (t.deadline !== undefined && t.deadline < now) expect(isTerminal(t.state)).toBe(true);
  }
}

type Cmd = fc.AsyncCommand<object, World>;
const cmd = (name: string, run: (w: World) => Promise<void>): Cmd => ({
  check: () => true,
  run: async (_m, w) => {
    await run(w);
    expect(await allTasks(w)).toHaveLength(w.submitted); // no accepted task is lost
  },
  toString: () => name,
});

const submit = fc
  .record({
    tasks: fc.integer({ min: 1, max: 3 }),
    retries: fc.constantFrom(0, 2),
    gpus: fc.constantFrom(0, 1, 2),
    vendor: fc.constantFrom(undefined, 'nvidia' as const, 'amd' as const),
    deadlineMs: fc.oneof(
      { weight: 3, arbitrary: fc.constant(undefined) },
      { weight: 1, arbitrary: fc.integer({ min: 2000, max: 60_000 }) },
    ),
    routeNow: fc.boolean(),
  })
  .map((s) =>
    cmd(`submit(${JSON.stringify(s)})`, async (w) => {
      const input: JobSpecInput = {
        command: ['echo', 'ok'],
        tasks: s.tasks,
        retries: s.retries,
        resources: { gpus: { count: s.gpus, ...(s.vendor ? { vendor: s.vendor } : {}) } },
        ...(s.deadlineMs === undefined ? {} : { deadline: new Date(w.clock.now() + s.deadlineMs).toISOString() }),
      };
      await w.cp.jobs.submit('default', JobSpec.parse(input));
      w.submitted += s.tasks;
      // The schedule queue's worker routes the new tasks at once, mostly (drainSchedule otherwise).
      if (s.routeNow) await drain(w, queueNames.schedule);
    }),
  );

const joinCmd = fc.constantFrom(...kindNames).map((kind) =>
  cmd(`join(${kind})`, async (w) => {
    await join(w, kind, 'later');
    w.cp.router.invalidate();
  }),
);

/** An operator retires the oldest machines of one kind at once: they never call again. */
const retireWave = fc.constantFrom(...kindNames).map((kind) =>
  cmd(`retire the first wave of ${kind}`, async (w) => {
    for (const n of w.nodes) if (n.kind === kind && n.wave === 'first') n.seenAt = undefined;
    w.held = w.held.filter((h) => w.nodes.find((n) => n.id === h.node)?.seenAt !== undefined);
  }),
);

const leave = fc.nat(5000).map((i) =>
  cmd(`leave(${i})`, async (w) => {
    const live = alive(w);
    const n = live[i % Math.max(1, live.length)];
    if (n === undefined) return;
    n.seenAt = undefined;
    w.held = w.held.filter((h) => h.node !== n.id);
  }),
);

/** A live node of `kind` polls (the newest first: the oldest may be retired next). */
const poll = fc.tuple(fc.constantFrom(...kindNames), fc.nat(20)).map(([kind, i]) =>
  cmd(`poll(${kind}, ${i})`, async (w) => {
    const live = alive(w).filter((n) => n.kind === kind);
    const n = live[live.length - 1 - (i % Math.max(1, live.length))];
    if (n === undefined) return;
    const a = await w.cp.dispatcher.poll(n.id, 0);
    if (a === undefined) return;
    const task = (await allTasks(w)).find((t) => t.id === a.taskId) as TaskRecord;
    expect(fitOnNode(task.requirements, kinds[kind])).toBeDefined();
    w.held.push({ a, node: n.id });
  }),
);

const finish = fc
  .tuple(fc.nat(10), fc.constantFrom('result' as const, 'result' as const, 'error' as const))
  .map(([i, how]) =>
    cmd(`finish(${i}, ${how})`, async (w) => {
      const h = w.held[i % Math.max(1, w.held.length)];
      if (h === undefined) return;
      w.held = w.held.filter((x) => x !== h);
      try {
        if (how === 'result') {
          await w.cp.reports.result(h.node, h.a.taskId, {
            attempt: h.a.attempt,
            exitCode: 0,
            resultHash: goodHash,
            outputs: goodOutputs,
            metrics: { wallMs: 1 },
          });
        } else {
          await w.cp.reports.fail(h.node, h.a.taskId, { attempt: h.a.attempt, reason: 'error', message: 'x' });
        }
      } catch (error) {
        if (!(error instanceof LeaseLostError)) throw error;
      }
    }),
  );

/** Time passes while every live node heartbeats each interval; then the reaper ticks. */
const advanceWithHeartbeats = fc.constantFrom(2 * heartbeatIntervalMs, livenessMs + 1, leaseMs + 1).map((ms) =>
  cmd(`advance(${ms}) with heartbeats + reaper`, async (w) => {
    for (let passed = 0; passed < ms; passed += heartbeatIntervalMs) {
      w.clock.advance(Math.min(heartbeatIntervalMs, ms - passed));
      await heartbeatAll(w);
    }
    await reap(w);
  }),
);

/** A short silence (under the liveness window): nobody calls, the reaper ticks. */
const advance = fc.constantFrom(500, heartbeatIntervalMs).map((ms) =>
  cmd(`advance(${ms}) + reaper`, async (w) => {
    w.clock.advance(ms);
    await reap(w);
  }),
);

const drainSchedule = fc.constant(cmd('drain schedule queue', (w) => drain(w, queueNames.schedule)));
const drainVerify = fc.constant(cmd('drain verify queue', (w) => drain(w, queueNames.verify)));

const commands = [
  submit,
  submit,
  submit,
  joinCmd,
  retireWave,
  retireWave,
  leave,
  poll,
  finish,
  finish,
  advanceWithHeartbeats,
  advanceWithHeartbeats,
  advance,
  drainSchedule,
  drainSchedule,
  drainVerify,
];

async function finishHeld(w: World): Promise<void> {
  for (const h of w.held) {
    try {
      await w.cp.reports.result(h.node, h.a.taskId, {
        attempt: h.a.attempt,
        exitCode: 0,
        resultHash: goodHash,
        outputs: goodOutputs,
        metrics: { wallMs: 1 },
      });
    } catch (error) {
      if (!(error instanceof LeaseLostError)) throw error;
    }
  }
  w.held = [];
}

const fitsNoKind = (t: TaskRecord) => kindNames.every((kind) => fitOnNode(t.requirements, kinds[kind]) === undefined);

/** Live nodes work honestly until nothing is left: every accepted task must end. */
async function settle(w: World): Promise<void> {
  await finishHeld(w);
  for (let round = 0; round < 60; round++) {
    const open = (await allTasks(w)).filter((t) => !isTerminal(t.state));
    // What no kind of node fits may only wait for its deadline: let time run to it faster.
    const waiting = open.every((t) => t.state === 'queued' && fitsNoKind(t));
    if (waiting && open.every((t) => t.deadline === undefined)) break;
    w.clock.advance(waiting ? 10 * heartbeatIntervalMs : heartbeatIntervalMs);
    await heartbeatAll(w);
    await reap(w);
    await drain(w, queueNames.schedule);
    // The newest few nodes of each kind do the work (a thousand idle polls would only cost time).
    for (const kind of kindNames) {
      for (const n of alive(w)
        .filter((x) => x.kind === kind)
        .slice(-4)) {
        const a = await w.cp.dispatcher.poll(n.id, 0);
        if (a === undefined) continue;
        await w.cp.reports.result(n.id, a.taskId, {
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
  for (const t of (await allTasks(w)).filter((x) => !isTerminal(x.state))) {
    // Only a task no kind of node fits may wait, and only without a deadline.
    expect(t.state).toBe('queued');
    expect(t.deadline).toBeUndefined();
    expect(fitsNoKind(t)).toBe(true);
  }
}

describe('fleet at scale (model-based, more than 1,000 nodes)', () => {
  it('keeps queued tasks in live pools, leases and deadlines enforced, and loses no task', async () => {
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: 50, size: 'max' }), async (cmds) => {
        const clock = new ManualClock();
        const h = inProcessControlPlane({
          clock,
          settings: { leaseMs, heartbeatIdleMs: heartbeatIntervalMs, livenessMs },
        });
        const w: World = { ...h, clock, nodes: [], held: [], submitted: 0 };
        try {
          for (let i = 0; i < firstWave; i++) {
            await join(w, kindNames[i % kindNames.length] as Kind, 'first');
            clock.advance(1);
          }
          // Those that left stopped calling; the survivors heartbeat while they are gone for good.
          for (const [i, n] of w.nodes.entries()) if (i % survivorEvery !== 0) n.seenAt = undefined;
          clock.advance(livenessMs + 1);
          await heartbeatAll(w);
          // A few newer machines of each kind, registered after the first wave.
          for (const kind of kindNames) for (let i = 0; i < 3; i++) await join(w, kind, 'later');
          w.cp.router.invalidate();
          // A backlog in every pool: a job of four tasks per kind of node, routed.
          for (const gpus of [
            { count: 0 },
            { count: 1, vendor: 'nvidia' as const },
            { count: 1, vendor: 'amd' as const },
          ]) {
            await w.cp.jobs.submit(
              'default',
              JobSpec.parse({ command: ['echo', 'ok'], tasks: 4, resources: { gpus } } satisfies JobSpecInput),
            );
            w.submitted += 4;
          }
          await drain(w, queueNames.schedule);
          await fc.asyncModelRun(() => ({ model: {}, real: w }), cmds);
          // A fresh node of each kind joins, so every task that fits some kind has somewhere to run.
          for (const kind of kindNames) await join(w, kind, 'later');
          w.cp.router.invalidate();
          await settle(w);
        } finally {
          await h.close();
        }
      }),
      { numRuns: 6, interruptAfterTimeLimit: 60_000 },
    );
  }, 600_000);
});
