import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, chown, lstat, mkdir, rm, rmdir, stat } from 'node:fs/promises';
import { constants, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { type OpenedAssignment, type OutputEntry, resultHash } from '../../protocol/index.js';
import { LogTail } from './log-tail.js';
import { byName, digestOutputFiles, StreamDigest } from './output-digest.js';
import { ProgressLineScanner, type ProgressMark } from './progress-lines.js';
import type { TaskUser } from './task-user.js';

/** How a task's process ended, as far as the agent reports it. */
export type TaskOutcome =
  /** It ran to an exit code (any code: the control plane judges it); outputs are hashed. */
  | {
      kind: 'exited';
      exitCode: number;
      outputs: OutputEntry[];
      resultHash: string;
      metrics: { wallMs: number };
      logTail: string;
    }
  /** It outlived `timeoutSeconds` and was killed. */
  | { kind: 'timeout'; metrics: { wallMs: number }; logTail: string }
  /** `abort()` killed it. */
  | { kind: 'aborted'; logTail: string }
  /** It never ran (the program could not be spawned, its work dir not made), or its outputs could not be read. */
  | { kind: 'error'; message: string };

/** What the task has said so far; `revision` grows whenever any field changes, so callers send only news. */
export interface TaskProgress {
  revision: number;
  percent?: number;
  message?: string;
  logTail: string;
}

/** A task's process, started: watch it, stop it, and clean up after it. */
export interface ProcessTask {
  /**
   * `<workRoot>/<taskId>-<attempt>`, the process's cwd and HOME; `out/` in it is GPUAI_OUTPUT_DIR,
   * `tmp/` its TMPDIR.
   */
  readonly workDir: string;
  /** Settles once the process and everything it spawned in its group are gone, and outputs are hashed. Never rejects. */
  readonly outcome: Promise<TaskOutcome>;
  progress(): TaskProgress;
  /** Stops the task: SIGTERM to its process group, SIGKILL after the kill grace. */
  abort(): void;
  /** SIGKILL to the process group at once, for an agent that is exiting and cannot wait. */
  kill(): void;
  /** Removes the work dir. Call after the outcome is reported, whatever it was. */
  dispose(): Promise<void>;
  /**
   * Set when the node could not start the task for reasons of its own (its work dir could not be
   * made: a full disk, a temp dir the task user cannot reach), which says nothing about the task;
   * the outcome is then that same error.
   */
  readonly unstartable?: string;
}

export interface ProcessRunnerOptions {
  /** The agent's data dir (its node key): task work dirs are kept out of it. */
  dataDir: string;
  /** Where work dirs are made (default {@link workRootFor} the data dir); never inside a data dir. */
  workRoot?: string;
  /** Time between SIGTERM and SIGKILL when a task is stopped (default 5 s). */
  killGraceMs?: number;
  /** Where PATH and LANG are taken from (default: the agent's own environment). */
  baseEnv?: NodeJS.ProcessEnv;
  /**
   * The user the task runs as (the agent must be root to switch to it): its work dir is made its
   * own. Undefined: the agent's own user. `resolveTaskUser` (task-user.ts) picks it for the CLI.
   */
  taskUser?: TaskUser;
}

/** Bytes of combined stdout and stderr kept for progress and result reports. */
export const logTailBytes = 4096;

/**
 * Environment variables passed through from the agent; everything else a task sees comes from its
 * assignment. Nothing else of the agent's environment reaches a task: not its API key or join
 * token (GPUAI_*), not cloud credentials (AWS_*), not whatever its shell exported.
 */
const inheritedVariables = ['PATH', 'LANG'] as const;

/**
 * The parent of an agent's task work dirs: `<tmp>/gpuai-work-<uid>/<hash of the data dir>`, one
 * per agent (an agent clears its own at start, and removes it at stop when empty), in the system's temporary directory: outside the
 * agent's data dir (which holds the node's private key) and the embedded control plane's (which
 * holds the master key), so that no relative path from a task's cwd leads to either. This is no
 * sandbox: see {@link startProcessTask}.
 */
export const workRootFor = (dataDir: string): string =>
  join(
    tmpdir(),
    `gpuai-work-${process.getuid?.() ?? 'user'}`,
    createHash('sha256').update(resolve(dataDir)).digest('hex').slice(0, 16),
  );

/**
 * Removes the agent's work root if no work dir is left in it (an agent that stops), so that the
 * `<hash>` dirs of agents long gone do not pile up in the temporary directory.
 */
export async function removeWorkRootIfEmpty(dataDir: string): Promise<void> {
  try {
    await rmdir(workRootFor(dataDir));
  } catch {
    // ENOENT: never made; ENOTEMPTY: a work dir is still there (a task that could not be removed).
  }
}

/**
 * Makes a work root the agent's own with `mode` and refuses one that another user owns: in a
 * shared /tmp, someone else could have made it first to read or plant tasks' files. The mode is
 * 0700, or 0711 when tasks run as another user: they must pass through it to their own work dir,
 * and still cannot list it.
 */
async function prepareRoot(root: string, mode: number): Promise<void> {
  await mkdir(root, { recursive: true, mode });
  if (process.platform === 'win32') return;
  const info = await stat(root);
  if (process.getuid !== undefined && info.uid !== process.getuid()) {
    throw new Error(`work root ${root} belongs to another user (uid ${info.uid})`);
  }
  if ((info.mode & 0o777) !== mode) await chmod(root, mode);
}

/**
 * Throws unless `user` may search every directory from / down to `dir` (the task could not even
 * enter its work dir): a /tmp left at mode 0700, say, says so here rather than as a failed spawn.
 */
async function assertReachable(dir: string, user: TaskUser): Promise<void> {
  for (let path = resolve(dir); ; path = dirname(path)) {
    const info = await stat(path);
    const bit = info.uid === user.uid ? 0o100 : info.gid === user.gid ? 0o010 : 0o001;
    if ((info.mode & bit) === 0) {
      throw new Error(
        `${path} (mode ${(info.mode & 0o7777).toString(8)}) does not let the task user ${user.name} (uid ${user.uid}) through`,
      );
    }
    if (dirname(path) === path) return;
  }
}

/**
 * Runs an assignment as a child process: argv is `assignment.command` exactly (no shell, unless
 * the command is itself `sh -c ...`), in a fresh private work dir (cwd and HOME) outside the data
 * dirs, with a clean environment, in its own process group so that the whole tree can be signalled. Stdout is hashed as the output `stdout` and scanned for
 * `::progress` lines; every regular file left under `out/` is hashed too. When the main process
 * exits, whatever it left running in its group is killed: the task is over.
 *
 * The work dir is removed (`dispose()`) once the outcome is reported, failed tasks included:
 * keeping them would fill contributors' disks with data of jobs they do not own, and the log tail
 * travels with the failure report.
 *
 * With `taskUser` (the CLI's default when the agent is root: `nobody`), the task runs as that user,
 * with no supplementary groups, in a work dir it owns: the agent's keys, the control plane's data
 * dir and /proc/<agent>/ are closed to it, as to any unprivileged user. It still reads what the
 * world may read, shares that uid with the node's other tasks (which can signal and inspect one
 * another), and shares the kernel, network and GPUs. Without `taskUser` the task runs as the
 * agent's own user and can read whatever that user can, the node's key included, by absolute
 * path. The process runtime is no sandbox: use a container runtime on any node that takes other
 * people's jobs (docs/security.md).
 */
export async function startProcessTask(
  assignment: OpenedAssignment,
  options: ProcessRunnerOptions,
): Promise<ProcessTask> {
  const workRoot = options.workRoot ?? workRootFor(options.dataDir);
  const workDir = join(workRoot, `${assignment.taskId}-${assignment.attempt}`);
  const outputDir = join(workDir, 'out');
  const user = options.taskUser;
  const rootMode = user === undefined ? 0o700 : 0o711;
  try {
    // `<tmp>/gpuai-work-<uid>` is the agent's too, but not the parent of a work root it was given.
    if (options.workRoot === undefined) await prepareRoot(dirname(workRoot), rootMode);
    await prepareRoot(workRoot, rootMode);
    // A directory left by a crashed earlier run of the same attempt must not leak into this one's outputs.
    await rm(workDir, { recursive: true, force: true });
    await mkdir(workDir, { mode: 0o700 });
    await mkdir(outputDir);
    await mkdir(join(workDir, 'tmp'));
    if (user !== undefined) {
      // The task's own, and no one else's (0700): it writes its outputs, HOME and TMPDIR there.
      // The agent, root, still reads the outputs and removes the whole dir afterwards.
      for (const dir of [workDir, outputDir, join(workDir, 'tmp')]) await chown(dir, user.uid, user.gid);
      await assertReachable(workDir, user);
    }
  } catch (error) {
    const message = `could not prepare work dir ${workDir}: ${error instanceof Error ? error.message : String(error)}`;
    return notStarted(workDir, message);
  }
  const env = taskEnvironment(assignment, workDir, options.baseEnv ?? process.env);
  return new ChildProcessTask(assignment, workDir, outputDir, env, options.killGraceMs ?? 5_000, user);
}

/**
 * The environment of a task: PATH and LANG, HOME and TMPDIR in its work dir, the assignment's
 * variables, then the agent's, which win.
 */
function taskEnvironment(
  assignment: OpenedAssignment,
  workDir: string,
  baseEnv: NodeJS.ProcessEnv,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of inheritedVariables) {
    const value = baseEnv[name];
    if (value !== undefined) env[name] = value;
  }
  // Set after the job's own variables so that a job cannot claim another task's identity or GPUs.
  const devices = assignment.gpuIndices.join(',');
  return {
    ...env,
    HOME: workDir,
    TMPDIR: join(workDir, 'tmp'),
    ...assignment.env,
    GPUAI_JOB_ID: assignment.jobId,
    GPUAI_TASK_ID: assignment.taskId,
    GPUAI_TASK_INDEX: String(assignment.index),
    GPUAI_TASK_COUNT: String(assignment.taskCount),
    GPUAI_ATTEMPT: String(assignment.attempt),
    GPUAI_OUTPUT_DIR: join(workDir, 'out'),
    CUDA_VISIBLE_DEVICES: devices,
    ROCR_VISIBLE_DEVICES: devices,
  };
}

