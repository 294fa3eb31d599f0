import { attestationFits, fitOnNode, type TaskRequirements } from '../resource/fit.js';
import type { NodeRecord } from '../resource/node-record.js';

/**
 * What the router's notification carries (the Signal port's payload): the task routed, its
 * requirements, so that the signal wakes a waiting poll of a node that can run it, and how many
 * woken polls have passed it on already.
 */
export interface WorkSignal {
  taskId: string;
  requirements: TaskRequirements;
  passes: number;
}

/**
 * How often a wake is passed on by a woken poll that got nothing from it (another node took the
 * task first, or this node's slots filled meanwhile). Past this the notification goes unanswered and
 * counts as missed, so every waiting poll of the pool reads it once on its timer.
 */
export const maxSignalPasses = 3;

export const workSignal = (taskId: string, requirements: TaskRequirements): WorkSignal => ({
  taskId,
  requirements,
  passes: 0,
});

function isWorkSignal(payload: unknown): payload is WorkSignal {
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
