import { afterEach, describe, expect, it } from 'vitest';
import { resultHash, sha256Hex } from '../../protocol/index.js';
import { inProcessControlPlane, TestNode } from '../support/in-process.js';
import { assignedTask, expectRefused, type Harness, submitJob, unchanged } from './support.js';

/**
 * Result checks (functions/domain/scheduling/*): a node cannot report a result hash that is not
 * the hash of its outputs, and an `expected-hash` job's expected value is never shown to anyone
 * who could forge a matching report: not in the job view, not in the work sent to nodes.
 */

let h: Harness;
afterEach(() => h?.close());

const outputs = [{ name: 'stdout', sha256: sha256Hex('hello\n'), bytes: 6 }];

describe('reported results', () => {
  it('refuses a result whose hash is not the hash of its outputs (400); the task stays assigned', async () => {
    h = inProcessControlPlane();
    const { node, assignment } = await assignedTask(h);
    const path = `/v1/nodes/${node.id}/tasks/${assignment.taskId}/result`;
    const good = resultHash(outputs);
    const forged = [
      // Any other hash.
      { resultHash: 'ab'.repeat(32), outputs },
      // The right hash with one flipped bit.
      { resultHash: `${good.slice(0, -1)}${good.at(-1) === '0' ? '1' : '0'}`, outputs },
      // The right hash for other outputs than those reported.
      { resultHash: good, outputs: [{ ...outputs[0], bytes: 7 }] },
      { resultHash: good, outputs: [] },
    ];
    for (const report of forged) {
      await unchanged(h, async () =>
        expectRefused(
          await node.call('POST', path, {
            attempt: assignment.attempt,
            exitCode: 0,
            metrics: { wallMs: 1 },
            ...report,
          }),
          400,
          'result_hash_mismatch',
        ),
      );
    }
    const view = (await (await h.api(`/v1/jobs/${assignment.jobId}`)).json()) as { tasks: { state: string }[] };
    expect(view.tasks[0]?.state).toBe('assigned');
  });

  it("never shows an expected-hash job's expected value: not in the job view, the list, nor the work", async () => {
    h = inProcessControlPlane();
    const expected = 'e7'.repeat(32);
    const job = await submitJob(h, { command: ['true'], verification: { mode: 'expected-hash', sha256: expected } });
    expect(JSON.stringify(job)).not.toContain(expected);
    expect(await (await h.api(`/v1/jobs/${job.id}`)).text()).not.toContain(expected);
    expect(await (await h.api('/v1/jobs')).text()).not.toContain(expected);
    const node = new TestNode(h.request);
    expect((await node.register()).status).toBe(201);
    await h.cp.scheduler.schedule({ jobId: job.id });
    const work = await node.poll(0);
    const text = await work.text();
    expect(work.status, text).toBe(200);
    expect(text).not.toContain(expected);
    // A result that does not match is rejected without the expected value in the attempt's detail.
    const { assignment } = JSON.parse(text) as { assignment: { taskId: string; attempt: number } };
    const report = {
      attempt: assignment.attempt,
      exitCode: 0,
      resultHash: resultHash(outputs),
      outputs,
      metrics: { wallMs: 1 },
    };
    expect((await node.call('POST', `/v1/nodes/${node.id}/tasks/${assignment.taskId}/result`, report)).status).toBe(
      200,
    );
    const tasks = await (await h.api(`/v1/jobs/${job.id}/tasks`)).text();
    expect(tasks).toMatch(/rejected|failed|queued/);
    expect(tasks).not.toContain(expected);
  });
});