function notStarted(workDir: string, message: string): ProcessTask {
  return {
    workDir,
    unstartable: message,
    outcome: Promise.resolve({ kind: 'error', message }),
    progress: () => ({ revision: 0, logTail: '' }),
    abort: () => {},
    kill: () => {},
    dispose: () => rm(workDir, { recursive: true, force: true }),
  };
}

class ChildProcessTask implements ProcessTask {
  readonly outcome: Promise<TaskOutcome>;
  private readonly child: ChildProcess;
  private readonly stdout = new StreamDigest();
  private readonly logTail = new LogTail(logTailBytes);
  private readonly startedAt = Date.now();
  private revision = 0;
  private lastMark: ProgressMark | undefined;
  private stopReason: 'timeout' | 'aborted' | undefined;
  private exitCode: number | undefined;
  private wallMs = 0;
  private timeoutTimer: NodeJS.Timeout | undefined;
  private killTimer: NodeJS.Timeout | undefined;

  constructor(
    assignment: OpenedAssignment,
    readonly workDir: string,
    private readonly outputDir: string,
    env: Record<string, string>,
    private readonly killGraceMs: number,
    user: TaskUser | undefined,
  ) {
    const [program, ...args] = assignment.command;
    this.child = spawn(program ?? '', args, {
      cwd: workDir,
      env,
      // setgid, then setuid, in the child before exec; libuv also clears the supplementary groups
      // (setgroups(0)), so none of the agent's (root's) groups stay with the task.
      ...(user === undefined ? {} : { uid: user.uid, gid: user.gid }),
      // A group of its own: signals reach the whole tree, and Ctrl-C at the agent's terminal does
      // not reach the task, whose end the agent manages (grace period, then release).
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      windowsHide: true,
    });
    this.outcome = new Promise((resolve) => this.watch(resolve));
    // setTimeout fires at once beyond 2^31-1 ms (24.8 days); the protocol allows at most 7 days anyway.
    const timeoutMs = Math.min(assignment.timeoutSeconds * 1000, 2 ** 31 - 1);
    this.timeoutTimer = setTimeout(() => this.stop('timeout'), timeoutMs);
  }

