/**
 * What the edge agent's tests run against: the real embedded control plane (the server `npm start`
 * runs: SQLite in a temp data dir, queue workers, reaper), started in-process on a loopback port,
 * with the fault proxy in front of it for outages and bad answers. Agents are given the proxy's
 * URL; the test drives jobs through the application API and reads back what the server recorded.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { serve } from '@hono/node-server';
import { Agent, type AgentOptions } from '../../edge-agent/agent.js';
import type { Logger } from '../../edge-agent/log.js';
import { testProbe } from '../../edge-agent/test-support/fixtures.js';
import { startControlPlane } from '../../embedded/control-plane-server.js';
import { startQueueWorkers } from '../../embedded/queue-workers.js';
import type { ControlPlaneSettings } from '../../functions/control-plane.js';
import { queueNames } from '../../functions/domain/scheduling/messages.js';
import { defaultRateLimits } from '../../functions/domain/security/rate-limit.js';
import type { CredentialIssuer } from '../../functions/ports/node-credentials.js';
import type { WorkHints } from '../../functions/ports/work-hints.js';
import type { JobSpecInput, JobWithTasks, NodeView, TaskView } from '../../protocol/index.js';
import { type FaultProxy, type ProxiedRequest, startFaultProxy } from './fault-proxy.js';
import { inProcessControlPlane } from './in-process.js';
import { Api, adminKeyOf } from './processes.js';

/** Timings short enough for tests, long enough that a loaded machine does not lose leases. */
export const agentTestSettings: Partial<ControlPlaneSettings> = {
  // Any node joins: these tests are not about enrollment (test/e2e/enrollment.test.ts is).
  enrollment: 'open',
  heartbeatIdleMs: 200,
  livenessMs: 10_000,
  // Agents started without their own interval report every 2 s at the most (the default advice is 30 s).
  progressIntervalMs: 2_000,
  leaseMs: 30_000,
  // Off per key and per node: the tests poll the API every few tens of ms and run agents with
  // 50 ms progress intervals, past the 600 a minute a real node or client is allowed, and a 429
  // would stall them for the rest of the window. The limits have their own tests.
  rateLimits: nodeRateLimit({ limit: 0, windowSeconds: 60 }),
};

/** The rate limits with the per-key scope off and the per-node scope as given (0: off), for agent tests. */
export function nodeRateLimit(node: { limit: number; windowSeconds: number }) {
  return { ...defaultRateLimits, key: { limit: 0, windowSeconds: 60 }, node };
}

export interface AgentHarnessOptions {
  /** Over {@link agentTestSettings}. */
  settings?: Partial<ControlPlaneSettings>;
  /** How often the reaper expires leases (default 100 ms). */
  reaperIntervalMs?: number;
  dataDirPrefix?: string;
  /**
   * How nodes learn of work and get cloud credentials. Given, the control plane is composed over
   * these ports (SQLite in memory, the same app, queue workers and reaper) instead of being the
   * embedded server, which has long-poll dispatch only: the `sqs` dispatch tests pass them.
   */
  ports?: { hints: WorkHints; credentials: CredentialIssuer };
}

/** A control plane serving HTTP on a loopback port. */
interface Served {
  url: string;
  /** The admin key of tenant `default`. */
  adminKey(): string;
  stop(): Promise<void>;
}

/** Polls `probe` until it returns a value other than undefined or false. */
export async function waitUntil<T>(
  what: string,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 25_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(50);
  }
}

/**
 * The embedded control plane, the fault proxy, a temporary agent data dir, a logger whose lines
 * the test reads, and agents started with fast timings; {@link stop} tears all of it down.
 */
export class AgentHarness {
  readonly logLines: string[] = [];
  readonly logger: Logger = {
    info: (message) => this.logLines.push(`info ${message}`),
    warn: (message) => this.logLines.push(`warn ${message}`),
    error: (message) => this.logLines.push(`error ${message}`),
  };
  /** The application API straight to the server (not through the proxy), as the admin. */
  readonly api: Api;
  private readonly agents: { agent: Agent; running: Promise<void> }[] = [];

