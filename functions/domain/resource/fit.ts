import {
  type AttestationLevel,
  type GpuDevice,
  type GpuRequirement,
  meetsAttestation,
  type NodeInventory,
} from '../../../protocol/index.js';
import { type AttestationRecord, effectiveAttestationLevel } from '../security/attestation/record.js';
import { acceleratorClass, modelNamesClass } from './pools.js';

/** What a task demands of a node: copied onto each task so placement never needs the job. */
export interface TaskRequirements {
  gpus: GpuRequirement;
  cpuCores?: number;
  memoryMiB?: number;
  regions?: string[];
  /** A container image needs a container runtime; a bare command needs the process runtime. */
  needsContainer: boolean;
  /** The job's `minAttestation`: nodes whose unexpired attestation is below it never get the task. */
  minAttestation?: AttestationLevel;
}

/** Whether the node's attestation, as it stands at `now` (expired counts as `none`), meets the task's minimum. */
export function attestationFits(
  req: TaskRequirements,
  attestation: AttestationRecord | undefined,
  now: number,
): boolean {
  if (req.minAttestation === undefined || req.minAttestation === 'none') return true;
  return meetsAttestation(effectiveAttestationLevel(attestation, now), req.minAttestation);
}

/**
 * What one task holds on its node while its attempt is leased there. The node record keeps a list
 * of these (`held`), so that dispatch counts what the node already runs before it binds more.
 */
export interface HeldTask {
  taskId: string;
  attempt: number;
  gpuIndices: number[];
  cpuCores: number;
  memoryMiB: number;
}

/**
 * The cores and memory a task takes of its node while it runs. A task that asks for neither GPUs
 * nor cores still takes one core, so a node runs at most as many CPU tasks as it has cores.
 */
export function demandOf(req: TaskRequirements): { cpuCores: number; memoryMiB: number } {
  return { cpuCores: coresAsked(req), memoryMiB: req.memoryMiB ?? 0 };
}

/** The cores a task takes: what it asks, else one for a CPU-only task and none beside GPUs. */
const coresAsked = (req: TaskRequirements): number => req.cpuCores ?? (req.gpus.count > 0 ? 0 : 1);

/**
 * Late-binding fit check: the GPU indices a task would use on this node, or undefined when the node
 * does not fit. Devices are picked in index order among those that satisfy every constraint and
 * that no task in `held` uses; the cores and memory of `held` are taken off the node's too.
 * Without `held`, the answer is whether the node could ever run the task.
 */
export function fitOnNode(
  req: TaskRequirements,
  inventory: NodeInventory,
  held: readonly HeldTask[] = [],
): number[] | undefined {
  if (!placeFits(req, inventory, held)) return undefined;
  // Placement calls this on every candidate it would answer and every claim: loops instead of a
  // Set and filtered arrays, so the only allocation is the answer.
  const count = req.gpus.count;
  const picked: number[] = [];
  if (count === 0) return picked;
  for (const gpu of inventory.gpus) {
    if (heldUses(held, gpu.index) || !gpuMatches(req.gpus, gpu)) continue;
    picked.push(gpu.index);
    if (picked.length === count) return picked;
  }
  return undefined;
}

/**
 * Whether `gpuIndices` (say, the devices placement picked with {@link fitOnNode} a moment ago)
 * still fit the task on this node: the node passes every check but the choice of devices, and
 * they are as many as asked, distinct, the node's, free of `held` and each meeting the GPU
 * requirement. Cheaper than choosing again: it looks only at the devices given.
 */
export function devicesFit(
  req: TaskRequirements,
  inventory: NodeInventory,
  held: readonly HeldTask[],
  gpuIndices: readonly number[],
): boolean {
  if (gpuIndices.length !== req.gpus.count || !placeFits(req, inventory, held)) return false;
  for (let i = 0; i < gpuIndices.length; i++) {
    const index = gpuIndices[i] as number;
    for (let j = 0; j < i; j++) if (gpuIndices[j] === index) return false;
    if (heldUses(held, index)) return false;
    const gpu = deviceAt(inventory, index);
    if (gpu === undefined || !gpuMatches(req.gpus, gpu)) return false;
  }
  return true;
}

/** Region, runtime, and the cores and memory `held` leaves: every check of a fit but the devices. */
function placeFits(req: TaskRequirements, inventory: NodeInventory, held: readonly HeldTask[]): boolean {
  if (req.regions && !req.regions.includes(inventory.region)) return false;
  const runtimeOk = req.needsContainer
    ? inventory.runtimes.some((r) => r !== 'process')
    : inventory.runtimes.includes('process');
  if (!runtimeOk) return false;
  // demandOf's figures, read without building its object (this runs on every placement candidate).
  const cores = coresAsked(req);
  const memory = req.memoryMiB ?? 0;
  let usedCores = 0;
  let usedMemory = 0;
  for (const h of held) {
    usedCores += h.cpuCores;
    usedMemory += h.memoryMiB;
  }
  return inventory.cpu.cores - usedCores >= cores && inventory.memoryMiB - usedMemory >= memory;
}

function heldUses(held: readonly HeldTask[], gpuIndex: number): boolean {
  for (const h of held) if (h.gpuIndices.includes(gpuIndex)) return true;
  return false;
}

function deviceAt(inventory: NodeInventory, gpuIndex: number): GpuDevice | undefined {
  for (const gpu of inventory.gpus) if (gpu.index === gpuIndex) return gpu;
  return undefined;
}

export function gpuMatches(req: GpuRequirement, gpu: GpuDevice): boolean {
  if (req.vendor !== undefined && gpu.vendor !== req.vendor) return false;
  if (req.minVramMiB !== undefined && gpu.vramMiB < req.minVramMiB) return false;
  if (req.models !== undefined && req.models.length > 0) {
    const model = gpu.model.toLowerCase();
    const cls = acceleratorClass(gpu);
    if (!req.models.some((m) => model.includes(m.toLowerCase()) || cls === m.trim().toLowerCase())) return false;
  }
  if (req.minComputeCapability !== undefined) {
    if (gpu.computeCapability === undefined) return false;
    if (compareVersions(gpu.computeCapability, req.minComputeCapability) < 0) return false;
  }
  return true;
}

/** The required models that name no accelerator class (see {@link modelNamesClass}): a job asking for one never runs. */
export function unknownGpuModels(req: GpuRequirement): string[] {
  return (req.models ?? []).filter((m) => !modelNamesClass(m, req.vendor));
}

function compareVersions(a: string, b: string): number {
  const [aMajor = 0, aMinor = 0] = a.split('.').map(Number);
  const [bMajor = 0, bMinor = 0] = b.split('.').map(Number);
  return aMajor - bMajor || aMinor - bMinor;
}
