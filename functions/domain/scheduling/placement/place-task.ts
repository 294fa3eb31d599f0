import { attestationRank } from '../../../../protocol/index.js';
import { attestationFits, demandOf, fitOnNode } from '../../resource/fit.js';
import type { PerformanceView } from '../performance.js';
import {
  type Bucket,
  type Ceilings,
  coreLevelOf,
  type DeviceGroup,
  type FleetEntry,
  type FleetIndex,
  memoryLevelOf,
  raiseCeilings,
  resetCeilings,
  roomLevels,
  runtimeBitOf,
  runtimeKinds,
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

/**
 * Walks of the buckets opened in the current decision, reused across decisions: a bucket's walk
 * is paused when its next node's bound passes another bucket's, and resumed when that bucket's
 * turn comes again (best first over every node of every bucket, so a bucket of nodes that are
 * nearly full never holds the search up while another has nodes that fit at once).
 */
const walkers: HeapWalker<FleetEntry>[] = [];
/** What each walk's nodes offered so far: if a walk covers its whole bucket, its exact ceilings. */
const walkSeen: Ceilings[] = [];
/** Per bound bucket, the walk it has (-1: not opened yet). */
let walkOf: number[] = [];
let boundBuckets: Bucket[] = [];
let boundScales: number[] = [];
let order: number[] = [];
let bounds: number[] = [];
let runtimeOfClass: number[] = [];
let runtimeStamp: number[] = [];
/** Per class (by its place in `order`): the next tier to admit, and what admitting it costs at least (R x P). */
let nextTier: number[] = [];
let stageScale: number[] = [];
let stamp = 0;

interface ClassLists {
  classVersion: number;
  /** The distinct classes of the groups, and for each the groups that hold it. */
  classIds: number[];
  groups: DeviceGroup[][];
  /**
   * Per class and tier, the buckets of its groups that hold no other class, in one array: bounding
   * them reads each bucket, not its group first (at 100k nodes each is a cache miss).
   */
  ownBuckets: Bucket[][][];
  /** Per class, its groups that hold several classes (bounded once per decision, at their least run time). */
  sharedGroups: DeviceGroup[][];
}
let classLists = new WeakMap<DeviceGroup[], ClassLists>();

/** The eligible groups filed by class (cached per group list, rebuilt when a group gains a class). */
function classesOf(index: FleetIndex, groups: DeviceGroup[]): ClassLists {
  const cached = classLists.get(groups);
  if (cached !== undefined && cached.classVersion === index.classVersion) return cached;
  const lists: ClassLists = {
    classVersion: index.classVersion,
    classIds: [],
    groups: [],
    ownBuckets: [],
    sharedGroups: [],
  };
  for (const group of groups) {
    for (const classId of group.classIds) {
      let at = lists.classIds.indexOf(classId);
      if (at < 0) {
        at = lists.classIds.length;
        lists.classIds.push(classId);
        lists.groups.push([]);
        lists.ownBuckets.push(Array.from({ length: tierCount }, (): Bucket[] => []));
        lists.sharedGroups.push([]);
      }
      (lists.groups[at] as DeviceGroup[]).push(group);
      if (group.classIds.length > 1) (lists.sharedGroups[at] as DeviceGroup[]).push(group);
      else {
        const own = lists.ownBuckets[at] as Bucket[][];
        for (let tier = 1; tier < tierCount; tier++) (own[tier] as Bucket[]).push(group.buckets[tier] as Bucket);
      }
    }
  }
  classLists.set(groups, lists);
  return lists;
}

/** What the current decision needs of a bucket's ceilings (module scratch: decisions are synchronous). */
const need: Ceilings = resetCeilings({} as Ceilings);
/** Buckets bounded so far in the current decision. */
let n = 0;

/** Whether some node of the bucket may meet the task (its ceilings are upper bounds). */
const mayFit = (bucket: Bucket, task: Ceilings): boolean => {
  return (
    bucket.rootKey !== Number.POSITIVE_INFINITY &&
    bucket.gpus >= task.gpus &&
    bucket.cores >= task.cores &&
    bucket.memoryMiB >= task.memoryMiB &&
    bucket.trust >= task.trust &&
    bucket.attestationRank >= task.attestationRank &&
    (bucket.runtimes & task.runtimes) !== 0
  );
};

function addBound(bucket: Bucket, scale: number): void {
  boundBuckets[n] = bucket;
  boundScales[n] = scale;
  bounds[n] = bucket.baseFloor + scale * bucket.rootKey;
  walkOf[n] = -1;
  n++;
}

/** Bounds the tier's bucket of every group of the class (a group of several classes: once, at its least run time). */
function admitTier(byClass: ClassLists, classId: number, tier: number, gpus: number, task: Ceilings): void {
  const at = byClass.classIds.indexOf(classId);
  const packing = packingMultiplier((tierFloorGpus[tier] as number) - gpus);
  const own = (byClass.ownBuckets[at] as Bucket[][])[tier] as Bucket[];
  const scale = (runtimeOfClass[classId] as number) * packing;
  for (let i = 0; i < own.length; i++) {
    const bucket = own[i] as Bucket;
    if (mayFit(bucket, task)) addBound(bucket, scale);
  }
  for (const group of byClass.sharedGroups[at] as DeviceGroup[]) {
    if (group.visited[tier] === stamp) continue;
    group.visited[tier] = stamp;
    const bucket = group.buckets[tier] as Bucket;
    if (!mayFit(bucket, task)) continue;
    let runtime = Number.POSITIVE_INFINITY;
    for (const id of group.classIds) {
      const r = runtimeOfClass[id] as number;
      if (r < runtime) runtime = r;
    }
    addBound(bucket, runtime * packing);
  }
}

/** Bounds the class's room cells (nodes with no free GPU) that may have the cores and memory asked for. */
function admitRoomCells(index: FleetIndex, classId: number, cores: number, memoryMiB: number, task: Ceilings): void {
  const scale = (runtimeOfClass[classId] as number) * packingMultiplier(0);
  const firstMemory = memoryLevelOf(memoryMiB);
  // Only the cells of nodes with the runtime the task needs (alone or with the other).
  for (let runtimes = 1; runtimes < runtimeKinds; runtimes++) {
    if ((runtimes & task.runtimes) === 0) continue;
    const cells = index.roomCells[classId * runtimeKinds + runtimes] as Bucket[];
    for (let c = coreLevelOf(cores); c < roomLevels; c++) {
      for (let m = firstMemory; m < roomLevels; m++) {
        const cell = cells[c * roomLevels + m] as Bucket;
        if (mayFit(cell, task)) addBound(cell, scale);
      }
    }
  }
}

/**
 * The best node for the task by predicted completion, looking at a few nodes of the buckets that
 * can hold it instead of the whole fleet; undefined when no node fits now. Nothing is reserved:
 * call `index.reserve` with the answer (a claim).
 */
export function placeTask(
  index: FleetIndex,
  task: PlacementTask,
  perf: PerformanceView = index.perf,
  options: PlaceOptions = {},
): Placement | undefined {
  const req = task.requirements;
  const now = options.now ?? Date.now();
  const budget = options.searchBudget ?? defaultSearchBudget;
  const gpus = req.gpus.count;
  const { cpuCores, memoryMiB } = demandOf(req);
  const runtimeBit = runtimeBitOf(req);
  const minTrust = task.minTrust ?? Number.NEGATIVE_INFINITY;
  const minRank = req.minAttestation === undefined ? 0 : attestationRank(req.minAttestation);
  const avoid = task.avoidNodes !== undefined && task.avoidNodes.length > 0 ? task.avoidNodes : undefined;
  // Room cells hold nodes of every region: the walk checks the region there.
  const regions = req.regions;
  need.gpus = gpus;
  need.cores = cpuCores;
  need.memoryMiB = memoryMiB;
  need.trust = minTrust;
  need.attestationRank = minRank;
  need.runtimes = runtimeBit;

  stamp++;
  const classes = index.classNames;
  if (runtimeOfClass.length < classes.length) {
    runtimeOfClass = new Array(classes.length).fill(0);
    runtimeStamp = new Array(classes.length).fill(0);
    nextTier = new Array(classes.length).fill(0);
    stageScale = new Array(classes.length).fill(0);
  }

  // The classes the task's groups hold, cheapest predicted run time first. A stage is a class and
  // a free-GPU tier; it is admitted (its buckets bounded) only once the fleet-wide floors say it
  // could still win: floor + R(class) x P(tier's least leftover) x least factor.
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
  const firstTier = tierOf(gpus);
  const firstScale = packingMultiplier((tierFloorGpus[firstTier] as number) - gpus);
  for (let i = 0; i < classCount; i++) {
    nextTier[i] = firstTier;
    stageScale[i] = (runtimeOfClass[order[i] as number] as number) * firstScale;
  }
  const floorBase = index.baseFloor;
  const floorFactor = index.factorFloor;
  let stagesLeft = classCount * (tierCount - firstTier);
  n = 0;

  let best = Number.POSITIVE_INFINITY;
  let bestPredicted = 0;
  let bestEntry: FleetEntry | undefined;
  let bestGpus: number[] | undefined;
  let afterFit = 0;
  let walksUsed = 0;
  // Buckets whose bound no longer beats the best fit are dropped (once per improvement). Each turn
  // the lowest bound is opened (after admitting every stage whose floor is below it) and walked
  // while its next node's bound is no worse than the runner-up's; then it waits with that bound.
  let compactedFor = Number.POSITIVE_INFINITY;
  search: for (;;) {
    if (best < compactedFor) {
      let m = 0;
      for (let i = 0; i < n; i++) {
        if ((bounds[i] as number) < best) {
          boundBuckets[m] = boundBuckets[i] as Bucket;
          boundScales[m] = boundScales[i] as number;
          bounds[m] = bounds[i] as number;
          walkOf[m] = walkOf[i] as number;
          m++;
        }
      }
      n = m;
      compactedFor = best;
    }
    let at = -1;
    let lowest = best;
    let runnerUp = best;
    for (;;) {
      for (let i = 0; i < n; i++) {
        const b = bounds[i] as number;
        if (b < lowest) {
          runnerUp = lowest;
          lowest = b;
          at = i;
        } else if (b < runnerUp) {
          runnerUp = b;
        }
      }
      if (stagesLeft === 0) break;
      let stage = 0;
      for (let i = 1; i < classCount; i++) if ((stageScale[i] as number) < (stageScale[stage] as number)) stage = i;
      const stageBound = floorBase + (stageScale[stage] as number) * floorFactor;
      if (stageBound >= lowest) {
        if (stageBound < runnerUp) runnerUp = stageBound;
        break;
      }
      const tier = nextTier[stage] as number;
      const classId = order[stage] as number;
      if (tier === 0) admitRoomCells(index, classId, cpuCores, memoryMiB, need);
      else admitTier(byClass, classId, tier, gpus, need);
      stagesLeft--;
      if (tier + 1 < tierCount) {
        nextTier[stage] = tier + 1;
        stageScale[stage] =
          (runtimeOfClass[classId] as number) * packingMultiplier((tierFloorGpus[tier + 1] as number) - gpus);
      } else {
        stageScale[stage] = Number.POSITIVE_INFINITY;
      }
      // Bounds were added: look again for the lowest and the runner-up.
      at = -1;
      lowest = best;
      runnerUp = best;
    }
    if (at < 0) break;
    const bucket = boundBuckets[at] as Bucket;
    const floor = bucket.baseFloor;
    const bucketScale = boundScales[at] as number;
    let w = walkOf[at] as number;
    if (w < 0) {
      w = walksUsed++;
      if (w === walkers.length) {
        walkers.push(new HeapWalker<FleetEntry>());
        walkSeen.push(resetCeilings({} as Ceilings));
      }
      walkOf[at] = w;
      (walkers[w] as HeapWalker<FleetEntry>).start(bucket.heap);
      resetCeilings(walkSeen[w] as Ceilings);
    }
    const walker = walkers[w] as HeapWalker<FleetEntry>;
    const seen = walkSeen[w] as Ceilings;
    // This bucket waits again once its next node's bound passes the runner-up (it is done once that
    // bound is no better than the best fit).
    bounds[at] = Number.POSITIVE_INFINITY;
    for (;;) {
      const key = walker.peekKey();
      if (key === Number.POSITIVE_INFINITY) {
        Object.assign(bucket, seen);
        break;
      }
      const bound = floor + bucketScale * key;
      if (bound >= best) break;
      if (bound > runnerUp) {
        bounds[at] = bound;
        break;
      }
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
        (regions !== undefined && !regions.includes(e.region)) ||
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
      if (runnerUp > best) runnerUp = best;
    }
  }
  if (bestEntry === undefined || bestGpus === undefined) return undefined;
  index.noteAnswer(bestEntry, req, bestGpus);
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
  walkOf = [];
  runtimeOfClass = [];
  runtimeStamp = [];
  nextTier = [];
  stageScale = [];
}