  private constructor(
    private server: Served,
    private cpDir: string,
    private readonly port: number,
    readonly proxy: FaultProxy,
    readonly dataDir: string,
    private readonly options: AgentHarnessOptions,
    /** The control plane's own log lines, for failure messages. */
    readonly serverLog: Record<string, unknown>[],
  ) {
    this.api = new Api(server.url, () => this.server.adminKey());
  }

  static async start(options: AgentHarnessOptions = {}): Promise<AgentHarness> {
    const cpDir = await mkdtemp(join(tmpdir(), 'gpuai-agent-cp-'));
    const serverLog: Record<string, unknown>[] = [];
    const server = await (options.ports
      ? servePorts(options, options.ports, serverLog)
      : startServer(0, cpDir, options, serverLog));
    const port = Number(new URL(server.url).port);
    const proxy = await startFaultProxy(server.url);
    const dataDir = await mkdtemp(join(tmpdir(), options.dataDirPrefix ?? 'gpuai-agent-'));
    return new AgentHarness(server, cpDir, port, proxy, dataDir, { ...options }, serverLog);
  }

  /** What agents are given: the proxy in front of the control plane. */
  get url(): string {
    return this.proxy.url;
  }

  logged(fragment: string): boolean {
    return this.logLines.some((line) => line.includes(fragment));
  }

  /** Starts an agent against the control plane (through the proxy) with timings short enough for tests. */
  startAgent(overrides: Partial<AgentOptions> = {}): { agent: Agent; running: Promise<void> } {
    const agent = new Agent({
      api: this.proxy.url,
      dataDir: this.dataDir,
      name: 'test-node',
      region: 'local',
      slots: 1,
      pollWaitSeconds: 1,
      graceSeconds: 5,
      logger: this.logger,
      probe: testProbe,
      backoff: { initialMs: 20, maxMs: 100 },
      progressIntervalMs: 50,
      killGraceMs: 200,
      ...overrides,
    });
    const started = { agent, running: agent.run() };
    this.agents.push(started);
    return started;
  }

  /** Drops an agent the test has stopped itself (or whose run failed), so {@link stop} leaves it alone. */
  forget(started: { agent: Agent; running: Promise<void> }): void {
    const index = this.agents.indexOf(started);
    if (index >= 0) this.agents.splice(index, 1);
  }

  /** Submits a job as the admin (no container image: a process job). */
  submit(spec: JobSpecInput): Promise<JobWithTasks> {
    return this.api.submit(spec);
  }

  /** Task `index` of job `jobId` as the server has it now. */
  async task(jobId: string, index = 0): Promise<TaskView> {
    const task = (await this.api.job(jobId)).tasks[index];
    if (task === undefined) throw new Error(`job ${jobId} has no task ${index}`);
    return task;
  }

  /** Waits until task `index` of `jobId` satisfies `done`, and returns it. */
  waitForTask(jobId: string, done: (task: TaskView) => boolean, what = 'the task', index = 0): Promise<TaskView> {
    return waitUntil(`${what} (job ${jobId} task ${index})`, async () => {
      const task = await this.task(jobId, index);
      return done(task) ? task : undefined;
    });
  }

  /** Waits until the job has finished (succeeded, failed or cancelled), and returns it. */
  finished(jobId: string): Promise<JobWithTasks> {
    return waitUntil(`job ${jobId} to finish`, async () => {
      const job = await this.api.job(jobId);
      return ['succeeded', 'failed', 'cancelled'].includes(job.status) ? job : undefined;
    });
  }

