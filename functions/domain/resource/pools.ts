import type { GpuDevice, NodeInventory } from '../../../protocol/index.js';

/**
 * Pools partition nodes by region and accelerator class, so that each pool's queue and placement
 * can run independently (the federation of ARCHITECTURE.md). A pool id reads `<region>/<class>`:
 *
 *   local/cpu        a node without GPUs
 *   eu-west/h100     a node with NVIDIA H100 devices (any memory size or form factor)
 *   us-east/mi300x   a node with AMD Instinct MI300X devices
 *
 * A node with devices of several classes belongs to one pool per class.
 *
 * Pool names become cloud resources (one SQS queue per pool) and names in the store, so nothing
 * in them comes from a node verbatim: the class is looked up in {@link acceleratorTable} (a model
 * the table does not know falls into `other-<vendor>`), and the region must be one the deployment
 * allows ({@link RegionPolicy}). A node can therefore never make the control plane create more
 * pools than regions x classes.
 */

/**
 * The canonical accelerator classes, most specific pattern first: the first entry whose pattern
 * matches the reported model (lowercased, with spaces and punctuation squeezed to single spaces)
 * names the class. Patterns are anchored on word boundaries so that "a100" never matches "a1000".
 */
export const acceleratorTable: readonly { vendor: GpuDevice['vendor']; class: string; pattern: RegExp }[] = [
  // NVIDIA data centre
  { vendor: 'nvidia', class: 'gb200', pattern: /\bgb200\b/ },
  { vendor: 'nvidia', class: 'b200', pattern: /\bb200\b/ },
  { vendor: 'nvidia', class: 'b100', pattern: /\bb100\b/ },
  { vendor: 'nvidia', class: 'gh200', pattern: /\bgh200\b/ },
  { vendor: 'nvidia', class: 'h200', pattern: /\bh200\b/ },
  { vendor: 'nvidia', class: 'h100', pattern: /\bh100\b/ },
  { vendor: 'nvidia', class: 'h800', pattern: /\bh800\b/ },
  { vendor: 'nvidia', class: 'h20', pattern: /\bh20\b/ },
  { vendor: 'nvidia', class: 'a100', pattern: /\ba100\b/ },
  { vendor: 'nvidia', class: 'a800', pattern: /\ba800\b/ },
  { vendor: 'nvidia', class: 'a40', pattern: /\ba40\b/ },
  { vendor: 'nvidia', class: 'a30', pattern: /\ba30\b/ },
  { vendor: 'nvidia', class: 'a10g', pattern: /\ba10g\b/ },
  { vendor: 'nvidia', class: 'a10', pattern: /\ba10\b/ },
  { vendor: 'nvidia', class: 'a16', pattern: /\ba16\b/ },
  { vendor: 'nvidia', class: 'a2', pattern: /\ba2\b/ },
  { vendor: 'nvidia', class: 'l40s', pattern: /\bl40s\b/ },
  { vendor: 'nvidia', class: 'l40', pattern: /\bl40\b/ },
  { vendor: 'nvidia', class: 'l4', pattern: /\bl4\b/ },
  { vendor: 'nvidia', class: 't4', pattern: /\bt4\b/ },
  { vendor: 'nvidia', class: 'v100', pattern: /\bv100\b/ },
  { vendor: 'nvidia', class: 'p100', pattern: /\bp100\b/ },
  // NVIDIA workstation
  { vendor: 'nvidia', class: 'rtx6000-ada', pattern: /\brtx 6000 ada\b/ },
  { vendor: 'nvidia', class: 'rtxa6000', pattern: /\brtx a6000\b/ },
  { vendor: 'nvidia', class: 'rtxa5000', pattern: /\brtx a5000\b/ },
  { vendor: 'nvidia', class: 'rtxa4000', pattern: /\brtx a4000\b/ },
  // NVIDIA GeForce
  { vendor: 'nvidia', class: 'rtx5090', pattern: /\brtx 5090\b/ },
  { vendor: 'nvidia', class: 'rtx5080', pattern: /\brtx 5080\b/ },
  { vendor: 'nvidia', class: 'rtx4090', pattern: /\brtx 4090\b/ },
  { vendor: 'nvidia', class: 'rtx4080', pattern: /\brtx 4080\b/ },
  { vendor: 'nvidia', class: 'rtx4070', pattern: /\brtx 4070\b/ },
  { vendor: 'nvidia', class: 'rtx4060', pattern: /\brtx 4060\b/ },
  { vendor: 'nvidia', class: 'rtx3090', pattern: /\brtx 3090\b/ },
  { vendor: 'nvidia', class: 'rtx3080', pattern: /\brtx 3080\b/ },
  { vendor: 'nvidia', class: 'rtx3070', pattern: /\brtx 3070\b/ },
  { vendor: 'nvidia', class: 'rtx3060', pattern: /\brtx 3060\b/ },
  // AMD Instinct and Radeon
  { vendor: 'amd', class: 'mi355x', pattern: /\bmi355x?\b/ },
  { vendor: 'amd', class: 'mi325x', pattern: /\bmi325x?\b/ },
  { vendor: 'amd', class: 'mi300x', pattern: /\bmi300x?\b/ },
  { vendor: 'amd', class: 'mi300a', pattern: /\bmi300a\b/ },
  { vendor: 'amd', class: 'mi250x', pattern: /\bmi250x\b/ },
  { vendor: 'amd', class: 'mi250', pattern: /\bmi250\b/ },
  { vendor: 'amd', class: 'mi210', pattern: /\bmi210\b/ },
  { vendor: 'amd', class: 'mi100', pattern: /\bmi100\b/ },
  { vendor: 'amd', class: 'rx7900xtx', pattern: /\brx 7900 xtx\b/ },
  { vendor: 'amd', class: 'rx7900xt', pattern: /\brx 7900 xt\b/ },
  { vendor: 'amd', class: 'rx6800', pattern: /\brx 6800\b/ },
  // Intel
  { vendor: 'intel', class: 'gaudi3', pattern: /\bgaudi ?3\b/ },
  { vendor: 'intel', class: 'gaudi2', pattern: /\bgaudi ?2\b/ },
  { vendor: 'intel', class: 'max1550', pattern: /\bmax 1550\b/ },
];

