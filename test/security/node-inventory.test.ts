import { afterEach, describe, expect, it } from 'vitest';
import type { NodeInventory } from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, TestNode } from '../support/in-process.js';
import { expectRefused, type Harness, unchanged } from './support.js';

/**
 * A node describes its own hardware and placement believes it (protocol/node.ts NodeInventory):
 * an inventory that lists one GPU several times, or more memory than any machine has, is refused
 * at registration and at re-registration (the only ways an inventory enters), storing nothing.
 */

let h: Harness;
afterEach(() => h?.close());

const h100 = (index: number, uuid: string) => ({
  index,
  vendor: 'nvidia' as const,
  model: 'NVIDIA H100 80GB HBM3',
  vramMiB: 81_559,
  uuid,
  computeCapability: '9.0',
});

/** The review's inventory: 64 GPUs, all index 0 and one UUID, and 2^53-1 MiB of memory. */
const forged = (): NodeInventory =>
  cpuInventory({
    gpus: Array.from({ length: 64 }, () => h100(0, 'GPU-same')),
    memoryMiB: Number.MAX_SAFE_INTEGER,
  });

const issuePaths = (refusal: { error: { details?: unknown } }) =>
  ((refusal.error.details as { issues: { path: string }[] }).issues ?? []).map((i) => i.path);

describe('node inventory', () => {
  it('refuses a first registration whose GPUs share an index or UUID, or whose memory is unbounded', async () => {
    h = inProcessControlPlane();
    const node = new TestNode(h.request);
    const refusal = await unchanged(h, async () =>
      expectRefused(await node.register(forged()), 400, 'validation_failed'),
    );
    expect(issuePaths(refusal)).toEqual(
      expect.arrayContaining(['inventory.memoryMiB', 'inventory.gpus.1.index', 'inventory.gpus.1.uuid']),
    );
    const dupIndex = cpuInventory({ gpus: [h100(0, 'GPU-a'), h100(0, 'GPU-b')] });
    const refused = await expectRefused(await node.register(dupIndex), 400, 'validation_failed');
    expect(refused.error.message).toMatch(/inventory\.gpus\.1\.index.*duplicate GPU index 0/);
    expect((await h.api(`/v1/nodes/${node.id}`)).status).toBe(404);
  });

  it('refuses a re-registration that would replace a good inventory with one listing a GPU twice', async () => {
    h = inProcessControlPlane();
    const node = new TestNode(h.request);
    const good = cpuInventory({ gpus: [h100(0, 'GPU-a'), h100(1, 'GPU-b')] });
    expect((await node.register(good)).status).toBe(201);
    const dupUuid = cpuInventory({ gpus: [h100(0, 'GPU-a'), h100(1, 'GPU-a')] });
    const refusal = await unchanged(h, async () =>
      expectRefused(await node.register(dupUuid), 400, 'validation_failed'),
    );
    expect(issuePaths(refusal)).toEqual(['inventory.gpus.1.uuid']);
    const stored = (await (await h.api(`/v1/nodes/${node.id}`)).json()) as { inventory: NodeInventory };
    expect(stored.inventory.gpus.map((g) => g.uuid)).toEqual(['GPU-a', 'GPU-b']);
  });
});
