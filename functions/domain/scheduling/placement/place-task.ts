import { attestationRank } from '../../../../protocol/index.js';
import { attestationFits, demandOf, fitOnNode } from '../../resource/fit.js';
import type { PerformanceView } from '../performance.js';
import {
  type Bucket,
  type Ceilings,
  type DeviceGroup,
  type FleetEntry,
  type FleetIndex,
  raiseCeilings,
  resetCeilings,
  runtimeBitOf,
  tierCount,
  tierFloorGpus,
  tierOf,
} from './fleet-index.js';
import {
  defaultSearchBudget,
  type Placement,
  type PlacementTask,
  type PlaceOptions,
  packingMultiplier,
} from './placement.js';
import { HeapWalker } from './slot-heap.js';

/*
 * Branch and bound over buckets. A node's score is `base + R x factor x P` (R: the task's
 * predicted run time on the node's class; P: the packing multiplier of the free GPUs it would
 * leave idle, see `packingMultiplier`), and every bucket knows a floor of its nodes' `base`, at
 * its heap's root their least `factor`, and by its tier the least P. So
 * `floor + R x P(tier) x minFactor` bounds every score in the bucket:
 *
 *   classes by R ──► admit the next class while the fleet-wide floors say it could win
 *        │                 (bound its groups' buckets)
 *        ▼
 *   open the lowest bound ──► walk its heap by factor ──► next lowest bound, until it is no
 *                                                        better than the best fit
 *
 * Admitting classes lazily keeps a decision from bounding every bucket of the fleet (15 regions x
 * ~20 device kinds x 5 tiers): a 1-GPU task rarely looks past the two or three fastest classes.
 * The walk inside a bucket stops as soon as `floor + R x P x factor` of the next node is no
 * better than the best fit found. The answer is the full scan's (same score, same checks) unless
 * the search budget runs out first; the final check of a candidate is `fitOnNode` and
 * `attestationFits` themselves, so no node that does not fit is ever answered.
 */

const walker = new HeapWalker<FleetEntry>();
const walkCeilings = resetCeilings({} as Ceilings);
let boundBuckets: Bucket[] = [];
let boundScales: number[] = [];
let order: number[] = [];
let bounds: number[] = [];
let runtimeOfClass: number[] = [];
let runtimeStamp: number[] = [];
let stamp = 0;

interface ClassLists {
  classVersion: number;
  /** The distinct classes of the groups, and for each the groups that hold it. */
  classIds: number[];
  groups: DeviceGroup[][];
}
let classLists = new WeakMap<DeviceGroup[], ClassLists>();

