import { attestationFits, fitOnNode, type TaskRequirements } from '../resource/fit.js';
import type { NodeRecord } from '../resource/node-record.js';

/**
 * What the router's notification carries (the Signal port's payload): the task routed, its
 * requirements, so that the signal wakes a waiting poll of a node that can run it, what predicts
 * its run time and the nodes it avoids (so that the placement engine can pick the best waiting
 * node, waiting-placement.ts), and how many woken polls have passed it on already.
 */
export interface WorkSignal {
  taskId: string;
  requirements: TaskRequirements;
  /** The task's workload class (performance.ts `workloadOf`); absent on older task records. */
  workload?: string;
  /** Nodes that failed the task before (task-record `avoidNodes`). */
  avoidNodes?: readonly string[];
  passes: number;
}

/**
 * How often a wake is passed on by a woken poll that got nothing from it (another node took the
 * task first, or this node's slots filled meanwhile). Past this the notification goes unanswered and
 * counts as missed, so every waiting poll of the pool reads it once on its timer.
 */
export const maxSignalPasses = 3;

/** The notification of a task just routed (`more`: the task record's workload and avoided nodes). */
export const workSignal = (
  taskId: string,
  requirements: TaskRequirements,
  more: { workload?: string | undefined; avoidNodes?: readonly string[] | undefined } = {},
): WorkSignal => ({
  taskId,
  requirements,
  ...(more.workload === undefined ? {} : { workload: more.workload }),
  ...(more.avoidNodes === undefined || more.avoidNodes.length === 0 ? {} : { avoidNodes: more.avoidNodes }),
  passes: 0,
});

export function isWorkSignal(payload: unknown): payload is WorkSignal {
  return typeof payload === 'object' && payload !== null && 'requirements' in payload && 'passes' in payload;
}

/**
 * The waiting poll's filter: a node takes a wake only for a task it could run (hardware, runtime,
 * region, attestation; not what it holds now), and none once the wake was passed on too often.
 */
export function acceptsWork(node: NodeRecord, now: () => number): (payload: unknown) => boolean {
  return (payload) =>
    !isWorkSignal(payload) ||
    (payload.passes < maxSignalPasses &&
      fitOnNode(payload.requirements, node.inventory) !== undefined &&
      attestationFits(payload.requirements, node.attestation, now()));
}

/** The wake passed on by a poll that got nothing from it; undefined when the payload is not the router's. */
export function passedOn(payload: unknown): WorkSignal | undefined {
  return isWorkSignal(payload) ? { ...payload, passes: payload.passes + 1 } : undefined;
}
