/**
 * Human renderings of the API's objects: jobs, tasks, nodes. Everything is a pure function of the
 * object, the style and the clock. Every string from the API has its control characters escaped
 * before it is laid out (cli/format.ts `escapeControl`): names and messages are written by other
 * people (a node's operator, another client of the API) and must not reach the terminal raw.
 */
import type { JobSpec, JobStatus, JobView, JobWithTasks, TaskCounts, TaskState, TaskView } from '../protocol/job.js';
import type { NodeView } from '../protocol/node.js';
import {
  escapeControlDeep,
  formatDetails,
  formatDuration,
  formatMiB,
  formatRelativeTime,
  formatTable,
  type Style,
  shellQuote,
  shortHash,
  summarizeGpus,
} from './format.js';

/** Colours a job status or task state by how it went: green done, red failed, cyan busy. */
export function colourState(state: JobStatus | TaskState | 'live' | 'unavailable', style: Style): string {
  switch (state) {
    case 'succeeded':
    case 'verified':
    case 'live':
      return style.green(state);
    case 'failed':
    case 'unavailable':
      return style.red(state);
    case 'running':
    case 'assigned':
    case 'reported':
      return style.cyan(state);
    case 'queued':
      return style.yellow(state);
    case 'cancelled':
      return style.dim(state);
  }
}

const stateOrder: readonly TaskState[] = [
  'queued',
  'assigned',
  'running',
  'reported',
  'verified',
  'failed',
  'cancelled',
];

/** The non-zero task counts in lifecycle order: `2 queued, 1 running, 3 verified`. */
export function summarizeCounts(counts: TaskCounts): string {
  const parts = stateOrder.filter((state) => counts[state] > 0).map((state) => `${counts[state]} ${state}`);
  return parts.length === 0 ? 'no tasks' : parts.join(', ');
}

/** The GPU request in words: `8x H100|A100, nvidia, ≥ 40 GiB`; `none` for CPU jobs. */
export function describeGpuRequest(spec: Pick<JobSpec, 'resources'>): string {
  const gpus = spec.resources.gpus;
  if (gpus.count === 0) return 'none';
  const parts = [`${gpus.count}x ${gpus.models?.join('|') ?? 'any'}`];
  if (gpus.vendor !== undefined) parts.push(gpus.vendor);
  if (gpus.minVramMiB !== undefined) parts.push(`≥ ${formatMiB(gpus.minVramMiB)}`);
  if (gpus.minComputeCapability !== undefined) parts.push(`cc ≥ ${gpus.minComputeCapability}`);
  return parts.join(', ');
}

/** The GPU request for a table cell: `-`, `2`, or `8x H100|A100`. */
function gpusBrief(spec: Pick<JobSpec, 'resources'>): string {
  const { count, models } = spec.resources.gpus;
  if (count === 0) return '-';
  return models === undefined ? String(count) : `${count}x ${models.join('|')}`;
}

/** How long a task ran: its reported wall time, else its latest attempt so far. */
function taskDuration(task: TaskView, now: number): string {
  if (task.result !== undefined) return formatDuration(task.result.metrics.wallMs);
  const last = task.attempts.at(-1);
  if (last === undefined) return '-';
  const end = last.endedAt === undefined ? now : Date.parse(last.endedAt);
  return formatDuration(end - Date.parse(last.assignedAt));
}

/** The task table: index, state, attempt of max, node, exit code, short result hash, duration. */
export function renderTasks(fromApi: readonly TaskView[], style: Style, now: number): string {
  const tasks = escapeControlDeep(fromApi);
  const table = formatTable(
    [
      { header: 'TASK', align: 'right' },
      { header: 'STATE' },
      { header: 'ATTEMPT', align: 'right' },
      { header: 'NODE' },
      { header: 'EXIT', align: 'right' },
      { header: 'RESULT' },
      { header: 'DURATION', align: 'right' },
    ],
    tasks.map((task) => [
      String(task.index),
      colourState(task.state, style),
      `${task.attempt}/${task.maxAttempts}`,
      task.nodeId ?? '-',
      task.result === undefined ? '-' : String(task.result.exitCode),
      task.result === undefined ? '-' : shortHash(task.result.resultHash),
      taskDuration(task, now),
    ]),
    style,
  );
  // Why a task failed matters more than its row; show it under the table rather than truncated in it.
  const errors = tasks.flatMap((task) =>
    task.error === undefined ? [] : [`task ${task.index}: ${style.red(task.error.code)}: ${task.error.message}`],
  );
  // A queued task's progress message says why it waits (for example, no live node fits it).
  const waiting = tasks.flatMap((task) =>
    task.state === 'queued' && task.progress?.message
      ? [`task ${task.index}: ${style.dim(task.progress.message)}`]
      : [],
  );
  return [table, ...errors, ...waiting].join('\n');
}

