import { afterEach, describe, expect, it } from 'vitest';
import type { QuotaSettings } from '../../functions/domain/security/quotas.js';
import type { JobWithTasks } from '../../protocol/index.js';
import { inProcessControlPlane, ManualClock } from '../support/in-process.js';

function harness(quotas: QuotaSettings) {
  const clock = new ManualClock();
  const h = inProcessControlPlane({ clock, settings: { quotas } });
  const submit = (spec: Record<string, unknown>, key?: string) =>
    h.api(
      '/v1/jobs',
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(spec) },
      ...(key === undefined ? [] : [key]),
    );
  return { ...h, clock, submit };
}

let h: ReturnType<typeof harness>;
afterEach(async () => {
  await h?.close();
});

async function expectQuota(response: Response, status: 403 | 429, quota: string) {
  expect(response.status).toBe(status);
  const body = (await response.json()) as { error: { code: string; message: string; details: { quota: string } } };
  expect(body.error.code).toBe('quota_exceeded');
  expect(body.error.details.quota).toBe(quota);
  if (status === 429) expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
  return body.error;
}

const gpuJob = (gpus: number, tasks: number, timeoutSeconds: number) => ({
  command: ['train'],
  resources: { gpus: { count: gpus } },
  tasks,
  timeoutSeconds,
});

describe('GPU-hours per rolling day', () => {
  it('accepts jobs up to the quota, refuses the next with 429 and Retry-After writing nothing, and accepts it a day later', async () => {
    h = harness({ maxOpenTasks: 0, gpuHoursPerDay: 10 });
    expect((await h.submit(gpuJob(2, 2, 3600))).status).toBe(201); // 4 GPU-hours
    h.clock.advance(3 * 3600_000);
    expect((await h.submit(gpuJob(1, 6, 3600))).status).toBe(201); // 6 more: 10
    expect((await h.submit({ command: ['true'] })).status).toBe(201); // CPU only: no GPU-hours

    const before = h.snapshot();
    const refused = await expectQuota(await h.submit(gpuJob(1, 1, 1800)), 429, 'gpuHoursPerDay');
    expect(refused.message).toContain('10 of 10');
    expect(h.snapshot()).toEqual(before);

    // The first job's hour leaves the rolling day 24 h after it was requested; Retry-After says when.
    const retryAfter = Number((await h.submit(gpuJob(1, 1, 1800))).headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(20 * 3600);
    expect(retryAfter).toBeLessThanOrEqual(21 * 3600);
    h.clock.advance(retryAfter * 1000);
    expect((await h.submit(gpuJob(1, 1, 1800))).status).toBe(201);
  });

  it('refuses with 403 a job larger than the whole quota, which would never fit', async () => {
    h = harness({ maxOpenTasks: 0, gpuHoursPerDay: 10 });
    await expectQuota(await h.submit(gpuJob(8, 2, 3600)), 403, 'gpuHoursPerDay');
  });

  it('counts each tenant on its own', async () => {
    h = harness({ maxOpenTasks: 0, gpuHoursPerDay: 4 });
    expect((await h.submit(gpuJob(4, 1, 3600))).status).toBe(201);
    await expectQuota(await h.submit(gpuJob(1, 1, 60)), 429, 'gpuHoursPerDay');
    const other = await h.createKey('other-tenant');
    expect((await h.submit(gpuJob(4, 1, 3600), other)).status).toBe(201);
  });
});

describe('open tasks', () => {
  it('refuses a job that would go over the open tasks, and counts finished jobs out without a scan', async () => {
    h = harness({ maxOpenTasks: 5, gpuHoursPerDay: 0 });
    const first = (await (await h.submit({ command: ['true'], tasks: 3 })).json()) as JobWithTasks;
    expect((await h.submit({ command: ['true'], tasks: 2 })).status).toBe(201);

    const before = h.snapshot();
    const refused = await expectQuota(await h.submit({ command: ['true'] }), 429, 'maxOpenTasks');
    expect(refused.message).toContain('5 of 5');
    expect(h.snapshot()).toEqual(before);

    // Cancelling finishes the first job's three tasks; the next submission over the quota re-counts
    // the tenant's listed jobs (at most every 10 s per instance) and fits.
    expect((await h.api(`/v1/jobs/${first.id}/cancel`, { method: 'POST' })).status).toBe(200);
    await expectQuota(await h.submit({ command: ['true'], tasks: 3 }), 429, 'maxOpenTasks');
    h.clock.advance(10_000);
    expect((await h.submit({ command: ['true'], tasks: 3 })).status).toBe(201);
    await expectQuota(await h.submit({ command: ['true'] }), 429, 'maxOpenTasks');
    await expectQuota(await h.submit({ command: ['true'], tasks: 6 }), 403, 'maxOpenTasks');
  });

  it('lets concurrent submissions of one tenant through up to the quota exactly', async () => {
    h = harness({ maxOpenTasks: 5, gpuHoursPerDay: 0 });
    const statuses = await Promise.all(
      Array.from({ length: 12 }, async () => (await h.submit({ command: ['true'] })).status),
    );
    expect(statuses.filter((s) => s === 201)).toHaveLength(5);
    expect(statuses.filter((s) => s !== 201 && s !== 429)).toEqual([]);
    const list = (await (await h.api('/v1/jobs')).json()) as { jobs: unknown[] };
    expect(list.jobs).toHaveLength(5);
  });
});
