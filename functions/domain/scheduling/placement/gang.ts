import type { PerformanceView } from '../performance.js';
import type { FleetIndex } from './fleet-index.js';
import { placeTask } from './place-task.js';
import type { Placement, PlacementTask, PlaceOptions } from './placement.js';

export interface GangOptions extends PlaceOptions {
  /** Each member on its own node (a job that needs N nodes at once); default true. */
  distinctNodes?: boolean;
}

/**
 * Places every task of a gang or none: members are placed largest first (the hardest to fit
 * while the fleet is emptiest), each reserved in the index as it is chosen so the next one sees
 * what is left. If one finds no node, every reservation made here is released and the answer is
 * undefined; on success the reservations stay (the caller binds them, or releases them itself).
 * Answers placements in the order of `tasks`.
 */
export function placeGang(
  index: FleetIndex,
  tasks: readonly PlacementTask[],
  perf: PerformanceView = index.perf,
  options: GangOptions = {},
): Placement[] | undefined {
  const distinct = options.distinctNodes ?? true;
  const used = new Set<string>(options.exclude ?? []);
  const order = tasks
    .map((task, at) => ({ task, at }))
    .sort((a, b) => b.task.requirements.gpus.count - a.task.requirements.gpus.count || a.at - b.at);
  const placed: Placement[] = new Array(tasks.length);
  const reserved: Placement[] = [];
  for (const { task, at } of order) {
    const placement = placeTask(index, task, perf, { ...options, exclude: used });
    const gpus =
      placement === undefined
        ? undefined
        : index.reserve(placement.nodeId, task.id, task.requirements, 1, placement.gpuIndices);
    if (placement === undefined || gpus === undefined) {
      for (const r of reserved) index.release(r.nodeId, r.taskId);
      return undefined;
    }
    reserved.push(placement);
    placed[at] = { ...placement, gpuIndices: gpus };
    if (distinct) used.add(placement.nodeId);
  }
  return placed;
}
