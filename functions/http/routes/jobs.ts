import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { z } from 'zod';
import { TenantId } from '../../../protocol/api-keys.js';
import {
  JobId,
  JobList,
  JobSpec,
  JobStatus,
  JobWithTasks,
  limits,
  PageQuery,
  TaskList,
} from '../../../protocol/index.js';
import { DomainError } from '../../domain/errors.js';
import { hasScope, type Principal } from '../../domain/security/api-keys.js';
import { authorized } from '../auth.js';
import type { AppDeps, AppEnv } from '../context.js';
import { errorResponses, json } from './responses.js';

const JobParams = z.object({ jobId: JobId });
const IdempotencyHeader = z.object({
  'idempotency-key': z
    .string()
    .regex(/^[\x21-\x7e]{1,128}$/)
    .optional()
    .meta({ description: 'Retries with the same key and body return the same job instead of a new one.' }),
});

const submitJob = createRoute({
  method: 'post',
  path: '/v1/jobs',
  tags: ['jobs'],
  ...authorized('submit'),
  summary: 'Submit a job',
  request: {
    headers: IdempotencyHeader,
    body: { required: true, content: { 'application/json': { schema: JobSpec } } },
  },
  responses: {
    201: json(JobWithTasks, 'The job was accepted'),
    200: json(JobWithTasks, 'Replay of an earlier submission with the same Idempotency-Key'),
    ...errorResponses(400, 401, 403, 409, 413),
  },
});

const listJobs = createRoute({
  method: 'get',
  path: '/v1/jobs',
  tags: ['jobs'],
  ...authorized('read'),
  summary: "List a tenant's jobs, newest first",
  description:
    "The caller's own tenant's jobs; an `admin` key may name another tenant with `?tenant=` (a tenant's jobs are kept and paged together, so there is no list of every tenant's jobs at once: `GET /v1/keys` lists the tenants that have keys). Any other key that names another tenant gets 403 `insufficient_scope`, whether or not that tenant has jobs.",
  request: {
    query: PageQuery.extend({
      tenant: TenantId.optional().meta({
        description:
          "Whose jobs: default the caller's tenant; another tenant's needs the `admin` scope. A cursor resumes only the list of the tenant it was made for.",
      }),
      status: JobStatus.optional().meta({
        description:
          'Only jobs of this status. Filtered within each page of the list, so a page may hold fewer than `limit` jobs (even none) and still carry a cursor; the cursor resumes only a list with the same status.',
      }),
    }),
  },
  responses: { 200: json(JobList, 'A page of jobs'), ...errorResponses(400, 401, 403) },
});

const getJob = createRoute({
  method: 'get',
  path: '/v1/jobs/{jobId}',
  tags: ['jobs'],
  ...authorized('read'),
  summary: 'Get a job and its tasks',
  request: { params: JobParams },
  responses: { 200: json(JobWithTasks, 'The job'), ...errorResponses(400, 401, 403, 404) },
});

const listTasks = createRoute({
  method: 'get',
  path: '/v1/jobs/{jobId}/tasks',
  tags: ['jobs'],
  ...authorized('read'),
  summary: "List a job's tasks",
  description: `All of them in one answer (a job has at most ${limits.maxTasksPerJob}): the list takes no cursor or other query parameter.`,
  // Strict, so a client that pages this list (`?cursor=`) learns that it does not, instead of getting page one again.
  request: { params: JobParams, query: z.strictObject({}) },
  responses: { 200: json(TaskList, 'The tasks, by index'), ...errorResponses(400, 401, 403, 404) },
});

const cancelJob = createRoute({
  method: 'post',
  path: '/v1/jobs/{jobId}/cancel',
  tags: ['jobs'],
  ...authorized('submit'),
  summary: 'Cancel a job',
  description: 'Unfinished tasks are cancelled; nodes running them stop at their next heartbeat.',
  request: { params: JobParams },
  responses: { 200: json(JobWithTasks, 'The cancelled job'), ...errorResponses(400, 401, 403, 404, 409) },
});

export function jobRoutes(app: OpenAPIHono<AppEnv>, { cp }: AppDeps): void {
  app.openapi(submitJob, async (c) => {
    const key = c.req.valid('header')['idempotency-key'];
    const outcome = await cp.jobs.submit(c.get('owner'), c.req.valid('json'), key);
    return c.json(outcome.job, outcome.created ? 201 : 200);
  });

  app.openapi(listJobs, async (c) => {
    const q = c.req.valid('query');
    return c.json(await cp.jobs.list(listedTenant(c.get('principal'), q.tenant), q.limit, q.cursor, q.status), 200);
  });

  app.openapi(getJob, async (c) => c.json(await cp.jobs.get(c.get('owner'), c.req.valid('param').jobId), 200));

  app.openapi(listTasks, async (c) => {
    const job = await cp.jobs.get(c.get('owner'), c.req.valid('param').jobId);
    return c.json({ tasks: job.tasks }, 200);
  });

  app.openapi(cancelJob, async (c) => c.json(await cp.jobs.cancel(c.get('owner'), c.req.valid('param').jobId), 200));
}

/**
 * Whose jobs a list shows: the caller's tenant, or the one `?tenant=` names when the caller may
 * read it. An admin operates the whole control plane (it already mints and lists every tenant's
 * keys), so it may read any tenant's list; no other key may, which keeps tenants isolated.
 * @throws DomainError 403 `insufficient_scope` for a key without `admin` that names another tenant.
 */
function listedTenant(principal: Principal, tenant: string | undefined): string {
  if (tenant === undefined || tenant === principal.tenant) return principal.tenant;
  if (hasScope(principal, 'admin')) return tenant;
  throw new DomainError('forbidden', 'insufficient_scope', 'listing another tenant\'s jobs needs the "admin" scope', {
    required: 'admin',
    granted: principal.scopes,
  });
}
