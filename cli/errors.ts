import type { ErrorBody } from '../protocol/common.js';

/**
 * Process exit codes, documented in `gpuai --help`. Scripts branch on them, so they are part of
 * the CLI's contract: never renumber one.
 */
export const ExitCode = {
  ok: 0,
  /** The job failed or was cancelled (`jobs wait`), or the command itself failed. */
  failed: 1,
  /** Bad flags or arguments, or a job spec that does not validate. */
  usage: 2,
  /** The control plane did not answer. */
  unreachable: 3,
  /** The control plane answered with an error. */
  api: 4,
  /** `jobs wait` ran out of time (the same code as coreutils `timeout`). */
  timeout: 124,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/**
 * An error the CLI expects and renders for people (`error: message`) or, with `--json`, as the
 * API's error shape on stderr. Anything else that escapes a command is a bug and exits 1.
 */
export abstract class CliError extends Error {
  abstract readonly exitCode: ExitCode;
  /** Machine code for `--json` error output, in the API's snake_case vocabulary. */
  abstract readonly code: string;

  /** The error as the API's error body, so scripts parse one shape whatever failed. */
  toErrorBody(): ErrorBody {
    return { error: { code: this.code, message: this.message } };
  }

  /** Extra lines shown under the message in human output. */
  detailLines(): string[] {
    return [];
  }
}

/** A flag or argument the CLI cannot use; the message names the flag and what it expects. */
export class UsageError extends CliError {
  override name = 'UsageError';
  readonly exitCode = ExitCode.usage;
  readonly code = 'usage_error';
}

/**
 * One problem found in a job spec, as the server lists them in a `validation_failed` error (path,
 * message, zod code), plus the flag that sets the offending field when there is one.
 */
export interface SpecIssue {
  /** Dotted path in the spec, e.g. `resources.gpus.count`; empty for the spec itself. */
  path: string;
  message: string;
  code: string;
  flag?: string;
}

const issueLine = (issue: { path: string; message: string; flag?: string | undefined }): string =>
  `  ${issue.path === '' ? '(spec)' : issue.path}${issue.flag === undefined ? '' : ` (${issue.flag})`}: ${issue.message}`;

const isIssue = (value: unknown): value is { path: string; message: string } =>
  typeof value === 'object' &&
  value !== null &&
  'path' in value &&
  typeof value.path === 'string' &&
  'message' in value &&
  typeof value.message === 'string';

/** The issues of a server `validation_failed` error, when its details have the documented shape. */
function issuesOf(details: unknown): { path: string; message: string }[] | undefined {
  if (typeof details !== 'object' || details === null || !('issues' in details)) return undefined;
  const { issues } = details;
  return Array.isArray(issues) && issues.every(isIssue) ? issues : undefined;
}

/** The job spec failed the protocol's `JobSpec` schema before anything was sent. */
export class SpecValidationError extends CliError {
  override name = 'SpecValidationError';
  readonly exitCode = ExitCode.usage;
  readonly code = 'validation_failed';

  constructor(readonly issues: readonly SpecIssue[]) {
    super('the job spec is invalid');
  }

  /** The details in the server's shape, so a script handles a local and a remote rejection alike. */
  override toErrorBody(): ErrorBody {
    return { error: { code: this.code, message: this.message, details: { issues: this.issues, target: 'body' } } };
  }

  override detailLines(): string[] {
    return this.issues.map(issueLine);
  }
}

/** The control plane answered with an error body (or something that is not a valid response). */
export class ApiError extends CliError {
  override name = 'ApiError';
  readonly exitCode = ExitCode.api;
  readonly code: string;
  readonly details: unknown;
  readonly requestId: string | undefined;

  /**
   * @param hint lines the CLI adds under the server's own details in human output (where it
   *   looked for a missing key); `--json` still passes the body through untouched.
   */
  constructor(
    readonly status: number,
    readonly body: ErrorBody,
    readonly hint: readonly string[] = [],
  ) {
    super(body.error.message);
    this.code = body.error.code;
    this.details = body.error.details;
    this.requestId = body.error.requestId;
  }

  /** The body exactly as the server sent it, so `--json` passes it through untouched. */
  override toErrorBody(): ErrorBody {
    return this.body;
  }

  override detailLines(): string[] {
    const lines = [
      `  HTTP ${this.status} ${this.code}${this.requestId === undefined ? '' : ` (request ${this.requestId})`}`,
    ];
    const issues = issuesOf(this.details);
    if (issues !== undefined) lines.push(...issues.map(issueLine));
    else if (this.details !== undefined) lines.push(`  details: ${JSON.stringify(this.details)}`);
    lines.push(...this.hint);
    return lines;
  }
}

/** The control plane did not answer: refused connection, unknown host, or no reply in time. */
export class UnreachableError extends CliError {
  override name = 'UnreachableError';
  readonly exitCode = ExitCode.unreachable;
  readonly code = 'unreachable';

  constructor(
    readonly url: string,
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(
      `cannot reach the control plane at ${url}: is \`npm start\` running? (${reason}; set --api or GPUAI_API to use another address)`,
      options,
    );
  }
}

/** `jobs wait` gave up before the job reached a terminal status. */
export class WaitTimeoutError extends CliError {
  override name = 'WaitTimeoutError';
  readonly exitCode = ExitCode.timeout;
  readonly code = 'wait_timeout';
}

/** `start` could not bring the embedded control plane up (port taken, unreadable data dir...). */
export class StartError extends CliError {
  override name = 'StartError';
  readonly exitCode = ExitCode.failed;
  readonly code = 'start_failed';
}

/**
 * Whether retrying could help: no answer at all, a gateway (or the control plane itself, with
 * 503) saying it is restarting or overloaded, or an answer this CLI cannot read (a proxy or portal
 * in the path answering for the server). Errors the server meant, like a 404, are final. Callers
 * retry only what is safe to repeat: a submit with its idempotency key, a wait's next poll.
 */
export const isTransient = (error: unknown): error is UnreachableError | ApiError =>
  error instanceof UnreachableError ||
  (error instanceof ApiError &&
    (error.status === 502 || error.status === 503 || error.status === 504 || error.code === 'invalid_response'));
