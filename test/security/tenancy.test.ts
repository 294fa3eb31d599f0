import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { JobView } from '../../protocol/index.js';
import { inProcessControlPlane, ManualClock } from '../support/in-process.js';
import { expectRefused, type Harness, jsonInit, submitJob, unchanged } from './support.js';

/**
 * API keys and tenancy (functions/http/auth.ts, functions/domain/security/api-keys.ts): another
 * tenant's jobs do not exist for a caller (404, never 403, so ids are not confirmed); a revoked,
 * expired, tampered or missing key is 401; a key without the route's scope is 403; a submission
 * cannot set what the control plane owns (400). Each refusal leaves the store as it was.
 */

let h: Harness;
let clock: ManualClock;
beforeEach(() => {
  clock = new ManualClock(Date.now());
  h = inProcessControlPlane({ clock });
});
afterEach(() => h.close());

/** Flips bit `bit` of character `index` of `text` (staying printable ASCII). */
const flipChar = (text: string, index: number, bit = 0) =>
  text.slice(0, index) + String.fromCharCode(text.charCodeAt(index) ^ (1 << bit)) + text.slice(index + 1);

describe('tenancy', () => {
  it("gives tenant A a 404 for reading, listing the tasks of and cancelling tenant B's job", async () => {
    const a = await h.createKey('tenant-a');
    const b = await h.createKey('tenant-b');
    const job = await submitJob(h, { command: ['echo', 'b'], name: 'bs-job' }, b);

    await unchanged(h, async () => {
      await expectRefused(await h.api(`/v1/jobs/${job.id}`, {}, a), 404);
      await expectRefused(await h.api(`/v1/jobs/${job.id}/tasks`, {}, a), 404);
      await expectRefused(await h.api(`/v1/jobs/${job.id}/cancel`, { method: 'POST' }, a), 404);
    });
    // The same answer as for an id that exists nowhere: nothing tells A that B's job exists.
    const nowhere = `job_${'0'.repeat(26)}`;
    const missing = await expectRefused(await h.api(`/v1/jobs/${nowhere}`, {}, a), 404);
    const foreign = await expectRefused(await h.api(`/v1/jobs/${job.id}`, {}, a), 404);
    expect(foreign.error.code).toBe(missing.error.code);

    // A's list is empty, whatever it filters by; B's holds the job, still queued.
    for (const query of ['', '?status=queued', '?limit=200']) {
      const list = (await (await h.api(`/v1/jobs${query}`, {}, a)).json()) as { jobs: JobView[] };
      expect(list.jobs).toEqual([]);
    }
    const mine = (await (await h.api('/v1/jobs', {}, b)).json()) as { jobs: JobView[] };
    expect(mine.jobs.map((j) => [j.id, j.status])).toEqual([[job.id, 'queued']]);
  });

  it("does not let tenant A page into B's jobs with B's cursor", async () => {
    const a = await h.createKey('tenant-a');
    const b = await h.createKey('tenant-b');
    for (let i = 0; i < 3; i++) await submitJob(h, { command: ['true'] }, b);
    const page = (await (await h.api('/v1/jobs?limit=1', {}, b)).json()) as { cursor?: string };
    expect(page.cursor).toBeDefined();
    const response = await h.api(`/v1/jobs?limit=10&cursor=${encodeURIComponent(page.cursor ?? '')}`, {}, a);
    if (response.status === 200) {
      expect(((await response.json()) as { jobs: unknown[] }).jobs).toEqual([]);
    } else {
      await expectRefused(response, 400, 'invalid_cursor');
    }
  });

  it("lets an admin list any tenant's jobs with ?tenant=, and no other key: a non-admin naming another tenant gets 403", async () => {
    const a = await h.createKey('tenant-a');
    const b = await h.createKey('tenant-b');
    const bJobs = [];
    for (let i = 0; i < 3; i++) bJobs.push(await submitJob(h, { command: ['true'], name: `b-${i}` }, b));
    const aJob = await submitJob(h, { command: ['true'] }, a);
    const ids = async (path: string, key?: string) => {
      const response = await h.api(path, {}, key);
      expect(response.status).toBe(200);
      return (await response.json()) as { jobs: JobView[]; cursor?: string };
    };

    // The admin (tenant `default`) pages B's list, its cursor staying on B's list.
    const first = await ids('/v1/jobs?tenant=tenant-b&limit=2');
    expect(first.jobs.map((j) => j.id)).toEqual([bJobs[2]?.id, bJobs[1]?.id]);
    const cursor = encodeURIComponent(first.cursor ?? '');
    const rest = await ids(`/v1/jobs?tenant=tenant-b&limit=2&cursor=${cursor}`);
    expect(rest.jobs.map((j) => j.id)).toEqual([bJobs[0]?.id]);
    expect((await ids('/v1/jobs?tenant=tenant-a&status=queued')).jobs.map((j) => j.id)).toEqual([aJob.id]);
    // Without ?tenant= it is the admin's own list; B's cursor does not resume it or A's list.
    expect((await ids('/v1/jobs')).jobs).toEqual([]);
    await expectRefused(await h.api(`/v1/jobs?cursor=${cursor}`), 400, 'invalid_cursor');
    await expectRefused(await h.api(`/v1/jobs?tenant=tenant-a&cursor=${cursor}`), 400, 'invalid_cursor');

    // A (read and submit, no admin) sees its own list, named or not, and never B's: 403 whether
    // or not the named tenant has jobs, with no job in the answer.
    expect((await ids('/v1/jobs?tenant=tenant-a', a)).jobs.map((j) => j.id)).toEqual([aJob.id]);
    for (const query of [
      '?tenant=tenant-b',
      '?tenant=tenant-b&status=queued',
      '?tenant=nobody-here',
      '?tenant=default',
    ]) {
      const refused = await expectRefused(await h.api(`/v1/jobs${query}`, {}, a), 403, 'insufficient_scope');
      expect(JSON.stringify(refused)).not.toContain('job_');
    }
    await expectRefused(await h.api(`/v1/jobs?tenant=tenant-b&cursor=${cursor}`, {}, a), 403, 'insufficient_scope');
  });

  it('keeps Idempotency-Keys per tenant: the same key from two tenants makes two jobs', async () => {
    const a = await h.createKey('tenant-a');
    const b = await h.createKey('tenant-b');
    const headers = { 'idempotency-key': 'order-1' };
    const first = await h.api('/v1/jobs', jsonInit('POST', { command: ['true'] }, headers), a);
    const second = await h.api('/v1/jobs', jsonInit('POST', { command: ['true'] }, headers), b);
    expect([first.status, second.status]).toEqual([201, 201]);
    const [ja, jb] = [(await first.json()) as JobView, (await second.json()) as JobView];
    expect(ja.id).not.toBe(jb.id);
    await expectRefused(await h.api(`/v1/jobs/${ja.id}`, {}, b), 404);
  });
});

