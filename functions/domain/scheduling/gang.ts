import type { ItemKey } from '../../ports/store.js';
import { jobPk } from './job-record.js';

/**
 * Gang jobs (`JobSpec.gang`): every task starts together, each on its own node, or none starts.
 * Late binding gives no node a view of the others, so the polls assemble the gang in the store:
 *
 *   1. A poll that fits a queued gang task joins the job's gang record (`JOB#<id>` / `GANG`, a
 *      conditional put) with the time its long poll ends, and keeps waiting.
 *   2. The poll whose join makes as many live members as the job has queued tasks binds them all
 *      in ONE transaction: every task claimed for its member, every member's node item holding
 *      its task, the gang record deleted. A condition that fails binds nothing.
 *   3. It wakes the other members (a signal topic per member node); each finds its task assigned
 *      to it and returns the assignment from its own poll.
 *
 * A member whose poll ends leaves the record; members whose polls have ended (or end within
 * {@link gangMarginMs}) do not count, so a gang is never bound to a node that stopped waiting. A
 * task of a gang that fails later is retried alone.
 */
export interface GangRecord {
  jobId: string;
  members: GangMember[];
}

export interface GangMember {
  nodeId: string;
  /** When this member's long poll ends. */
  until: number;
}

/** A member's poll must still wait this long to be bound: its answer must reach it before it gives up. */
export const gangMarginMs = 1000;

export const gangKey = (jobId: string): ItemKey => ({ pk: jobPk(jobId), sk: 'GANG' });

/** The signal topic that wakes one member node's poll when its gang is bound. */
export const gangTopic = (jobId: string, nodeId: string): string => `gang:${jobId}:${nodeId}`;

/** The members still waiting at `now` (long enough to be bound), `nodeId` left out. */
export const waitingMembers = (gang: GangRecord | undefined, now: number, nodeId: string): GangMember[] =>
  (gang?.members ?? []).filter((m) => m.nodeId !== nodeId && m.until > now + gangMarginMs);
