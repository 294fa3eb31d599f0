/**
 * bench:placement — placements per second and decision time of the placement engine
 * (functions/domain/scheduling/placement) against the full-scan greedy, at 1k, 10k and 100k
 * heterogeneous nodes, on one core (one synchronous loop, process.hrtime.bigint per decision),
 * and the quality gap: mean predicted completion of ours over the greedy's on the same states.
 *
 *   npm run bench:placement -- [--quick] [--sizes 1000,10000,100000] [--decisions N] [--seed N]
 *
 * Per size: a fleet from bench/shared (half Alibaba-trace machines, half synthetic; regions,
 * latencies, slow and flaky nodes), indexed and filled to a steady load with tasks (partly busy).
 * Then a task stream (drawn before the loop): a decision is place + reserve, timed with hrtime (wall);
 * after it a running task chosen at random is released (outside the hrtime span) to hold the
 * load steady; the process's CPU time over the whole loop is measured beside. Ours runs first;
 * then the paired quality pass (ours and the greedy asked on the same states, untimed); then the
 * full-scan greedy on the same index, same task shapes.
 * Last line: one JSON object: the largest size's figures, `ours.placementsPerSec` per CPU-second
 * (`rateBasis: "cpu"`, process.cpuUsage over the loop), `ours.p99Ms` wall clock per decision
 * (`latencyClock: "wall"`), `speedup` per CPU-second, `qualityGapPct`; every size under `sizes`.
 */
import { availableParallelism, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import type { PerformanceView } from '../../functions/domain/scheduling/performance.js';
import {
  FleetIndex,
  fullScanGreedy,
  type Placement,
  type PlacementTask,
  type PlaceOptions,
  placeTask,
} from '../../functions/domain/scheduling/placement/index.js';
import { fleetSummary, generateFleet, seededRandom } from '../shared/index.js';
import { benchPerformance, indexNode, taskStream } from './workload.js';

/** Timed decisions of ours per fleet size: the help text states these, so it cannot drift from them. */
const defaultDecisions = { full: 100_000, quick: 10_000 } as const;

const help = `npm run bench:placement -- [options]

Placement engine vs full-scan greedy on one core: placements per CPU-second (and per wall-clock
second), p50/p99 decision time (wall clock), and the quality gap (mean predicted completion, %) at
each fleet size. Last line: one JSON object (placementsPerSec is per CPU-second, p99Ms wall).

  --quick          CI-sized run (fewer decisions per size; still 1k, 10k and 100k nodes)
  --sizes LIST     fleet sizes, comma-separated (default 1000,10000,100000)
  --decisions N    timed decisions of ours per size (default ${defaultDecisions.full}; quick ${defaultDecisions.quick})
  --seed N         seed of fleet, load and tasks (default 17)
  --help           this text
`;

type Placer = (
  index: FleetIndex,
  task: PlacementTask,
  perf: PerformanceView,
  options: PlaceOptions,
) => Placement | undefined;

interface PhaseResult {
  decisions: number;
  placed: number;
  /**
   * Decisions per CPU-second: decisions over the process's CPU time for the loop (process.cpuUsage,
   * user + system, with the releases that hold the load): what one core gives, even when the
   * machine is shared. The rate the targets are read against.
   */
  placementsPerSec: number;
  /** Says what `placementsPerSec` divides by. */
  rateBasis: 'cpu';
  /** Decisions over their summed wall-clock time (hrtime around place + reserve): counts time others held the core. */
  placementsPerWallSec: number;
  /** Decision times (place + reserve), wall clock (hrtime) per decision. */
  meanUs: number;
  p50Us: number;
  p99Ms: number;
  maxMs: number;
  /** Says how the decision times were clocked. */
  latencyClock: 'wall';
}

const now = Date.UTC(2026, 11, 7);

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number;
}

const round = (x: number, digits = 3): number => Number(x.toPrecision(digits));

class Load {
  readonly running: { nodeId: string; taskId: string }[] = [];
  constructor(
    private readonly index: FleetIndex,
    private readonly target: number,
    seed: number,
  ) {
    this.random = seededRandom(seed);
  }
  private readonly random;

  taken(nodeId: string, taskId: string): void {
    this.running.push({ nodeId, taskId });
  }

  /** Releases tasks at random until the load is back at its target (untimed: a finishing task). */
  settle(): void {
    while (this.running.length > this.target) {
      const at = this.random.int(this.running.length);
      const gone = this.running[at] as { nodeId: string; taskId: string };
      this.running[at] = this.running[this.running.length - 1] as { nodeId: string; taskId: string };
      this.running.pop();
      this.index.release(gone.nodeId, gone.taskId);
    }
  }
}

