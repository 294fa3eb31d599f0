import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { openDatabase } from '../../functions/adapters/embedded/sqlite.js';
import { SqliteStore } from '../../functions/adapters/embedded/sqlite-store.js';
import { PoolSummaries } from '../../functions/domain/resource/pool-summary.js';
import { jobPk } from '../../functions/domain/scheduling/job-record.js';
import { countTasks } from '../../functions/domain/scheduling/job-status.js';
import { claim, expireLease, recordFailure, stop } from '../../functions/domain/scheduling/task-machine.js';
import {
  jobTaskCounters,
  newTaskRecord,
  putTask,
  type TaskRecord,
  taskKey,
} from '../../functions/domain/scheduling/task-record.js';
import { ConditionFailedError, type StoredItem, type Write } from '../../functions/ports/store.js';
import { ManualClock } from '../contract/store-contract.js';

/**
 * The pools' `queued` counters, and each job's task counters, are kept by `add` writes that ride
 * along with every task write (putTask), never recomputed. Over random sequences of transitions (routing, claims, lost
 * leases, failures, releases, moving tasks out of a dead pool, cancelling whole jobs in one
 * transaction, writes that lose a race), every counter must equal the number of tasks queued in
 * its pool, read back from the store.
 */
const pools = ['eu-west/h100', 'eu-west/a100', 'local/cpu'] as const;
const jobs = ['job-a', 'job-b', 'job-c'];
const tasksPerJob = 3;

type Op =
  | { kind: 'route'; task: number; pool: number }
  | { kind: 'unroute' | 'claim' | 'expire' | 'fail' | 'release' | 'stale'; task: number }
  | { kind: 'cancel'; job: number };

const taskCount = jobs.length * tasksPerJob;
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('route' as const), task: fc.nat(taskCount - 1), pool: fc.nat(pools.length - 1) }),
  fc.record({
    kind: fc.constantFrom('unroute', 'claim', 'expire', 'fail', 'release', 'stale') as fc.Arbitrary<
      'unroute' | 'claim' | 'expire' | 'fail' | 'release' | 'stale'
    >,
    task: fc.nat(taskCount - 1),
  }),
  fc.record({ kind: fc.constant('cancel' as const), job: fc.nat(jobs.length - 1) }),
);

/** The next record for `op`, or undefined where the transition does not apply to the task's state. */
function transition(o: Op, t: TaskRecord, now: number): TaskRecord | undefined {
  switch (o.kind) {
    case 'route':
      return t.state === 'queued' ? { ...t, pool: pools[o.pool] ?? pools[0], updatedAt: now } : undefined;
    case 'unroute': {
      if (t.state !== 'queued' || t.pool === undefined) return undefined;
      const { pool: _dead, ...rest } = t;
      return { ...rest, updatedAt: now };
    }
    case 'claim':
      return t.state === 'queued' && t.pool !== undefined ? claim(t, 'node-1', [], [], now, 30_000) : undefined;
    case 'expire':
      return t.state === 'assigned' ? expireLease(t, now) : undefined;
    case 'fail':
      return t.state === 'assigned' ? recordFailure(t, 'error', 'boom', now) : undefined;
    case 'release':
      return t.state === 'assigned' ? recordFailure(t, 'released', 'busy', now) : undefined;
    default:
      return undefined;
  }
}

describe('pool summary and job counters', () => {
  it('stay equal to the queued tasks of each pool and the task states of each job over random transitions (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 60 }), async (ops) => {
        const clock = new ManualClock(Date.UTC(2026, 0, 1));
        const store = new SqliteStore(openDatabase(':memory:'), clock);
        const summaries = new PoolSummaries(store, clock, 0);
        try {
          for (const job of jobs) {
            const tasks = Array.from({ length: tasksPerJob }, (_, i) =>
              newTaskRecord(
                job,
                i,
                tasksPerJob,
                3,
                { gpus: { count: 0 }, needsContainer: false },
                60,
                undefined,
                clock.now(),
              ),
            );
            await store.transact(tasks.flatMap((t) => putTask(t, 0)));
          }
          const read = async (i: number) => {
            const item = await store.get<TaskRecord>(taskKey(jobs[Math.floor(i / tasksPerJob)] ?? '', i % tasksPerJob));
            if (item === undefined) throw new Error(`task ${i} missing`);
            return item;
          };

          for (const o of ops) {
            clock.advance(1000);
            const now = clock.now();
            if (o.kind === 'cancel') {
              // Like JobService.cancel: every task of the job in one transaction.
              const items = await Promise.all(
                Array.from({ length: tasksPerJob }, (_, i) => read(o.job * tasksPerJob + i)),
              );
              await store.transact(
                items.flatMap((item) =>
                  putTask(stop(item.data, now, 'cancelled', 'cancelled', 'by owner'), item.version),
                ),
              );
            } else if (o.kind === 'stale') {
              // A write on a version someone else moved past fails whole: its counter moves with it.
              const item: StoredItem<TaskRecord> = await read(o.task);
              const moved = { ...item.data, pool: item.data.pool === pools[0] ? pools[1] : pools[0] };
              const writes: Write[] = putTask(moved, item.version + 1);
              await expect(store.transact(writes)).rejects.toBeInstanceOf(ConditionFailedError);
            } else {
              const item = await read(o.task);
              const next = transition(o, item.data, now);
              if (next !== undefined) await store.transact(putTask(next, item.version));
            }

            const tasks = await Promise.all(Array.from({ length: taskCount }, (_, i) => read(i)));
            for (const pool of pools) {
              const queued = tasks.filter((t) => t.data.state === 'queued' && t.data.pool === pool).length;
              expect((await summaries.get(pool)).queued).toBe(queued);
            }
            for (const { data } of tasks) {
              expect(data.countedIn).toBe(data.state === 'queued' ? data.pool : undefined);
            }
            for (const job of jobs) {
              const mine = tasks.filter((t) => t.data.jobId === job).map((t) => t.data);
              const items = await store.query<Record<string, unknown>>({ pk: jobPk(job), skPrefix: 'COUNT#' });
              const counters = jobTaskCounters(
                items.items.map((i) => i.data),
                tasksPerJob,
              );
              expect(counters?.counts).toEqual(countTasks(mine));
              expect(counters?.started).toBe(mine.filter((t) => t.attempt > 0).length);
            }
          }
        } finally {
          await store.close();
        }
      }),
      { numRuns: 60 },
    );
  });
});
