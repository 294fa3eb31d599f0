import type { TaskRequirements } from '../../functions/domain/resource/fit.js';
import type { PerformanceView } from '../../functions/domain/scheduling/performance.js';
import type { FleetNode as IndexNode, PlacementTask } from '../../functions/domain/scheduling/placement/index.js';
import type { AttestationLevel } from '../../protocol/index.js';
import { type FleetNode, loadTracePods, type Random, traceModels } from '../shared/index.js';

/**
 * What bench:placement places: tasks shaped like the Alibaba trace's pods (GPU count, cores,
 * memory, acceptable models) and synthetic ones of a decentralised fleet (whole-host 8-GPU jobs,
 * model and region constraints, attestation and trust minimums), and the estimates placement
 * scores them with (a PerformanceView over the fleet's figures, as the learned estimates (performance.ts) would give).
 */

/** Relative throughput of a device class (H100 = 1): a task's run time divides by it. */
const classSpeed: Readonly<Record<string, number>> = {
  h100: 1,
  mi300x: 0.95,
  a100: 0.62,
  l40s: 0.55,
  rtx4090: 0.5,
  rtx4080: 0.38,
  rtx3090: 0.33,
  a10: 0.3,
  l4: 0.27,
  v100: 0.3,
  t4: 0.15,
  p100: 0.14,
  rtx2080: 0.18,
  rx6800: 0.16,
};

/** Run time of each workload class on an H100, ms. */
const workloadBaseMs: Readonly<Record<string, number>> = {
  inference: 45_000,
  'train-small': 900_000,
  'train-large': 5_400_000,
  'cpu-batch': 300_000,
};

export function benchPerformance(fleet: readonly FleetNode[]): PerformanceView {
  const at = new Map(fleet.map((node, i) => [node.id, i]));
  const slowdown = Float64Array.from(fleet, (n) => n.slowdown);
  const reliability = Float64Array.from(fleet, (n) => 1 - n.crashRate);
  const latency = Float64Array.from(fleet, (n) => n.latencyMs);
  return {
    runtimeMs: (workload, cls) =>
      workload === 'cpu-batch'
        ? (workloadBaseMs[workload] as number)
        : (workloadBaseMs[workload] ?? 600_000) / (classSpeed[cls] ?? 0.1),
    slowdown: (id) => slowdown[at.get(id) ?? -1] ?? 1,
    reliability: (id) => reliability[at.get(id) ?? -1] ?? 0.95,
    latencyMs: (id) => latency[at.get(id) ?? -1] ?? 50,
  };
}

const levels: AttestationLevel[] = ['none', 'measured', 'tpm'];

/** The index's view of a fleet node: attestation (some measured, some TPM), trust, poll wait. */
export function indexNode(node: FleetNode, random: Random, now: number): IndexNode {
  const draw = random.next();
  const level = draw < 0.5 ? 'none' : draw < 0.8 ? 'measured' : 'tpm';
  return {
    id: node.id,
    inventory: node.inventory,
    ...(level === 'none'
      ? {}
      : { attestation: { level, kind: [], verifiedAt: now - 3_600_000, expiresAt: now + 86_400_000 } }),
    trust: random.next(),
    // Idle nodes long-poll (0 wait); some are between polls.
    waitMs: random.next() < 0.7 ? 0 : Math.round(random.exponential(1500)),
  };
}

const regionsOnOffer = ['us-east', 'us-west', 'eu-west', 'eu-central', 'ap-northeast', 'ap-south'];

/** A stream of tasks: half from the trace's pods (when present), half synthetic. */
export function taskStream(random: Random, prefix = 'task'): () => PlacementTask {
  const pods = loadTracePods('gpuspec33') ?? [];
  // Requirements are shared between tasks of one shape, as tasks of one job share their job's.
  const shapes = new Map<string, TaskRequirements>();
  const shared = (req: TaskRequirements): TaskRequirements => {
    const key = JSON.stringify(req);
    let found = shapes.get(key);
    if (found === undefined) {
      found = req;
      shapes.set(key, req);
    }
    return found;
  };
  let n = 0;
  return () => {
    const id = `${prefix}-${n++}`;
    if (pods.length > 0 && random.next() < 0.5) {
      const pod = random.pick(pods);
      const models = pod.gpuSpec.map((m) => traceModels[m]?.model).filter((m): m is string => m !== undefined);
      const requirements = shared({
        gpus: { count: pod.gpus, ...(models.length > 0 ? { models } : {}) },
        ...(pod.gpus === 0 ? { cpuCores: Math.max(1, Math.ceil(pod.cpuMilli / 1000)) } : {}),
        memoryMiB: Math.max(1, pod.memoryMiB),
        needsContainer: true,
      });
      const workload =
        pod.gpus === 0 ? 'cpu-batch' : pod.gpus > 1 ? 'train-large' : pod.gpuMilli < 1000 ? 'inference' : 'train-small';
      return { id, requirements, workload };
    }
    const draw = random.next();
    const count = draw < 0.12 ? 0 : draw < 0.72 ? 1 : draw < 0.86 ? 2 : draw < 0.95 ? 4 : 8;
    const modelDraw = random.next();
    const models =
      modelDraw < 0.08 ? ['h100'] : modelDraw < 0.12 ? ['a100', 'h100'] : modelDraw < 0.16 ? ['rtx4090'] : undefined;
    const regionDraw = random.next();
    const regions =
      regionDraw < 0.15 ? [random.pick(regionsOnOffer)] : regionDraw < 0.25 ? regionsOnOffer.slice(0, 3) : undefined;
    const minAttestation = random.next() < 0.05 ? random.pick(levels.slice(1)) : undefined;
    const requirements = shared({
      gpus: {
        count,
        ...(count > 0 && models !== undefined ? { models } : {}),
        ...(count >= 4 ? { minVramMiB: 40_000 } : {}),
      },
      ...(count === 0 ? { cpuCores: 1 + random.int(4) } : {}),
      memoryMiB: 1024 * (1 + random.int(32)),
      ...(regions === undefined ? {} : { regions }),
      needsContainer: random.next() < 0.85,
      ...(minAttestation === undefined ? {} : { minAttestation }),
    });
    const workload =
      count === 0 ? 'cpu-batch' : count >= 4 ? 'train-large' : random.next() < 0.5 ? 'inference' : 'train-small';
    const minTrust = random.next() < 0.1 ? 0.5 : undefined;
    return { id, requirements, workload, ...(minTrust === undefined ? {} : { minTrust }) };
  };
}