function buildIndex(fleet: ReturnType<typeof generateFleet>, perf: PerformanceView, seed: number) {
  const random = seededRandom(seed);
  const index = new FleetIndex(perf);
  const start = process.hrtime.bigint();
  for (const node of fleet) index.add(indexNode(node, random, now));
  const buildNs = Number(process.hrtime.bigint() - start);
  return { index, buildNs };
}

/** Fills the index to its steady load with ours (the same for both copies: same seed, same states). */
function fill(index: FleetIndex, perf: PerformanceView, target: number, seed: number): Load {
  const load = new Load(index, target, seed + 3);
  const next = taskStream(seededRandom(seed + 4), 'fill');
  for (let tries = 0; load.running.length < target && tries < target * 3; tries++) {
    const task = next();
    const p = placeTask(index, task, perf, { now });
    if (p !== undefined && index.reserve(p.nodeId, task.id, task.requirements) !== undefined) {
      load.taken(p.nodeId, task.id);
    }
  }
  return load;
}

interface Quality {
  samples: number;
  ours: number;
  greedy: number;
  sameNode: number;
  oursMissed: number;
  greedyMissed: number;
}

function run(
  index: FleetIndex,
  perf: PerformanceView,
  load: Load,
  placer: Placer,
  decisions: number,
  seed: number,
  phase: string,
): PhaseResult {
  // Tasks are drawn before the loop, so that the CPU time of the loop is the placer's (and the
  // releases that hold the load, which a real scheduler pays too).
  const next = taskStream(seededRandom(seed + 5), phase);
  const tasks = Array.from({ length: decisions }, next);
  const times = new Float64Array(decisions);
  const options: PlaceOptions = { now };
  let placed = 0;
  let total = 0;
  const cpuStart = process.cpuUsage();
  for (let i = 0; i < decisions; i++) {
    const task = tasks[i] as PlacementTask;
    const start = process.hrtime.bigint();
    const p = placer(index, task, perf, options);
    const gpus = p === undefined ? undefined : index.reserve(p.nodeId, task.id, task.requirements);
    const ns = Number(process.hrtime.bigint() - start);
    times[i] = ns;
    total += ns;
    if (p !== undefined && gpus !== undefined) {
      placed++;
      load.taken(p.nodeId, task.id);
    }
    load.settle();
  }
  const cpu = process.cpuUsage(cpuStart);
  times.sort();
  return {
    decisions,
    placed,
    placementsPerSec: round((decisions * 1e6) / Math.max(1, cpu.user + cpu.system), 4),
    rateBasis: 'cpu',
    placementsPerWallSec: round((decisions * 1e9) / total, 4),
    meanUs: round(total / decisions / 1e3),
    p50Us: round(percentile(times, 0.5) / 1e3),
    p99Ms: round(percentile(times, 0.99) / 1e6),
    maxMs: round((times[times.length - 1] ?? 0) / 1e6),
    latencyClock: 'wall',
  };
}

