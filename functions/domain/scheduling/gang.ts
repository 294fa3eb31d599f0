import { randomBytes } from 'node:crypto';
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
 *      its task, the gang record's members cleared and its hand-outs named. A condition that
 *      fails binds nothing.
 *   3. It wakes the other members (a signal topic per member node); each finds its hand-out in the
 *      record (`bound`: which task, for which of its node's polls) and returns the assignment.
 *
 * A member is one poll, not just a node: a node with several slots runs several long polls at
 * once, and the gang promises each task its own node. A node therefore holds at most one place in
 * a gang, owned by the poll that joined; its other polls pass the gang by. The bind names that poll
 * in the record, and only it hands the task out, so an attempt reaches the node once (before, every
 * poll of the member node found "the task assigned to my node" and the agent ran it twice).
 *
 * A member whose poll ends leaves the record; members whose polls have ended (or end within
 * {@link gangMarginMs}) do not count, so a gang is never bound to a node that stopped waiting. A
 * task of a gang that fails later is retried alone.
 */
export interface GangRecord {
  jobId: string;
  members: GangMember[];
  /**
   * The tasks binds assigned, each to be handed out by one poll. Kept (not deleted with the bind)
   * until the record expires, so that a member's poll woken late still finds what is its own.
   */
  bound?: GangHandOut[];
}

export interface GangMember {
  nodeId: string;
  /** When this member's long poll ends. */
  until: number;
  /** The poll that holds the node's place (one per long poll, see {@link newPollId}). */
  poll: string;
}

/** One bound task of a gang and the one poll that hands it out. */
export interface GangHandOut {
  nodeId: string;
  poll: string;
  taskId: string;
  attempt: number;
}

/** A long poll's identity in gang records: random, so that no two polls of one node share it. */
export const newPollId = (): string => randomBytes(9).toString('base64url');

/** A member's poll must still wait this long to be bound: its answer must reach it before it gives up. */
export const gangMarginMs = 1000;

export const gangKey = (jobId: string): ItemKey => ({ pk: jobPk(jobId), sk: 'GANG' });

/** The signal topic that wakes one member node's poll when its gang is bound. */
export const gangTopic = (jobId: string, nodeId: string): string => `gang:${jobId}:${nodeId}`;

/** The members still waiting at `now` (long enough to be bound), `nodeId` left out. */
export const waitingMembers = (gang: GangRecord | undefined, now: number, nodeId: string): GangMember[] =>
  (gang?.members ?? []).filter((m) => m.nodeId !== nodeId && m.until > now + gangMarginMs);

/**
 * The place `nodeId` holds in the gang for another of its polls, while that poll still waits: then
 * `poll` does not join (the node would hold two places, or its two polls one place each).
 */
export const heldByOtherPoll = (gang: GangRecord | undefined, now: number, nodeId: string, poll: string): boolean =>
  (gang?.members ?? []).some((m) => m.nodeId === nodeId && m.poll !== poll && m.until > now + gangMarginMs);

/** Whether `poll` of `nodeId` still holds a place in the gang. */
export const isMember = (gang: GangRecord | undefined, nodeId: string, poll: string): boolean =>
  (gang?.members ?? []).some((m) => m.nodeId === nodeId && m.poll === poll);

/** The task a bind left for this very poll to hand out, if any. */
export const handOutFor = (gang: GangRecord | undefined, nodeId: string, poll: string): GangHandOut | undefined =>
  gang?.bound?.find((b) => b.nodeId === nodeId && b.poll === poll);

/** The hand-outs a bind records: the new ones, and earlier ones of other tasks still to be collected. */
export const withHandOuts = (
  earlier: readonly GangHandOut[] | undefined,
  fresh: readonly GangHandOut[],
): GangHandOut[] => [...(earlier ?? []).filter((e) => !fresh.some((f) => f.taskId === e.taskId)), ...fresh];