/** The class of a device whose model the table does not know, by vendor. */
export const otherClassOf: Readonly<Record<GpuDevice['vendor'], string>> = {
  nvidia: 'other-nvidia',
  amd: 'other-amd',
  intel: 'other-intel',
  apple: 'other-apple',
  other: 'other',
};

export const cpuClass = 'cpu';

/** Every accelerator class a pool can have: the table's, the `other-*` classes and `cpu`. */
export const acceleratorClasses: ReadonlySet<string> = new Set([
  ...acceleratorTable.map((entry) => entry.class),
  ...Object.values(otherClassOf),
  cpuClass,
]);

/**
 * The canonical class of a reported device. The vendor must agree with the table's entry: an
 * `amd` device calling itself "H100" is `other-amd`, not `h100`.
 *
 * @example acceleratorClass({ vendor: 'nvidia', model: 'NVIDIA H100 80GB HBM3' }) // 'h100'
 */
export function acceleratorClass(gpu: Pick<GpuDevice, 'vendor' | 'model'>): string {
  const key = `${gpu.vendor}/${gpu.model}`;
  const known = classCache.get(key);
  if (known !== undefined) return known;
  const model = ` ${gpu.model.toLowerCase().replace(/[^a-z0-9]+/g, ' ')} `;
  const entry = acceleratorTable.find((e) => e.vendor === gpu.vendor && e.pattern.test(model));
  const cls = entry?.class ?? otherClassOf[gpu.vendor] ?? 'other';
  // Fit checks ask for every device they look at; the pattern table costs microseconds a call.
  if (classCache.size >= classCacheLimit) classCache.clear();
  classCache.set(key, cls);
  return cls;
}

/** Classes by `<vendor>/<model>`: models are few, but a node may report any string, so the cache is bounded. */
const classCache = new Map<string, string>();
const classCacheLimit = 4096;

/**
 * Whether a job's model requirement (protocol `GpuRequirement.models`) names a class of the
 * table: a class name itself (`rtx4090`), or text that names one the way devices report it (`H100`,
 * `RTX 4090`, `NVIDIA A100-SXM4-80GB`). With a vendor, only that vendor's classes count. A
 * requirement naming none could only match a device in an `other-*` pool by luck, so the API refuses
 * it rather than queue a job that waits forever.
 */
export function modelNamesClass(model: string, vendor?: GpuDevice['vendor']): boolean {
  const name = model.trim().toLowerCase();
  const text = ` ${name.replace(/[^a-z0-9]+/g, ' ')} `;
  return acceleratorTable.some(
    (e) => (vendor === undefined || e.vendor === vendor) && (e.class === name || e.pattern.test(text)),
  );
}

/**
 * The regions nodes may report when a deployment names none: `local` (the embedded deployment's
 * default) and broad geographic slugs. A deployment widens or narrows it with its own list.
 */
export const defaultRegions: readonly string[] = [
  'local',
  'us-east',
  'us-west',
  'us-central',
  'us-south',
  'ca-central',
  'ca-east',
  'sa-east',
  'eu-west',
  'eu-central',
  'eu-north',
  'eu-south',
  'uk-south',
  'me-central',
  'af-south',
  'ap-south',
  'ap-east',
  'ap-southeast',
  'ap-northeast',
  'au-east',
];

/** Which regions a node may report: a list, or `*` for any region slug (protocol `Region`). */
export type RegionPolicy = readonly string[] | '*';

export function regionAllowed(region: string, policy: RegionPolicy): boolean {
  return policy === '*' ? true : policy.includes(region);
}

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

/**
 * Whether `pool` lies within a join token's scope (protocol `PoolScope`: `<region>/<class>`, either
 * side `*`). An absent scope admits every pool.
 */
export function poolInScope(pool: string, scope: readonly string[] | undefined): boolean {
  if (scope === undefined) return true;
  const slash = pool.indexOf('/');
  const region = pool.slice(0, slash);
  const cls = pool.slice(slash + 1);
  return scope.some((entry) => {
    const [r, c] = entry.split('/');
    return (r === '*' || r === region) && (c === '*' || c === cls);
  });
}

/**
 * A region policy as configured (`GPUAI_REGIONS`, `NODE_REGIONS`): `*`, or region slugs separated
 * by commas. Undefined when the text is neither.
 */
export function parseRegionPolicy(text: string): RegionPolicy | undefined {
  if (text.trim() === '*') return '*';
  const regions = text.split(',').map((r) => r.trim());
  return regions.every((r) => /^[a-z0-9][a-z0-9-]{0,31}$/.test(r)) ? [...new Set(regions)] : undefined;
}
