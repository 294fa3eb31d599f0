import {
  type Assignment,
  type FailureReport,
  type OpenedAssignment,
  openSealedEnv,
  type ProgressReport,
  type ResultSealContext,
  sealResultText,
} from '../protocol/index.js';
import { sleep } from './backoff.js';
import type { ControlPlaneClient, RetryPolicy } from './client.js';
import {
  AgentError,
  InvalidRequestError,
  LeaseLostError,
  RequestAbortedError,
  RequestRejectedError,
  UnexpectedResponseError,
} from './errors.js';
import type { LogFields, Logger } from './log.js';
import { type ProcessTask, startProcessTask, type TaskOutcome } from './runner/process-runner.js';
import type { TaskUser } from './runner/task-user.js';

/** What a task run needs from the agent around it. */
export interface TaskRunContext {
  client: ControlPlaneClient;
  /** Runs a node call; when the control plane no longer knows the node, registers again and repeats it. */
  asNode<T>(call: () => Promise<T>, signal: AbortSignal): Promise<T>;
  logger: Logger;
  /** This node's id: a sealed env is bound to it. */
  nodeId: string;
  /** This node's X25519 private key (raw, base64url): opens the data key sealed to this node. */
  sealingPrivateKey: string;
  dataDir: string;
  /** The user tasks run as (the agent is root); undefined: the agent's own. */
  taskUser?: TaskUser;
  killGraceMs: number;
  progressIntervalMs: number;
  /** Aborted when the agent stops trying to deliver reports (the end of a shutdown). */
  reportSignal: AbortSignal;
}

/**
 * How a run ended, for the agent's pacing: its process `started` (whatever became of it after);
 * `not-started` (its env refused, its lease lost, the node shutting down); or `node-unable`, this
 * node could not start it for reasons of its own (handed back as released, not failed).
 */
export type TaskRunEnd = { kind: 'started' } | { kind: 'not-started' } | { kind: 'node-unable'; reason: string };

/**
 * The control plane limits each node to 600 requests a minute (the `node` rate scope), every slot's
 * reports, polls and the heartbeats together. Progress is the chatty part, so the node as a whole
 * sends at most this many progress reports a second, leaving more than half the limit to the rest.
 */
export const nodeProgressReportsPerSecond = 4;
/** A single task's progress is worth no more than one report every 2 s. */
const minProgressIntervalMs = 2_000;

/**
 * The shortest interval between a task's progress reports on a node with `slots` slots: 2 s, longer
 * with more slots so that all of them busy and chatty stay within {@link nodeProgressReportsPerSecond}
 * (20 slots: 5 s). The agent uses the longer of this and the control plane's advice.
 */
export function progressIntervalFor(slots: number): number {
  return Math.max(minProgressIntervalMs, Math.ceil((slots * 1000) / nodeProgressReportsPerSecond));
}

/** Release reports of a node shutting down are best effort: it is going away and cannot wait out an outage. */
const releaseRetry: RetryPolicy = { attempts: 3 };
/** The report that starts a task gets a few tries; if they all fail the task runs anyway and progress catches up. */
const startRetry: RetryPolicy = { attempts: 3 };

/**
 * One assignment on this node, from its first progress report to its final report: start the
 * process, report progress while anything changed, then report the result or the failure. Stopped
 * early either by the control plane (`drop`: killed, not reported, the lease is not ours any more)
 * or by the node shutting down (`release`: killed, reported as released).
 */
export class TaskRun {
  readonly taskId: string;
  readonly attempt: number;
  private process: ProcessTask | undefined;
  private dropReason: string | undefined;
  /**
   * Where its final report (result or failure) is: a delivered one ended the lease itself, so the
   * task is no longer listed in heartbeats and an abort that says so changes nothing.
   */
  private finalReport: 'unsent' | 'sending' | 'delivered' | 'undelivered' = 'unsent';
  /** An abort that came while the final report was on its way, until the report's fate tells what it meant. */
  private abortWhileReporting: string | undefined;
  private releasing = false;
  private readonly processDone = new AbortController();
  /** When its process started (performance.now(), ms): its own timeout runs from here. */
  private processStartedAt: number | undefined;

