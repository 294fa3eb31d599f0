/**
 * A small in-memory control plane over node:http for the CLI's tests: the application routes of
 * docs/api.md that the CLI calls, with responses that pass the protocol schemas, plus knobs to
 * script a job's progress and to inject failures.
 */
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  type JobSpec,
  JobSpec as JobSpecSchema,
  type JobSpecView,
  type JobStatus,
  type JobWithTasks,
  type TaskCounts,
  type TaskState,
  type TaskView,
  terminalJobStatuses,
  verificationView,
} from '../../protocol/job.js';
import type { NodeView } from '../../protocol/node.js';

/** A request as the fake received it. */
export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A fault to inject into the next requests: an HTTP status, or a connection dropped without an answer. */
export type Fault = number | 'drop';

/** The running fake. */
export interface FakeControlPlane {
  url: string;
  requests: RecordedRequest[];
  /** Adds a job with the given spec fields (defaults applied) and status. */
  addJob(spec?: Partial<JobSpec>, status?: JobStatus): JobWithTasks;
  addNode(node?: Partial<NodeView>): NodeView;
  /** Each GET of the job moves it to the next status in `statuses`; the last one sticks. */
  script(jobId: string, statuses: readonly JobStatus[]): void;
  /** The next `faults.length` requests fail with these faults, in order. */
  inject(...faults: Fault[]): void;
  close(): Promise<void>;
}

const epoch = Date.parse('2030-01-01T00:00:00.000Z');
const iso = (ms: number): string => new Date(ms).toISOString();

/** A valid job id from a counter (digits are Crockford base32 too). */
export const fakeJobId = (n: number): string => `job_${String(n).padStart(26, '0')}`;
/** A valid node id from a counter. */
export const fakeNodeId = (n: number): string =>
  `node_${'a'.repeat(24)}${'bcdefghijk'[n % 10]}${'bcdefghijk'[Math.floor(n / 10) % 10]}`;

const resultHash = 'ab'.repeat(32);

function task(jobId: string, index: number, spec: JobSpecView, status: JobStatus): TaskView {
  const maxAttempts = spec.retries + 1;
  const base = {
    id: `${jobId}.${index}`,
    jobId,
    index,
    maxAttempts,
    queuedAt: iso(epoch),
    updatedAt: iso(epoch + 5000),
  };
  const attempt = { number: 1, nodeId: fakeNodeId(1), assignedAt: iso(epoch + 1000) };
  // A failed job fails on its first task; the others finish, as a real partial failure would.
  const state: TaskState =
    status === 'queued'
      ? 'queued'
      : status === 'running'
        ? 'running'
        : status === 'cancelled'
          ? 'cancelled'
          : status === 'failed' && index === 0
            ? 'failed'
            : 'verified';
  switch (state) {
    case 'queued':
    case 'cancelled':
      return { ...base, state, attempt: 0, attempts: [] };
    case 'running':
      return { ...base, state, attempt: 1, nodeId: fakeNodeId(1), attempts: [attempt] };
    case 'failed':
      return {
        ...base,
        state,
        attempt: maxAttempts,
        attempts: [{ ...attempt, endedAt: iso(epoch + 3000), outcome: 'failed' }],
        error: { code: 'task_failed', message: 'exit code 1 on every attempt' },
      };
    default:
      return {
        ...base,
        state,
        attempt: 1,
        nodeId: fakeNodeId(1),
        attempts: [{ ...attempt, endedAt: iso(epoch + 4000), outcome: 'completed' }],
        result: {
          exitCode: 0,
          resultHash,
          outputs: [{ name: 'stdout', sha256: resultHash, bytes: 6 }],
          metrics: { wallMs: 2500 },
          reportedAt: iso(epoch + 4000),
        },
      };
  }
}

function withStatus(job: JobWithTasks, status: JobStatus): JobWithTasks {
  const tasks = job.tasks.map((t) => task(job.id, t.index, job.spec, status));
  const taskCounts = Object.fromEntries(
    (['queued', 'assigned', 'running', 'reported', 'verified', 'failed', 'cancelled'] as const).map((s) => [
      s,
      tasks.filter((t) => t.state === s).length,
    ]),
  ) as TaskCounts;
  const finished = terminalJobStatuses.includes(status);
  const { finishedAt: _, ...rest } = job;
  return {
    ...rest,
    status,
    tasks,
    taskCounts,
    updatedAt: iso(epoch + 5000),
    ...(finished ? { finishedAt: iso(epoch + 5000) } : {}),
  };
}

function node(n: number, overrides: Partial<NodeView>): NodeView {
  return {
    id: fakeNodeId(n),
    name: `rig-${n}`,
    publicKey: 'A'.repeat(43),
    agentVersion: '0.1.0',
    inventory: {
      gpus: [0, 1].map((index) => ({
        index,
        vendor: 'nvidia' as const,
        model: 'NVIDIA H100 80GB HBM3',
        vramMiB: 81559,
        uuid: `GPU-${n}-${index}`,
        computeCapability: '9.0',
      })),
      cpu: { model: 'AMD EPYC 9654', cores: 96 },
      memoryMiB: 786_432,
      os: 'linux',
      arch: 'x64',
      runtimes: ['docker', 'process'],
      region: 'eu-west',
    },
    pools: ['eu-west/h100'],
    operator: 'acme',
    status: 'live',
    registeredAt: iso(epoch),
    lastSeenAt: iso(epoch),
    stats: { tasksCompleted: 42, tasksFailed: 1, leasesLost: 0 },
    ...overrides,
  };
}

