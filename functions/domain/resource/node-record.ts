import type { NodeInventory, NodeView, RegisterNodeRequest } from '../../../protocol/index.js';
import type { ItemKey, Write } from '../../ports/store.js';
import { isoTime, sortableTime } from '../records.js';
import {
  type AttestationRecord,
  type PinnedAttestationKey,
  toNodeAttestationView,
} from '../security/attestation/record.js';
import { allShardPks, shardedPk } from '../shards.js';
import type { HeldTask } from './fit.js';
import { poolsOf } from './pools.js';

export interface NodeStats {
  tasksCompleted: number;
  tasksFailed: number;
  leasesLost: number;
}

/**
 * A registered node as stored: `NODE#<id>` / `NODE`, listed through byOwner `NODES#<nn>` (sharded by
 * id). Written at registration, by claims (`held`), attestation and stats, never by heartbeats:
 * when the node was last seen is its presence's (presence.ts); `lastSeenAt` here is as of the last
 * write of the item.
 */
export interface NodeRecord {
  id: string;
  name: string;
  publicKey: string;
  agentVersion: string;
  inventory: NodeInventory;
  pools: string[];
  registeredAt: number;
  lastSeenAt: number;
  stats: NodeStats;
  /**
   * The node's X25519 sealing key (raw, base64url), from its Ed25519-signed registration: jobs'
   * data keys are HPKE-sealed to it at dispatch. Absent: the node gets no job with env secrets.
   * Attestation does not cover it yet (a later evidence format may hash it in).
   */
  sealingKey?: string;
  /** The operator whose join token enrolled the node ('anonymous' under open enrollment without one). */
  operator: string;
  /** The join token the node enrolled with, and that token's pool scope, which binds re-registrations too. */
  enrollment?: { tokenId: string; pools?: string[] };
  /**
   * Epoch ms after which the store drops the node (its item's TTL): a node unseen this long is
   * dead, and must enroll again. Every write keeps it; registration pushes it forward, and so does
   * presence, about once a seventh of the expiry.
   */
  expiresAt?: number;
  /** What the node last proved by remote attestation (security/attestation); absent: never attested. */
  attestation?: AttestationRecord;
  /** The TPM attestation key its first accepted quote pinned (trust on first use). */
  attestationKey?: PinnedAttestationKey;
  /**
   * The tasks the node holds under a lease, with the GPUs, cores and memory each takes. Written
   * with every claim in the claim's transaction; entries whose task moved on (finished, expired,
   * given to another attempt) are dropped lazily by the next claim that needs the room.
   */
  held?: HeldTask[];
}

export const nodeKey = (id: string): ItemKey => ({ pk: `NODE#${id}`, sk: 'NODE' });
/** The node list's partition prefix: `NODES#<nn>`, the shard of the node's id. */
export const nodeListPrefix = 'NODES';
/** The one partition nodes were listed in before the list was sharded: still read, never written. */
export const legacyNodeListPk = 'NODES';
/** Every partition of the node list, in the order it is paged. */
export const nodeListPks: readonly string[] = [...allShardPks(nodeListPrefix), legacyNodeListPk];

export function newNodeRecord(
  id: string,
  req: RegisterNodeRequest,
  now: number,
  enrolled: Pick<NodeRecord, 'operator' | 'enrollment' | 'expiresAt'>,
): NodeRecord {
  return {
    id,
    name: req.name ?? id,
    publicKey: req.publicKey,
    agentVersion: req.agentVersion,
    inventory: req.inventory,
    pools: poolsOf(req.inventory),
    registeredAt: now,
    lastSeenAt: now,
    stats: { tasksCompleted: 0, tasksFailed: 0, leasesLost: 0 },
    ...(req.sealingKey === undefined ? {} : { sealingKey: req.sealingKey }),
    ...enrolled,
  };
}

export function putNode(node: NodeRecord, expectVersion: number): Write {
  return {
    kind: 'put',
    key: nodeKey(node.id),
    data: node,
    indexes: {
      byOwner: { pk: shardedPk(nodeListPrefix, node.id), sk: `${sortableTime(node.registeredAt)}#${node.id}` },
    },
    ...(node.expiresAt === undefined ? {} : { expiresAt: Math.ceil(node.expiresAt / 1000) }),
    expectVersion,
  };
}

/** A node is live while its last heartbeat or poll (its presence's `lastSeenAt`) is more recent than the liveness window. */
export const isLive = (node: NodeRecord, now: number, livenessMs: number): boolean =>
  now - node.lastSeenAt <= livenessMs;

export function toNodeView(node: NodeRecord, now: number, livenessMs: number): NodeView {
  return {
    id: node.id,
    name: node.name,
    publicKey: node.publicKey,
    agentVersion: node.agentVersion,
    inventory: node.inventory,
    pools: node.pools,
    operator: node.operator ?? 'anonymous',
    status: isLive(node, now, livenessMs) ? 'live' : 'unavailable',
    attestation: toNodeAttestationView(node.attestation, now),
    registeredAt: isoTime(node.registeredAt),
    lastSeenAt: isoTime(node.lastSeenAt),
    stats: node.stats,
  };
}
