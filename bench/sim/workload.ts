import { fitOnNode, type TaskRequirements } from '../../functions/domain/resource/fit.js';
import { acceleratorClass } from '../../functions/domain/resource/pools.js';
import type { FleetNode } from '../shared/fleet.js';
import { seededRandom } from '../shared/random.js';
import { loadTracePods, type TracePod, traceModels } from '../shared/traces.js';

/**
 * The tasks a simulation submits: shapes drawn from the Alibaba GPU trace's pods (requests, GPU
 * type constraints, QoS, run times) and from synthetic workloads of a decentralised GPU market
 * (LLM training on big cards, fine-tuning, batch inference, rendering on consumer cards with the
 * process runtime, EU-resident jobs, CPU ETL). Arrivals are a Poisson process whose rate puts the
 * fleet's GPUs under `load` (offered GPU time over GPU time available), so queues form where
 * constrained shapes meet scarce classes.
 *
 * Tasks are kept as columns (typed arrays) with shared, interned requirement objects: a million
 * tasks cost tens of MB, and tasks of one shape share one `TaskRequirements` object, which the
 * placement index caches its eligible groups on.
 */
export interface TaskShape {
  id: number;
  requirements: TaskRequirements;
  workload: string;
  /** 0-9, higher first (trace QoS: Guaranteed 7, LS 6, Burstable 5, BE 3). */
  priority: number;
}

export interface Workload {
  count: number;
  shapes: TaskShape[];
  shape: Int32Array;
  arrivalMs: Float64Array;
  /** Run time on a reference device (class speed 1) and a node of slowdown 1, before noise. */
  baseRuntimeMs: Float64Array;
  tenant: Uint16Array;
  /** Offered GPU load it was drawn for, and the arrival rate that gives it. */
  load: number;
  arrivalsPerSec: number;
  traceShare: number;
}

/** Relative run time per accelerator class (lower is faster): the simulation's hidden truth. */
export const classSpeed: Readonly<Record<string, number>> = {
  h100: 0.45,
  mi300x: 0.55,
  a100: 0.65,
  l40s: 0.75,
  rtx4090: 0.8,
  rtx4080: 1.0,
  v100: 1.0,
  a10: 1.1,
  rtx3090: 1.1,
  l4: 1.2,
  'other-nvidia': 1.6,
  rx6800: 1.7,
  t4: 1.8,
  p100: 2.0,
  cpu: 1,
};

/** How strongly a workload's run time follows the device's speed (0: not at all). */
export const workloadSensitivity: Readonly<Record<string, number>> = {
  'llm-train': 1,
  'fine-tune': 1,
  'batch-infer': 0.6,
  render: 0.8,
  'eu-resident': 0.9,
  'cpu-etl': 0,
  'trace-ls': 0.8,
  'trace-be': 0.8,
  'trace-cpu': 0,
};

const minRuntimeMs = 30_000;
const maxRuntimeMs = 4 * 3_600_000;

interface Draft {
  requirements: TaskRequirements;
  workload: string;
  priority: number;
  runtimeMs: number;
}

const qosPriority: Readonly<Record<string, number>> = { Guaranteed: 7, LS: 6, Burstable: 5, BE: 3 };
const euRegions = ['eu-west', 'eu-central', 'eu-north', 'uk-south'];

function fromTrace(pod: TracePod, runtimeMs: number): Draft {
  const models = [
    ...new Set(pod.gpuSpec.map((m) => traceModels[m]).flatMap((d) => (d === undefined ? [] : [acceleratorClass(d)]))),
  ];
  const gpus = Math.min(8, pod.gpus);
  return {
    requirements: {
      gpus: { count: gpus, ...(models.length > 0 ? { models } : {}) },
      cpuCores: Math.max(1, Math.ceil(pod.cpuMilli / 1000)),
      ...(pod.memoryMiB > 0 ? { memoryMiB: pod.memoryMiB } : {}),
      needsContainer: true,
    },
    workload: gpus === 0 ? 'trace-cpu' : pod.qos === 'BE' ? 'trace-be' : 'trace-ls',
    priority: qosPriority[pod.qos] ?? 5,
    runtimeMs,
  };
}

