import { describe, expect, it } from 'vitest';
import { NodeInventory } from '../../protocol/index.js';
import { type CommandRunner, probeInventory } from './index.js';

const h100 =
  'index, name, uuid, memory.total [MiB], driver_version, compute_cap\n0, NVIDIA H100 80GB HBM3, GPU-1, 81559 MiB, 580.159.04, 9.0\n';

describe('probeInventory', () => {
  it('combines the host with the GPUs of every vendor tool that answered', async () => {
    const run: CommandRunner = async (file) =>
      file === 'nvidia-smi' ? { kind: 'ok', stdout: h100 } : { kind: 'not-found' };
    const { inventory, warnings } = await probeInventory({ region: 'eu-west', runtimes: ['process'], run });
    expect(NodeInventory.parse(inventory)).toEqual(inventory);
    expect(inventory.gpus.map((gpu) => gpu.model)).toEqual(['NVIDIA H100 80GB HBM3']);
    expect(inventory.region).toBe('eu-west');
    expect(inventory.runtimes).toEqual(['process']);
    expect(inventory.cpu.cores).toBeGreaterThanOrEqual(1);
    expect(warnings).toEqual([]);
  });

  it('still returns a GPU-less inventory when every tool fails', async () => {
    const run: CommandRunner = async (file) => ({ kind: 'failed', message: `${file} failed: boom` });
    const { inventory, warnings } = await probeInventory({ region: 'local', runtimes: ['process'], run });
    expect(inventory.gpus).toEqual([]);
    expect(warnings).toEqual(['nvidia-smi failed: boom', 'rocm-smi failed: boom']);
  });

  it('treats absent tools as no GPUs on a real host', async () => {
    const { inventory } = await probeInventory({ region: 'local', runtimes: ['process'] });
    expect(NodeInventory.safeParse(inventory).success).toBe(true);
  });
});