  constructor(
    private readonly assignment: Assignment,
    private readonly context: TaskRunContext,
  ) {
    this.taskId = assignment.taskId;
    this.attempt = assignment.attempt;
  }

  /** Whether the control plane still considers this task leased to the node (heartbeats list it). */
  get leased(): boolean {
    return this.dropReason === undefined && this.finalReport !== 'delivered';
  }

  /** Whether the task's process is still running (the node must wait for it or release it). */
  get processRunning(): boolean {
    return this.process !== undefined && !this.processDone.signal.aborted;
  }

  /** Runs the task to its end and reports it. Never rejects: every failure ends up logged or reported. */
  async run(): Promise<TaskRunEnd> {
    try {
      return await this.execute();
    } catch (error) {
      this.log('error', 'failed inside the agent', { error: describe(error) });
      return { kind: this.processRunning ? 'started' : 'not-started' };
    } finally {
      await this.process?.dispose().catch(() => {});
    }
  }

  /**
   * A heartbeat's answer says the control plane took the task back: stop it and report nothing.
   *
   * Not when the task's own final report got there first. A heartbeat sent while that report was
   * on its way still lists the task, and if the control plane takes the report (and verifies it)
   * before it reads the heartbeat, it answers "abort: the task is verified" (or reported, failed):
   *
   *   agent   beat(lists task) ──────────────────────────────▶ answer: abort (verified)
   *           result report ────▶ taken, verified ────▶ 200
   *
   * Such an abort describes the report's own effect, so it waits for the report: delivered, the
   * abort is dropped silently; refused, the task stops with the abort's reason (a real abort, a
   * cancellation say, still warns). See {@link deliver}.
   */
  drop(reason: string): void {
    if (this.finalReport === 'delivered') return;
    if (this.finalReport === 'sending') {
      this.abortWhileReporting ??= reason;
      return;
    }
    this.stop(reason);
  }

  /**
   * The task is not ours any more (aborted, lease lost, a report refused): stop it and report
   * nothing. A task past its own timeout is not stopped: its process is being stopped already, and
   * its `timeout` report is what the control plane's own timeout abort is waiting for (it takes it
   * until the lease's grace ends; a report it refuses stops the task then).
   */
  private stop(reason: string): void {
    if (this.dropReason !== undefined) return;
    if (this.pastOwnTimeout()) {
      this.log('info', `reporting its own timeout rather than stopping silently (${reason})`);
      return;
    }
    this.dropReason = reason;
    this.log('warn', `stopped: ${reason}`);
    this.process?.abort();
  }

  private pastOwnTimeout(): boolean {
    const started = this.processStartedAt;
    return started !== undefined && performance.now() - started >= this.assignment.timeoutSeconds * 1000;
  }

  /** The node is shutting down: stop the task and hand it back to the control plane. */
  release(): void {
    this.releasing = true;
    this.process?.abort();
  }

  /** The agent exits now: kill the process tree without waiting. */
  kill(): void {
    this.process?.kill();
  }

  private async execute(): Promise<TaskRunEnd> {
    if (this.assignment.image !== undefined) {
      // Not handed back: the node registered without a container runtime, so the assignment itself
      // is wrong (the control plane never sends one), and the same node would only be sent it again.
      await this.fail('error', `this node runs processes only; image ${this.assignment.image} cannot run here`);
      return { kind: 'not-started' };
    }
    const opened = await this.open();
    if (opened === undefined) return { kind: 'not-started' };
    const started = !this.releasing && (await this.reportStart());
    if (!this.leased) return { kind: 'not-started' };
    if (this.releasing) {
      await this.fail('released', 'the node is shutting down');
      return { kind: 'not-started' };
    }
    this.processStartedAt = performance.now();
    this.process = await startProcessTask(opened, {
      dataDir: this.context.dataDir,
      killGraceMs: this.context.killGraceMs,
      ...(this.context.taskUser === undefined ? {} : { taskUser: this.context.taskUser }),
    });
    if (this.process.unstartable !== undefined) return this.handBack(this.process.unstartable);
    // Stopped while the work dir was being prepared.
    if (this.releasing || !this.leased) this.process.abort();
    this.log('info', 'started', { command: this.assignment.command[0] });
    const progress = this.reportProgressWhileRunning(started ? 0 : -1);
    const outcome = await this.process.outcome;
    this.processDone.abort();
    await progress;
    await this.reportOutcome(outcome);
    return { kind: 'started' };
  }

