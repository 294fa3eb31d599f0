import { ContentionError } from '../errors.js';
import type { NodeRecord } from '../resource/node-record.js';
import type { NodeRegistry } from '../resource/node-registry.js';

/**
 * Records a poll or heartbeat as a sign of life, and returns the node. The node item is also
 * written by the node's own claims (the tasks it holds), so a node with many slots polling at
 * once can keep a touch losing its conditional write; liveness is not worth failing the request
 * for (the next touch records it, well within the liveness window), so it goes on with the record
 * as it stands.
 */
export async function markSeen(registry: NodeRegistry, nodeId: string): Promise<NodeRecord> {
  try {
    return await registry.touch(nodeId);
  } catch (error) {
    if (!(error instanceof ContentionError)) throw error;
    return registry.get(nodeId);
  }
}
