import type { GpuDevice, NodeInventory } from '../../../protocol/index.js';

/**
 * Pools partition nodes by region and accelerator class, so that each pool's queue and placement
 * can run independently (the federation of ARCHITECTURE.md). A pool id reads `<region>/<class>`:
 *
 *   local/cpu                      a node without GPUs
 *   eu-west/nvidia-h100-80gb-hbm3  a node with NVIDIA H100 80GB HBM3 devices
 *
 * A node with devices of several classes belongs to one pool per class.
 */
export function acceleratorClass(gpu: Pick<GpuDevice, 'vendor' | 'model'>): string {
  const model = gpu.model
    .toLowerCase()
    .replace(/^(nvidia|amd|intel)\s+/, '')
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  return `${gpu.vendor}-${model || 'unknown'}`.slice(0, 64);
}

export const cpuClass = 'cpu';

export function poolId(region: string, accelerator: string): string {
  return `${region}/${accelerator}`;
}

export function poolsOf(inventory: NodeInventory): string[] {
  const classes = new Set(inventory.gpus.map(acceleratorClass));
  if (classes.size === 0) classes.add(cpuClass);
  return [...classes].sort().map((c) => poolId(inventory.region, c));
}

export function regionOfPool(pool: string): string {
  return pool.slice(0, pool.indexOf('/'));
}
