import { rm } from 'node:fs/promises';
import type { Assignment, Dispatch, HeartbeatResponse } from '../protocol/index.js';
import { type AttestationOptions, Attester, attestedConfig } from './attest/attester.js';
import { type BackoffPolicy, backoffDelayMs, defaultBackoff, sleep } from './backoff.js';
import { ControlPlaneClient } from './client.js';
import { type DataDirLock, lockDataDir } from './data-dir-lock.js';
import { AgentError, NodeNotRegisteredError, RequestAbortedError, UnexpectedResponseError } from './errors.js';
import { loadOrCreateIdentity, type NodeIdentity } from './identity.js';
import { type Logger, silentLogger } from './log.js';
import { type ProbeReport, probeInventory } from './probe/index.js';
import { removeWorkRootIfEmpty, workRootFor } from './runner/process-runner.js';
import type { TaskUser } from './runner/task-user.js';
import { SqsLongPoll, type SqsPortFactory } from './sqs-work-source.js';
import { progressIntervalFor, TaskRun, type TaskRunEnd } from './task-run.js';
import { agentVersion } from './version.js';
import { HttpLongPoll, type WorkSource } from './work-source.js';

/** Everything `Agent` needs; the CLI builds it from validated options (config.ts). */
export interface AgentOptions {
  /** Control plane base URL. */
  api: string;
  /** Holds the node key and identity.json; tasks' work dirs are under `workRootFor(dataDir)`, outside it. */
  dataDir: string;
  /**
   * The user tasks run as; the agent must be root. Undefined: the agent's own user. The CLI
   * passes `resolveTaskUser`'s choice (runner/task-user.ts): `nobody` when the agent is root.
   */
  taskUser?: TaskUser;
  name?: string;
  region: string;
  /** Tasks run at once; each slot long-polls for its own work. */
  slots: number;
  /** Seconds a work poll is held open by the control plane (1..20). */
  pollWaitSeconds: number;
  /** On shutdown, how long running tasks may take to finish before they are released. */
  graceSeconds: number;
  logger?: Logger;
  /** Inventory detection (default: probe this host for the `process` runtime). */
  probe?: () => Promise<ProbeReport>;
  /** Retry pacing for control plane calls (default 250 ms doubling to 5 s). */
  backoff?: BackoffPolicy;
  /**
   * Progress reports are sent at most this often per running task (default: what the control plane
   * advises, 30 s by default, and never more often than progressIntervalFor in task-run.ts allows
   * for the node's slots, so the whole node stays well under its rate limit).
   */
  progressIntervalMs?: number;
  /** SIGTERM to SIGKILL delay when a task is stopped (default 5 s). */
  killGraceMs?: number;
  /** The SQS client behind `sqs` dispatch (default: the AWS SDK's); tests pass an in-memory one. */
  sqs?: SqsPortFactory;
  /** The join token a first registration presents (`--join-token`, GPUAI_JOIN_TOKEN); a re-registration needs none. */
  joinToken?: string;
  /** Remote attestation: a TPM and a GPU token source beside the measurement always sent (attest/attester.ts). */
  attestation?: AttestationOptions;
  /**
   * How long the node stops taking work after it could not start a task for reasons of its own (its
   * work dir could not be made: a full disk, a temp dir it cannot write), doubling with each such task in a row
   * (default 1 s doubling to 60 s).
   */
  unableBackoff?: BackoffPolicy;
}

/** The shortest heartbeat interval honoured, whatever the control plane says: guards against a busy loop. */
const minHeartbeatIntervalMs = 100;
/** After the grace period, how long releasing tasks may take before the agent stops waiting on reports. */
const releaseWindowMs = 5_000;
/**
 * A node that cannot start any task would otherwise claim and hand back tasks as fast as the
 * control plane answers, far more than its healthy peers. Long enough at its cap that such a node
 * costs the queue a claim a minute; short at first, since a full disk is often freed soon.
 */
const defaultUnableBackoff: BackoffPolicy = { initialMs: 1_000, maxMs: 60_000 };

/**
 * The edge agent: registers this node, heartbeats, long-polls for work in `slots` parallel
 * workers, runs each assignment as a process and reports it (see TaskRun). Survives control plane
 * outages (every call retries with backoff; reports retry until delivered) and registers again
 * when the control plane has forgotten the node.
 *
 * @example
 * const agent = new Agent({ api, dataDir, region: 'local', slots: 1, pollWaitSeconds: 20, graceSeconds: 25 });
 * const running = agent.run();   // resolves after shutdown() completes
 * process.once('SIGTERM', () => void agent.shutdown());
 * await running;
 */
