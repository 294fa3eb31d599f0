import type { WorkHints } from '../../ports/work-hints.js';
import { ForbiddenError } from '../errors.js';

/**
 * The queue URL a node names in a claim, checked against the node's own pool queues. The control
 * plane deletes the claimed hint from that queue with its own credentials, so the URL must be
 * exactly one it handed to this node: a URL it merely resembles (another host, another account,
 * another pool's queue) would make the control plane send a signed request wherever the node
 * likes.
 *
 * @returns the URL as the control plane knows it.
 * @throws ForbiddenError `foreign_queue` when the URL is not one of the node's pool queues.
 */
export async function ownPoolQueue(hints: WorkHints, pools: readonly string[], queueUrl: string): Promise<string> {
  const dispatch = await hints.dispatchFor(pools);
  const own = dispatch.mode === 'sqs' ? dispatch.queues.find((queue) => queue.url === queueUrl) : undefined;
  if (own === undefined) {
    throw new ForbiddenError('foreign_queue', "the queue URL is not one of this node's pool queues");
  }
  return own.url;
}