describe('API keys', () => {
  it('refuses a revoked key (401) and changes nothing with it', async () => {
    const key = await h.createKey('tenant-a');
    const job = await submitJob(h, { command: ['true'] }, key);
    const keyId = key.split('_')[1] ?? '';
    expect((await h.api(`/v1/keys/${keyId}`, { method: 'DELETE' })).status).toBe(200);
    await unchanged(h, async () => {
      await expectRefused(
        await h.api('/v1/jobs', jsonInit('POST', { command: ['true'] }), key),
        401,
        'api_key_revoked',
      );
      await expectRefused(await h.api(`/v1/jobs/${job.id}/cancel`, { method: 'POST' }, key), 401, 'api_key_revoked');
      await expectRefused(await h.api('/v1/jobs', {}, key), 401, 'api_key_revoked');
    });
  });

  it('refuses an expired key (401) and changes nothing with it', async () => {
    const key = await h.createKey('tenant-a', ['submit', 'read'], { expiresAt: clock.now() + 60_000 });
    const job = await submitJob(h, { command: ['true'] }, key);
    clock.advance(60_001);
    await unchanged(h, async () => {
      await expectRefused(
        await h.api('/v1/jobs', jsonInit('POST', { command: ['true'] }), key),
        401,
        'api_key_expired',
      );
      await expectRefused(await h.api(`/v1/jobs/${job.id}/cancel`, { method: 'POST' }, key), 401, 'api_key_expired');
    });
  });

  it('refuses a key with one flipped bit in its secret or its key id (401)', async () => {
    const key = await h.createKey('tenant-a');
    const idAt = 'gpk_'.length; // first character of the key id
    const secretAt = key.length - 1; // last character of the secret
    // 'a'..'z' ^ 1 and base64url characters ^ 1 mostly stay in their alphabets; whichever they
    // become, the key is not valid.
    for (const tampered of [flipChar(key, idAt, 0), flipChar(key, secretAt, 0), flipChar(key, secretAt - 10, 1)]) {
      expect(tampered).not.toBe(key);
      await unchanged(h, async () =>
        expectRefused(
          await h.api('/v1/jobs', jsonInit('POST', { command: ['true'] }), tampered),
          401,
          'invalid_api_key',
        ),
      );
    }
  });

  it('refuses missing and malformed credentials on every application route (401)', async () => {
    const job = await submitJob(h);
    const routes: [string, string, unknown?][] = [
      ['POST', '/v1/jobs', { command: ['true'] }],
      ['GET', '/v1/jobs'],
      ['GET', `/v1/jobs/${job.id}`],
      ['GET', `/v1/jobs/${job.id}/tasks`],
      ['POST', `/v1/jobs/${job.id}/cancel`],
      ['GET', '/v1/nodes'],
      ['GET', '/v1/keys'],
      ['POST', '/v1/keys', { tenant: 'evil', scopes: ['admin'] }],
    ];
    for (const [method, path, body] of routes) {
      for (const authorization of [undefined, 'Bearer', 'Basic YTpi', `Bearer ${h.adminKey}x`, `bearer gpk_`]) {
        const headers: Record<string, string> = {
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...(authorization === undefined ? {} : { authorization }),
        };
        await unchanged(h, async () =>
          expectRefused(
            await h.request(path, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) }),
            401,
          ),
        );
      }
    }
  });

  it("refuses a key without the route's scope (403): read cannot submit or cancel, submit cannot mint keys", async () => {
    const reader = await h.createKey('tenant-a', ['read']);
    const submitter = await h.createKey('tenant-a', ['submit']);
    const job = await submitJob(h, { command: ['true'] }, submitter);
    await unchanged(h, async () => {
      await expectRefused(
        await h.api('/v1/jobs', jsonInit('POST', { command: ['true'] }), reader),
        403,
        'insufficient_scope',
      );
      await expectRefused(
        await h.api(`/v1/jobs/${job.id}/cancel`, { method: 'POST' }, reader),
        403,
        'insufficient_scope',
      );
      await expectRefused(
        await h.api('/v1/keys', jsonInit('POST', { tenant: 'tenant-a', scopes: ['admin'] }), submitter),
        403,
        'insufficient_scope',
      );
      await expectRefused(
        await h.api('/v1/keys', jsonInit('POST', { scopes: ['read'] }), reader),
        403,
        'insufficient_scope',
      );
    });
  });

  it('makes a key with the documented defaults (submit, read) when the body is left out, never one without scopes', async () => {
    const res = await h.api('/v1/keys', { method: 'POST' });
    expect(res.status).toBe(201);
    expect(((await res.json()) as { scopes: string[] }).scopes).toEqual(['submit', 'read']);
  });

  it('never shows a secret or its hash in a key listing', async () => {
    const key = await h.createKey('tenant-a');
    const secret = key.split('_').slice(2).join('_');
    const listing = await (await h.api('/v1/keys')).text();
    expect(listing).not.toContain(secret);
    expect(listing).not.toMatch(/secretHash|[0-9a-f]{64}/);
  });
});

