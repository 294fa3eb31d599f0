import { acceleratorClass, cpuClass } from '../../functions/domain/resource/pools.js';
import type { GpuDevice, NodeInventory, Runtime } from '../../protocol/index.js';
import { type Random, seededRandom } from './random.js';
import { loadTraceNodes, type TraceNode, traceModels } from './traces.js';

/**
 * A deterministic, heterogeneous fleet for the benchmarks: node inventories exactly as agents
 * report them (protocol `NodeInventory`), so placement, fit checks and pools see what production
 * sees, plus the hidden truths a simulation needs (how slow a node really is, how often it crashes)
 * that the scheduler must learn rather than read.
 *
 * Shapes come from the Alibaba GPU trace's machines (bench/shared/traces.ts) and from synthetic
 * shapes of a decentralised fleet (data-centre H100/A100/L40S/MI300X hosts, single consumer cards,
 * CPU-only machines); regions are weighted like a global fleet and latencies follow the distance
 * to the control plane's region. The same options and seed always give the same fleet.
 */
export interface FleetNode {
  /** A valid protocol NodeId (`node_` + 26 base32 characters) derived from the node's position. */
  id: string;
  /** Position in the fleet, 0-based: handy for typed-array state in benches. */
  index: number;
  inventory: NodeInventory;
  /** The accelerator class of its devices (pools.ts), `cpu` without GPUs. */
  acceleratorClass: string;
  /** Control-plane round trip, ms. */
  latencyMs: number;
  /** Hidden truth: run time multiplier against the class's prediction (1 = as predicted; slow nodes 2-4). */
  slowdown: number;
  /** Hidden truth: probability that an attempt on this node ends with the node crashing mid-task. */
  crashRate: number;
  /** Where the shape came from. */
  source: 'trace' | 'synthetic';
}

export interface FleetOptions {
  nodes: number;
  seed: number;
  /** Share of nodes shaped like the trace's machines (when the trace is present), default 0.5. */
  traceShare?: number;
  /** Share of slow nodes (slowdown 2 to 4), default 0.05. */
  slowShare?: number;
  /** Mean crash probability per attempt over the fleet, default 0.02. */
  crashRate?: number;
  /** Share of flaky nodes, which carry most of the crashes, default 0.1. */
  flakyShare?: number;
  /** The control plane's region, from which latencies are measured, default `us-east`. */
  controlRegion?: string;
  /** Use the trace's machines (default: when the files are present). */
  useTrace?: boolean;
}

interface Shape {
  weight: number;
  gpus: number;
  gpu?: { vendor: GpuDevice['vendor']; model: string; vramMiB: number; computeCapability?: string; gfxArch?: string };
  cores: number;
  memoryMiB: number;
  consumer: boolean;
}

/** Synthetic shapes; model strings are those real agents report (see /work/shared/data/gpu-probe). */
export const syntheticShapes: readonly Shape[] = [
  {
    weight: 5,
    gpus: 8,
    gpu: { vendor: 'nvidia', model: 'NVIDIA H100 80GB HBM3', vramMiB: 81_559, computeCapability: '9.0' },
    cores: 112,
    memoryMiB: 2_097_152,
    consumer: false,
  },
  {
    weight: 4,
    gpus: 1,
    gpu: { vendor: 'nvidia', model: 'NVIDIA H100 80GB HBM3', vramMiB: 81_559, computeCapability: '9.0' },
    cores: 26,
    memoryMiB: 229_376,
    consumer: false,
  },
  {
    weight: 5,
    gpus: 4,
    gpu: { vendor: 'nvidia', model: 'NVIDIA A100-SXM4-80GB', vramMiB: 81_920, computeCapability: '8.0' },
    cores: 64,
    memoryMiB: 1_048_576,
    consumer: false,
  },
  {
    weight: 6,
    gpus: 4,
    gpu: { vendor: 'nvidia', model: 'NVIDIA L40S', vramMiB: 46_068, computeCapability: '8.9' },
    cores: 48,
    memoryMiB: 393_216,
    consumer: false,
  },
  {
    weight: 3,
    gpus: 8,
    gpu: { vendor: 'amd', model: 'AMD Instinct MI300X', vramMiB: 196_592, gfxArch: 'gfx942' },
    cores: 96,
    memoryMiB: 2_097_152,
    consumer: false,
  },
  {
    weight: 18,
    gpus: 1,
    gpu: { vendor: 'nvidia', model: 'NVIDIA GeForce RTX 4090', vramMiB: 24_564, computeCapability: '8.9' },
    cores: 16,
    memoryMiB: 65_536,
    consumer: true,
  },
  {
    weight: 10,
    gpus: 1,
    gpu: { vendor: 'nvidia', model: 'NVIDIA GeForce RTX 4080 SUPER', vramMiB: 16_376, computeCapability: '8.9' },
    cores: 12,
    memoryMiB: 32_768,
    consumer: true,
  },
  {
    weight: 7,
    gpus: 2,
    gpu: { vendor: 'nvidia', model: 'NVIDIA GeForce RTX 3090', vramMiB: 24_576, computeCapability: '8.6' },
    cores: 16,
    memoryMiB: 65_536,
    consumer: true,
  },
  {
    weight: 3,
    gpus: 1,
    gpu: { vendor: 'nvidia', model: 'NVIDIA GeForce RTX 2080 SUPER', vramMiB: 8_192, computeCapability: '7.5' },
    cores: 8,
    memoryMiB: 16_384,
    consumer: true,
  },
  {
    weight: 2,
    gpus: 1,
    gpu: { vendor: 'amd', model: 'AMD Radeon RX 6800', vramMiB: 16_368, gfxArch: 'gfx1030' },
    cores: 8,
    memoryMiB: 32_768,
    consumer: true,
  },
  { weight: 8, gpus: 0, cores: 32, memoryMiB: 131_072, consumer: false },
];

