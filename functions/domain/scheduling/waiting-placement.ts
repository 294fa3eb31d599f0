import type { Clock } from '../../ports/clock.js';
import type { WakeChooser } from '../../ports/signal.js';
import type { HeldTask } from '../resource/fit.js';
import type { NodeRecord } from '../resource/node-record.js';
import type { PerformanceView } from './performance.js';
import { FleetIndex, placeTask } from './placement/index.js';
import { isWorkSignal } from './work-signal.js';

/** The workload a task without its own label is predicted as (the router's default too). */
const defaultWorkload = 'batch';

/**
 * What a waiting poll tells the signal about itself (the `candidate` of its wait): its node, and
 * the tasks the node still holds (pruned of those that ended, so free GPUs are counted right).
 */
export interface WaitingNode {
  node: NodeRecord;
  held: readonly HeldTask[];
}

const isWaitingNode = (candidate: unknown): candidate is WaitingNode =>
  typeof candidate === 'object' && candidate !== null && 'node' in candidate && 'held' in candidate;

/** The waiting polls of one pool: their nodes in a fleet index, and which waits stand for which node. */
interface PoolWaiters {
  index: FleetIndex;
  /** Each node's waits, oldest first (a node may run several polls at once, one per free slot). */
  waitsOf: Map<string, Set<number>>;
  nodeOf: Map<number, string>;
}

/**
 * The placement engine choosing which waiting poll a routed task wakes (the Signal port's
 * {@link WakeChooser}). Late binding hands a task to whichever node asks first; among the nodes
 * whose polls wait for work at that moment, the one woken is the one `placeTask` picks: the best
 * predicted completion (learned run time x slowdown / reliability, plus latency) with its packing
 * term, so a 1-GPU task goes to the host it fills, not to an empty 8-GPU host, and a node learned
 * slow or unreliable is woken only when no better one waits.
 *
 * Each pool's waiting nodes are a {@link FleetIndex}, kept by the signal's waiting/left calls: a
 * node enters when its first poll waits (with what it holds, and its estimates as of then) and
 * leaves when its last wait ends, so a choice costs a placement over the waiting nodes, never a
 * read. When placement finds no waiting node that fits (it counts what the nodes hold; the
 * signal's `accepts` does not), the choice is left to the signal: the longest-waiting poll that
 * could run the task, as before.
 */
export class WaitingPlacement implements WakeChooser {
  readonly #pools = new Map<string, PoolWaiters>();

  constructor(
    private readonly perf: PerformanceView,
    private readonly clock: Clock,
  ) {}

  waiting(topic: string, waiter: number, candidate: unknown): void {
    // Only pool topics place tasks (a gang's member topic is woken by name).
    if (!isWaitingNode(candidate) || !candidate.node.pools.includes(topic)) return;
    let pool = this.#pools.get(topic);
    if (pool === undefined) {
      pool = { index: new FleetIndex(this.perf), waitsOf: new Map(), nodeOf: new Map() };
      this.#pools.set(topic, pool);
    }
    const { node, held } = candidate;
    // Re-filed on every wait: the newest poll's view of what the node holds, and fresh estimates.
    pool.index.add({
      id: node.id,
      inventory: node.inventory,
      attestation: node.attestation,
      held,
    });
    let waits = pool.waitsOf.get(node.id);
    if (waits === undefined) {
      waits = new Set();
      pool.waitsOf.set(node.id, waits);
    }
    waits.add(waiter);
    pool.nodeOf.set(waiter, node.id);
  }

  left(topic: string, waiter: number): void {
    const pool = this.#pools.get(topic);
    const nodeId = pool?.nodeOf.get(waiter);
    if (pool === undefined || nodeId === undefined) return;
    pool.nodeOf.delete(waiter);
    const waits = pool.waitsOf.get(nodeId);
    waits?.delete(waiter);
    if (waits !== undefined && waits.size > 0) return;
    pool.waitsOf.delete(nodeId);
    pool.index.remove(nodeId);
    if (pool.index.size === 0) this.#pools.delete(topic);
  }

  choose(topic: string, payload: unknown): number | undefined {
    const pool = this.#pools.get(topic);
    if (pool === undefined || !isWorkSignal(payload)) return undefined;
    const placement = placeTask(
      pool.index,
      {
        id: payload.taskId,
        requirements: payload.requirements,
        workload: payload.workload ?? defaultWorkload,
        ...(payload.avoidNodes === undefined ? {} : { avoidNodes: payload.avoidNodes }),
      },
      this.perf,
      { now: this.clock.now() },
    );
    if (placement === undefined) return undefined;
    for (const waiter of pool.waitsOf.get(placement.nodeId) ?? []) return waiter;
    return undefined;
  }

  /** How many nodes wait in `pool` (for tests and logs). */
  waitingNodes(pool: string): number {
    return this.#pools.get(pool)?.index.size ?? 0;
  }
}