export class Agent {
  private readonly logger: Logger;
  private readonly backoff: BackoffPolicy;
  /** Aborted when shutdown starts: no new work is taken. */
  private readonly polling = new AbortController();
  /** Aborted when shutdown ends: reports and heartbeats in flight are abandoned. */
  private readonly reporting = new AbortController();
  private readonly tasks = new Map<string, TaskRun>();
  private readonly workers: Promise<void>[] = [];
  private heartbeat: Promise<void> | undefined;
  private heartbeatIntervalMs = 10_000;
  /** Aborted to end the heartbeat's wait early: a task was taken, and its lease is kept by heartbeats. */
  private beatNow = new AbortController();
  /** The progress interval the control plane advised (registration, heartbeats); undefined from an older one. */
  private advisedProgressMs: number | undefined;
  private identity: NodeIdentity | undefined;
  private client: ControlPlaneClient | undefined;
  private inventory: ProbeReport['inventory'] | undefined;
  private registration: Promise<void> | undefined;
  private attester: Attester | undefined;
  private attesting: Promise<void> | undefined;
  /** Where workers get assignments: picked by the registration response's `dispatch`, again on each re-registration. */
  private workSource: { source: WorkSource; dispatch: string } | undefined;
  private shutdownCompletion: Promise<void> | undefined;
  private runCalled = false;
  /** What run() is doing, for the log line of a run that can go no further (see watchEventLoop). */
  private phase = 'starting';
  /** Tasks in a row this node could not start for reasons of its own; 0 once one starts. */
  private unableStreak = 0;
  /** No worker polls before this time (performance.now(), ms): the node is backing off after a task it could not start. */
  private pausedUntil = 0;
  private readonly stopped: Promise<void>;
  private markStopped: () => void = () => {};

  constructor(private readonly options: AgentOptions) {
    this.logger = options.logger ?? silentLogger;
    this.backoff = options.backoff ?? defaultBackoff;
    this.stopped = new Promise((resolve) => {
      this.markStopped = resolve;
    });
  }

  /** This node's id, once `run()` has loaded the identity. */
  get nodeId(): string | undefined {
    return this.identity?.nodeId;
  }

  /**
   * Loads (or creates) the node identity, probes the inventory, registers (retrying until the
   * control plane answers), then works until `shutdown()` has completed. Rejects when another
   * agent holds the data dir (DataDirLockedError, before anything else is done) or the control
   * plane refuses the registration itself (a 4xx).
   */
  async run(): Promise<void> {
    if (this.runCalled) throw new Error('Agent.run() may be called once');
    this.runCalled = true;
    // Held until run() ends; the OS drops it if the process dies first (data-dir-lock.ts).
    const lock: DataDirLock = lockDataDir(this.options.dataDir);
    const unwatch = this.watchEventLoop();
    try {
      await this.start();
      this.phase = 'working';
      await this.stopped;
    } finally {
      unwatch();
      lock.release();
    }
  }

  private async start(): Promise<void> {
    this.phase = 'loading the node identity';
    const identity = await loadOrCreateIdentity(this.options.dataDir, this.options.api);
    this.identity = identity;
    this.logger.info(`${identity.created ? 'created' : 'loaded'} node identity ${identity.nodeId}`, {
      dataDir: this.options.dataDir,
    });
    this.phase = 'clearing work dirs of an earlier run';
    await this.clearWorkRoot();
    this.phase = 'probing the inventory';
    const probe = await (
      this.options.probe ?? (() => probeInventory({ region: this.options.region, runtimes: ['process'] }))
    )();
    for (const warning of probe.warnings) this.logger.warn(`inventory: ${warning}`);
    this.inventory = probe.inventory;
    this.client = this.createClient(identity);
    this.phase = 'registering';
    try {
      await this.register(this.polling.signal);
    } catch (error) {
      if (!this.polling.signal.aborted) throw error;
    }
    if (!this.polling.signal.aborted) {
      this.heartbeat = this.heartbeatLoop(this.client);
      this.attesting = this.startAttestation(this.client);
      for (let slot = 0; slot < this.options.slots; slot++) this.workers.push(this.workerLoop(this.client));
      // The workers are done (they return once polling stops) before the source is closed.
      void Promise.all(this.workers).then(() => this.workSource?.source.close?.());
    }
  }

  /**
   * Work dirs left by a previous run that crashed or was killed belong to no task any more. One
   * that cannot be removed (a full or broken temp dir) is no reason not to start: the tasks that
   * cannot get a work dir are handed back, and the node backs off (see pace).
   */
  private async clearWorkRoot(): Promise<void> {
    try {
      await rm(workRootFor(this.options.dataDir), { recursive: true, force: true });
    } catch (error) {
      this.logger.warn(`could not clear old work dirs: ${describe(error)}`);
    }
  }