/** Regions and their weight in the fleet; the continent decides latency to the control plane. */
export const fleetRegions: readonly { region: string; weight: number; continent: string }[] = [
  { region: 'us-east', weight: 18, continent: 'na' },
  { region: 'us-west', weight: 12, continent: 'na' },
  { region: 'us-central', weight: 6, continent: 'na' },
  { region: 'ca-central', weight: 3, continent: 'na' },
  { region: 'eu-west', weight: 13, continent: 'eu' },
  { region: 'eu-central', weight: 10, continent: 'eu' },
  { region: 'eu-north', weight: 4, continent: 'eu' },
  { region: 'uk-south', weight: 4, continent: 'eu' },
  { region: 'ap-northeast', weight: 8, continent: 'ap' },
  { region: 'ap-southeast', weight: 6, continent: 'ap' },
  { region: 'ap-south', weight: 5, continent: 'ap' },
  { region: 'ap-east', weight: 5, continent: 'ap' },
  { region: 'au-east', weight: 3, continent: 'ap' },
  { region: 'sa-east', weight: 2, continent: 'sa' },
  { region: 'me-central', weight: 1, continent: 'me' },
];

/** Median round trip (ms) between the control plane's continent and a node's. */
function baseLatencyMs(from: string, to: string, sameRegion: boolean): number {
  if (sameRegion) return 8;
  if (from === to) return 35;
  const pair = [from, to].sort().join('-');
  return { 'eu-na': 85, 'ap-na': 160, 'na-sa': 130, 'me-na': 180, 'ap-eu': 220 }[pair] ?? 200;
}

const base32 = 'abcdefghijklmnopqrstuvwxyz234567';

/** `node_` + the index in base32 (a-z2-7), left-padded to 26 characters: a valid NodeId, unique per index. */
export function fleetNodeId(index: number): string {
  let text = '';
  let n = index;
  do {
    text = (base32[n % 32] ?? 'a') + text;
    n = Math.floor(n / 32);
  } while (n > 0);
  return `node_${text.padStart(26, 'a')}`;
}

function traceShape(node: TraceNode): Shape {
  const gpu = traceModels[node.model];
  return {
    weight: 1,
    gpus: gpu === undefined ? 0 : node.gpus,
    ...(gpu === undefined ? {} : { gpu }),
    cores: Math.max(1, Math.round(node.cpuMilli / 1000)),
    memoryMiB: Math.max(1, node.memoryMiB),
    consumer: false,
  };
}

function runtimesOf(shape: Shape, random: Random): Runtime[] {
  if (!shape.consumer) return ['docker', 'process'];
  const draw = random.next();
  return draw < 0.7 ? ['docker', 'process'] : draw < 0.9 ? ['process'] : ['docker'];
}