/** The eligible groups filed by class (cached per group list, rebuilt when a group gains a class). */
function classesOf(index: FleetIndex, groups: DeviceGroup[]): ClassLists {
  const cached = classLists.get(groups);
  if (cached !== undefined && cached.classVersion === index.classVersion) return cached;
  const lists: ClassLists = { classVersion: index.classVersion, classIds: [], groups: [] };
  for (const group of groups) {
    for (const classId of group.classIds) {
      let at = lists.classIds.indexOf(classId);
      if (at < 0) {
        at = lists.classIds.length;
        lists.classIds.push(classId);
        lists.groups.push([]);
      }
      (lists.groups[at] as DeviceGroup[]).push(group);
    }
  }
  classLists.set(groups, lists);
  return lists;
}

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

  // The classes the task's groups hold, cheapest predicted run time first: a class is admitted
  // (its groups' buckets bounded) only once the fleet-wide floors say it could still win.
  const byClass = classesOf(index, index.eligibleGroups(req));
  const classCount = byClass.classIds.length;
  for (let i = 0; i < classCount; i++) {
    const classId = byClass.classIds[i] as number;
    runtimeStamp[classId] = stamp;
    runtimeOfClass[classId] = perf.runtimeMs(task.workload, classes[classId] as string);
    // Insertion sort: a few dozen classes at most.
    let j = i;
    while (j > 0 && (runtimeOfClass[order[j - 1] as number] as number) > (runtimeOfClass[classId] as number)) {
      order[j] = order[j - 1] as number;
      j--;
    }
    order[j] = classId;
  }
  const floorBase = index.baseFloor;
  const floorFactor = index.factorFloor;
  let admitted = 0;
  let n = 0;
  const firstTier = tierOf(gpus);
  /** Bounds every bucket of the next class's groups that could hold the task. */
  const admitNextClass = (): void => {
    const classId = order[admitted++] as number;
    const groups = byClass.groups[byClass.classIds.indexOf(classId)] as DeviceGroup[];
    for (const group of groups) {
      if (group.visited === stamp) continue;
      group.visited = stamp;
      let runtime = Number.POSITIVE_INFINITY;
      for (const id of group.classIds) {
        const r = runtimeOfClass[id] as number;
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
        const scale = runtime * packingMultiplier((tierFloorGpus[tier] as number) - gpus);
        boundBuckets[n] = bucket;
        boundScales[n] = scale;
        bounds[n] = bucket.baseFloor + scale * bucket.heap.minKey();
        n++;
      }
    }
  };

  let best = Number.POSITIVE_INFINITY;
  let bestPredicted = 0;
  let bestEntry: FleetEntry | undefined;
  let bestGpus: number[] | undefined;
  let afterFit = 0;
  // Buckets whose bound no longer beats the best fit are dropped (once per improvement); the next
  // to open is the lowest bound among the few left, after admitting every class whose floor is
  // below it.
  let compactedFor = Number.POSITIVE_INFINITY;
  search: for (;;) {
    if (best < compactedFor) {
      let m = 0;
      for (let i = 0; i < n; i++) {
        if ((bounds[i] as number) < best) {
          boundBuckets[m] = boundBuckets[i] as Bucket;
          boundScales[m] = boundScales[i] as number;
          bounds[m] = bounds[i] as number;
          m++;
        }
      }
      n = m;
      compactedFor = best;
    }
    let at = -1;
    let lowest = best;
    for (;;) {
      for (let i = 0; i < n; i++) {
        const b = bounds[i] as number;
        if (b < lowest) {
          lowest = b;
          at = i;
        }
      }
      if (admitted >= classCount) break;
      const next = floorBase + (runtimeOfClass[order[admitted] as number] as number) * floorFactor;
      if (next >= lowest) break;
      admitNextClass();
    }
    if (at < 0) break;
    bounds[at] = Number.POSITIVE_INFINITY;
    const bucket = boundBuckets[at] as Bucket;
    const floor = bucket.baseFloor;
    const bucketScale = boundScales[at] as number;
    walker.start(bucket.heap);
    // What the walked nodes offer: if the walk covers the whole bucket, these are its exact ceilings.
    const seen = resetCeilings(walkCeilings);
    for (;;) {
      const key = walker.peekKey();
      if (key === Number.POSITIVE_INFINITY) {
        Object.assign(bucket.ceil, seen);
        break;
      }
      if (floor + bucketScale * key >= best) break;
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
      const run = (runtimeOfClass[e.classId] as number) * e.factor;
      const score = e.base + run * packingMultiplier(e.freeGpus - gpus);
      if (score >= best) continue;
      const fit = fitOnNode(req, e.inventory, e.held);
      if (fit === undefined || !attestationFits(req, e.attestation, now)) continue;
      best = score;
      bestPredicted = e.base + run;
      bestEntry = e;
      bestGpus = fit;
    }
  }
  if (bestEntry === undefined || bestGpus === undefined) return undefined;
  return {
    taskId: task.id,
    nodeId: bestEntry.id,
    pool: bestEntry.pool,
    gpuIndices: bestGpus,
    predictedMs: bestPredicted,
    score: best,
  };
}

/** Frees the scratch arrays (tests that build many indexes). */
export function resetPlacementScratch(): void {
  boundBuckets = [];
  boundScales = [];
  order = [];
  classLists = new WeakMap();
  bounds = [];
  runtimeOfClass = [];
  runtimeStamp = [];
}
