import { randomBytes } from 'node:crypto';
import { newJobId } from '../../functions/domain/scheduling/job-id.js';
import { type JobRecord, putJob } from '../../functions/domain/scheduling/job-record.js';
import { newTaskRecord, putTask, type TaskRecord } from '../../functions/domain/scheduling/task-record.js';
import type { Write } from '../../functions/ports/store.js';
import {
  generateNodeKeyPair,
  JobSpec,
  limits,
  loadNodeKeyPair,
  type NodeInventory,
  type NodeKeyPair,
} from '../../protocol/index.js';
import type { EmbeddedControlPlane } from './embedded.js';

export interface BenchNode {
  id: string;
  key: NodeKeyPair;
  pools: string[];
}

/**
 * Registers one node per inventory through the registry (the path an agent's registration takes,
 * so whatever it writes, presence and pool summaries included, is there), with a key of its own.
 * Returns the first `keep` nodes with their key pairs, to sign requests as them, and the nodes per pool.
 */
export async function registerFleet(
  ecp: EmbeddedControlPlane,
  inventories: readonly NodeInventory[],
  keep: number,
): Promise<{ kept: BenchNode[]; pools: Map<string, number> }> {
  const kept: BenchNode[] = [];
  const pools = new Map<string, number>();
  for (const [i, inventory] of inventories.entries()) {
    // Only the nodes that send requests need a private key; the others' keys are never used to verify.
    const pair = i < keep ? generateNodeKeyPair() : undefined;
    const publicKey = pair?.publicKey ?? randomBytes(32).toString('base64url');
    const { node } = await ecp.cp.nodes.register({ publicKey, agentVersion: 'bench', inventory });
    for (const pool of node.pools) pools.set(pool, (pools.get(pool) ?? 0) + 1);
    if (pair !== undefined) kept.push({ id: node.id, key: loadNodeKeyPair(pair.privateKeyPem), pools: node.pools });
  }
  return { kept, pools };
}

/**
 * One transaction's writes with the `add` writes on one item merged into one (a transaction may
 * name an item once, as DynamoDB requires): many tasks queued in one pool add to its counter shard.
 */
function mergeAdds(writes: readonly Write[]): Write[] {
  const merged: Write[] = [];
  const adds = new Map<string, { key: unknown; fields: Record<string, number> }>();
  for (const w of writes) {
    const add = w as unknown as { kind: string; key: { pk: string; sk: string }; fields: Record<string, number> };
    if (add.kind !== 'add') {
      merged.push(w);
      continue;
    }
    const id = `${add.key.pk}\u0000${add.key.sk}`;
    const seen = adds.get(id);
    if (seen === undefined) {
      const entry = { kind: 'add', key: add.key, fields: { ...add.fields } };
      adds.set(id, entry);
      merged.push(entry as unknown as Write);
    } else {
      for (const [f, n] of Object.entries(add.fields)) seen.fields[f] = (seen.fields[f] ?? 0) + n;
    }
  }
  return merged;
}

/**
 * Queues `total` tasks straight into the store with the domain's record builders (jobs of the
 * largest size a spec allows, a job per transaction), spread over `pools` in proportion to their
 * nodes: what a backlog looks like after submissions were routed. The tasks need no GPU, so any
 * node of their pool fits them and a poll claims one whatever the node's other tasks.
 */
export async function queueTasks(
  ecp: EmbeddedControlPlane,
  pools: ReadonlyMap<string, number>,
  total: number,
  now: number,
  owner = 'default',
): Promise<void> {
  const perJob = limits.maxTasksPerJob;
  const weights = [...pools.entries()];
  const nodes = weights.reduce((a, [, n]) => a + n, 0);
  // Each pool's share of the tasks, largest remainder last so the shares add up to `total`.
  const shares = weights.map(([pool, n]) => ({ pool, tasks: Math.floor((total * n) / nodes) }));
  let rest = total - shares.reduce((a, s) => a + s.tasks, 0);
  for (const s of shares) if (rest-- > 0) s.tasks++;
  let writes: Write[] = [];
  let queuedAt = now - total;
  for (const share of shares) {
    for (let left = share.tasks; left > 0; left -= perJob) {
      const count = Math.min(perJob, left);
      const spec = JobSpec.parse({ command: ['echo', 'ok'], tasks: count, resources: { gpus: { count: 0 } } });
      const job: JobRecord = { id: newJobId(queuedAt), owner, spec, createdAt: queuedAt };
      writes.push(putJob(job, 0));
      for (let index = 0; index < count; index++) {
        const task: TaskRecord = {
          ...newTaskRecord(
            job.id,
            index,
            count,
            1,
            { gpus: spec.resources.gpus, needsContainer: false },
            3600,
            undefined,
            queuedAt,
          ),
          pool: share.pool,
        };
        writes.push(...[putTask(task, 0)].flat());
        queuedAt++;
      }
      // One job and its tasks per transaction: the store's limit (100 writes) holds one full job.
      await ecp.store.transact(mergeAdds(writes));
      writes = [];
    }
  }
}