  /**
   * This node cannot start the task for reasons of its own (no work dir it can make): that
   * says nothing about the task, so it is handed back as released, which does not spend its retry
   * budget, rather than failed; another node may run it. The agent then backs off (Agent.pace).
   */
  private async handBack(reason: string): Promise<TaskRunEnd> {
    await this.fail('released', `this node could not start the task: ${reason}`, undefined, 'forever');
    return { kind: 'node-unable', reason };
  }

  /**
   * Opens the job's sealed env in memory; it is handed to the process and nowhere else (never
   * written to disk, never logged). An env that does not open (sealed to another node, another
   * attempt, tampered with) fails the attempt with `sealed_env_refused`, and nothing runs.
   */
  private async open(): Promise<OpenedAssignment | undefined> {
    const { sealedEnv, ...assignment } = this.assignment;
    if (sealedEnv === undefined) return { ...assignment, env: {} };
    try {
      const env = await openSealedEnv(this.context.sealingPrivateKey, sealedEnv, {
        jobId: assignment.jobId,
        taskId: assignment.taskId,
        attempt: assignment.attempt,
        nodeId: this.context.nodeId,
      });
      return { ...assignment, env };
    } catch (error) {
      await this.fail(
        'error',
        `sealed_env_refused: the job's env does not open with this node's key (${describe(error)})`,
      );
      return undefined;
    }
  }

  /**
   * A text the task produced (log tail, progress message), sealed to the job's result key when it
   * has one, so the control plane holds only ciphertext; as it is otherwise.
   */
  private async sealed(text: string, field: ResultSealContext['field'], maxLength: number): Promise<string> {
    const resultKey = this.assignment.resultKey;
    if (resultKey === undefined) return text;
    return sealResultText(resultKey, text, { jobId: this.assignment.jobId, taskId: this.taskId, field }, maxLength);
  }

  /** The first progress report moves the task to running; answered 409 or 4xx, the task is not ours to run. */
  private async reportStart(): Promise<boolean> {
    try {
      await this.sendProgress({ attempt: this.attempt }, startRetry);
      return true;
    } catch (error) {
      this.onReportError(error, 'start report');
      return false;
    }
  }

  /**
   * Every interval, sends what changed since the last delivered report (`delivered` is its
   * revision); a task that stays silent sends nothing. Progress is for people (log tail, percent):
   * the lease is kept by the node's heartbeats, which list the task (docs/cost-model.md section 9).
   * Reports of one task go one at a time, so their signed dates increase as the control plane
   * requires of a task's progress.
   */
  private async reportProgressWhileRunning(delivered: number): Promise<void> {
    let lastDelivered = delivered;
    const signal = this.processDone.signal;
    while (!signal.aborted && this.leased) {
      await sleep(this.context.progressIntervalMs, signal);
      const process = this.process;
      if (signal.aborted || process === undefined) return;
      const { revision, percent, message, logTail } = process.progress();
      if (revision === lastDelivered) continue;
      try {
        await this.sendProgress({
          attempt: this.attempt,
          ...(percent === undefined ? {} : { percent }),
          ...(message === undefined ? {} : { message: await this.sealed(message, 'message', 1024) }),
          logTail: await this.sealed(logTail, 'logTail', 8192),
        });
        lastDelivered = revision;
      } catch (error) {
        this.onReportError(error, 'progress report');
      }
    }
  }

