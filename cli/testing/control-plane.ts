/**
 * The real embedded control plane for the CLI's tests: the server `npm start` runs (SQLite in a
 * temp data dir, queue workers, verifier), started in-process on a free loopback port, with the
 * fault proxy (test/support/fault-proxy.ts) in front for outages and bad answers. Jobs reach the
 * states a test needs the way they do in production: a signed test node claims, runs and reports.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { adminKeyFileName } from '../../embedded/admin-key.js';
import { startControlPlane } from '../../embedded/control-plane-server.js';
import {
  generateSealingKeyPair,
  type JobSpecInput,
  type JobStatus,
  type JobWithTasks,
  type NodeInventory,
  type NodeView,
  resultHash,
  sha256Hex,
  terminalJobStatuses,
} from '../../protocol/index.js';
import { type FaultProxy, startFaultProxy } from '../../test/support/fault-proxy.js';
import { cpuInventory, TestNode } from '../../test/support/in-process.js';
import { type RecordingFetch, recordingFetch, type SentRequest } from './recording-fetch.js';

/** The region jobs are driven in; jobs meant to stay queued ask for another one, which no test node serves. */
const drivenRegion = 'eu-west';
const idleRegion = 'us-east';

/** A task a test node holds. */
interface Assignment {
  jobId: string;
  taskId: string;
  index: number;
  attempt: number;
}

/** How the test nodes report. */
export interface DriveOptions {
  /** The log tail each succeeding task reports (e.g. sealed to the job's result key, as an agent does). */
  logTail?: (task: { jobId: string; taskId: string }) => string | Promise<string>;
}

/** A running control plane and the means to put jobs and nodes into it. */
export interface TestControlPlane {
  /** The fault proxy's URL: what the CLI under test is given. */
  url: string;
  /** The server itself, behind no proxy. */
  directUrl: string;
  proxy: FaultProxy;
  dataDir: string;
  /** The admin key `npm start` wrote to `<dataDir>/admin-key`. */
  adminKey: string;
  /** The environment a CLI run needs: `GPUAI_API` (through the proxy) and the admin key. */
  env: Record<string, string>;
  /** The CLI's fetch for runGpuai's `io`: the global one, recording into {@link sent}. */
  fetch: typeof fetch;
  /** Every request the CLI sent through {@link fetch}, oldest first. */
  sent: SentRequest[];
  /** See {@link RecordingFetch.loseAnswers}. */
  loseAnswers: RecordingFetch['loseAnswers'];
  /** An application request straight to the server with the admin key. */
  api<T = unknown>(path: string, init?: RequestInit): Promise<T>;
  getJob(id: string): Promise<JobWithTasks>;
  /**
   * Submits `spec` and brings the job to `status` through a test node: `queued` (asks for a region
   * no node serves, so it stays queued), `running` (every task claimed and started), `succeeded`
   * (each task prints `stdout` and is verified), `failed` (task 0 fails, the others succeed),
   * `cancelled`.
   */
  jobIn(status: JobStatus, spec?: Partial<JobSpecInput>, options?: DriveOptions): Promise<JobWithTasks>;
  /** Brings a queued or running job (made by {@link jobIn}) to `status`, as {@link jobIn} does. */
  advance(job: JobWithTasks, status: JobStatus, options?: DriveOptions): Promise<JobWithTasks>;
  /** Stops the server (the proxy stays: clients see connections close), as `npm start` killed. */
  stopServer(): Promise<void>;
  /** Starts the stopped server again on the same port and data dir, as `npm start` run again. */
  startServer(): Promise<void>;
  /** Registers a node with `inventory` (default: a CPU node in the driven region). */
  addNode(inventory?: Partial<NodeInventory>): Promise<NodeView>;
  stop(): Promise<void>;
}

/** What a task prints by default, and the result hash the server records for it. */
export const taskStdout = 'hello\n';

