import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { z } from 'zod';
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
  summary: 'List jobs, newest first',
  request: {
    query: PageQuery.extend({
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
    return c.json(await cp.jobs.list(c.get('owner'), q.limit, q.cursor, q.status), 200);
  });

  app.openapi(getJob, async (c) => c.json(await cp.jobs.get(c.get('owner'), c.req.valid('param').jobId), 200));

  app.openapi(listTasks, async (c) => {
    const job = await cp.jobs.get(c.get('owner'), c.req.valid('param').jobId);
    return c.json({ tasks: job.tasks }, 200);
  });

  app.openapi(cancelJob, async (c) => c.json(await cp.jobs.cancel(c.get('owner'), c.req.valid('param').jobId), 200));
}
