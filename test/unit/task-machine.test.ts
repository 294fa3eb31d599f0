import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { ConflictError } from '../../functions/domain/errors.js';
import { LeaseLostError } from '../../functions/domain/scheduling/errors.js';
import {
  assertLease,
  attemptsKept,
  claim,
  markRejected,
  markVerified,
  maxAttemptsKept,
  maxAttemptsStarted,
  recordFailure,
  releaseAllowance,
} from '../../functions/domain/scheduling/task-machine.js';
import { newTaskRecord, type TaskRecord } from '../../functions/domain/scheduling/task-record.js';
import { errorResponder } from '../../functions/http/errors.js';

/**
 * The task machine's failure paths (functions/domain/scheduling/task-machine.ts): a refused
 * transition is a 409 for whoever caused it, never a 500; a node that keeps claiming and releasing
 * cannot keep a task alive for ever; and a task's attempt history stays small whatever happens.
 */

const t0 = Date.parse('2026-11-25T12:00:00Z');
const leaseMs = 30_000;

const queuedTask = (maxAttempts = 3): TaskRecord =>
  newTaskRecord(
    `job_${'0'.repeat(26)}`,
    0,
    1,
    maxAttempts,
    { gpus: { count: 0 }, needsContainer: false },
    60,
    undefined,
    t0,
  );

const claimed = (task: TaskRecord, nodeId = 'node-a', now = t0): TaskRecord =>
  claim(task, nodeId, [], [], now, leaseMs);

/** What the HTTP layer answers when a route runs into `fail`. */
async function answerTo(fail: () => unknown): Promise<{ status: number; body: unknown }> {
  const app = new Hono().onError(errorResponder(() => {}));
  app.get('/', () => {
    fail();
    return new Response('unreachable');
  });
  const response = await app.request('/');
  return { status: response.status, body: await response.json() };
}

describe('refused transitions', () => {
  const cases: [string, () => unknown][] = [
    ['claiming a task that is already assigned', () => claimed(claimed(queuedTask()), 'node-b')],
    ['verifying a task that was never reported', () => markVerified(claimed(queuedTask()), t0)],
    ['rejecting a queued task', () => markRejected(queuedTask(), 'bad output', t0)],
  ];

  it.each(cases)('%s is a ConflictError answered 409 invalid_transition', async (_what, fail) => {
    expect(fail).toThrow(ConflictError);
    const { status, body } = await answerTo(fail);
    expect(status).toBe(409);
    expect(body).toMatchObject({ error: { code: 'invalid_transition', details: { taskId: queuedTask().id } } });
  });
});

describe('released attempts', () => {
  it('are free up to the allowance, then count against the retry budget until the task fails', () => {
    const maxAttempts = 3;
    let task = queuedTask(maxAttempts);
    let now = t0;
    let cycles = 0;
    while (task.state === 'queued') {
      now += 1000;
      task = recordFailure(claimed(task, 'node-a', now), 'released', 'shutting down', now);
      cycles++;
      expect(cycles).toBeLessThan(100);
    }
    expect(releaseAllowance(maxAttempts)).toBe(2 * maxAttempts);
    // The allowance of free releases, then one budget's worth that count.
    expect(cycles).toBe(releaseAllowance(maxAttempts) + maxAttempts);
    expect(task.attempt).toBe(maxAttemptsStarted(maxAttempts));
    expect(task.state).toBe('failed');
    expect(task.releases).toBe(cycles);
    expect(task.failedAttempts).toBe(maxAttempts);
    expect(task.error).toMatchObject({ code: 'retries_exhausted' });
    expect(task.error?.message).toMatch(/released/);
  });

  it('within the allowance leave the retry budget untouched', () => {
    let task = queuedTask(2);
    for (let i = 0; i < releaseAllowance(2); i++) {
      task = recordFailure(claimed(task), 'released', 'shutting down', t0);
    }
    expect(task).toMatchObject({ state: 'queued', failedAttempts: 0, releases: releaseAllowance(2) });
  });
});

describe('attempt history', () => {
  /** A task that keeps failing under a budget no job can ask for, so only the cap bounds its history. */
  function churned(times: number): TaskRecord {
    let task = queuedTask(10_000);
    for (let i = 1; i <= times; i++) {
      task = recordFailure(claimed(task, `node-${i}`, t0 + i), 'error', `attempt ${i} broke`, t0 + i);
    }
    return task;
  }
  const bound = maxAttemptsKept;

  it('keeps the first and the last attempts, counting those dropped between them', () => {
    expect(maxAttemptsKept).toBe(attemptsKept.first + attemptsKept.last);
    const task = churned(500);
    expect(task.attempts.length).toBe(bound);
    expect(task.attemptsDropped).toBe(500 - bound);
    expect(task.attempts[0]?.number).toBe(1);
    expect(task.attempts.at(-1)).toMatchObject({ number: 500, outcome: 'failed', detail: 'error: attempt 500 broke' });
    expect(task.attempts.map((a) => a.number)).toEqual([
      ...Array.from({ length: attemptsKept.first }, (_, i) => i + 1),
      ...Array.from({ length: attemptsKept.last }, (_, i) => 500 - attemptsKept.last + 1 + i),
    ]);
    // Far below DynamoDB's 400 KB item limit even with the longest detail a node may send.
    const longest = recordFailure(claimed(task), 'error', 'x'.repeat(2048), t0);
    expect(Buffer.byteLength(JSON.stringify(longest))).toBeLessThan(100_000);
  });

  it('holds the bound at every step, and the current attempt is the one closed', () => {
    let task = queuedTask(10_000);
    for (let i = 1; i <= 60; i++) {
      task = claimed(task, `node-${i}`);
      expect(task.attempts.length).toBeLessThanOrEqual(bound);
      expect(task.attempts.at(-1)).toMatchObject({ number: i, nodeId: `node-${i}` });
      task = recordFailure(task, 'error', 'broke', t0);
      expect(task.attempts.length).toBeLessThanOrEqual(bound);
    }
  });

  it('tells a node whose attempt was dropped from the history that it lost the lease (409), not that it never had it', () => {
    const task = claimed(churned(100), 'node-now');
    expect(() => assertLease(task, 'node-50', 50)).toThrow(LeaseLostError);
  });
});
