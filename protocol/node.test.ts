import { describe, expect, it } from 'vitest';
import { inventoryLimits, NodeInventory, RegisterNodeRequest } from './node.js';

const gpu = (index: number, uuid = `GPU-${index}`) => ({
  index,
  vendor: 'nvidia' as const,
  model: 'NVIDIA H100 80GB HBM3',
  vramMiB: 81_559,
  uuid,
});

const inventory = (overrides: Record<string, unknown> = {}) => ({
  gpus: [gpu(0), gpu(1)],
  cpu: { model: 'Test CPU', cores: 64 },
  memoryMiB: 1_048_576,
  os: 'linux',
  arch: 'x64',
  runtimes: ['process'],
  region: 'local',
  ...overrides,
});

/** The paths (dotted, as the API's 400 lists them) of the issues of an inventory refused. */
const refusedAt = (value: unknown): string[] => {
  const parsed = NodeInventory.safeParse(value);
  expect(parsed.success).toBe(false);
  return parsed.success ? [] : parsed.error.issues.map((i) => i.path.map(String).join('.'));
};

describe('NodeInventory', () => {
  it('takes a consistent inventory', () => {
    expect(NodeInventory.parse(inventory())).toEqual(inventory());
  });

  it('refuses two GPUs with one index, naming the second', () => {
    expect(refusedAt(inventory({ gpus: [gpu(0, 'GPU-a'), gpu(0, 'GPU-b')] }))).toEqual(['gpus.1.index']);
  });

  it('refuses two GPUs with one UUID, naming the second', () => {
    expect(refusedAt(inventory({ gpus: [gpu(0, 'GPU-same'), gpu(1, 'GPU-same')] }))).toEqual(['gpus.1.uuid']);
  });

  it('refuses the review case: 64 GPUs all index 0 with one UUID and 2^53-1 MiB of memory', () => {
    const gpus = Array.from({ length: 64 }, () => gpu(0, 'GPU-same'));
    const paths = refusedAt(inventory({ gpus, memoryMiB: Number.MAX_SAFE_INTEGER }));
    expect(paths).toContain('memoryMiB');
    expect(paths).toContain('gpus.1.index');
    expect(paths).toContain('gpus.1.uuid');
  });

  it('bounds memory, VRAM and cores to the documented maxima', () => {
    const { maxMemoryMiB, maxVramMiB, maxCpuCores } = inventoryLimits;
    expect(NodeInventory.safeParse(inventory({ memoryMiB: maxMemoryMiB })).success).toBe(true);
    expect(refusedAt(inventory({ memoryMiB: maxMemoryMiB + 1 }))).toEqual(['memoryMiB']);
    expect(NodeInventory.safeParse(inventory({ gpus: [{ ...gpu(0), vramMiB: maxVramMiB }] })).success).toBe(true);
    expect(refusedAt(inventory({ gpus: [{ ...gpu(0), vramMiB: maxVramMiB + 1 }] }))).toEqual(['gpus.0.vramMiB']);
    expect(refusedAt(inventory({ cpu: { model: 'x', cores: maxCpuCores + 1 } }))).toEqual(['cpu.cores']);
  });

  it('applies inside the registration request', () => {
    const parsed = RegisterNodeRequest.safeParse({
      publicKey: 'A'.repeat(43),
      agentVersion: '0.1.0',
      inventory: inventory({ gpus: [gpu(3, 'GPU-a'), gpu(3, 'GPU-b')] }),
    });
    expect(parsed.success).toBe(false);
    expect(parsed.error?.issues.map((i) => i.path.join('.'))).toEqual(['inventory.gpus.1.index']);
  });
});