  /**
   * While run() is pending, an event loop that empties means it waits on something that can never
   * settle (nothing holds a timer or a socket for it): Node would exit with status 13 and not a
   * word. Say what the agent was doing and exit 1 instead, so a supervisor restarts it and its log
   * says why. Returns the function that stops watching.
   */
  private watchEventLoop(): () => void {
    return onEmptyEventLoop(() => {
      this.logger.error(
        `the event loop emptied while the agent was running (${this.phase}): a wait that nothing keeps alive; exiting with status 1`,
      );
      process.exitCode = 1;
    });
  }

  /**
   * Graceful stop: stop polling at once, let running tasks finish and report for up to
   * `graceSeconds`, then kill what still runs and report it released (best effort), then stop
   * heartbeats. Safe to call more than once, and before `run()` has registered.
   */
  shutdown(): Promise<void> {
    this.shutdownCompletion ??= this.drain();
    return this.shutdownCompletion;
  }

  /** Immediate stop (a second Ctrl-C): kills every task's process tree, reports nothing. */
  killNow(): void {
    this.polling.abort();
    this.reporting.abort();
    for (const task of this.tasks.values()) task.kill();
  }

  private async drain(): Promise<void> {
    this.phase = 'shutting down';
    const running = [...this.tasks.values()].filter((task) => task.processRunning).length;
    this.logger.info(`shutting down: no new work; ${running} task(s) running, grace ${this.options.graceSeconds} s`);
    this.polling.abort();
    const workersDone = Promise.all(this.workers);
    const graceOver = new AbortController();
    await Promise.race([workersDone, sleep(this.options.graceSeconds * 1000, graceOver.signal)]);
    graceOver.abort();
    for (const task of this.tasks.values()) task.release();
    const finalWait = new AbortController();
    await Promise.race([workersDone, sleep((this.options.killGraceMs ?? 5_000) + releaseWindowMs, finalWait.signal)]);
    finalWait.abort();
    // Whatever is still alive now (a process deaf to SIGKILL in uninterruptible sleep, a report
    // still waiting on the control plane) is given up on, so the agent can exit.
    this.reporting.abort();
    for (const task of this.tasks.values()) task.kill();
    await this.heartbeat;
    await this.attesting;
    await removeWorkRootIfEmpty(this.options.dataDir);
    this.logger.info('stopped');
    this.markStopped();
  }

  /** Starts the attestation loop (attest/attester.ts): now, before each expiry, after each re-registration. */
  private startAttestation(client: ControlPlaneClient): Promise<void> {
    this.attester = new Attester({
      ...(this.options.attestation ?? {}),
      client,
      dataDir: this.options.dataDir,
      config: attestedConfig(this.options),
      logger: this.logger,
      asNode: (call, signal) => this.asNode(call, signal),
    });
    return this.attester.run(this.reporting.signal);
  }

  private createClient(identity: NodeIdentity): ControlPlaneClient {
    return new ControlPlaneClient({
      api: this.options.api,
      nodeId: identity.nodeId,
      keyPair: identity.keyPair,
      backoff: this.backoff,
      onUnavailable: (error) => this.logger.warn(`connection lost: ${error.message}; retrying`),
      onAvailable: (downForMs) => this.logger.info(`connection restored after ${Math.round(downForMs / 1000)} s`),
    });
  }

  /**
   * Registers (again). Concurrent callers share one registration, which retries until it succeeds
   * or the agent stops reporting; `signal` only ends this caller's wait (a poller stops waiting
   * at shutdown while a report still needs the registration to finish).
   */
  private register(signal: AbortSignal): Promise<void> {
    this.registration ??= this.sendRegistration(this.reporting.signal).finally(() => {
      this.registration = undefined;
    });
    return abandonOnAbort(this.registration, signal);
  }