function synthetic(random: ReturnType<typeof seededRandom>): Draft {
  const kind = random.weighted([4, 12, 30, 16, 8, 10]);
  const minutes = (median: number, sigma: number) => random.logNormal(median, sigma) * 60_000;
  switch (kind) {
    case 0:
      return {
        requirements: {
          gpus: { count: 8, models: ['h100', 'a100', 'mi300x'], minVramMiB: 65_536 },
          cpuCores: 32,
          memoryMiB: 262_144,
          needsContainer: true,
        },
        workload: 'llm-train',
        priority: 6,
        runtimeMs: minutes(90, 0.6),
      };
    case 1:
      return {
        requirements: {
          gpus: { count: random.pick([1, 2]), minVramMiB: 24_000 },
          cpuCores: 8,
          memoryMiB: 32_768,
          needsContainer: true,
        },
        workload: 'fine-tune',
        priority: 5,
        runtimeMs: minutes(30, 0.5),
      };
    case 2:
      return {
        requirements: {
          gpus: { count: 1, minVramMiB: random.pick([8_000, 16_000]) },
          cpuCores: 4,
          memoryMiB: 16_384,
          needsContainer: true,
        },
        workload: 'batch-infer',
        priority: random.pick([4, 5, 6]),
        runtimeMs: minutes(5, 0.7),
      };
    case 3:
      return {
        requirements: { gpus: { count: 1, vendor: 'nvidia' }, cpuCores: 4, memoryMiB: 8_192, needsContainer: false },
        workload: 'render',
        priority: 5,
        runtimeMs: minutes(12, 0.6),
      };
    case 4:
      return {
        requirements: {
          gpus: { count: 1, minVramMiB: 16_000 },
          cpuCores: 4,
          memoryMiB: 16_384,
          regions: euRegions,
          needsContainer: true,
        },
        workload: 'eu-resident',
        priority: 6,
        runtimeMs: minutes(10, 0.6),
      };
    default:
      return {
        requirements: { gpus: { count: 0 }, cpuCores: 4, memoryMiB: 8_192, needsContainer: true },
        workload: 'cpu-etl',
        priority: 4,
        runtimeMs: minutes(8, 0.6),
      };
  }
}

/** Whether some node of the fleet could ever run it (an empty node): shapes that none can are dropped. */
function feasible(req: TaskRequirements, fleet: readonly FleetNode[], sample: readonly FleetNode[]): boolean {
  return (
    sample.some((n) => fitOnNode(req, n.inventory) !== undefined) ||
    fleet.some((n) => fitOnNode(req, n.inventory) !== undefined)
  );
}

export interface WorkloadOptions {
  tasks: number;
  seed: number;
  /** Offered GPU load, default 0.8. */
  load?: number;
  /** Share of tasks shaped like the trace's pods (when present), default 0.6. */
  traceShare?: number;
  tenants?: number;
}

export function generateWorkload(fleet: readonly FleetNode[], options: WorkloadOptions): Workload {
  const random = seededRandom(options.seed ^ 0x7a5c_0b1d);
  const pods = (loadTracePods('default') ?? []).concat(loadTracePods('multigpu20') ?? []);
  const traceShare = pods.length === 0 ? 0 : (options.traceShare ?? 0.6);
  const load = options.load ?? 0.8;
  const tenants = options.tenants ?? 64;
  const sample = fleet.slice(0, 2_000);

  const shapes: TaskShape[] = [];
  const shapeIds = new Map<string, number>();
  const count = options.tasks;
  const shape = new Int32Array(count);
  const baseRuntimeMs = new Float64Array(count);
  const tenant = new Uint16Array(count);
  const arrivalMs = new Float64Array(count);
  const feasibleCache = new Map<string, boolean>();
  let gpuMs = 0;
  for (let i = 0; i < count; i++) {
    let draft: Draft;
    let key: string;
    for (;;) {
      if (random.next() < traceShare) {
        const pod = random.pick(pods);
        const runtime = Math.min(
          maxRuntimeMs,
          Math.max(minRuntimeMs, (pod.durationS ?? random.exponential(1_800)) * 1000),
        );
        draft = fromTrace(pod, runtime);
      } else {
        draft = synthetic(random);
      }
      key = JSON.stringify([draft.requirements, draft.workload, draft.priority]);
      let ok = feasibleCache.get(key);
      if (ok === undefined) {
        ok = feasible(draft.requirements, fleet, sample);
        feasibleCache.set(key, ok);
      }
      if (ok) break;
    }
    let id = shapeIds.get(key);
    if (id === undefined) {
      id = shapes.length;
      shapeIds.set(key, id);
      shapes.push({ id, requirements: draft.requirements, workload: draft.workload, priority: draft.priority });
    }
    shape[i] = id;
    baseRuntimeMs[i] = Math.min(maxRuntimeMs, Math.max(minRuntimeMs, draft.runtimeMs));
    tenant[i] = Math.floor(tenants * random.next() ** 2);
    gpuMs += (baseRuntimeMs[i] as number) * draft.requirements.gpus.count;
  }
  const fleetGpus = fleet.reduce((sum, n) => sum + n.inventory.gpus.length, 0);
  // Offered load = arrival rate x mean GPU time per task / GPUs.
  const arrivalsPerMs = (load * Math.max(1, fleetGpus)) / Math.max(1, gpuMs / count);
  let t = 0;
  for (let i = 0; i < count; i++) {
    t += random.exponential(1 / arrivalsPerMs);
    arrivalMs[i] = t;
  }
  return {
    count,
    shapes,
    shape,
    arrivalMs,
    baseRuntimeMs,
    tenant,
    load,
    arrivalsPerSec: arrivalsPerMs * 1000,
    traceShare,
  };
}
