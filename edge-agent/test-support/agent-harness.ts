import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, type AgentOptions } from '../agent.js';
import type { Logger } from '../log.js';
import { FakeControlPlane } from './fake-control-plane.js';
import { testProbe } from './fixtures.js';

/**
 * What every agent test sets up: a fake control plane, a temporary data dir, a logger whose lines
 * the test can read, and agents started with fast timings, all torn down by {@link stop}.
 */
export class AgentHarness {
  readonly logLines: string[] = [];
  readonly logger: Logger = {
    info: (message) => this.logLines.push(`info ${message}`),
    warn: (message) => this.logLines.push(`warn ${message}`),
    error: (message) => this.logLines.push(`error ${message}`),
  };
  private readonly agents: { agent: Agent; running: Promise<void> }[] = [];

  private constructor(
    readonly fake: FakeControlPlane,
    readonly dataDir: string,
  ) {}

  static async start(dataDirPrefix = 'gpuai-agent-'): Promise<AgentHarness> {
    return new AgentHarness(await FakeControlPlane.start(), await mkdtemp(join(tmpdir(), dataDirPrefix)));
  }

  logged(fragment: string): boolean {
    return this.logLines.some((line) => line.includes(fragment));
  }

  /** Starts an agent against the fake control plane with timings short enough for tests. */
  startAgent(overrides: Partial<AgentOptions> = {}): { agent: Agent; running: Promise<void> } {
    const agent = new Agent({
      api: this.fake.url,
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

  /** Kills every agent started, then stops the fake control plane and removes the data dir. */
  async stop(): Promise<void> {
    for (const { agent, running } of this.agents.splice(0)) {
      agent.killNow();
      await agent.shutdown();
      await running;
    }
    await this.fake.stop();
    await rm(this.dataDir, { recursive: true, force: true });
  }
}