  progress(): TaskProgress {
    return { revision: this.revision, ...this.lastMark, logTail: this.logTail.toString() };
  }

  abort(): void {
    this.stop('aborted');
  }

  kill(): void {
    this.stopReason ??= 'aborted';
    this.signalGroup('SIGKILL');
  }

  dispose(): Promise<void> {
    return rm(this.workDir, { recursive: true, force: true });
  }

  private watch(resolve: (outcome: TaskOutcome) => void): void {
    const scanner = new ProgressLineScanner((mark) => this.onProgressMark(mark));
    let spawned = false;
    this.child.once('spawn', () => {
      spawned = true;
    });
    this.child.once('error', (error) => {
      if (spawned) return;
      this.clearTimers();
      resolve({ kind: 'error', message: `could not start ${this.child.spawnfile}: ${error.message}` });
    });
    this.child.stdout?.on('data', (chunk: Buffer) => {
      this.stdout.update(chunk);
      scanner.push(chunk);
      this.onOutput(chunk);
    });
    this.child.stderr?.on('data', (chunk: Buffer) => this.onOutput(chunk));
    this.child.once('exit', (code, signal) => {
      this.wallMs = Date.now() - this.startedAt;
      this.exitCode = code ?? 128 + (signal === null ? 0 : constants.signals[signal]);
      // The main process is gone: whatever it left running in its group goes too, which also
      // closes the pipes those leftovers held open.
      this.signalGroup('SIGKILL');
    });
    this.child.once('close', () => {
      if (!spawned) return;
      this.clearTimers();
      scanner.end();
      void this.settle().then(resolve);
    });
  }