  private async sendRegistration(signal: AbortSignal): Promise<void> {
    const { client, identity, inventory } = this.requireSession();
    const request = {
      publicKey: identity.publicKey,
      // Signed with the node key like the whole request: binds the sealing key to this node.
      sealingKey: identity.sealing.publicKey,
      agentVersion,
      inventory,
      ...(this.options.name === undefined ? {} : { name: this.options.name }),
      ...(this.options.joinToken === undefined ? {} : { joinToken: this.options.joinToken }),
    };
    let response: Awaited<ReturnType<ControlPlaneClient['register']>>;
    for (let failures = 0; ; failures++) {
      try {
        response = await client.register(request, { retry: 'forever', signal });
        break;
      } catch (error) {
        // Only a refusal (a 4xx) stops the agent. An answer that does not parse came from something
        // in the way (a proxy's error page, a connection cut mid-body): registering again is safe,
        // since registration is idempotent per node key. The chaos run found agents exiting here.
        if (!(error instanceof UnexpectedResponseError) || signal.aborted) throw error;
        this.logger.warn(`registration answer unreadable (${error.message}); retrying`);
        await sleep(backoffDelayMs(this.backoff, failures), signal);
      }
    }
    this.heartbeatIntervalMs = Math.max(minHeartbeatIntervalMs, response.heartbeatIntervalMs);
    this.advisedProgressMs = response.progressIntervalMs ?? this.advisedProgressMs;
    this.useDispatch(client, response.dispatch);
    // A re-registration may follow a control plane that lost its state: attest again at once.
    this.attester?.trigger();
    this.logger.info(`registered as ${response.node.id}`, {
      name: response.node.name,
      gpus: inventory.gpus.length,
      region: inventory.region,
      heartbeatMs: response.heartbeatIntervalMs,
    });
  }

  /** Picks the work source `dispatch` names; keeps the current one (its credentials, its memory) when it is unchanged. */
  private useDispatch(client: ControlPlaneClient, dispatch: Dispatch): void {
    const key = JSON.stringify(dispatch);
    if (this.workSource?.dispatch === key) return;
    // A worker waiting on the old source gets undefined and asks the new one.
    this.workSource?.source.close?.();
    const asNode = <T>(call: () => Promise<T>, signal: AbortSignal) => this.asNode(call, signal);
    const source: WorkSource =
      dispatch.mode === 'sqs'
        ? new SqsLongPoll({
            client,
            asNode,
            dispatch,
            waitSeconds: this.options.pollWaitSeconds,
            logger: this.logger,
            backoff: this.backoff,
            claimSignal: this.reporting.signal,
            ...(this.options.sqs === undefined ? {} : { sqs: this.options.sqs }),
          })
        : new HttpLongPoll({ client, waitSeconds: this.options.pollWaitSeconds, asNode });
    this.workSource = { source, dispatch: key };
    if (dispatch.mode === 'sqs') {
      this.logger.info(`work dispatch: sqs, ${dispatch.queues.length} pool queue(s)`, {
        region: dispatch.region,
        pools: dispatch.queues.map((queue) => queue.pool).join(','),
      });
    }
  }

  /** Runs a node call; if the control plane has forgotten this node, registers again and repeats it (twice at most). */
  private async asNode<T>(call: () => Promise<T>, signal: AbortSignal): Promise<T> {
    for (let reRegistrations = 0; ; reRegistrations++) {
      try {
        return await call();
      } catch (error) {
        if (!(error instanceof NodeNotRegisteredError) || reRegistrations >= 2) throw error;
        this.logger.warn(`control plane does not know this node (${error.message}); registering again`);
        await this.register(signal);
      }
    }
  }

  private async workerLoop(client: ControlPlaneClient): Promise<void> {
    const signal = this.polling.signal;
    while (!signal.aborted) {
      const pausedForMs = this.pausedUntil - performance.now();
      if (pausedForMs > 0) {
        await sleep(pausedForMs, signal);
        continue;
      }
      let assignment: Assignment | undefined;
      try {
        const source = this.workSource?.source;
        if (source === undefined) throw new Error('no work source: the node is not registered');
        assignment = await source.next(signal);
      } catch (error) {
        if (signal.aborted) break;
        // Not retryable (a 4xx, an unparseable assignment): pause so a persistent error cannot spin.
        this.logger.error(`work poll failed: ${describe(error)}`);
        await sleep(this.backoff.maxMs, signal);
        continue;
      }
      if (assignment !== undefined) this.pace(await this.runTask(client, assignment));
    }
  }

  /**
   * After a task this node could not start for reasons of its own (reported as released, not
   * failed), every slot stops polling for a while, longer with each such task in a row; a task
   * that starts resets it. Without this such a node claims tasks as fast as they come.
   */
  private pace(end: TaskRunEnd): void {
    if (end.kind === 'started') this.unableStreak = 0;
    if (end.kind !== 'node-unable') return;
    const delayMs = backoffDelayMs(this.options.unableBackoff ?? defaultUnableBackoff, this.unableStreak++);
    this.pausedUntil = Math.max(this.pausedUntil, performance.now() + delayMs);
    this.logger.warn(
      `cannot start tasks on this node (${end.reason}): released the task; taking no work for ${(delayMs / 1000).toFixed(1)} s`,
      { tasksInARow: this.unableStreak },
    );
  }

