import { attestationRank } from '../../../../protocol/index.js';
import { attestationFits, demandOf, fitOnNode } from '../../resource/fit.js';
import type { PerformanceView } from '../performance.js';
import {
  type Bucket,
  type Ceilings,
  type FleetEntry,
  type FleetIndex,
  raiseCeilings,
  resetCeilings,
  runtimeBitOf,
  tierCount,
  tierOf,
} from './fleet-index.js';
import { defaultSearchBudget, type Placement, type PlacementTask, type PlaceOptions } from './placement.js';
import { HeapWalker } from './slot-heap.js';

/*
 * Branch and bound over buckets. A node's score is `base + R x factor` (R: the task's predicted
 * run time on the node's class), and every bucket knows a floor of its nodes' `base` and, at its
 * heap's root, their least `factor`. So `floor + R x minFactor` bounds every score in the bucket:
 *
 *   buckets the task may use ──► bound each ──► open the lowest bound ──► walk its heap by factor
 *          ▲                                                                      │
 *          └──── next lowest bound, until it is no better than the best fit ◄─────┘
 *
 * The walk inside a bucket stops as soon as `floor + R x factor` of the next node is no better
 * than the best fit found. The answer is the full scan's (same score, same checks) unless the
 * search budget runs out first; the final check of a candidate is `fitOnNode` and
 * `attestationFits` themselves, so no node that does not fit is ever answered.
 */

const walker = new HeapWalker<FleetEntry>();
const walkCeilings = resetCeilings({} as Ceilings);
let boundBuckets: Bucket[] = [];
let boundRuntimes: number[] = [];
let bounds: number[] = [];
let runtimeOfClass: number[] = [];
let runtimeStamp: number[] = [];
let stamp = 0;

/**
 * The best node for the task by predicted completion, looking at a few nodes of the buckets that
 * can hold it instead of the whole fleet; undefined when no node fits now. Nothing is reserved:
 * call `index.reserve` with the answer (a claim), or use {@link placeGang} for all-or-nothing.
 */
export function placeTask(
  index: FleetIndex,
  task: PlacementTask,
  perf: PerformanceView = index.perf,
  options: PlaceOptions = {},
): Placement | undefined {
  const req = task.requirements;
  const now = options.now ?? Date.now();
  const exclude = options.exclude;
  const budget = options.searchBudget ?? defaultSearchBudget;
  const gpus = req.gpus.count;
  const { cpuCores, memoryMiB } = demandOf(req);
  const runtimeBit = runtimeBitOf(req);
  const minTrust = task.minTrust ?? Number.NEGATIVE_INFINITY;
  const minRank = req.minAttestation === undefined ? 0 : attestationRank(req.minAttestation);
  const avoid = task.avoidNodes !== undefined && task.avoidNodes.length > 0 ? task.avoidNodes : undefined;

  stamp++;
  const classes = index.classNames;
  if (runtimeOfClass.length < classes.length) {
    runtimeOfClass = new Array(classes.length).fill(0);
    runtimeStamp = new Array(classes.length).fill(0);
  }

  // Bound every bucket the task could use.
  let n = 0;
  let lowestAt = -1;
  let lowestBound = Number.POSITIVE_INFINITY;
  const firstTier = tierOf(gpus);
  for (const group of index.eligibleGroups(req)) {
    let runtime = Number.POSITIVE_INFINITY;
    for (const classId of group.classIds) {
      if (runtimeStamp[classId] !== stamp) {
        runtimeStamp[classId] = stamp;
        runtimeOfClass[classId] = perf.runtimeMs(task.workload, classes[classId] as string);
      }
      const r = runtimeOfClass[classId] as number;
      if (r < runtime) runtime = r;
    }
    for (let tier = firstTier; tier < tierCount; tier++) {
      const bucket = group.buckets[tier] as Bucket;
      const ceil = bucket.ceil;
      if (
        bucket.heap.size === 0 ||
        ceil.gpus < gpus ||
        ceil.cores < cpuCores ||
        ceil.memoryMiB < memoryMiB ||
        ceil.trust < minTrust ||
        ceil.attestationRank < minRank ||
        (ceil.runtimes & runtimeBit) === 0
      ) {
        continue;
      }
      const bound = bucket.baseFloor + runtime * bucket.heap.minKey();
      if (bound < lowestBound) {
        lowestBound = bound;
        lowestAt = n;
      }
      boundBuckets[n] = bucket;
      boundRuntimes[n] = runtime;
      bounds[n] = bound;
      n++;
    }
  }

  let best = Number.POSITIVE_INFINITY;
  let bestEntry: FleetEntry | undefined;
  let bestGpus: number[] | undefined;
  let afterFit = 0;
  // The first bucket to open was found while bounding; after each walk, the buckets whose bound
  // no longer beats the best fit are dropped (once per improvement), and the next is picked
  // linearly among the few left.
  let at = lowestAt;
  let compactedFor = Number.POSITIVE_INFINITY;
  search: for (;;) {
    if (at < 0) {
      if (best < compactedFor) {
        let m = 0;
        for (let i = 0; i < n; i++) {
          if ((bounds[i] as number) < best) {
            boundBuckets[m] = boundBuckets[i] as Bucket;
            boundRuntimes[m] = boundRuntimes[i] as number;
            bounds[m] = bounds[i] as number;
            m++;
          }
        }
        n = m;
        compactedFor = best;
      }
      let lowest = best;
      for (let i = 0; i < n; i++) {
        const b = bounds[i] as number;
        if (b < lowest) {
          lowest = b;
          at = i;
        }
      }
      if (at < 0) break;
    }
    bounds[at] = Number.POSITIVE_INFINITY;
    const bucket = boundBuckets[at] as Bucket;
    const floor = bucket.baseFloor;
    const bucketRuntime = boundRuntimes[at] as number;
    walker.start(bucket.heap);
    // What the walked nodes offer: if the walk covers the whole bucket, these are its exact ceilings.
    const seen = resetCeilings(walkCeilings);
    for (;;) {
      const key = walker.peekKey();
      if (key === Number.POSITIVE_INFINITY) {
        Object.assign(bucket.ceil, seen);
        break;
      }
      if (floor + bucketRuntime * key >= best) break;
      const e = (walker.next() as { entry: FleetEntry }).entry;
      if (bestEntry !== undefined && ++afterFit > budget) break search;
      raiseCeilings(seen, e);
      if (
        e.attestationRank < minRank ||
        e.freeGpus < gpus ||
        e.freeCores < cpuCores ||
        e.freeMemoryMiB < memoryMiB ||
        (e.runtimes & runtimeBit) === 0 ||
        e.trust < minTrust ||
        (exclude?.has(e.id) ?? false) ||
        (avoid?.includes(e.id) ?? false)
      ) {
        continue;
      }
      const score = e.base + (runtimeOfClass[e.classId] as number) * e.factor;
      if (score >= best) continue;
      const fit = fitOnNode(req, e.inventory, e.held);
      if (fit === undefined || !attestationFits(req, e.attestation, now)) continue;
      best = score;
      bestEntry = e;
      bestGpus = fit;
    }
    at = -1;
  }
  if (bestEntry === undefined || bestGpus === undefined) return undefined;
  return { taskId: task.id, nodeId: bestEntry.id, pool: bestEntry.pool, gpuIndices: bestGpus, predictedMs: best };
}

/** Frees the scratch arrays (tests that build many indexes). */
export function resetPlacementScratch(): void {
  boundBuckets = [];
  boundRuntimes = [];
  bounds = [];
  runtimeOfClass = [];
  runtimeStamp = [];
}