  private async settle(): Promise<TaskOutcome> {
    const logTail = this.logTail.toString();
    const metrics = { wallMs: this.wallMs };
    if (this.stopReason === 'timeout') return { kind: 'timeout', metrics, logTail };
    if (this.stopReason === 'aborted') return { kind: 'aborted', logTail };
    try {
      // The task owns its work dir and could have swapped `out` for a link to a directory of the
      // host's, whose files the agent (root) would then hash and report.
      if (!(await lstat(this.outputDir)).isDirectory()) throw new Error(`${this.outputDir} is no longer a directory`);
      const files = await digestOutputFiles(this.outputDir);
      const outputs = [{ name: 'stdout', ...this.stdout.result() }, ...files].sort(byName);
      return {
        kind: 'exited',
        exitCode: this.exitCode ?? 0,
        outputs,
        resultHash: resultHash(outputs),
        metrics,
        logTail,
      };
    } catch (error) {
      // The task removed or locked its own output dir: nothing trustworthy to hash.
      const message = `could not hash outputs: ${error instanceof Error ? error.message : String(error)}`;
      return { kind: 'error', message };
    }
  }

  private onOutput(chunk: Buffer): void {
    this.logTail.append(chunk);
    this.revision++;
  }

  private onProgressMark(mark: ProgressMark): void {
    this.lastMark = mark;
    this.revision++;
  }

  private stop(reason: 'timeout' | 'aborted'): void {
    if (this.stopReason !== undefined || this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.stopReason = reason;
    clearTimeout(this.timeoutTimer);
    this.signalGroup('SIGTERM');
    this.killTimer = setTimeout(() => this.signalGroup('SIGKILL'), this.killGraceMs);
  }

  private signalGroup(signal: NodeJS.Signals): void {
    if (this.child.pid === undefined) return;
    try {
      // Windows has no process groups to signal: only the main process can be stopped there.
      if (process.platform === 'win32') this.child.kill(signal);
      else process.kill(-this.child.pid, signal);
    } catch {
      // ESRCH: the group is already gone.
    }
  }

  private clearTimers(): void {
    clearTimeout(this.timeoutTimer);
    clearTimeout(this.killTimer);
  }
}
