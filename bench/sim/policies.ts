import { demandOf } from '../../functions/domain/resource/fit.js';
import type { PerformanceView } from '../../functions/domain/scheduling/performance.js';
import { tierCount } from '../../functions/domain/scheduling/placement/fleet-index.js';
import {
  type FleetEntry,
  type FleetIndex,
  fullScanGreedy,
  type PlacementTask,
  placeTask,
  tierOf,
} from '../../functions/domain/scheduling/placement/index.js';
import type { Random } from '../shared/random.js';

/**
 * The placement policies a simulation compares. Every one chooses among the same live nodes of
 * the same {@link FleetIndex} (the production placement index, fed by the simulator as a
 * dispatcher would feed it), and the simulator then reserves the choice through the index, whose
 * reserve runs the production `fitOnNode`: a policy can only pick, never bypass the fit check.
 *
 *   ours        placeTask: bucketed branch and bound on predicted completion (latency + run time
 *               x slowdown / reliability, from the learned PerformanceView)
 *   fullScan    fullScanGreedy: the same score over every node of the fleet
 *   bestFit     the node left with the fewest free GPUs (then cores), ignoring estimates
 *   random      a uniformly drawn node among those with room
 *   roundRobin  the next node with room, cycling through the candidates
 *
 * The three classic baselines walk the index's buckets (device group x free-GPU tier) rather than
 * the whole fleet, so that they cost what they would in a real scheduler and the simulation of a
 * 100,000-node fleet stays fast; they never use the estimates.
 */
export type PolicyName = 'ours' | 'fullScan' | 'bestFit' | 'random' | 'roundRobin';
export const policyNames: readonly PolicyName[] = ['ours', 'bestFit', 'random', 'roundRobin', 'fullScan'];

export interface Choice {
  nodeId: string;
}

export type Policy = (index: FleetIndex, task: PlacementTask, now: number) => string | undefined;

/** Cheap checks every candidate must pass before the index's reserve runs the real fit check. */
function hasRoom(e: FleetEntry, gpus: number, cores: number, memory: number, runtimeBit: number): boolean {
  return e.freeGpus >= gpus && e.freeCores >= cores && e.freeMemoryMiB >= memory && (e.runtimes & runtimeBit) !== 0;
}

/** The buckets (lists of entries) that can hold the task: eligible groups, tiers with enough free GPUs. */
function candidateBuckets(index: FleetIndex, task: PlacementTask): FleetEntry[][] {
  const first = tierOf(task.requirements.gpus.count);
  const lists: FleetEntry[][] = [];
  for (const group of index.eligibleGroups(task.requirements)) {
    for (let tier = first; tier < group.buckets.length; tier++) {
      const slots = group.buckets[tier]?.heap.slots;
      if (slots !== undefined && slots.length > 0) lists.push(slots as unknown as FleetEntry[]);
    }
  }
  return lists;
}

const entryAt = (list: FleetEntry[], at: number): FleetEntry => (list[at] as unknown as { entry: FleetEntry }).entry;

function demand(task: PlacementTask): [number, number, number, number] {
  const { cpuCores, memoryMiB } = demandOf(task.requirements);
  return [task.requirements.gpus.count, cpuCores, memoryMiB, task.requirements.needsContainer ? 1 : 2];
}

/**
 * Once it has a fit, best-fit looks at no more than this many candidates per decision. Until it has
 * one it looks on (as random and round-robin do until their first fit): a cap on the search for a
 * first fit answered "no node" at 100,000 nodes when the first 4,096 candidates were all too full,
 * so the task waited (and was retried every tick) while a node had room.
 */
const scanCap = 4_096;
/** Best-fit stops after this many candidates that its task would fill exactly (cores break the tie). */
const exactFits = 16;

export function makePolicy(name: PolicyName, perf: PerformanceView, random: Random): Policy {
  switch (name) {
    case 'ours':
      return (index, task, now) => placeTask(index, task, perf, { now })?.nodeId;
    case 'fullScan':
      return (index, task, now) => fullScanGreedy(index, task, perf, { now })?.nodeId;
    case 'bestFit':
      return (index, task) => {
        const [gpus, cores, memory, bit] = demand(task);
        const groups = index.eligibleGroups(task.requirements);
        let best: FleetEntry | undefined;
        let seen = 0;
        let fits = 0;
        // Tier by tier (0, 1, 2-3, 4-7, 8+ free GPUs): the lowest tier holding a fit holds the best
        // fit. A node left with no free GPU is as tight as it gets: past a few such fits, stop.
        for (let tier = tierOf(gpus); tier < tierCount && best === undefined; tier++) {
          for (const group of groups) {
            const slots = group.buckets[tier]?.heap.slots;
            if (slots === undefined) continue;
            for (
              let i = 0;
              i < slots.length && (best === undefined || (seen < scanCap && fits < exactFits));
              i++, seen++
            ) {
              const e = (slots[i] as { entry: FleetEntry }).entry;
              if (!hasRoom(e, gpus, cores, memory, bit)) continue;
              if (e.freeGpus === gpus) fits++;
              if (
                best === undefined ||
                e.freeGpus < best.freeGpus ||
                (e.freeGpus === best.freeGpus && e.freeCores < best.freeCores)
              ) {
                best = e;
              }
            }
          }
        }
        return best?.id;
      };
    case 'random':
      return (index, task) => {
        const [gpus, cores, memory, bit] = demand(task);
        const lists = candidateBuckets(index, task);
        const total = lists.reduce((sum, l) => sum + l.length, 0);
        for (let attempt = 0; attempt < 64 && total > 0; attempt++) {
          let at = random.int(total);
          for (const list of lists) {
            if (at < list.length) {
              const e = entryAt(list, at);
              if (hasRoom(e, gpus, cores, memory, bit)) return e.id;
              break;
            }
            at -= list.length;
          }
        }
        return firstFit(lists, 0, gpus, cores, memory, bit);
      };
    case 'roundRobin': {
      let cursor = 0;
      return (index, task) => {
        const [gpus, cores, memory, bit] = demand(task);
        const lists = candidateBuckets(index, task);
        cursor++;
        return firstFit(lists, cursor, gpus, cores, memory, bit);
      };
    }
  }
}

/** The first candidate with room, starting at `offset` (mod each list's length) in every list. */
function firstFit(
  lists: FleetEntry[][],
  offset: number,
  gpus: number,
  cores: number,
  memory: number,
  bit: number,
): string | undefined {
  for (let l = 0; l < lists.length; l++) {
    const list = lists[(l + offset) % lists.length] as FleetEntry[];
    for (let i = 0; i < list.length; i++) {
      const e = entryAt(list, (i + offset) % list.length);
      if (hasRoom(e, gpus, cores, memory, bit)) return e.id;
    }
  }
  return undefined;
}
