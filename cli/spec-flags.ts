/**
 * Turns `jobs submit` flags (and an optional spec file) into a validated JobSpec. Parsing is
 * strict and every message names the flag, because a job sent with a silently misread flag burns
 * GPU hours.
 */
import { JobSpec, type JobSpecInput, type JobSpec as JobSpecOutput } from '../protocol/job.js';
import { type SpecIssue, SpecValidationError, UsageError } from './errors.js';

/** The raw values of the spec flags, as commander collects them. */
export interface SpecFlags {
  command?: string;
  /** The argv after `--`. */
  argv?: readonly string[];
  image?: string;
  env?: readonly string[];
  gpus?: string;
  vendor?: string;
  minVram?: string;
  tasks?: string;
  retries?: string;
  timeout?: string;
  deadline?: string;
  maxPrice?: string;
  workload?: string;
  /** 0-9; higher runs first. */
  priority?: string;
  /** All tasks start together, each on its own node. */
  gang?: boolean;
  region?: readonly string[];
  name?: string;
  verifyHash?: string;
}

/** What `specFromFlags` needs besides the flags. */
export interface SpecContext {
  /** The parsed `--file` content, whose fields the flags override. */
  base?: unknown;
  /** Epoch ms, for `--deadline 2h`. */
  now: number;
  /** Where `--env NAME` (without a value) takes the value from. */
  env: Readonly<Record<string, string | undefined>>;
}

const unitMs: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Parses a duration: `90s`, `30m`, `2h`, `1h30m`, `500ms`, `1d`; a bare number is seconds.
 * Returns milliseconds, or undefined when `text` is not a duration.
 */
export function parseDuration(text: string): number | undefined {
  const value = text.trim();
  if (/^\d+(\.\d+)?$/.test(value)) return Math.round(Number(value) * 1000);
  if (!/^(\d+(\.\d+)?(ms|s|m|h|d))+$/.test(value)) return undefined;
  let ms = 0;
  for (const [, amount, unit] of value.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)) {
    ms += Number(amount) * (unitMs[unit ?? ''] ?? 0);
  }
  return Math.round(ms);
}

/** Like parseDuration, for a flag: a bad value is a UsageError naming the flag. */
export function durationFlag(flag: string, text: string): number {
  const ms = parseDuration(text);
  if (ms === undefined) {
    throw new UsageError(`${flag} expects a duration like 90s, 30m, 2h or 1h30m, got "${text}"`);
  }
  return ms;
}

// Binary units are exact; decimal ones are what GPU vendors print ("80GB"), converted to MiB.
const mibPerUnit: Readonly<Record<string, number>> = {
  '': 1,
  mib: 1,
  gib: 1024,
  tib: 1024 * 1024,
  mb: 1e6 / 2 ** 20,
  gb: 1e9 / 2 ** 20,
  tb: 1e12 / 2 ** 20,
};

/**
 * Parses a memory size into MiB: `40GiB` → 40960, `512MiB` → 512, `80GB` (decimal) → 76293, bare
 * numbers are MiB. Rounds down, so a minimum never asks for more than what was written.
 */
export function parseSizeMiB(flag: string, text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  const factor = match === null ? undefined : mibPerUnit[(match[2] ?? '').toLowerCase()];
  if (match === null || factor === undefined) {
    throw new UsageError(`${flag} expects a size like 40GiB, 80GB or 40960 (MiB), got "${text}"`);
  }
  return Math.floor(Number(match[1]) * factor);
}

/** Parses a whole number flag; ranges are left to the schema, which knows the limits. */
export function countFlag(flag: string, text: string): number {
  if (!/^\d+$/.test(text.trim())) throw new UsageError(`${flag} expects a whole number, got "${text}"`);
  return Number(text);
}

/** A GPU request: how many, and which models are acceptable. */
export interface GpuFlag {
  count: number;
  models?: string[];
}