/** Starts the embedded control plane in a fresh data dir, and the fault proxy in front of it. */
export async function startTestControlPlane(): Promise<TestControlPlane> {
  const dataDir = mkdtempSync(join(tmpdir(), 'gpuai-cli-cp-'));
  const start = (port: number) =>
    startControlPlane({
      port,
      host: '127.0.0.1',
      dataDir,
      // No lease runs out and no reaper requeues a task a test left running on purpose.
      reaperIntervalMs: 3_600_000,
      settings: { leaseMs: 3_600_000 },
      log: () => undefined,
    });
  let server = await start(0);
  const port = Number(new URL(server.url).port);
  const proxy = await startFaultProxy(server.url);
  const adminKey = readFileSync(join(dataDir, adminKeyFileName), 'utf8').trim();
  const direct = (path: string, init: RequestInit = {}) => fetch(`${server.url}${path}`, init);

  let harnessKey = adminKey;
  const api = async <T>(path: string, init: RequestInit = {}): Promise<T> => {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${harnessKey}`);
    if (init.body !== undefined) headers.set('content-type', 'application/json');
    const response = await direct(path, { ...init, headers });
    const text = await response.text();
    if (!response.ok) throw new Error(`${init.method ?? 'GET'} ${path}: HTTP ${response.status} ${text}`);
    return JSON.parse(text) as T;
  };
  const getJob = (id: string) => api<JobWithTasks>(`/v1/jobs/${id}`);
  // The harness's own requests count against a key of their own, not the per-key rate limit of
  // the admin key the CLI under test uses.
  harnessKey = (
    await api<{ key: string }>('/v1/keys', {
      method: 'POST',
      body: JSON.stringify({ scopes: ['admin', 'submit', 'read'], name: 'test harness' }),
    })
  ).key;

  /** Waits until the job shows `status`: the queue workers verify reports asynchronously. */
  const settled = async (id: string, status: JobStatus): Promise<JobWithTasks> => {
    // Generous: the verify worker runs on a machine other tests load too.
    const until = Date.now() + 25_000;
    for (;;) {
      const job = await getJob(id);
      if (job.status === status) return job;
      if (terminalJobStatuses.includes(job.status) || Date.now() > until) {
        throw new Error(`job ${id} is ${job.status}, expected ${status}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };

  // Nodes join as the embedded deployment asks them to: with a join token.
  const { secret: joinToken } = await api<{ secret: string }>('/v1/join-tokens', {
    method: 'POST',
    body: JSON.stringify({ operator: 'cli-tests' }),
  });
  const joinNode = async (inventory: Partial<NodeInventory> = {}): Promise<TestNode> => {
    const node = new TestNode(direct);
    // With a sealing key, as today's agent registers: without one no job with a result key or env
    // secrets is handed to the node.
    const registered = await node.call('POST', '/v1/nodes', {
      publicKey: node.key.publicKey,
      sealingKey: generateSealingKeyPair().publicKey,
      agentVersion: '0.1.0',
      inventory: cpuInventory({ region: drivenRegion, ...inventory }),
      joinToken,
    });
    if (registered.status !== 201) throw new Error(`register: HTTP ${registered.status} ${await registered.text()}`);
    return node;
  };

  const call = async (node: TestNode, path: string, body: unknown): Promise<void> => {
    const response = await node.call('POST', `/v1/nodes/${node.id}${path}`, body);
    if (!response.ok) throw new Error(`POST ${path}: HTTP ${response.status} ${await response.text()}`);
  };

  // One node per task, so that no node's capacity decides the test. The nodes join before the job
  // is submitted: the scheduler routes a task only to a pool where a live node fits it.
  const spares = new Map<string, TestNode[]>();
  const held = new Map<string, { node: TestNode; assignment: Assignment }[]>();
  const claim = async (jobId: string): Promise<{ node: TestNode; assignment: Assignment }> => {
    const node = spares.get(jobId)?.pop() ?? (await joinNode());
    // The long poll is woken as soon as the schedule worker has routed the task.
    let work = await node.poll(10);
    if (work.status === 204) work = await node.poll(10);
    if (work.status !== 200) {
      const tasks = (await getJob(jobId)).tasks.map(({ state, progress }) => ({ state, progress }));
      throw new Error(`no work for a test node of job ${jobId}: HTTP ${work.status}, tasks ${JSON.stringify(tasks)}`);
    }
    const { assignment } = (await work.json()) as { assignment: Assignment };
    if (assignment.jobId !== jobId) throw new Error(`a test node got task ${assignment.taskId}, not one of ${jobId}`);
    await call(node, `/tasks/${assignment.taskId}/progress`, { attempt: assignment.attempt });
    return { node, assignment };
  };

  const advance = async (job: JobWithTasks, status: JobStatus, options: DriveOptions = {}): Promise<JobWithTasks> => {
    if (status === 'queued') return job;
    if (status === 'cancelled') {
      await api(`/v1/jobs/${job.id}/cancel`, { method: 'POST' });
      return settled(job.id, 'cancelled');
    }
    const running = held.get(job.id) ?? [];
    while (running.length < job.tasks.length) running.push(await claim(job.id));
    held.set(job.id, running);
    if (status === 'running') return settled(job.id, 'running');
    if (status === 'failed' && job.spec.retries > 0) throw new Error('a job driven to failed needs retries: 0');
    held.delete(job.id);
    for (const { node, assignment } of running) {
      if (status === 'failed' && assignment.index === 0) {
        await call(node, `/tasks/${assignment.taskId}/fail`, {
          attempt: assignment.attempt,
          reason: 'error',
          message: 'exit code 1',
        });
        continue;
      }
      const outputs = [{ name: 'stdout', sha256: sha256Hex(taskStdout), bytes: Buffer.byteLength(taskStdout) }];
      await call(node, `/tasks/${assignment.taskId}/result`, {
        attempt: assignment.attempt,
        exitCode: 0,
        resultHash: resultHash(outputs),
        outputs,
        metrics: { wallMs: 2500 },
        ...(options.logTail === undefined ? {} : { logTail: await options.logTail(assignment) }),
      });
    }
    return settled(job.id, status);
  };

  const jobIn = async (
    status: JobStatus,
    spec: Partial<JobSpecInput> = {},
    options: DriveOptions = {},
  ): Promise<JobWithTasks> => {
    // A failed job fails on its first attempt; `retries` would otherwise requeue the task.
    const body: JobSpecInput = {
      command: ['true'],
      regions: [status === 'queued' ? idleRegion : drivenRegion],
      ...(status === 'failed' ? { retries: 0 } : {}),
      ...spec,
    };
    const nodes = body.regions?.includes(drivenRegion)
      ? await Promise.all(Array.from({ length: body.tasks ?? 1 }, () => joinNode()))
      : [];
    const job = await api<JobWithTasks>('/v1/jobs', { method: 'POST', body: JSON.stringify(body) });
    spares.set(job.id, nodes);
    return advance(job, status, options);
  };

  const cli = recordingFetch();

  return {
    url: proxy.url,
    directUrl: server.url,
    proxy,
    dataDir,
    adminKey,
    env: { GPUAI_API: proxy.url, GPUAI_API_KEY: adminKey },
    fetch: cli.fetch,
    sent: cli.sent,
    loseAnswers: cli.loseAnswers,
    api,
    getJob,
    jobIn,
    advance,
    stopServer: () => server.stop(),
    async startServer() {
      server = await start(port);
    },
    async addNode(inventory = {}) {
      const node = await joinNode(inventory);
      return api<NodeView>(`/v1/nodes/${node.id}`);
    },
    async stop() {
      await proxy.close();
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