function inventoryOf(id: string, shape: Shape, region: string, runtimes: Runtime[]): NodeInventory {
  const gpus: GpuDevice[] = [];
  for (let index = 0; index < shape.gpus && shape.gpu !== undefined; index++) {
    const { computeCapability, gfxArch, ...device } = shape.gpu;
    gpus.push({
      index,
      ...device,
      uuid: `GPU-${id.slice(5)}-${index}`,
      ...(computeCapability === undefined ? {} : { computeCapability }),
      ...(gfxArch === undefined ? {} : { gfxArch }),
    });
  }
  return {
    gpus,
    cpu: { model: shape.gpus > 0 ? 'AMD EPYC 9474F 48-Core Processor' : 'Intel Xeon Gold 6448Y', cores: shape.cores },
    memoryMiB: shape.memoryMiB,
    os: 'linux',
    arch: 'x64',
    runtimes,
    region,
  };
}

const classes = new Map<string, string>();
/** The device's class, memoised by model: the pattern table is too slow to run 100,000 times. */
function classOf(gpu: GpuDevice | undefined): string {
  if (gpu === undefined) return cpuClass;
  const key = `${gpu.vendor}/${gpu.model}`;
  let found = classes.get(key);
  if (found === undefined) {
    found = acceleratorClass(gpu);
    classes.set(key, found);
  }
  return found;
}

/** Generates the fleet; deterministic in its options. */
export function generateFleet(options: FleetOptions): FleetNode[] {
  const random = seededRandom(options.seed ^ 0x5eed_f1ee);
  const trace = options.useTrace === false ? undefined : loadTraceNodes();
  const traceShapes = trace?.map(traceShape) ?? [];
  const traceShare = traceShapes.length === 0 ? 0 : (options.traceShare ?? 0.5);
  const slowShare = options.slowShare ?? 0.05;
  const flakyShare = options.flakyShare ?? 0.1;
  const meanCrash = options.crashRate ?? 0.02;
  // Flaky nodes crash 10x as often as the others, and the fleet's mean is `meanCrash`.
  const steadyCrash = meanCrash / (1 - flakyShare + 10 * flakyShare);
  const control = options.controlRegion ?? 'us-east';
  const controlContinent = fleetRegions.find((r) => r.region === control)?.continent ?? 'na';
  const regionWeights = fleetRegions.map((r) => r.weight);
  const shapeWeights = syntheticShapes.map((s) => s.weight);

  const nodes: FleetNode[] = [];
  for (let index = 0; index < options.nodes; index++) {
    const id = fleetNodeId(index);
    const fromTrace = random.next() < traceShare;
    const shape = fromTrace ? random.pick(traceShapes) : (syntheticShapes[random.weighted(shapeWeights)] as Shape);
    const place = fleetRegions[random.weighted(regionWeights)] ?? { region: control, continent: controlContinent };
    const inventory = inventoryOf(id, shape, place.region, runtimesOf(shape, random));
    const home = shape.consumer ? 15 + random.exponential(20) : 0;
    const latencyMs = Math.round(
      baseLatencyMs(controlContinent, place.continent, place.region === control) * random.logNormal(1, 0.25) + home,
    );
    const slow = random.next() < slowShare;
    const slowdown = slow ? 2 + 2 * random.next() : random.logNormal(1, 0.05);
    const flaky = random.next() < flakyShare;
    nodes.push({
      id,
      index,
      inventory,
      acceleratorClass: classOf(inventory.gpus[0]),
      latencyMs,
      slowdown,
      crashRate: flaky ? 10 * steadyCrash : steadyCrash,
      source: fromTrace ? 'trace' : 'synthetic',
    });
  }
  return nodes;
}

/** Nodes and GPUs per accelerator class: what a bench prints about the fleet it drew. */
export function fleetSummary(nodes: readonly FleetNode[]): {
  nodes: number;
  gpus: number;
  classes: Record<string, { nodes: number; gpus: number }>;
} {
  const classes: Record<string, { nodes: number; gpus: number }> = {};
  let gpus = 0;
  for (const node of nodes) {
    const entry = classes[node.acceleratorClass] ?? { nodes: 0, gpus: 0 };
    classes[node.acceleratorClass] = entry;
    entry.nodes += 1;
    entry.gpus += node.inventory.gpus.length;
    gpus += node.inventory.gpus.length;
  }
  return { nodes: nodes.length, gpus, classes };
}