  async cancel(jobId: string): Promise<void> {
    const response = await fetch(`${this.server.url}/v1/jobs/${jobId}/cancel`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.server.adminKey()}` },
    });
    if (!response.ok) throw new Error(`cancel ${jobId}: ${response.status} ${await response.text()}`);
  }

  /** The node as the server has it; undefined when it does not know it. */
  async node(nodeId: string): Promise<NodeView | undefined> {
    const response = await fetch(`${this.server.url}/v1/nodes/${nodeId}`, {
      headers: { authorization: `Bearer ${this.server.adminKey()}` },
    });
    if (response.status === 404) return undefined;
    if (!response.ok) throw new Error(`node ${nodeId}: ${response.status} ${await response.text()}`);
    return (await response.json()) as NodeView;
  }

  /** Requests the agents sent through the proxy to paths ending in `suffix`. */
  sent(method: string, suffix: string): ProxiedRequest[] {
    return this.proxy.requests.filter((r) => r.method === method && r.path.split('?')[0]?.endsWith(suffix));
  }

  /** Stops the control plane and starts it again on the same port over the same data dir. */
  async restartControlPlane(): Promise<void> {
    if (this.options.ports) throw new Error('only the embedded control plane restarts over its data dir');
    await this.server.stop();
    this.server = await startServer(this.port, this.cpDir, this.options, this.serverLog);
  }

  /**
   * Replaces the control plane by one with an empty store on the same port: a deployment whose
   * store was reset, which knows no node. `'embedded'` replaces one over ports by the embedded
   * server (long-poll dispatch).
   */
  async replaceControlPlane(by: 'same' | 'embedded' = 'same'): Promise<void> {
    await this.server.stop();
    if (by === 'embedded') delete this.options.ports;
    if (this.options.ports) {
      this.server = await servePorts(this.options, this.options.ports, this.serverLog, this.port);
      return;
    }
    await rm(this.cpDir, { recursive: true, force: true });
    this.cpDir = await mkdtemp(join(tmpdir(), 'gpuai-agent-cp-'));
    this.server = await startServer(this.port, this.cpDir, this.options, this.serverLog);
  }

  /** Kills every agent started, then stops the proxy and the control plane and removes both data dirs. */
  async stop(): Promise<void> {
    for (const { agent, running } of this.agents.splice(0)) {
      agent.killNow();
      await agent.shutdown();
      await running.catch(() => undefined);
    }
    await this.proxy.close();
    await this.server.stop();
    await rm(this.dataDir, { recursive: true, force: true });
    await rm(this.cpDir, { recursive: true, force: true });
  }
}

const keepLog = (serverLog: Record<string, unknown>[]) => (entry: Record<string, unknown>) => {
  serverLog.push(entry);
  if (serverLog.length > 500) serverLog.splice(0, 100);
};

async function startServer(
  port: number,
  dataDir: string,
  options: AgentHarnessOptions,
  serverLog: Record<string, unknown>[],
): Promise<Served> {
  const server = await startControlPlane({
    port,
    host: '127.0.0.1',
    dataDir,
    reaperIntervalMs: options.reaperIntervalMs ?? 100,
    settings: { ...agentTestSettings, ...options.settings },
    log: keepLog(serverLog),
  });
  return { url: server.url, adminKey: () => adminKeyOf(dataDir), stop: () => server.stop() };
}

/** The control plane over `ports`, wired as the embedded server wires its own (control-plane-server.ts). */
async function servePorts(
  options: AgentHarnessOptions,
  ports: NonNullable<AgentHarnessOptions['ports']>,
  serverLog: Record<string, unknown>[],
  port = 0,
): Promise<Served> {
  const log = keepLog(serverLog);
  const plane = inProcessControlPlane({ ...ports, settings: { ...agentTestSettings, ...options.settings } });
  await plane.ready;
  const stopWorkers = startQueueWorkers(plane.cp, plane.queue, Object.values(queueNames), log);
  let reaping = Promise.resolve();
  const reaper = setInterval(() => {
    reaping = reaping.then(() =>
      plane.cp.reaper.tick().then(
        () => undefined,
        (error: unknown) => log({ level: 'error', msg: 'reaper failed', error: String(error) }),
      ),
    );
  }, options.reaperIntervalMs ?? 100);
  const server = serve({ fetch: plane.app.fetch, port, hostname: '127.0.0.1' });
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    adminKey: () => plane.adminKey,
    async stop() {
      clearInterval(reaper);
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        if ('closeAllConnections' in server) server.closeAllConnections();
      });
      await stopWorkers();
      await reaping;
      await plane.close();
    },
  };
}
