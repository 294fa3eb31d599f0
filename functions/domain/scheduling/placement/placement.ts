import type { TaskRequirements } from '../../resource/fit.js';

/** A task as placement sees it: what it needs, and what predicts its run time. */
export interface PlacementTask {
  id: string;
  requirements: TaskRequirements;
  /** Workload class label (H4's estimates are kept per workload x accelerator class). */
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
  /** The score: queue wait + latency + run time x slowdown / reliability, ms. */
  predictedMs: number;
}

export interface PlaceOptions {
  /** Epoch ms the attestation check is made at; default the wall clock. */
  now?: number;
  /** Nodes not to consider (a gang's members already chosen). */
  exclude?: ReadonlySet<string>;
  /**
   * How many more nodes the bucketed search may look at once it has a fit, before it settles for
   * the best so far (the bound usually stops it long before). Default {@link defaultSearchBudget}.
   */
  searchBudget?: number;
}

export const defaultSearchBudget = 64;
