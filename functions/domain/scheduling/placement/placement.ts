import type { TaskRequirements } from '../../resource/fit.js';

/** A task as placement sees it: what it needs, and what predicts its run time. */
export interface PlacementTask {
  id: string;
  requirements: TaskRequirements;
  /** Workload class label (the learned estimates are kept per workload x accelerator class). */
  workload: string;
  /** Least trust score a node needs to get the task; absent: any. */
  minTrust?: number;
  /** Nodes that already failed the task: a retry goes elsewhere. */
  avoidNodes?: readonly string[];
}

/** Where a task goes, with the devices it would take and the completion time it is predicted. */
export interface Placement {
  taskId: string;
  nodeId: string;
  pool: string;
  gpuIndices: number[];
  /** Predicted completion: queue wait + latency + run time x slowdown / reliability, ms. */
  predictedMs: number;
  /** What the choice minimised: predicted completion with the packing term (see {@link packingMultiplier}). */
  score: number;
}

export interface PlaceOptions {
  /** Epoch ms the attestation check is made at; default the wall clock. */
  now?: number;
  /**
   * How many more nodes the bucketed search may look at once it has a fit, before it settles for
   * the best so far (the bound usually stops it long before). Default {@link defaultSearchBudget}.
   */
  searchBudget?: number;
}

export const defaultSearchBudget = 16;

/**
 * How much a node's free GPUs that a task leaves idle count against it. Spreading one-GPU tasks
 * over empty 8-GPU hosts leaves no host for an 8-GPU task, which then waits for one to drain
 * (bench:sim --quick measured a p99 queueing delay of 593 s that way, against best-fit's 0.47 s).
 * So the run time part of the score is multiplied by `1 + packingWeight x leftover / 8`
 * (leftover: free GPUs the task would not use, counted up to 8): a task goes to the node it fills
 * most closely unless another is faster by more than the term. bench:sim's p99 queueing delay
 * fell to 0.71 s at weight 1 and ~0.55 s at 3, 6 and 12 (best-fit: 0.47 s); 3 is the least weight
 * at that plateau. The full scan uses the same score, so the two stay comparable.
 *
 * What is left of the gap is not in this term. Its tail is 8-GPU training tasks waiting for one
 * of the few hosts that take them, partly held by small tasks. A further penalty for breaking a
 * host with 8 or more free GPUs (+4 or +8 on the multiplier) cut ours' breaks of such hosts by
 * half and did not lower its p99 (0.54-0.59 s). Ours sends small tasks to big hosts for what the
 * estimates say: a class never seen running a workload is predicted at the 60 s prior while seen
 * classes predict minutes (predicting the workload's mean over seen classes instead: 0.55 s ->
 * 0.51 s, 39 -> 17 tasks waiting over 1 s), and a node's learned slowdown is noisy while one
 * workload label covers run times of 30 s to 4 h.
 */
export const packingWeight = 3;
export const packingSpan = 8;

/** The factor on run time x node factor for a task that leaves `leftoverGpus` of a node's free GPUs idle. */
export function packingMultiplier(leftoverGpus: number): number {
  return 1 + (packingWeight * Math.min(packingSpan, Math.max(0, leftoverGpus))) / packingSpan;
}