/** Ours and the greedy asked on the same states (ours' choice is then reserved); untimed. */
function compare(index: FleetIndex, perf: PerformanceView, load: Load, decisions: number, seed: number): Quality {
  const next = taskStream(seededRandom(seed + 6), 'paired');
  const quality: Quality = { samples: 0, ours: 0, greedy: 0, sameNode: 0, oursMissed: 0, greedyMissed: 0 };
  const options: PlaceOptions = { now };
  for (let i = 0; i < decisions; i++) {
    const task = next();
    const greedy = fullScanGreedy(index, task, perf, options);
    const p = placeTask(index, task, perf, options);
    if (p !== undefined && greedy !== undefined) {
      quality.samples++;
      quality.ours += p.predictedMs;
      quality.greedy += greedy.predictedMs;
      if (p.nodeId === greedy.nodeId) quality.sameNode++;
    } else if (greedy !== undefined) quality.oursMissed++;
    else if (p !== undefined) quality.greedyMissed++;
    if (p !== undefined && index.reserve(p.nodeId, task.id, task.requirements) !== undefined) {
      load.taken(p.nodeId, task.id);
    }
    load.settle();
  }
  return quality;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
      sizes: { type: 'string' },
      decisions: { type: 'string' },
      seed: { type: 'string', default: '17' },
    },
  });
  if (values.help) {
    process.stdout.write(help);
    return;
  }
  const quick = values.quick ?? false;
  const seed = Number(values.seed);
  const sizes = (values.sizes ?? '1000,10000,100000').split(',').map(Number);
  const decisions = Number(values.decisions ?? (quick ? defaultDecisions.quick : defaultDecisions.full));
  if (!sizes.every((s) => Number.isInteger(s) && s > 0) || !(decisions > 0) || !Number.isFinite(seed)) {
    process.stderr.write(help);
    process.exitCode = 2;
    return;
  }

  const perSize: Record<string, unknown>[] = [];
  let last: Record<string, unknown> = {};
  for (const nodes of sizes) {
    const fleet = generateFleet({ nodes, seed });
    const perf = benchPerformance(fleet);
    const summary = fleetSummary(fleet);
    // Steady load: about one running task per node (roughly half the fleet's GPUs busy).
    const target = nodes;
    const greedyDecisions = Math.max(
      quick ? 50 : 200,
      Math.min(quick ? 1_000 : 5_000, Math.floor((quick ? 5e6 : 5e7) / nodes)),
    );

    const ours = buildIndex(fleet, perf, seed + 1);
    const load = fill(ours.index, perf, target, seed);
    const busyGpus = ours.index.entries.reduce((n, e) => n + e.totalGpus - e.freeGpus, 0);
    // Warm up the JIT on this size before timing (untimed).
    run(ours.index, perf, load, placeTask, Math.min(2_000, decisions), seed + 100, 'warm');
    const oursRun = run(ours.index, perf, load, placeTask, decisions, seed, 'ours');
    const q = compare(ours.index, perf, load, greedyDecisions, seed);
    // The greedy on the same index at the same steady load, with the same task shapes.
    run(ours.index, perf, load, fullScanGreedy, 5, seed + 200, 'warm-greedy');
    const greedyRun = run(ours.index, perf, load, fullScanGreedy, greedyDecisions, seed, 'greedy');

    const qualityGapPct = q.samples === 0 ? 0 : round((q.ours / q.greedy - 1) * 100, 3);
    // Both per CPU-second (the figure to trust on a shared machine); the wall-clock ratio beside it.
    const speedup = round(oursRun.placementsPerSec / greedyRun.placementsPerSec, 4);
    const wallSpeedup = round(oursRun.placementsPerWallSec / greedyRun.placementsPerWallSec, 4);
    const row = {
      nodes,
      gpus: summary.gpus,
      busyGpuPct: round((100 * busyGpus) / Math.max(1, summary.gpus)),
      indexBuildUsPerNode: round(ours.buildNs / nodes / 1e3),
      ours: oursRun,
      fullScan: greedyRun,
      speedup,
      wallSpeedup,
      qualityGapPct,
      quality: {
        samples: q.samples,
        sameNodePct: round((100 * q.sameNode) / Math.max(1, q.samples)),
        oursMissed: q.oursMissed,
        greedyMissed: q.greedyMissed,
      },
    };
    perSize.push(row);
    last = row;
    const o = oursRun;
    const g = greedyRun;
    process.stdout.write(
      `${String(nodes).padStart(7)} nodes (${summary.gpus} GPUs, ${row.busyGpuPct}% busy, index ${row.indexBuildUsPerNode} µs/node): ` +
        `ours ${o.placementsPerSec}/CPU-s (${o.placementsPerWallSec}/s wall) p50 ${o.p50Us} µs p99 ${o.p99Ms} ms wall (${o.placed}/${o.decisions} placed) | ` +
        `full scan ${g.placementsPerSec}/CPU-s (${g.placementsPerWallSec}/s wall) p50 ${g.p50Us} µs p99 ${g.p99Ms} ms wall (${g.placed}/${g.decisions}) | ` +
        `speedup ${speedup}x per CPU-s (${wallSpeedup}x wall), quality gap ${qualityGapPct}% over ${q.samples} paired decisions ` +
        `(same node ${row.quality.sameNodePct}%, ours missed ${q.oursMissed})\n`,
    );
  }
  const line = {
    nodes: last.nodes,
    ours: last.ours,
    fullScan: last.fullScan,
    speedup: last.speedup,
    wallSpeedup: last.wallSpeedup,
    qualityGapPct: last.qualityGapPct,
    quality: last.quality,
    sizes: perSize,
    seed,
    quick,
    node: process.version,
    // The machine's load while this ran: wall-clock figures count the time other processes held the core.
    loadAverage: round(loadavg()[0] ?? 0),
    cores: availableParallelism(),
  };
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

main();