/**
 * Parses `--gpus`: a count (`2`), or SkyPilot's `MODEL:COUNT` (`H100:8`), with alternative models
 * separated by commas (`A100,H100:2`, in order of preference); a model alone means one GPU.
 */
export function parseGpus(text: string): GpuFlag {
  const value = text.trim();
  if (/^\d+$/.test(value)) return { count: Number(value) };
  const colon = value.lastIndexOf(':');
  const modelsText = colon < 0 ? value : value.slice(0, colon);
  const countText = colon < 0 ? '1' : value.slice(colon + 1);
  const models = modelsText.split(',').map((model) => model.trim());
  if (!/^\d+$/.test(countText) || models.some((model) => !/^[A-Za-z0-9][\w .-]*$/.test(model))) {
    throw new UsageError(`--gpus expects N, MODEL:N or MODEL,MODEL:N (e.g. 2, H100:8, A100,H100:2), got "${text}"`);
  }
  const count = Number(countText);
  if (count === 0) throw new UsageError(`--gpus "${text}" names a model but asks for 0 GPUs`);
  return { count, models };
}

/**
 * Parses `--env` entries: `NAME=value`, or `NAME` alone to pass the variable through from this
 * shell (like `docker run -e`), which keeps secrets out of shell history.
 */
export function parseEnv(
  entries: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): Record<string, string> {
  const result: Record<string, string> = {};
  for (const entry of entries) {
    const eq = entry.indexOf('=');
    if (eq === 0) throw new UsageError(`--env expects NAME=value or NAME, got "${entry}"`);
    if (eq > 0) {
      result[entry.slice(0, eq)] = entry.slice(eq + 1);
      continue;
    }
    const value = env[entry];
    if (value === undefined) {
      throw new UsageError(`--env ${entry}: no value given and ${entry} is not set in this shell`);
    }
    result[entry] = value;
  }
  return result;
}

