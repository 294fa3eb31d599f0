/**
 * What the edge agent's tests run against: the real embedded control plane (the server `npm start`
 * runs: SQLite in a temp data dir, queue workers, reaper), started in-process on a loopback port,
 * with the fault proxy in front of it for outages and bad answers. Agents are given the proxy's
 * URL; the test drives jobs through the application API and reads back what the server recorded.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { Agent, type AgentOptions } from '../../edge-agent/agent.js';
import type { Logger } from '../../edge-agent/log.js';
import { testProbe } from '../../edge-agent/test-support/fixtures.js';
import { type RunningControlPlane, startControlPlane } from '../../embedded/control-plane-server.js';
import type { ControlPlaneSettings } from '../../functions/control-plane.js';
import type { JobSpecInput, JobWithTasks, NodeView, TaskView } from '../../protocol/index.js';
import { type FaultProxy, type ProxiedRequest, startFaultProxy } from './fault-proxy.js';
import { Api, adminKeyOf } from './processes.js';

/** Timings short enough for tests, long enough that a loaded machine does not lose leases. */
export const agentTestSettings: Partial<ControlPlaneSettings> = {
  // Any node joins: these tests are not about enrollment (test/e2e/enrollment.test.ts is).
  enrollment: 'open',
  heartbeatIntervalMs: 200,
  livenessMs: 10_000,
  leaseMs: 30_000,
};

export interface AgentHarnessOptions {
  /** Over {@link agentTestSettings}. */
  settings?: Partial<ControlPlaneSettings>;
  /** How often the reaper expires leases (default 100 ms). */
  reaperIntervalMs?: number;
  dataDirPrefix?: string;
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
    await delay(20);
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
    private server: RunningControlPlane,
    private cpDir: string,
    private readonly port: number,
    readonly proxy: FaultProxy,
    readonly dataDir: string,
    private readonly options: AgentHarnessOptions,
    /** The control plane's own log lines, for failure messages. */
    readonly serverLog: Record<string, unknown>[],
  ) {
    this.api = new Api(server.url, () => adminKeyOf(this.cpDir));
  }

  static async start(options: AgentHarnessOptions = {}): Promise<AgentHarness> {
    const cpDir = await mkdtemp(join(tmpdir(), 'gpuai-agent-cp-'));
    const serverLog: Record<string, unknown>[] = [];
    const server = await startServer(0, cpDir, options, serverLog);
    const port = Number(new URL(server.url).port);
    const proxy = await startFaultProxy(server.url);
    const dataDir = await mkdtemp(join(tmpdir(), options.dataDirPrefix ?? 'gpuai-agent-'));
    return new AgentHarness(server, cpDir, port, proxy, dataDir, options, serverLog);
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
      headers: { authorization: `Bearer ${adminKeyOf(this.cpDir)}` },
    });
    if (!response.ok) throw new Error(`cancel ${jobId}: ${response.status} ${await response.text()}`);
  }

  /** The node as the server has it; undefined when it does not know it. */
  async node(nodeId: string): Promise<NodeView | undefined> {
    const response = await fetch(`${this.server.url}/v1/nodes/${nodeId}`, {
      headers: { authorization: `Bearer ${adminKeyOf(this.cpDir)}` },
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
    await this.server.stop();
    this.server = await startServer(this.port, this.cpDir, this.options, this.serverLog);
  }

  /**
   * Replaces the control plane by one with an empty data dir on the same port: a deployment whose
   * store was reset, which knows no node.
   */
  async replaceControlPlane(): Promise<void> {
    await this.server.stop();
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

function startServer(
  port: number,
  dataDir: string,
  options: AgentHarnessOptions,
  serverLog: Record<string, unknown>[],
): Promise<RunningControlPlane> {
  return startControlPlane({
    port,
    host: '127.0.0.1',
    dataDir,
    reaperIntervalMs: options.reaperIntervalMs ?? 100,
    settings: { ...agentTestSettings, ...options.settings },
    log: (entry) => {
      serverLog.push(entry);
      if (serverLog.length > 500) serverLog.splice(0, 100);
    },
  });
}