  private async runTask(client: ControlPlaneClient, assignment: Assignment): Promise<TaskRunEnd> {
    const { identity } = this.requireSession();
    const task = new TaskRun(assignment, {
      client,
      asNode: (call, signal) => this.asNode(call, signal),
      logger: this.logger,
      nodeId: identity.nodeId,
      sealingPrivateKey: identity.sealing.privateKey,
      dataDir: this.options.dataDir,
      ...(this.options.taskUser === undefined ? {} : { taskUser: this.options.taskUser }),
      killGraceMs: this.options.killGraceMs ?? 5_000,
      progressIntervalMs:
        this.options.progressIntervalMs ??
        Math.max(progressIntervalFor(this.options.slots), this.advisedProgressMs ?? 0),
      reportSignal: this.reporting.signal,
    });
    // The poll answered just as shutdown began: the lease is ours, hand it straight back.
    if (this.polling.signal.aborted) task.release();
    this.tasks.set(task.taskId, task);
    // Heartbeats alone keep leases (no keep-alive progress): the next one goes now, not after an idle interval.
    this.beatNow.abort();
    try {
      return await task.run();
    } finally {
      this.tasks.delete(task.taskId);
    }
  }

  private async heartbeatLoop(client: ControlPlaneClient): Promise<void> {
    const signal = this.reporting.signal;
    while (!signal.aborted) {
      await sleep(this.heartbeatIntervalMs, AbortSignal.any([signal, this.beatNow.signal]));
      if (signal.aborted) return;
      // Tasks taken from here on wake the next wait; this beat lists those taken so far.
      if (this.beatNow.signal.aborted) this.beatNow = new AbortController();
      const tasks = [...this.tasks.values()]
        .filter((task) => task.leased)
        .map((task) => ({ taskId: task.taskId, attempt: task.attempt }));
      // Now and then the beat carries the node's round trip, which the control plane learns its latency from.
      const latencyMs = client.roundTrips.due(performance.now());
      try {
        const response = await this.asNode(
          () => client.heartbeat({ tasks, ...(latencyMs === undefined ? {} : { latencyMs }) }, { signal }),
          signal,
        );
        if (latencyMs !== undefined) client.roundTrips.reported(performance.now());
        this.heartbeatIntervalMs = Math.max(minHeartbeatIntervalMs, response.heartbeatIntervalMs);
        this.advisedProgressMs = response.progressIntervalMs ?? this.advisedProgressMs;
        this.applyAborts(response.abort);
      } catch (error) {
        // Retryable failures are already logged as a lost connection; the next beat tries again.
        if (!signal.aborted && !(error instanceof AgentError && error.retryable)) {
          this.logger.warn(`heartbeat failed: ${describe(error)}`);
        }
      }
    }
  }

  private applyAborts(aborts: HeartbeatResponse['abort']): void {
    for (const { taskId, attempt, reason } of aborts) {
      const task = this.tasks.get(taskId);
      if (task?.attempt === attempt) task.drop(`aborted by the control plane (${reason})`);
    }
  }

  private requireSession(): {
    client: ControlPlaneClient;
    identity: NodeIdentity;
    inventory: ProbeReport['inventory'];
  } {
    if (this.client === undefined || this.identity === undefined || this.inventory === undefined) {
      throw new Error('the agent is not started');
    }
    return { client: this.client, identity: this.identity, inventory: this.inventory };
  }
}

/** Called when the event loop empties ('beforeExit'); one process listener, however many agents run (tests run several). */
const emptyLoopHandlers = new Set<() => void>();
const onBeforeExit = () => {
  for (const handler of emptyLoopHandlers) handler();
};

/** Calls `handler` once, the first time the event loop empties; returns the function that stops watching. */
function onEmptyEventLoop(handler: () => void): () => void {
  const stop = () => {
    emptyLoopHandlers.delete(once);
    if (emptyLoopHandlers.size === 0) process.off('beforeExit', onBeforeExit);
  };
  const once = () => {
    stop();
    handler();
  };
  if (emptyLoopHandlers.size === 0) process.on('beforeExit', onBeforeExit);
  emptyLoopHandlers.add(once);
  return stop;
}

/** `promise`, or a RequestAbortedError as soon as `signal` aborts; the promise itself carries on. */
function abandonOnAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(new RequestAbortedError('stopped waiting: the agent is stopping'));
    if (signal.aborted) onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