/** Parses `--deadline`: an ISO 8601 time, or a duration from now (`2h`). Returns an RFC 3339 UTC time. */
export function parseDeadline(text: string, now: number): string {
  const ms = parseDuration(text);
  const at = ms === undefined ? Date.parse(text) : now + ms;
  if (Number.isNaN(at)) {
    throw new UsageError(
      `--deadline expects an ISO time (2030-06-01T12:00:00Z) or a duration from now (2h), got "${text}"`,
    );
  }
  if (at <= now) throw new UsageError(`--deadline ${text} is in the past`);
  return new Date(at).toISOString();
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** The fields of `value` when it is an object, else none: the schema reports the wrong type later. */
const fieldsOf = (value: unknown): Record<string, unknown> => (isRecord(value) ? value : {});

/**
 * Builds the JobSpec input from the flags over the `--file` spec: a given flag replaces the file's
 * field, except `--env`, which adds to (and overrides per name) the file's variables, and the GPU
 * flags, which replace only the sub-fields they set. Throws UsageError for unparseable flags.
 */
export function specFromFlags(flags: SpecFlags, context: SpecContext): Record<string, unknown> {
  if (context.base !== undefined && !isRecord(context.base)) {
    throw new UsageError('--file must contain a JSON object (a JobSpec)');
  }
  const spec: Record<string, unknown> = { ...context.base };
  const argv = flags.argv ?? [];
  if (flags.command !== undefined && argv.length > 0) {
    throw new UsageError('give the command either with --command or after --, not both');
  }
  if (flags.command !== undefined) spec.command = ['sh', '-c', flags.command];
  if (argv.length > 0) spec.command = [...argv];
  if (spec.command === undefined) {
    throw new UsageError(
      'nothing to run: give --command "echo hello", the argv after -- (gpuai jobs submit -- python train.py), or --file spec.json',
    );
  }

  if (flags.name !== undefined) spec.name = flags.name;
  if (flags.image !== undefined) spec.image = flags.image;
  if (flags.workload !== undefined) spec.workload = flags.workload;
  if (flags.env !== undefined && flags.env.length > 0) {
    spec.env = { ...fieldsOf(spec.env), ...parseEnv(flags.env, context.env) };
  }
  if (flags.tasks !== undefined) spec.tasks = countFlag('--tasks', flags.tasks);
  if (flags.retries !== undefined) spec.retries = countFlag('--retries', flags.retries);
  if (flags.priority !== undefined) spec.priority = countFlag('--priority', flags.priority);
  if (flags.gang === true) spec.gang = true;
  if (flags.timeout !== undefined) {
    const ms = durationFlag('--timeout', flags.timeout);
    if (ms % 1000 !== 0) throw new UsageError(`--timeout is whole seconds, got "${flags.timeout}"`);
    spec.timeoutSeconds = ms / 1000;
  }
  if (flags.deadline !== undefined) spec.deadline = parseDeadline(flags.deadline, context.now);
  if (flags.maxPrice !== undefined) spec.maxPricePerGpuHour = flags.maxPrice.trim();
  if (flags.region !== undefined && flags.region.length > 0) {
    // Repeatable and comma-separated both work: --region eu-west --region us-east, or --region eu-west,us-east.
    spec.regions = flags.region.flatMap((region) => region.split(',')).map((region) => region.trim());
  }
  if (flags.verifyHash !== undefined) {
    spec.verification = { mode: 'expected-hash', sha256: flags.verifyHash.trim().toLowerCase() };
  }

  const gpus: Record<string, unknown> = { ...fieldsOf(fieldsOf(spec.resources).gpus) };
  if (flags.gpus !== undefined) Object.assign(gpus, parseGpus(flags.gpus));
  if (flags.vendor !== undefined) gpus.vendor = flags.vendor.trim().toLowerCase();
  if (flags.minVram !== undefined) gpus.minVramMiB = parseSizeMiB('--min-vram', flags.minVram);
  if (flags.gpus !== undefined || flags.vendor !== undefined || flags.minVram !== undefined) {
    spec.resources = { ...fieldsOf(spec.resources), gpus };
  }
  return spec;
}

// Which flag sets each spec field, so a schema complaint tells the user what to change.
const flagByPath: readonly (readonly [string, string])[] = [
  ['resources.gpus.count', '--gpus'],
  ['resources.gpus.models', '--gpus'],
  ['resources.gpus.vendor', '--vendor'],
  ['resources.gpus.minVramMiB', '--min-vram'],
  ['name', '--name'],
  ['image', '--image'],
  ['command', '--command'],
  ['env', '--env'],
  ['workload', '--workload'],
  ['tasks', '--tasks'],
  ['retries', '--retries'],
  ['priority', '--priority'],
  ['gang', '--gang'],
  ['timeoutSeconds', '--timeout'],
  ['verification', '--verify-hash'],
  ['maxPricePerGpuHour', '--max-price'],
  ['deadline', '--deadline'],
  ['regions', '--region'],
];

const flagFor = (path: string): string | undefined =>
  flagByPath.find(([prefix]) => path === prefix || path.startsWith(`${prefix}.`))?.[1];

/**
 * Validates a spec against the protocol's JobSpec, the same schema the server applies, so a bad
 * spec fails here with flag names instead of after a round trip. Returns the spec with defaults.
 */
export function validateSpec(input: unknown): JobSpecOutput {
  const result = JobSpec.safeParse(input);
  if (result.success) return result.data;
  throw new SpecValidationError(
    result.error.issues.map((issue): SpecIssue => {
      const path = issue.path.map(String).join('.');
      const flag = flagFor(path);
      const found = { path, message: issue.message, code: issue.code };
      return flag === undefined ? found : { ...found, flag };
    }),
  );
}

/** Flags plus file to a validated spec: what `jobs submit` sends. */
export function buildSpec(flags: SpecFlags, context: SpecContext): JobSpecInput {
  return validateSpec(specFromFlags(flags, context));
}