  private async reportOutcome(outcome: TaskOutcome): Promise<void> {
    if (!this.leased) return;
    switch (outcome.kind) {
      case 'exited': {
        const { exitCode, resultHash, outputs, metrics } = outcome;
        this.log('info', 'finished', { exitCode, resultHash, outputs: outputs.length, wallMs: metrics.wallMs });
        const logTail = await this.sealed(outcome.logTail, 'logTail', 8192);
        await this.deliver('result', () =>
          this.context.client.reportResult(
            this.taskId,
            { attempt: this.attempt, exitCode, resultHash, outputs, metrics, logTail },
            this.reportOptions('forever'),
          ),
        );
        return;
      }
      case 'timeout':
        await this.fail('timeout', `timed out after ${this.assignment.timeoutSeconds} s`, outcome.logTail);
        return;
      case 'error':
        await this.fail('error', outcome.message);
        return;
      case 'aborted':
        if (this.releasing) await this.fail('released', 'the node is shutting down', outcome.logTail);
        return;
    }
  }

  private async fail(
    reason: FailureReport['reason'],
    message: string,
    logTail?: string,
    retry: RetryPolicy = reason === 'released' ? releaseRetry : 'forever',
  ): Promise<void> {
    this.log(reason === 'released' ? 'info' : 'warn', reason === 'released' ? 'released' : 'failed', {
      reason,
      message,
    });
    const report: FailureReport = {
      attempt: this.attempt,
      reason,
      message: message.slice(0, 2048),
      ...(logTail === undefined ? {} : { logTail: await this.sealed(logTail, 'logTail', 8192) }),
    };
    await this.deliver('failure', () =>
      this.context.client.reportFailure(this.taskId, report, this.reportOptions(retry)),
    );
  }

  /**
   * Sends a final report; a result the protocol refuses (too many outputs, say) is turned into a
   * failure. An abort that came meanwhile ({@link drop}) is settled by the report's fate.
   */
  private async deliver(kind: 'result' | 'failure', send: () => Promise<unknown>): Promise<void> {
    this.finalReport = 'sending';
    try {
      await this.context.asNode(send, this.context.reportSignal);
      this.finalReport = 'delivered';
    } catch (error) {
      if (kind === 'result' && error instanceof InvalidRequestError) {
        await this.fail('error', `result cannot be reported: ${error.message}`);
        return;
      }
      // The control plane took the report (2xx) even if its answer did not parse: nothing to repeat.
      if (error instanceof UnexpectedResponseError) {
        this.finalReport = 'delivered';
        this.log('warn', `${kind} delivered, but the response was unexpected`, { error: error.message });
        return;
      }
      this.finalReport = 'undelivered';
      // Not taken: the abort was the control plane's own (a cancellation, a lost lease), and its reason says more than the refusal.
      if (this.abortWhileReporting !== undefined) this.stop(this.abortWhileReporting);
      this.onReportError(error, `${kind} report`);
    }
  }

  private sendProgress(report: ProgressReport, retry: RetryPolicy = 'never'): Promise<unknown> {
    return this.context.asNode(
      () => this.context.client.reportProgress(this.taskId, report, this.reportOptions(retry)),
      this.context.reportSignal,
    );
  }

  private reportOptions(retry: RetryPolicy) {
    return { retry, signal: this.context.reportSignal };
  }

  /**
   * A report the control plane refused means the task is not ours any more: 409 lease_lost, or
   * another 4xx (task_not_found after a store reset, task_not_assigned). Retryable failures were
   * already logged by the client as an outage; progress simply tries again next interval.
   */
  private onReportError(error: unknown, what: string): void {
    if (error instanceof LeaseLostError) {
      this.stop('lease lost');
    } else if (error instanceof RequestRejectedError) {
      this.stop(`${what} refused: ${error.message}`);
    } else if (error instanceof RequestAbortedError) {
      this.log('warn', `${what} abandoned: the agent is stopping`);
    } else if (!(error instanceof AgentError && error.retryable)) {
      this.log('error', `${what} failed`, { error: describe(error) });
    }
  }

  private log(level: 'info' | 'warn' | 'error', event: string, fields: LogFields = {}): void {
    this.context.logger[level](`task ${this.taskId} attempt ${this.attempt} ${event}`, fields);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
