/** `gpuai jobs ...`: submit, inspect, list, cancel and wait for jobs. */
import { randomUUID } from 'node:crypto';
import { Command } from 'commander';
import { JobStatus } from '../../protocol/job.js';
import type { App, CommandContext } from '../context.js';
import { ExitCode, UsageError, WaitTimeoutError } from '../errors.js';
import { escapeControl, formatDuration } from '../format.js';
import { followCursors, parseLimit } from '../paging.js';
import { openedText, readResultPrivateKey, readResultPublicKey, writeNewResultKey } from '../result-keys.js';
import { buildSpec, durationFlag, type SpecFlags } from '../spec-flags.js';
import { renderJob, renderJobList, renderTasks, summarizeCounts } from '../views.js';
import { createProgressReporter, pollUntilTerminal, type WaitObserver, type WaitOutcome } from '../wait.js';
import { collect, examples } from './help.js';

interface SubmitOptions extends Omit<SpecFlags, 'argv'> {
  file?: string;
  idempotencyKey?: string;
  dryRun?: boolean;
  /** A key file: the job's log tails and progress are sealed to its public key. */
  resultKey?: string;
}

async function readSpecFile(ctx: CommandContext, path: string): Promise<unknown> {
  let text: string;
  try {
    text = await ctx.io.readFile(path);
  } catch (error) {
    const code = error instanceof Error && 'code' in error ? String(error.code) : String(error);
    throw new UsageError(`--file ${path}: cannot read it (${code})`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new UsageError(`--file ${path} is not valid JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
}

async function submit(ctx: CommandContext, argv: string[], options: SubmitOptions): Promise<ExitCode> {
  const base = options.file === undefined ? undefined : await readSpecFile(ctx, options.file);
  const built = buildSpec({ ...options, argv }, { base, now: ctx.io.now(), env: ctx.io.env });
  const spec =
    options.resultKey === undefined
      ? built
      : { ...built, resultKey: await readResultPublicKey(ctx, options.resultKey) };
  if (options.dryRun === true) {
    ctx.outJson(JSON.stringify(spec, null, 2));
    return ExitCode.ok;
  }
  // A fresh key per run makes the client's own retries safe; scripts that rerun the whole
  // command after a failure pass their own key to get the same job back.
  const key = options.idempotencyKey ?? randomUUID();
  if (key.length < 1 || key.length > 128) throw new UsageError('--idempotency-key must be 1 to 128 characters');
  const response = await ctx.api.submitJob(spec, key);
  if (ctx.json) {
    ctx.outJson(response.text);
    return ExitCode.ok;
  }
  const job = response.body;
  ctx.out(job.id);
  // Only news about a key the user chose: a 200 for the CLI's own key means its retry found the job
  // that an attempt whose answer was lost had created, which is the retry working.
  if (response.status === 200 && options.idempotencyKey !== undefined) {
    ctx.note('this idempotency key was already used with the same spec: that job is shown');
  }
  if (ctx.io.stderr.isTTY === true) {
    ctx.note(ctx.style.dim(`submitted ${job.spec.tasks} task(s); follow with: gpuai jobs wait ${job.id}`));
  }
  return ExitCode.ok;
}

async function get(ctx: CommandContext, jobId: string): Promise<ExitCode> {
  const response = await ctx.api.getJob(jobId);
  if (ctx.json) ctx.outJson(response.text);
  else ctx.out(renderJob(response.body, ctx.style, ctx.io.now()));
  return ExitCode.ok;
}

interface ListOptions {
  status?: string;
  tenant?: string;
  limit?: string;
  cursor?: string;
  all?: boolean;
}

async function list(ctx: CommandContext, options: ListOptions): Promise<ExitCode> {
  const status = JobStatus.safeParse(options.status);
  if (options.status !== undefined && !status.success) {
    throw new UsageError(`--status expects one of ${JobStatus.options.join(', ')}, got "${options.status}"`);
  }
  const query = {
    ...(status.success ? { status: status.data } : {}),
    ...(options.tenant === undefined ? {} : { tenant: options.tenant }),
    ...(options.limit === undefined ? {} : { limit: parseLimit(options.limit) }),
  };
  if (options.all === true) {
    const jobs = await followCursors(options.cursor, async (cursor) => {
      const page = await ctx.api.listJobs(cursor === undefined ? query : { ...query, cursor });
      return { items: page.body.jobs, cursor: page.body.cursor };
    });
    if (ctx.json) ctx.outJson(JSON.stringify({ jobs }));
    else ctx.out(jobs.length === 0 ? 'no jobs' : renderJobList(jobs, ctx.style, ctx.io.now()));
    return ExitCode.ok;
  }
  const response = await ctx.api.listJobs(options.cursor === undefined ? query : { ...query, cursor: options.cursor });
  if (ctx.json) {
    ctx.outJson(response.text);
    return ExitCode.ok;
  }
  const page = response.body;
  // A filtered page is the unfiltered page less what did not match, so it may be empty yet have a cursor.
  const none = page.cursor === undefined ? 'no jobs' : 'no jobs on this page';
  ctx.out(page.jobs.length === 0 ? none : renderJobList(page.jobs, ctx.style, ctx.io.now()));
  if (page.cursor !== undefined) {
    const filter =
      (query.tenant === undefined ? '' : ` --tenant ${query.tenant}`) +
      (query.status === undefined ? '' : ` --status ${query.status}`);
    ctx.note(ctx.style.dim(`more: gpuai jobs list${filter} --cursor ${page.cursor} (or --all)`));
  }
  return ExitCode.ok;
}

async function tasks(ctx: CommandContext, jobId: string): Promise<ExitCode> {
  const response = await ctx.api.listTasks(jobId);
  if (ctx.json) ctx.outJson(response.text);
  else
    ctx.out(response.body.tasks.length === 0 ? 'no tasks' : renderTasks(response.body.tasks, ctx.style, ctx.io.now()));
  return ExitCode.ok;
}

/**
 * The end of each task's output (the last 4 KiB the agent kept, stdout and stderr interleaved),
 * from its result or, while it runs, its latest progress report. A job submitted with
 * `--result-key` has its tails sealed to that key: `--key` opens them, in memory.
 */
async function logs(ctx: CommandContext, jobId: string, options: { key?: string }): Promise<ExitCode> {
  const privateKey = options.key === undefined ? undefined : await readResultPrivateKey(ctx, options.key);
  const response = await ctx.api.listTasks(jobId);
  const tails = await Promise.all(
    response.body.tasks.map(async (t) => ({
      task: t,
      ...(await openedText(t.result?.logTail ?? t.progress?.logTail, privateKey, {
        jobId,
        taskId: t.id,
        field: 'logTail',
      })),
    })),
  );
  if (ctx.json) {
    const json = tails.map(({ task, text, sealed }) => ({
      taskId: task.id,
      state: task.state,
      logTail: text ?? '',
      ...(sealed === 'no' ? {} : { sealed }),
    }));
    ctx.outJson(JSON.stringify({ tasks: json }));
    return ExitCode.ok;
  }
  for (const { task, text: tail, sealed } of tails) {
    ctx.out(ctx.style.bold(`== task ${task.index} (${task.state}, attempt ${task.attempt})`));
    if (sealed === 'no-key') ctx.out(ctx.style.dim("(sealed to the job's result key: pass --key FILE)"));
    else if (sealed === 'wrong-key') ctx.out(ctx.style.dim(`(sealed to another key than ${options.key})`));
    // A node writes the tail: its escape sequences are shown, not obeyed; lines and tabs stay.
    else
      ctx.out(
        tail === undefined || tail === ''
          ? ctx.style.dim('(no output yet)')
          : escapeControl(tail.replace(/\n$/, ''), '\n\t'),
      );
  }
  return ExitCode.ok;
}

/** Makes a result key pair: the private JWK into `file` (0600), the public key on stdout. */
async function keygen(ctx: CommandContext, file: string): Promise<ExitCode> {
  const publicKey = await writeNewResultKey(file);
  if (ctx.json) ctx.outJson(JSON.stringify({ file, publicKey }));
  else ctx.out(publicKey);
  ctx.note(
    ctx.style.dim(
      `submit with --result-key ${file} (or the public key above); read logs with: gpuai jobs logs JOB --key ${file}`,
    ),
  );
  return ExitCode.ok;
}

async function cancel(ctx: CommandContext, jobId: string): Promise<ExitCode> {
  const response = await ctx.api.cancelJob(jobId);
  if (ctx.json) ctx.outJson(response.text);
  else ctx.out(`${response.body.id} ${response.body.status}: ${summarizeCounts(response.body.taskCounts)}`);
  return ExitCode.ok;
}

interface WaitOptions {
  timeout: string;
  interval: string;
}

const silent: WaitObserver = { update() {}, retrying() {}, recovered() {} };

async function wait(ctx: CommandContext, jobId: string, options: WaitOptions): Promise<ExitCode> {
  const timeoutMs = durationFlag('--timeout', options.timeout);
  const intervalMs = durationFlag('--interval', options.interval);
  if (intervalMs < 100) throw new UsageError(`--interval must be at least 100ms, got "${options.interval}"`);
  const reporter = ctx.json ? undefined : createProgressReporter(ctx.io.stderr, () => ctx.io.now());
  let outcome: WaitOutcome;
  try {
    outcome = await pollUntilTerminal(ctx.api, jobId, { timeoutMs, intervalMs }, ctx.io, reporter ?? silent);
  } finally {
    reporter?.clear();
  }
  if (outcome.kind === 'timeout') {
    const { last } = outcome;
    throw new WaitTimeoutError(
      `gave up after ${formatDuration(timeoutMs)}: job ${last.id} is still ${last.status} (${summarizeCounts(last.taskCounts)}); wait longer with --timeout`,
    );
  }
  const job = outcome.response.body;
  if (ctx.json) ctx.outJson(outcome.response.text);
  else ctx.out(renderJob(job, ctx.style, ctx.io.now()));
  return job.status === 'succeeded' ? ExitCode.ok : ExitCode.failed;
}

/** Builds `gpuai jobs` and its subcommands. */
export function jobsCommand(app: App): Command {
  const jobs = new Command('jobs')
    .description('submit GPU jobs, follow them, inspect their tasks, cancel them')
    .addHelpText(
      'after',
      examples([
        'gpuai jobs submit --command "nvidia-smi" --gpus 1',
        'gpuai jobs list --status running',
        'gpuai jobs wait job_01JD7Z5C2Q9W8V6T4R2P0N8M6K',
      ]),
    );

  jobs
    .command('submit')
    .summary('submit a job (prints its id)')
    .description(
      "Submit a job. The spec comes from flags, from --file, or both: flags override the file's fields, " +
        'and --env adds to its variables. The spec is checked against the JobSpec schema before it is sent.\n\n' +
        'Prints the job id, or with --json the created job.',
    )
    .argument('[argv...]', 'the command to run as an argv, after -- (gpuai jobs submit -- python train.py --lr 3e-4)')
    .optionsGroup('What to run:')
    .option('--command <shell>', 'a shell command line, run as sh -c "<shell>"')
    .option('-f, --file <path>', 'a JobSpec JSON file to start from (- reads standard input)')
    .option('--image <image>', 'container image; without one the command runs as a plain process')
    .option('-e, --env <NAME=value>', 'environment variable, repeatable; NAME alone passes it from this shell', collect)
    .option('--name <name>', 'a name for people')
    .option('--workload <type>', 'workload type: batch (default), inference, training, rendering...')
    .optionsGroup('GPUs:')
    .option('--gpus <spec>', 'GPU count (2), or MODEL:COUNT like H100:8, or models in order of preference: A100,H100:2')
    .option('--vendor <vendor>', 'nvidia, amd, intel, apple or other')
    .option('--min-vram <size>', 'minimum memory per GPU: 40GiB, 80GB (decimal, as vendors print it) or MiB')
    .optionsGroup('Scheduling:')
    .option('--tasks <n>', 'how many parallel tasks (default 1)')
    .option('--retries <n>', 'extra attempts per failed task (default 2)')
    .option('--priority <0-9>', 'higher runs first within a pool (default 5)')
    .option('--gang', 'start all tasks together, each on its own node, or none (at most 32 tasks)')
    .option('--timeout <duration>', 'limit per attempt: 90s, 30m, 2h (default 1h)')
    .option('--deadline <time>', 'when unfinished tasks are failed and refunded: ISO time, or from now: 2h')
    .option('--max-price <tokens>', 'price cap in tokens per GPU-hour, e.g. 1.5')
    .option('--region <region>', 'allowed region, repeatable or comma-separated', collect)
    .option('--verify-hash <sha256>', 'accept only task results whose result hash is this')
    .option(
      '--result-key <file|key>',
      'seal log tails and progress to this X25519 key: a key file from gpuai jobs keygen, or the printed public ' +
        'key (43 base64url characters); only its private key reads them',
    )
    .optionsGroup('Request:')
    .option('--idempotency-key <key>', 'makes resubmitting return the same job (default: a random UUID per run)')
    .option('--dry-run', 'print the validated spec as JSON and send nothing')
    .addHelpText(
      'after',
      examples([
        'gpuai jobs submit --command "echo hello" --gpus 0',
        'gpuai jobs submit --gpus H100:8 --image pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime -- python train.py --lr 3e-4',
        'gpuai jobs submit --gpus A100,H100:1 --min-vram 40GiB --tasks 4 --timeout 30m --env WANDB_API_KEY --command "./render.sh"',
        'gpuai jobs submit --file spec.json --tasks 16 --region eu-west',
        'JOB=$(gpuai jobs submit --command "nvidia-smi" --gpus 1) && gpuai jobs wait "$JOB"',
      ]),
    )
    .action(async (argv: string[], options: SubmitOptions, command: Command) => {
      app.exitCode = await submit(app.context(command), argv, options);
    });

  jobs
    .command('get')
    .description('show a job and its tasks: state, attempt, node, exit code, result hash, duration')
    .argument('<jobId>', 'the job id (job_...)')
    .addHelpText(
      'after',
      examples(['gpuai jobs get job_01JD7Z5C2Q9W8V6T4R2P0N8M6K', 'gpuai jobs get "$JOB" --json | jq .status']),
    )
    .action(async (jobId: string, _options: object, command: Command) => {
      app.exitCode = await get(app.context(command), jobId);
    });

  jobs
    .command('list')
    .description('list jobs, newest first')
    .option('--status <status>', `only jobs with this status: ${JobStatus.options.join(', ')}`)
    .option('--tenant <tenant>', "another tenant's jobs (needs an admin key; default: your key's tenant)")
    .option('--limit <n>', 'page size, 1 to 200 (default 50)')
    .option('--cursor <cursor>', 'continue from a previous page')
    .option('--all', 'follow the cursors and list every job (--json prints one {"jobs": [...]})')
    .addHelpText(
      'after',
      examples([
        'gpuai jobs list',
        'gpuai jobs list --status failed --limit 10',
        'gpuai jobs list --tenant acme --status running   # an admin looking at one tenant',
        'gpuai jobs list --all --json | jq -r ".jobs[].id"',
      ]),
    )
    .action(async (options: ListOptions, command: Command) => {
      app.exitCode = await list(app.context(command), options);
    });

  jobs
    .command('tasks')
    .description("list a job's tasks")
    .argument('<jobId>', 'the job id (job_...)')
    .addHelpText('after', examples(['gpuai jobs tasks job_01JD7Z5C2Q9W8V6T4R2P0N8M6K']))
    .action(async (jobId: string, _options: object, command: Command) => {
      app.exitCode = await tasks(app.context(command), jobId);
    });

  jobs
    .command('logs')
    .description("print the end of each task's output (the agent keeps the last 4 KiB)")
    .argument('<jobId>', 'the job id (job_...)')
    .option('--key <file>', 'the result key file (gpuai jobs keygen) that opens logs sealed to it')
    .addHelpText(
      'after',
      examples([
        'gpuai jobs logs job_01JD7Z5C2Q9W8V6T4R2P0N8M6K',
        'gpuai jobs logs job_01JD7Z5C2Q9W8V6T4R2P0N8M6K --key result.jwk',
      ]),
    )
    .action(async (jobId: string, options: { key?: string }, command: Command) => {
      app.exitCode = await logs(app.context(command), jobId, options);
    });

  jobs
    .command('keygen')
    .summary('make a result key pair (for submit --result-key, logs --key)')
    .description(
      'Make an X25519 key pair for sealed results: writes the private key as a JWK to <file> (mode 0600, ' +
        'never over an existing file) and prints the public key. A job submitted with --result-key <file> (or ' +
        'the printed public key) has ' +
        'its log tails and progress messages sealed by the node to this key: the control plane stores only ' +
        'ciphertext, and gpuai jobs logs --key <file> opens them.',
    )
    .argument('<file>', 'where to write the private key')
    .addHelpText(
      'after',
      examples([
        'gpuai jobs keygen result.jwk',
        'gpuai jobs submit --result-key result.jwk --env TOKEN --command "./run.sh"',
        'gpuai jobs logs job_01JD7Z5C2Q9W8V6T4R2P0N8M6K --key result.jwk',
      ]),
    )
    .action(async (file: string, _options: object, command: Command) => {
      app.exitCode = await keygen(app.context(command), file);
    });

  jobs
    .command('cancel')
    .description('cancel a job: queued tasks are dropped, running ones are told to stop')
    .argument('<jobId>', 'the job id (job_...)')
    .addHelpText('after', examples(['gpuai jobs cancel job_01JD7Z5C2Q9W8V6T4R2P0N8M6K']))
    .action(async (jobId: string, _options: object, command: Command) => {
      app.exitCode = await cancel(app.context(command), jobId);
    });

  jobs
    .command('wait')
    .summary('wait until a job finishes; exit 0 if it succeeded')
    .description(
      'Poll a job until it succeeds, fails or is cancelled, showing progress on stderr, then print it. ' +
        'Short outages of the control plane (also one already on when the wait starts) are retried with backoff, ' +
        'for up to 5 minutes; an unknown job fails at once.\n\n' +
        'Exit code: 0 succeeded, 1 failed or cancelled, 124 when --timeout passes first.',
    )
    .argument('<jobId>', 'the job id (job_...)')
    .option('--timeout <duration>', 'give up after this long (exit 124); 0 waits without limit', '10m')
    .option('--interval <duration>', 'time between polls', '1s')
    .addHelpText(
      'after',
      examples([
        'gpuai jobs wait job_01JD7Z5C2Q9W8V6T4R2P0N8M6K',
        'gpuai jobs wait "$JOB" --timeout 2h --interval 10s',
        'gpuai jobs wait "$JOB" --json > job.json || echo "job did not succeed"',
      ]),
    )
    .action(async (jobId: string, options: WaitOptions, command: Command) => {
      app.exitCode = await wait(app.context(command), jobId, options);
    });

  return jobs;
}
