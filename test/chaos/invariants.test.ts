import { describe, expect, it } from 'vitest';
import type { JobRecord } from '../../functions/domain/scheduling/job-record.js';
import type { TaskRecord } from '../../functions/domain/scheduling/task-record.js';
import { resultHash, sha256Hex } from '../../protocol/index.js';
import { checkInvariants, type RunLedger, type StoredState } from './invariants.js';

/**
 * The checker itself: a clean state passes every check, and each kind of broken state fails the
 * check that names it (so a chaos run that passes means something).
 */

const outputs = [{ name: 'stdout', sha256: sha256Hex('ok\n'), bytes: 3 }];
const good = resultHash(outputs);
const at = '2026-11-25T12:00:00.000Z';

function job(id: string, tasks = 1, verification: JobRecord['spec']['verification'] = { mode: 'none' }): JobRecord {
  return { id, owner: 'default', createdAt: 0, spec: { tasks, verification } as JobRecord['spec'] };
}

function verifiedTask(
  jobId: string,
  index = 0,
  overrides: { [K in keyof TaskRecord]?: TaskRecord[K] | undefined } = {},
): TaskRecord {
  const task: Record<string, unknown> = {
    id: `${jobId}.${index}`,
    jobId,
    index,
    taskCount: 1,
    state: 'verified',
    attempt: 1,
    failedAttempts: 0,
    maxAttempts: 3,
    requirements: {} as TaskRecord['requirements'],
    timeoutSeconds: 60,
    nodeId: 'node_a',
    result: { exitCode: 0, resultHash: good, outputs, metrics: { wallMs: 1 }, reportedAt: at },
    attempts: [{ number: 1, nodeId: 'node_a', assignedAt: at, endedAt: at, outcome: 'completed' }],
    queuedAt: 0,
    updatedAt: 0,
    ...overrides,
  };
  for (const [k, v] of Object.entries(task)) if (v === undefined) delete task[k];
  return task as unknown as TaskRecord;
}

const ledger = (accepted: string[], quiesced = true): RunLedger => ({
  accepted: new Map(accepted.map((id) => [id, { tasks: 1 }])),
  quiesced,
  leaseSlackMs: 1000,
});

const state = (jobs: JobRecord[], tasks: TaskRecord[], readAt = 10_000): StoredState => ({
  readAt,
  jobs,
  tasks,
  nodes: [],
});

const failed = (s: StoredState, l: RunLedger) =>
  checkInvariants(s, l)
    .filter((r) => !r.passed)
    .map((r) => r.name);

describe('the invariant checker', () => {
  it('passes a clean state', () => {
    expect(failed(state([job('j1')], [verifiedTask('j1')]), ledger(['j1']))).toEqual([]);
  });

  it('finds an accepted job that is missing or unfinished', () => {
    expect(failed(state([], []), ledger(['j1']))).toEqual(['accepted-tasks-end']);
    const queued = verifiedTask('j1', 0, {
      state: 'queued',
      attempts: [],
      attempt: 0,
      result: undefined,
      nodeId: undefined,
    });
    expect(failed(state([job('j1')], [queued]), ledger(['j1']))).toContain('accepted-tasks-end');
  });

  it('finds a task completed twice', () => {
    const twice = verifiedTask('j1', 0, {
      attempt: 2,
      attempts: [
        { number: 1, nodeId: 'node_a', assignedAt: at, endedAt: at, outcome: 'completed' },
        { number: 2, nodeId: 'node_b', assignedAt: at, endedAt: at, outcome: 'completed' },
      ],
    });
    expect(failed(state([job('j1')], [twice]), ledger(['j1']))).toEqual(['ends-exactly-once']);
  });

  it('finds attempts past the bound or the budget', () => {
    const attempts = Array.from({ length: 20 }, (_, i) => ({
      number: i + 1,
      nodeId: 'node_a',
      assignedAt: at,
      endedAt: at,
      outcome: 'released' as const,
    }));
    const many = verifiedTask('j1', 0, {
      state: 'failed',
      attempt: 20,
      attempts,
      failedAttempts: 4,
      error: { code: 'x', message: 'x' },
    });
    expect(failed(state([job('j1')], [many]), ledger(['j1']))).toEqual(['attempts-bounded']);
  });

  it('finds a lease held past its expiry by a dead node', () => {
    const leased = verifiedTask('j1', 0, {
      state: 'running',
      leaseExpiresAt: 5000,
      result: undefined,
      attempts: [{ number: 1, nodeId: 'node_a', assignedAt: at }],
    });
    expect(failed(state([job('j1')], [leased], 5500), ledger(['j1'], false))).toEqual([]);
    expect(failed(state([job('j1')], [leased], 7000), ledger(['j1'], false))).toEqual(['no-lease-past-expiry']);
  });

  it('finds a result accepted without the verification its job asked for', () => {
    const expected = job('j1', 1, { mode: 'expected-hash', sha256: sha256Hex('something else') });
    expect(failed(state([expected], [verifiedTask('j1')]), ledger(['j1']))).toEqual(['verified-as-asked']);
    const tampered = verifiedTask('j1', 0, {
      result: { exitCode: 0, resultHash: sha256Hex('x'), outputs, metrics: { wallMs: 1 }, reportedAt: at },
    });
    expect(failed(state([job('j1')], [tampered]), ledger(['j1']))).toEqual(['verified-as-asked']);
  });

  it('finds a task in the wrong index', () => {
    const s = state([job('j1')], [verifiedTask('j1')]);
    s.taskIndexes = new Map([['j1.0', { byDue: 'DUE#lease' }]]);
    expect(failed(s, ledger(['j1']))).toEqual(['index-follows-state']);
  });
});