/** One job in full: its spec in brief, its timeline and its task table. */
export function renderJob(fromApi: JobWithTasks, style: Style, now: number): string {
  const job = escapeControlDeep(fromApi);
  const spec = job.spec;
  const at = (time: string): string => `${formatRelativeTime(time, now)} (${time})`;
  const pairs: [string, string][] = [
    ['id', style.bold(job.id)],
    ['status', colourState(job.status, style)],
  ];
  if (spec.name !== undefined) pairs.push(['name', spec.name]);
  pairs.push(['command', shellQuote(spec.command)]);
  if (spec.image !== undefined) pairs.push(['image', spec.image]);
  pairs.push(
    ['workload', spec.workload],
    ['gpus', describeGpuRequest(spec)],
    ['tasks', `${spec.tasks} (${summarizeCounts(job.taskCounts)})`],
    ['retries', String(spec.retries)],
    ['timeout', formatDuration(spec.timeoutSeconds * 1000)],
  );
  if (spec.regions !== undefined) pairs.push(['regions', spec.regions.join(', ')]);
  if (spec.maxPricePerGpuHour !== undefined) pairs.push(['max price', `${spec.maxPricePerGpuHour} per GPU-hour`]);
  if (spec.deadline !== undefined) pairs.push(['deadline', at(spec.deadline)]);
  // The API never shows the expected value (nodes must not learn it), only that there is one.
  if (spec.verification.mode === 'expected-hash') pairs.push(['verify', 'result hash = the expected hash (not shown)']);
  pairs.push(['created', at(job.createdAt)]);
  if (job.finishedAt !== undefined) {
    const took = formatDuration(Date.parse(job.finishedAt) - Date.parse(job.createdAt));
    pairs.push(['finished', `${at(job.finishedAt)}, after ${took}`]);
  }
  return `${formatDetails(pairs, style)}\n\n${renderTasks(job.tasks, style, now)}`;
}

/** The job list: id, name, status, task progress (and whether a gang), priority, GPUs, age. */
export function renderJobList(fromApi: readonly JobView[], style: Style, now: number): string {
  const jobs = escapeControlDeep(fromApi);
  return formatTable(
    [
      { header: 'ID' },
      { header: 'NAME', maxWidth: 32 },
      { header: 'STATUS' },
      { header: 'TASKS', align: 'right' },
      { header: 'PRIO', align: 'right' },
      { header: 'GPUS' },
      { header: 'CREATED' },
    ],
    jobs.map((job) => [
      job.id,
      job.spec.name ?? '-',
      colourState(job.status, style),
      // A gang's tasks start together or not at all: said beside the count, which it qualifies.
      `${job.spec.gang === true ? 'gang ' : ''}${job.taskCounts.verified}/${job.spec.tasks}`,
      String(job.spec.priority ?? 5),
      gpusBrief(job.spec),
      formatRelativeTime(job.createdAt, now),
    ]),
    style,
  );
}

/** The node list: id, name, status, region, GPUs, tasks done, last seen. */
export function renderNodeList(fromApi: readonly NodeView[], style: Style, now: number): string {
  const nodes = escapeControlDeep(fromApi);
  return formatTable(
    [
      { header: 'ID' },
      { header: 'NAME', maxWidth: 24 },
      { header: 'STATUS' },
      { header: 'REGION' },
      { header: 'GPUS' },
      { header: 'TASKS DONE', align: 'right' },
      { header: 'LAST SEEN' },
    ],
    nodes.map((node) => [
      node.id,
      node.name,
      colourState(node.status, style),
      node.inventory.region,
      summarizeGpus(node.inventory.gpus),
      String(node.stats.tasksCompleted),
      formatRelativeTime(node.lastSeenAt, now),
    ]),
    style,
  );
}

/** One node in full: identity, machine, record, and a table of its GPUs. */
export function renderNode(fromApi: NodeView, style: Style, now: number): string {
  const node = escapeControlDeep(fromApi);
  const inv = node.inventory;
  const details = formatDetails(
    [
      ['id', style.bold(node.id)],
      ['name', node.name],
      ['status', colourState(node.status, style)],
      ['region', inv.region],
      ['gpus', summarizeGpus(inv.gpus)],
      ['cpu', `${inv.cpu.model} (${inv.cpu.cores} cores)`],
      ['memory', formatMiB(inv.memoryMiB)],
      ['os', `${inv.os}${inv.osVersion === undefined ? '' : ` ${inv.osVersion}`} ${inv.arch}`],
      ['runtimes', inv.runtimes.join(', ')],
      ['pools', node.pools.length === 0 ? '-' : node.pools.join(', ')],
      ['agent', node.agentVersion],
      [
        'attestation',
        node.attestation?.expiresAt === undefined
          ? (node.attestation?.level ?? 'none')
          : `${node.attestation.level} until ${node.attestation.expiresAt}`,
      ],
      [
        'tasks',
        `${node.stats.tasksCompleted} completed, ${node.stats.tasksFailed} failed, ${node.stats.leasesLost} leases lost`,
      ],
      ['registered', formatRelativeTime(node.registeredAt, now)],
      ['last seen', formatRelativeTime(node.lastSeenAt, now)],
    ],
    style,
  );
  if (inv.gpus.length === 0) return details;
  const gpus = formatTable(
    [
      { header: 'GPU', align: 'right' },
      { header: 'MODEL' },
      { header: 'VRAM', align: 'right' },
      { header: 'ARCH' },
      { header: 'DRIVER' },
      { header: 'UUID' },
    ],
    inv.gpus.map((gpu) => [
      String(gpu.index),
      gpu.model,
      formatMiB(gpu.vramMiB),
      gpu.computeCapability === undefined ? (gpu.gfxArch ?? '-') : `cc ${gpu.computeCapability}`,
      gpu.driver ?? '-',
      gpu.uuid,
    ]),
    style,
  );
  return `${details}\n\n${gpus}`;
}
