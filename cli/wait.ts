/**
 * `jobs wait`: poll a job until it is terminal, riding out short control plane outages, and show
 * progress on stderr (one updating line on a terminal, a line per change otherwise).
 */
import { type JobWithTasks, terminalJobStatuses } from '../protocol/job.js';
import type { ApiClient, ApiResponse } from './api-client.js';
import { type ApiError, type CliError, isTransient, UnreachableError } from './errors.js';
import { formatDuration } from './format.js';
import type { CliIo, Terminal } from './io.js';
import { summarizeCounts } from './views.js';

/** How long to wait and how often to look. */
export interface WaitSettings {
  /** Give up after this long; 0 waits without limit. */
  timeoutMs: number;
  intervalMs: number;
}

/** Hears about each poll, for progress display. */
export interface WaitObserver {
  update(job: JobWithTasks): void;
  retrying(error: CliError, delayMs: number): void;
  recovered(): void;
}

/** How a wait ended: the terminal job, or out of time with the last job seen. */
export type WaitOutcome =
  | { kind: 'terminal'; response: ApiResponse<JobWithTasks> }
  | { kind: 'timeout'; last: JobWithTasks };

/** An outage longer than this is not "brief": wait gives up with the connection error. */
export const maxOutageMs = 5 * 60_000;
const maxBackoffMs = 15_000;

/**
 * Whether a failed poll is worth retrying. Before the job was seen only transport failures are (no
 * connection, 502/503/504: the control plane or its proxy is down or restarting), so an outage
 * already on when `wait` starts is ridden out; an answer that is not the API is thrown at once then,
 * since it more likely means a wrong address than a hiccup. A 404 or any other answer never retries.
 */
function retryable(error: unknown, jobSeen: boolean): error is UnreachableError | ApiError {
  if (!isTransient(error)) return false;
  return jobSeen || error instanceof UnreachableError || [502, 503, 504].includes(error.status);
}

/**
 * Polls GET /v1/jobs/{id} until the job's status is terminal or the wait times out. Transient
 * failures (see {@link retryable}) are retried with exponential backoff, up to `maxOutageMs`; a
 * wait that times out before it ever saw the job throws the last failure.
 */
export async function pollUntilTerminal(
  api: ApiClient,
  jobId: string,
  settings: WaitSettings,
  io: Pick<CliIo, 'now' | 'sleep'>,
  observer: WaitObserver,
): Promise<WaitOutcome> {
  const deadline = settings.timeoutMs > 0 ? io.now() + settings.timeoutMs : Number.POSITIVE_INFINITY;
  let last: JobWithTasks | undefined;
  let failures = 0;
  let outageSince: number | undefined;
  let lastError: unknown;
  for (;;) {
    let delay = settings.intervalMs;
    try {
      const response = await api.getJob(jobId);
      if (failures > 0) observer.recovered();
      failures = 0;
      outageSince = undefined;
      last = response.body;
      observer.update(last);
      if (terminalJobStatuses.includes(last.status)) return { kind: 'terminal', response };
    } catch (error) {
      if (!retryable(error, last !== undefined)) throw error;
      lastError = error;
      outageSince ??= io.now();
      if (io.now() - outageSince >= maxOutageMs) throw error;
      failures += 1;
      delay = Math.min(maxBackoffMs, Math.max(settings.intervalMs, 1000) * 2 ** (failures - 1));
      observer.retrying(error, delay);
    }
    const remaining = deadline - io.now();
    if (remaining <= 0) {
      if (last === undefined) throw lastError;
      return { kind: 'timeout', last };
    }
    // Sleeping at most until the deadline leaves one last poll right at it.
    await io.sleep(Math.min(delay, remaining));
  }
}

/** A WaitObserver that draws progress on `stream`; `clear` erases the live line before final output. */
export interface ProgressReporter extends WaitObserver {
  clear(): void;
}

/**
 * Progress on stderr. On a terminal one line is redrawn in place with the elapsed time; elsewhere
 * (CI logs, pipes) a line is written only when the status or the counts change.
 */
export function createProgressReporter(stream: Terminal, now: () => number): ProgressReporter {
  const started = now();
  const live = stream.isTTY === true;
  let drawn = false;
  let previous = '';
  const clear = (): void => {
    if (drawn) stream.write('\r\u001b[2K');
    drawn = false;
  };
  const say = (line: string): void => {
    clear();
    stream.write(`${line}\n`);
  };
  return {
    update(job) {
      const state = `${job.id} ${job.status}: ${summarizeCounts(job.taskCounts)}`;
      if (live) {
        clear();
        const elapsed = now() - started;
        // Whole seconds: a millisecond count flickering on every redraw is noise.
        stream.write(`${state} (${elapsed < 1000 ? '0s' : formatDuration(elapsed)})`);
        drawn = true;
      } else if (state !== previous) {
        stream.write(`${state}\n`);
      }
      previous = state;
    },
    retrying(error, delayMs) {
      const why =
        error instanceof UnreachableError ? `lost the control plane at ${error.url} (${error.reason})` : error.message;
      say(`${why}; retrying in ${formatDuration(delayMs)}`);
    },
    recovered() {
      say('reconnected to the control plane');
    },
    clear,
  };
}
