/**
 * `jobs wait`: poll a job until it is terminal, riding out short control plane outages, and show
 * progress on stderr (one updating line on a terminal, a line per change otherwise).
 */
import { type JobWithTasks, terminalJobStatuses } from '../protocol/job.js';
import type { ApiClient, ApiResponse } from './api-client.js';
import { type CliError, isTransient, UnreachableError } from './errors.js';
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
 * Polls GET /v1/jobs/{id} until the job's status is terminal or the wait times out. A failure on
 * the first poll is thrown as is (a wrong id or address should not be retried for minutes);
 * transient failures after that are retried with exponential backoff, up to `maxOutageMs`.
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
      if (last === undefined || !isTransient(error)) throw error;
      outageSince ??= io.now();
      if (io.now() - outageSince >= maxOutageMs) throw error;
      failures += 1;
      delay = Math.min(maxBackoffMs, Math.max(settings.intervalMs, 1000) * 2 ** (failures - 1));
      observer.retrying(error, delay);
    }
    const remaining = deadline - io.now();
    if (remaining <= 0) return { kind: 'timeout', last };
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
