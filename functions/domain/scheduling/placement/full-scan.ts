import { attestationFits, demandOf, fitOnNode } from '../../resource/fit.js';
import type { PerformanceView } from '../performance.js';
import { type FleetIndex, runtimeBitOf } from './fleet-index.js';
import { type Placement, type PlacementTask, type PlaceOptions, packingMultiplier } from './placement.js';

/**
 * The baseline placement ours is measured against: score every node of the fleet that has room
 * with the same score (predicted completion with the packing term) and keep the best that passes the same final checks (`fitOnNode`, `attestationFits`). It is
 * the textbook filter-and-score loop, made as cheap as it can be without changing its answer: it
 * reads the same cached node figures as {@link placeTask} (one run-time estimate per class per
 * decision, none per node), and runs the exact fit check only for a node that would beat the best
 * so far. What is left of its cost is the scan itself.
 */
export function fullScanGreedy(
  index: FleetIndex,
  task: PlacementTask,
  perf: PerformanceView = index.perf,
  options: PlaceOptions = {},
): Placement | undefined {
  const req = task.requirements;
  const now = options.now ?? Date.now();
  const gpus = req.gpus.count;
  const { cpuCores, memoryMiB } = demandOf(req);
  const runtimeBit = runtimeBitOf(req);
  const minTrust = task.minTrust ?? Number.NEGATIVE_INFINITY;
  const avoid = task.avoidNodes;
  const regions = req.regions;
  const classes = index.classNames;
  const runtimes = new Float64Array(classes.length).fill(Number.NaN);
  let best = Number.POSITIVE_INFINITY;
  let bestPredicted = 0;
  let bestAt = -1;
  let bestGpus: number[] | undefined;
  const entries = index.entries;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    if (
      e === undefined ||
      e.freeGpus < gpus ||
      e.freeCores < cpuCores ||
      e.freeMemoryMiB < memoryMiB ||
      (e.runtimes & runtimeBit) === 0 ||
      e.trust < minTrust ||
      (regions !== undefined && !regions.includes(e.region)) ||
      (avoid?.includes(e.id) ?? false)
    ) {
      continue;
    }
    let runtime = runtimes[e.classId] as number;
    if (Number.isNaN(runtime)) {
      runtime = perf.runtimeMs(task.workload, classes[e.classId] as string);
      runtimes[e.classId] = runtime;
    }
    const score = e.base + runtime * e.factor * packingMultiplier(e.freeGpus - gpus);
    if (score >= best) continue;
    const fit = fitOnNode(req, e.inventory, e.held);
    if (fit === undefined || !attestationFits(req, e.attestation, now)) continue;
    best = score;
    bestPredicted = e.base + runtime * e.factor;
    bestAt = i;
    bestGpus = fit;
  }
  const chosen = entries[bestAt];
  if (chosen === undefined || bestGpus === undefined) return undefined;
  return {
    taskId: task.id,
    nodeId: chosen.id,
    pool: chosen.pool,
    gpuIndices: bestGpus,
    predictedMs: bestPredicted,
    score: best,
  };
}
