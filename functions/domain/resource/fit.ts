import type { GpuDevice, GpuRequirement, NodeInventory } from '../../../protocol/index.js';

/** What a task demands of a node: copied onto each task so placement never needs the job. */
export interface TaskRequirements {
  gpus: GpuRequirement;
  cpuCores?: number;
  memoryMiB?: number;
  regions?: string[];
  /** A container image needs a container runtime; a bare command needs the process runtime. */
  needsContainer: boolean;
}

/**
 * Late-binding fit check: the GPU indices a task would use on this node, or undefined when the node
 * does not fit. Devices are picked in index order among those that satisfy every constraint.
 */
export function fitOnNode(req: TaskRequirements, inventory: NodeInventory): number[] | undefined {
  if (req.regions && !req.regions.includes(inventory.region)) return undefined;
  const runtimeOk = req.needsContainer
    ? inventory.runtimes.some((r) => r !== 'process')
    : inventory.runtimes.includes('process');
  if (!runtimeOk) return undefined;
  if (req.cpuCores !== undefined && inventory.cpu.cores < req.cpuCores) return undefined;
  if (req.memoryMiB !== undefined && inventory.memoryMiB < req.memoryMiB) return undefined;
  const matching = inventory.gpus.filter((gpu) => gpuMatches(req.gpus, gpu));
  if (matching.length < req.gpus.count) return undefined;
  return matching.slice(0, req.gpus.count).map((gpu) => gpu.index);
}

export function gpuMatches(req: GpuRequirement, gpu: GpuDevice): boolean {
  if (req.vendor !== undefined && gpu.vendor !== req.vendor) return false;
  if (req.minVramMiB !== undefined && gpu.vramMiB < req.minVramMiB) return false;
  if (req.models !== undefined && req.models.length > 0) {
    const model = gpu.model.toLowerCase();
    if (!req.models.some((m) => model.includes(m.toLowerCase()))) return false;
  }
  if (req.minComputeCapability !== undefined) {
    if (gpu.computeCapability === undefined) return false;
    if (compareVersions(gpu.computeCapability, req.minComputeCapability) < 0) return false;
  }
  return true;
}

function compareVersions(a: string, b: string): number {
  const [aMajor = 0, aMinor = 0] = a.split('.').map(Number);
  const [bMajor = 0, bMinor = 0] = b.split('.').map(Number);
  return aMajor - bMajor || aMinor - bMinor;
}