describe('mass assignment at submit', () => {
  it('refuses a body that sets owner, tenant, status, price paid, node or ids (400), storing nothing', async () => {
    const assignments: Record<string, unknown>[] = [
      { owner: 'tenant-b' },
      { tenant: 'tenant-b' },
      { status: 'succeeded' },
      { state: 'verified' },
      { price: '0' },
      { pricePerGpuHour: '0' },
      { nodeId: `node_${'a'.repeat(26)}` },
      { node: `node_${'a'.repeat(26)}` },
      { id: `job_${'0'.repeat(26)}` },
      { createdAt: '2020-01-01T00:00:00Z' },
      { taskCounts: { verified: 1 } },
      { tasks: [{ state: 'verified' }] },
      { resources: { gpus: { count: 0 }, owner: 'x' } },
      { verification: { mode: 'none', verified: true } },
    ];
    const key = await h.createKey('tenant-a');
    for (const extra of assignments) {
      const body = JSON.stringify({ command: ['true'], ...extra });
      await unchanged(h, async () => expectRefused(await h.api('/v1/jobs', jsonInit('POST', body), key), 400));
    }
    // A prototype key given literally in the JSON text.
    await unchanged(h, async () =>
      expectRefused(
        await h.api('/v1/jobs', jsonInit('POST', '{"command":["true"],"__proto__":{"owner":"tenant-b"}}'), key),
        400,
      ),
    );
    expect(((await (await h.api('/v1/jobs', {}, key)).json()) as { jobs: unknown[] }).jobs).toEqual([]);
  });
});

describe('bad cursors', () => {
  it('answers 400 invalid_cursor, never a 500, on every list route', async () => {
    await submitJob(h);
    for (const route of ['/v1/jobs', '/v1/nodes', '/v1/keys']) {
      for (const cursor of ['garbage', '0'.repeat(500), Buffer.from('[1,2]').toString('base64url'), 'W10', '%00']) {
        await unchanged(h, async () =>
          expectRefused(await h.api(`${route}?cursor=${encodeURIComponent(cursor)}`), 400, 'invalid_cursor'),
        );
      }
    }
  });
});
