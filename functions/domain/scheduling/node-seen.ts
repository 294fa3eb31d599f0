import { ContentionError } from '../errors.js';
import type { NodeRecord } from '../resource/node-record.js';
import type { NodeRegistry } from '../resource/node-registry.js';

/**
 * Records a poll or claim as a sign of life, and returns the node (read once: the presence write
 * reads nothing from it). The presence item is also written by the node's heartbeats and its other
 * slots' polls, so a node with many slots polling at once can keep a touch losing its conditional
 * write; liveness is not worth failing the request for (the next touch records it, well within the
 * liveness window), so it goes on without it.
 */
export async function markSeen(registry: NodeRegistry, nodeId: string): Promise<NodeRecord> {
  try {
    await registry.touch(nodeId);
  } catch (error) {
    if (!(error instanceof ContentionError)) throw error;
  }
  return registry.get(nodeId);
}