/** Starts the fake on a free port of 127.0.0.1. */
export async function startFakeControlPlane(): Promise<FakeControlPlane> {
  const jobs = new Map<string, JobWithTasks>();
  const nodes = new Map<string, NodeView>();
  const scripts = new Map<string, JobStatus[]>();
  const idempotency = new Map<string, { body: string; jobId: string }>();
  const faults: Fault[] = [];
  const requests: RecordedRequest[] = [];
  let counter = 0;

  const addJob = (spec: Partial<JobSpec> = {}, status: JobStatus = 'queued'): JobWithTasks => {
    counter += 1;
    const full = JobSpecSchema.parse({ command: ['true'], ...spec });
    const id = fakeJobId(counter);
    const job: JobWithTasks = withStatus(
      {
        id,
        status,
        spec: { ...full, verification: verificationView(full.verification) }, // as the API shows it
        taskCounts: { queued: 0, assigned: 0, running: 0, reported: 0, verified: 0, failed: 0, cancelled: 0 },
        tasks: Array.from({ length: full.tasks }, (_, index) => task(id, index, full, 'queued')),
        createdAt: iso(epoch + counter * 1000),
        updatedAt: iso(epoch + counter * 1000),
      },
      status,
    );
    jobs.set(id, job);
    return job;
  };

  const send = (res: ServerResponse, status: number, body: unknown): void => {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  };
  const error = (res: ServerResponse, status: number, code: string, message: string, details?: unknown): void =>
    send(res, status, { error: { code, message, ...(details === undefined ? {} : { details }), requestId: 'req_1' } });

  const page = <T>(items: readonly T[], query: URLSearchParams): { items: T[]; cursor?: string } => {
    const start = Number(query.get('cursor') ?? '0');
    const limit = Number(query.get('limit') ?? '50');
    const end = start + limit;
    return { items: items.slice(start, end), ...(end < items.length ? { cursor: String(end) } : {}) };
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://fake');
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ method: req.method ?? '', path: `${url.pathname}${url.search}`, headers: req.headers, body });
      const fault = faults.shift();
      if (fault === 'drop') {
        req.socket.destroy();
        return;
      }
      if (fault !== undefined) {
        error(res, fault, 'unavailable', 'injected fault');
        return;
      }
      const route = `${req.method} ${url.pathname}`;
      const jobMatch = /^\/v1\/jobs\/([^/]+)(\/tasks|\/cancel)?$/.exec(url.pathname);
      const nodeMatch = /^\/v1\/nodes\/([^/]+)$/.exec(url.pathname);

      if (route === 'POST /v1/jobs') {
        const parsed = JobSpecSchema.safeParse(JSON.parse(body));
        if (!parsed.success) {
          const issues = parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message, code: i.code }));
          error(res, 400, 'validation_failed', 'invalid request', { issues, target: 'body' });
          return;
        }
        const key = req.headers['idempotency-key'];
        const seen = typeof key === 'string' ? idempotency.get(key) : undefined;
        if (seen !== undefined) {
          if (seen.body !== body) error(res, 409, 'idempotency_key_reused', 'key used with another body');
          else send(res, 200, jobs.get(seen.jobId));
          return;
        }
        const job = addJob(parsed.data);
        if (typeof key === 'string') idempotency.set(key, { body, jobId: job.id });
        send(res, 201, job);
        return;
      }
      if (route === 'GET /v1/jobs') {
        const status = url.searchParams.get('status');
        const all = [...jobs.values()].reverse().filter((job) => status === null || job.status === status);
        const { items, cursor } = page(all, url.searchParams);
        send(res, 200, {
          jobs: items.map(({ tasks: _, ...view }) => view),
          ...(cursor === undefined ? {} : { cursor }),
        });
        return;
      }
      if (jobMatch !== null) {
        const id = decodeURIComponent(jobMatch[1] ?? '');
        let job = jobs.get(id);
        if (job === undefined) {
          error(res, 404, 'job_not_found', `job ${id} not found`);
          return;
        }
        if (req.method === 'POST' && jobMatch[2] === '/cancel') {
          if (terminalJobStatuses.includes(job.status)) {
            error(res, 409, 'job_finished', `job ${id} is already ${job.status}`);
            return;
          }
          job = withStatus(job, 'cancelled');
          jobs.set(id, job);
          send(res, 200, job);
          return;
        }
        const steps = scripts.get(id);
        const next = steps?.shift();
        if (next !== undefined) {
          job = withStatus(job, next);
          jobs.set(id, job);
        }
        if (jobMatch[2] === '/tasks') send(res, 200, { tasks: job.tasks });
        else send(res, 200, job);
        return;
      }
      if (route === 'GET /v1/nodes') {
        const { items, cursor } = page([...nodes.values()], url.searchParams);
        send(res, 200, { nodes: items, ...(cursor === undefined ? {} : { cursor }) });
        return;
      }
      if (nodeMatch !== null) {
        const found = nodes.get(decodeURIComponent(nodeMatch[1] ?? ''));
        if (found === undefined) error(res, 404, 'node_not_found', 'node not found');
        else send(res, 200, found);
        return;
      }
      error(res, 404, 'not_found', `no route ${route}`);
    });
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    addJob,
    addNode(overrides = {}) {
      const created = node(nodes.size + 1, overrides);
      nodes.set(created.id, created);
      return created;
    },
    script(jobId, statuses) {
      scripts.set(jobId, [...statuses]);
    },
    inject(...more) {
      faults.push(...more);
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err === undefined ? resolve() : reject(err)));
      }),
  };
}
