import { setTimeout as delay } from 'node:timers/promises';
import { ControlPlaneClient } from '../../edge-agent/client.js';
import type { Assignment, NodeInventory } from '../../protocol/index.js';
import { generateNodeKeyPair, loadNodeKeyPair, nodeIdFromPublicKey, sha256Hex } from '../../protocol/index.js';

/** One GPU, process runtime, region `local`: what the embedded launcher's pools take. */
const inventory: NodeInventory = {
  gpus: [{ index: 0, vendor: 'nvidia', model: 'NVIDIA L40S', vramMiB: 46068, uuid: 'GPU-bench', driver: '595.80' }],
  cpu: { model: 'Bench CPU', cores: 8 },
  memoryMiB: 32768,
  os: 'linux',
  arch: 'x64',
  runtimes: ['process'],
  region: 'local',
};

const emptyHash = sha256Hex('');

/** When a task was seen by an agent, for the submit-to-running latency (performance.now(), ms). */
export interface TaskTimes {
  /** The poll that bound it returned. */
  assignedAt: number;
  /** The first progress report (the task is running) was acknowledged. */
  runningAt: number;
  /** The result was acknowledged. */
  doneAt: number;
}

/**
 * A simulated edge agent with one slot: the real signed client (edge-agent/client.ts) doing what
 * the real agent does per task, with a task that runs for no time: long-poll for work, report
 * progress (which marks the task running), report the result; heartbeats on the interval the
 * control plane advises, listing the task in hand. No shortcut around the server's auth: every
 * request is signed with the node's own Ed25519 key, and the server verifies it.
 */
export class SimAgent {
  readonly client: ControlPlaneClient;
  private readonly publicKey: string;
  private heartbeatMs = 5000;
  private current: Assignment | undefined;
  private readonly stopping = new AbortController();
  private loop: Promise<void> | undefined;
  private beating: Promise<void> | undefined;
  /** Aborted to send the next heartbeat now: a task was taken (as edge-agent/agent.ts does). */
  private beatNow = new AbortController();

  constructor(
    api: string,
    private readonly pollWaitSeconds: number,
    private readonly onTask: (taskId: string, times: TaskTimes) => void,
  ) {
    const keyPair = loadNodeKeyPair(generateNodeKeyPair().privateKeyPem);
    this.publicKey = keyPair.publicKey;
    this.client = new ControlPlaneClient({
      api,
      nodeId: nodeIdFromPublicKey(keyPair.publicKey),
      keyPair,
      backoff: { initialMs: 20, maxMs: 200 },
    });
  }

  async register(): Promise<void> {
    const registered = await this.client.register(
      { publicKey: this.publicKey, agentVersion: '0.0.0-bench', name: 'bench', inventory },
      { retry: { attempts: 5 } },
    );
    this.heartbeatMs = registered.heartbeatIntervalMs;
  }

  start(): void {
    this.loop = this.work();
    this.beating = this.heartbeats();
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    await this.loop;
    await this.beating;
  }

  /**
   * The real agent's heartbeat loop: every interval the control plane advises (idle or busy), and
   * at once when a task is taken (heartbeats keep leases), the beats coalescing when tasks come
   * faster than a beat's round trip.
   */
  private async heartbeats(): Promise<void> {
    const stopping = this.stopping.signal;
    while (!stopping.aborted) {
      await sleep(this.heartbeatMs, AbortSignal.any([stopping, this.beatNow.signal]));
      if (stopping.aborted) return;
      if (this.beatNow.signal.aborted) this.beatNow = new AbortController();
      const tasks = this.current === undefined ? [] : [{ taskId: this.current.taskId, attempt: this.current.attempt }];
      try {
        const response = await this.client.heartbeat({ tasks }, { signal: stopping });
        this.heartbeatMs = Math.max(100, response.heartbeatIntervalMs);
      } catch {
        // A refused or lost beat: the next one tries again, as the real agent does.
      }
    }
  }

  private async work(): Promise<void> {
    const signal = this.stopping.signal;
    while (!signal.aborted) {
      let assignment: Assignment | undefined;
      try {
        assignment = await this.client.pollWork(this.pollWaitSeconds, { signal, retry: 'forever' });
      } catch {
        if (signal.aborted) return;
        continue;
      }
      if (assignment === undefined) continue;
      const assignedAt = performance.now();
      this.current = assignment;
      this.beatNow.abort();
      const { taskId, attempt } = assignment;
      // Reports are not abandoned at stop: a task in hand is finished, as the real agent does.
      await this.client.reportProgress(taskId, { attempt }, { retry: { attempts: 5 } });
      const runningAt = performance.now();
      await this.client.reportResult(
        taskId,
        { attempt, exitCode: 0, resultHash: emptyHash, outputs: [], metrics: { wallMs: 0 } },
        { retry: { attempts: 5 } },
      );
      this.current = undefined;
      this.onTask(taskId, { assignedAt, runningAt, doneAt: performance.now() });
    }
  }
}

/** Waits `ms`, or less when `signal` aborts (never rejects). */
const sleep = (ms: number, signal: AbortSignal) => delay(ms, undefined, { signal }).catch(() => undefined);
