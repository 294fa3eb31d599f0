import { describe, expect, it } from 'vitest';
import { type Assignment, type JobSpecInput, type JobWithTasks, resultHash, sha256Hex } from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, TestNode } from '../support/in-process.js';

/**
 * What a node reports is checked against itself, and what verifies it is never the node's to see:
 * the result hash is recomputed from the reported outputs, and an `expected-hash` job's expected
 * value stays out of every view and of everything sent to nodes.
 */

const stdout = { name: 'stdout', sha256: sha256Hex('ok\n'), bytes: 3 };
const file = { name: 'out/model.bin', sha256: sha256Hex('weights'), bytes: 7 };

async function world() {
  const h = inProcessControlPlane();
  const node = new TestNode(h.request);
  expect((await node.register(cpuInventory())).status).toBe(201);
  const submit = async (spec: JobSpecInput) => {
    const response = await h.api('/v1/jobs', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(spec),
    });
    expect(response.status).toBe(201);
    const job = (await response.json()) as JobWithTasks;
    await h.cp.scheduler.schedule({ jobId: job.id });
    return job;
  };
  /** Polls as the agent does, returning the raw body too (to look for what must not be there). */
  const poll = async (): Promise<{ assignment: Assignment; text: string }> => {
    const response = await node.poll(0);
    expect(response.status).toBe(200);
    const text = await response.text();
    return { assignment: (JSON.parse(text) as { assignment: Assignment }).assignment, text };
  };
  const report = (a: Assignment, body: Record<string, unknown>) =>
    node.call('POST', `/v1/nodes/${node.id}/tasks/${a.taskId}/result`, {
      attempt: a.attempt,
      exitCode: 0,
      metrics: { wallMs: 1 },
      ...body,
    });
  const jobRows = () => h.snapshot().filter((row) => String((row as { pk: string }).pk).startsWith('JOB#'));
  return { ...h, node, submit, poll, report, jobRows };
}

async function expectError(response: Response, status: number, code: string) {
  expect(response.status).toBe(status);
  expect(((await response.json()) as { error: { code: string } }).error.code).toBe(code);
}

describe('result hashes are recomputed from the reported outputs', () => {
  it('refuses a result whose hash does not match its outputs with 400, changing nothing', async () => {
    const w = await world();
    await w.submit({ command: ['true'] });
    const { assignment } = await w.poll();
    const before = w.jobRows();
    for (const [resultHashOf, outputs] of [
      ['0'.repeat(64), [stdout]], // a hash of nothing reported
      [resultHash([stdout]), [stdout, file]], // an output added after hashing
      [resultHash([stdout, file]), [stdout]], // an output left out
      [resultHash([stdout]), [{ ...stdout, bytes: 4 }]], // a size changed
      [resultHash([stdout]), []],
    ] as const) {
      await expectError(await w.report(assignment, { resultHash: resultHashOf, outputs }), 400, 'result_hash_mismatch');
    }
    expect(w.jobRows()).toEqual(before);
    expect(await w.queue.depth('verify')).toBe(0);
    await w.close();
  });

  it('accepts a hash over the outputs in any order, and over no outputs', async () => {
    const w = await world();
    await w.submit({ command: ['true'], tasks: 2 });
    const first = (await w.poll()).assignment;
    const second = (await w.poll()).assignment;
    const listed = await w.report(first, { resultHash: resultHash([stdout, file]), outputs: [file, stdout] });
    expect(listed.status).toBe(200);
    expect(((await listed.json()) as { state: string }).state).toBe('reported');
    expect((await w.report(second, { resultHash: resultHash([]), outputs: [] })).status).toBe(200);
    await w.close();
  });
});

describe("an expected-hash job's expected value", () => {
  const expected = resultHash([stdout]);
  const wrong = { name: 'stdout', sha256: sha256Hex('lazy\n'), bytes: 5 };

  it('is not in the job view, for its owner or anyone', async () => {
    const w = await world();
    const job = await w.submit({ command: ['echo', 'ok'], verification: { mode: 'expected-hash', sha256: expected } });
    expect(job.spec.verification).toEqual({ mode: 'expected-hash' });
    expect(JSON.stringify(job)).not.toContain(expected);
    for (const path of [`/v1/jobs/${job.id}`, '/v1/jobs', `/v1/jobs/${job.id}/tasks`]) {
      const response = await w.api(path);
      expect(response.status).toBe(200);
      expect(await response.text()).not.toContain(expected);
    }
    const view = (await (await w.api(`/v1/jobs/${job.id}`)).json()) as JobWithTasks;
    expect(view.spec.verification).toEqual({ mode: 'expected-hash' });
    await w.close();
  });

  it('never reaches the node: not in the assignment, nor in what the node is told after a rejection', async () => {
    const w = await world();
    const job = await w.submit({
      command: ['echo', 'ok'],
      retries: 1,
      verification: { mode: 'expected-hash', sha256: expected },
    });
    const first = await w.poll();
    expect(first.text).not.toContain(expected);

    // A lazy node's result is rejected by the verifier; the rejection's detail does not name the value.
    const reported = await w.report(first.assignment, { resultHash: resultHash([wrong]), outputs: [wrong] });
    expect(reported.status).toBe(200);
    expect(await reported.text()).not.toContain(expected);
    expect(await w.cp.verifier.verify({ taskId: first.assignment.taskId, attempt: 1 })).toBe('rejected');
    await w.cp.scheduler.schedule({ jobId: job.id });

    const second = await w.poll();
    expect(second.text).not.toContain(expected);
    const failed = await w.node.call('POST', `/v1/nodes/${w.node.id}/tasks/${second.assignment.taskId}/fail`, {
      attempt: second.assignment.attempt,
      reason: 'error',
      message: 'gave up',
    });
    expect(failed.status).toBe(200);
    const text = await failed.text();
    expect(text).toContain('rejected'); // the earlier attempt is in the view the node gets back...
    expect(text).not.toContain(expected); // ...without the expected value
    const owner = await (await w.api(`/v1/jobs/${job.id}`)).text();
    expect(owner).toContain('differs from the expected hash');
    expect(owner).not.toContain(expected);
    await w.close();
  });

  it('still decides verification: a matching result is verified', async () => {
    const w = await world();
    const job = await w.submit({ command: ['echo', 'ok'], verification: { mode: 'expected-hash', sha256: expected } });
    const { assignment } = await w.poll();
    expect((await w.report(assignment, { resultHash: expected, outputs: [stdout] })).status).toBe(200);
    expect(await w.cp.verifier.verify({ taskId: assignment.taskId, attempt: 1 })).toBe('verified');
    const view = (await (await w.api(`/v1/jobs/${job.id}`)).json()) as JobWithTasks;
    expect(view.status).toBe('succeeded');
    await w.close();
  });
});
