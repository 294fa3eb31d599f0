import { attestationRank, type GpuDevice, type NodeInventory } from '../../../../protocol/index.js';
import {
  demandOf,
  devicesFit,
  fitOnNode,
  gpuMatches,
  type HeldTask,
  type TaskRequirements,
} from '../../resource/fit.js';
import { acceleratorClass, cpuClass, poolId } from '../../resource/pools.js';
import type { AttestationRecord } from '../../security/attestation/record.js';
import { neutralPerformance, type PerformanceView } from '../performance.js';
import { type HeapSlot, SlotHeap, SlotList } from './slot-heap.js';

/** What the index is told about a node: its inventory and what placement weighs beside it. */
export interface FleetNode {
  id: string;
  inventory: NodeInventory;
  /** What the node last proved; placement checks it with `attestationFits` at decision time. */
  attestation?: AttestationRecord | undefined;
  /** The incentive layer's trust score, 0..1; absent counts as 0 (a task's `minTrust` then refuses it). */
  trust?: number;
  /** How long before the node could start a task given now (until its next poll, say); default 0. */
  waitMs?: number;
  /** Tasks it already holds (from its record's `held`). */
  held?: readonly HeldTask[];
}

/**
 * A node as the index keeps it. The free counts are what `held` leaves; `base` and `factor` are
 * the node's part of the score (`base + runtime x factor`), cached from the performance view
 * when the node is added or refreshed, so that a decision reads no estimate per node.
 */
export interface FleetEntry {
  readonly id: string;
  readonly region: string;
  /** The class of its first device (`cpu` without devices): the class its run time is predicted for. */
  readonly acceleratorClass: string;
  readonly pool: string;
  inventory: NodeInventory;
  attestation: AttestationRecord | undefined;
  trust: number;
  waitMs: number;
  held: HeldTask[];
  totalGpus: number;
  freeGpus: number;
  freeCores: number;
  freeMemoryMiB: number;
  /** Bit 1: a container runtime; bit 2: the process runtime. */
  runtimes: number;
  /** The rank of its attestation's level as recorded (expiry only lowers it: `attestationFits` decides). */
  attestationRank: number;
  /** waitMs + latency. */
  base: number;
  /** slowdown / reliability: what one ms of predicted run time costs on this node. */
  factor: number;
  /** @internal */ classId: number;
  /** @internal */ tier: number;
  /** @internal Its room cell while it has no free GPU (see {@link roomCellOf}); -1 otherwise. */
  cell: number;
  /** @internal Its place in its class's room cell. */
  cellSlot: HeapSlot<FleetEntry>;
  /** @internal */ slots: HeapSlot<FleetEntry>[];
  /** @internal */ groups: DeviceGroup[];
  /** @internal */ denseAt: number;
}

/**
 * Nodes of one region whose devices are alike (same vendor, model, memory, compute capability),
 * so that a GPU requirement either matches every device of the group or none: whether a task may
 * look at a group at all is decided once per requirement, never per node. Inside, nodes sit in
 * buckets by how many GPUs they have free (tiers 0, 1, 2-3, 4-7, 8+), each bucket of tier 1 and up
 * a heap ordered by `factor`. Tier 0 (no free GPU: only a task without GPUs can go there) is a
 * plain list here, for iteration; placement finds those nodes in the room cells of their class
 * (see {@link roomCellOf}), where free cores and memory, not devices, decide.
 * @internal
 */
export interface DeviceGroup {
  readonly region: string;
  /**
   * The runtime bits its nodes have (every node of the group the same): a task that needs a
   * runtime the group lacks never looks at it (measured before the split: a bare-command task
   * walked ~400 docker-only nodes per decision while the fleet filled up).
   */
  readonly runtimes: number;
  /** A device of the group; undefined for the group of nodes without GPUs. */
  readonly device: GpuDevice | undefined;
  /** Index 0: the unordered list of tier 0; 1 to 4: heaps. */
  readonly buckets: [ListBucket, ...Bucket[]];
  /** The classes of the group's nodes (their first device's class): usually exactly one. */
  classIds: number[];
  /** @internal Per tier, the decision that last bounded it (placeTask bounds a group's tier once per decision). */
  visited: number[];
}

/** @internal Tier 0 of a device group: its nodes, in no order. */
export interface ListBucket {
  readonly heap: SlotList<FleetEntry>;
}

/**
 * @internal A heap of nodes with what bounds them, in one object so that bounding a bucket reads
 * one object: `rootKey`, `baseFloor`, and its ceilings: upper bounds of what its nodes offer (free
 * GPUs, cores, memory, trust, attestation rank, the runtimes any of them has), so that a bucket
 * none of whose nodes could take a task is skipped whole. Ceilings are raised as nodes enter or
 * gain room, and made exact again by a decision that walked the whole bucket (see placeTask), so a
 * task nothing fits stops costing a walk after its first.
 */
export interface Bucket extends Ceilings {
  readonly heap: SlotHeap<FleetEntry>;
  /** A lower bound of its nodes' `base`: the least ever added since the bucket was last empty. */
  baseFloor: number;
  /** The least factor in the heap (its root's), +Infinity when empty: kept by every change of the heap. */
  rootKey: number;
}

/** @internal */
export interface Ceilings {
  gpus: number;
  cores: number;
  memoryMiB: number;
  trust: number;
  attestationRank: number;
  runtimes: number;
}

export const tierCount = 5;

/** The least free-GPU count of each tier (what bounds the packing term of a bucket). */
export const tierFloorGpus: readonly number[] = [0, 1, 2, 4, 8];

/** The bucket tier of a free-GPU count: 0, 1, 2-3, 4-7, 8+. */
export function tierOf(freeGpus: number): number {
  if (freeGpus <= 0) return 0;
  if (freeGpus === 1) return 1;
  if (freeGpus < 4) return 2;
  if (freeGpus < 8) return 3;
  return 4;
}

/*
 * Room cells. A node with no free GPU can only take a task without GPUs, and for such a task free
 * cores and memory are what decide: the greedy fills the nodes of least factor first, so a heap
 * ordered by factor alone would put the nodes it has filled up (no cores left) in front of every
 * CPU-only decision (measured: ~330 nodes walked before the first fit at 100,000 nodes). So those
 * nodes sit in cells by free cores and free memory, one set of cells per accelerator class (the
 * class decides the run time; regions are checked per node): a task never looks at a cell whose
 * nodes all have fewer cores or less memory than it needs.
 */
const coreEdges: readonly number[] = [1, 2, 4, 8, 16];
const memoryEdgesMiB: readonly number[] = [2048, 8192, 16_384, 32_768, 65_536];
/** Levels per dimension (one more than edges): a level's nodes have at least its lower edge, less than its upper. */
export const roomLevels = 6;
export const roomCellCount = roomLevels * roomLevels;

function levelOf(value: number, edges: readonly number[]): number {
  let level = 0;
  while (level < edges.length && value >= (edges[level] as number)) level++;
  return level;
}

/** The least core level whose nodes may have `cores` free: every lower level's nodes have fewer. */
export const coreLevelOf = (cores: number): number => levelOf(cores, coreEdges);
export const memoryLevelOf = (memoryMiB: number): number => levelOf(memoryMiB, memoryEdgesMiB);

/** The room cell of a node's free cores and memory. */
export const roomCellOf = (freeCores: number, freeMemoryMiB: number): number =>
  coreLevelOf(freeCores) * roomLevels + memoryLevelOf(freeMemoryMiB);

const newBucket = (): Bucket =>
  resetCeilings({ heap: new SlotHeap<FleetEntry>(), baseFloor: 0, rootKey: Number.POSITIVE_INFINITY } as Bucket);

/** @internal */
export function resetCeilings<C extends Ceilings>(ceil: C): C {
  ceil.gpus = 0;
  ceil.cores = Number.NEGATIVE_INFINITY;
  ceil.memoryMiB = Number.NEGATIVE_INFINITY;
  ceil.trust = Number.NEGATIVE_INFINITY;
  ceil.attestationRank = 0;
  ceil.runtimes = 0;
  return ceil;
}

/** @internal */
export function raiseCeilings(ceil: Ceilings, entry: FleetEntry): void {
  if (entry.freeGpus > ceil.gpus) ceil.gpus = entry.freeGpus;
  if (entry.freeCores > ceil.cores) ceil.cores = entry.freeCores;
  if (entry.freeMemoryMiB > ceil.memoryMiB) ceil.memoryMiB = entry.freeMemoryMiB;
  if (entry.trust > ceil.trust) ceil.trust = entry.trust;
  if (entry.attestationRank > ceil.attestationRank) ceil.attestationRank = entry.attestationRank;
  ceil.runtimes |= entry.runtimes;
}

const containerBit = 1;
const processBit = 2;
/** Runtime bit sets a node may have (0 to 3): room cells are kept per class and set. */
export const runtimeKinds = 4;

/** Puts the node's slot into the bucket's heap, lowering its floor and raising its ceilings. */
function fileInto(bucket: Bucket, entry: FleetEntry, slot: HeapSlot<FleetEntry>): void {
  if (bucket.heap.size === 0) {
    bucket.baseFloor = entry.base;
    resetCeilings(bucket);
  } else if (entry.base < bucket.baseFloor) {
    bucket.baseFloor = entry.base;
  }
  raiseCeilings(bucket, entry);
  bucket.heap.push(slot);
  bucket.rootKey = bucket.heap.minKey();
}

/** The runtime bit a task needs (see `fitOnNode`: a container needs any runtime but `process`). */
export const runtimeBitOf = (req: TaskRequirements): number => (req.needsContainer ? containerBit : processBit);

/**
 * The fleet as placement sees it: every node with its free capacity, in buckets that let a
 * decision look at a few nodes instead of all of them. add, update, remove, reserve, release and
 * refreshPerformance cost O(log n) (a heap move per device group the node belongs to, usually
 * one); nothing here scans the fleet.
 *
 * The index is a cache of the store's truth, kept by its owner (a dispatcher, the simulator): it
 * answers "where would this task go", and the store's conditional claim still decides.
 */
export class FleetIndex {
  /** Every node, densely, for the full-scan baseline and for iteration. */
  readonly entries: FleetEntry[] = [];
  private readonly byId = new Map<string, FleetEntry>();
  private readonly groups = new Map<string, DeviceGroup>();
  private readonly groupList: DeviceGroup[] = [];
  private readonly classIds = new Map<string, number>();
  readonly classNames: string[] = [];
  /**
   * @internal Per class id and runtime bits (`classId * runtimeKinds + runtimes`), its room cells
   * (see {@link roomCellOf}): the nodes of that class and those runtimes with no free GPU.
   */
  readonly roomCells: Bucket[][] = [];
  private eligibleCache = new Map<string, DeviceGroup[]>();
  private eligibleByReq = new WeakMap<TaskRequirements, { generation: number; groups: DeviceGroup[] }>();
  private generation = 0;
  /** @internal Bumped when a group gains a class: placeTask's per-requirement class lists depend on it. */
  classVersion = 0;
  /**
   * @internal Least `base` and least `factor` any node has had (never raised): with a class's run
   * time they bound every node of the class, so placeTask need not look at a class that cannot win.
   */
  baseFloor = Number.POSITIVE_INFINITY;
  /** @internal */ factorFloor = Number.POSITIVE_INFINITY;
  private answeredEntry: FleetEntry | undefined;
  private answeredReq: TaskRequirements | undefined;
  private answeredGpus: readonly number[] | undefined;

  constructor(readonly perf: PerformanceView = neutralPerformance) {}

  get size(): number {
    return this.entries.length;
  }

  get(id: string): FleetEntry | undefined {
    return this.byId.get(id);
  }

  /** Adds the node, or replaces it (keeping nothing of the old entry) when its id is known. */
  add(node: FleetNode): FleetEntry {
    if (this.byId.has(node.id)) this.remove(node.id);
    const inventory = node.inventory;
    const first = inventory.gpus[0];
    const cls = first === undefined ? cpuClass : acceleratorClass(first);
    const entry: FleetEntry = {
      id: node.id,
      region: inventory.region,
      acceleratorClass: cls,
      pool: poolId(inventory.region, cls),
      inventory,
      attestation: node.attestation,
      trust: node.trust ?? 0,
      waitMs: node.waitMs ?? 0,
      held: [...(node.held ?? [])],
      totalGpus: inventory.gpus.length,
      freeGpus: 0,
      freeCores: 0,
      freeMemoryMiB: 0,
      runtimes:
        (inventory.runtimes.some((r) => r !== 'process') ? containerBit : 0) |
        (inventory.runtimes.includes('process') ? processBit : 0),
      attestationRank: node.attestation === undefined ? 0 : attestationRank(node.attestation.level),
      base: 0,
      factor: 0,
      classId: this.classIdOf(cls),
      tier: 0,
      cell: -1,
      cellSlot: { entry: undefined as unknown as FleetEntry, pos: -1 },
      slots: [],
      groups: [],
      denseAt: this.entries.length,
    };
    entry.cellSlot.entry = entry;
    this.recount(entry);
    this.readPerformance(entry);
    entry.tier = tierOf(entry.freeGpus);
    entry.cell = entry.tier === 0 ? roomCellOf(entry.freeCores, entry.freeMemoryMiB) : -1;
    for (const group of this.groupsOf(inventory, entry.runtimes)) {
      if (!group.classIds.includes(entry.classId)) {
        group.classIds.push(entry.classId);
        this.classVersion++;
      }
      entry.groups.push(group);
      entry.slots.push({ entry, pos: -1 });
    }
    this.enter(entry);
    this.entries.push(entry);
    this.byId.set(entry.id, entry);
    return entry;
  }

  /**
   * A node's record changed (inventory, attestation, trust, wait): re-files it, keeping what it
   * holds unless the update says otherwise.
   */
  update(node: FleetNode): FleetEntry {
    const old = this.byId.get(node.id);
    return this.add(old === undefined || node.held !== undefined ? node : { ...node, held: old.held });
  }

  remove(id: string): boolean {
    const entry = this.byId.get(id);
    if (entry === undefined) return false;
    this.leave(entry);
    const last = this.entries.pop() as FleetEntry;
    if (last !== entry) {
      this.entries[entry.denseAt] = last;
      last.denseAt = entry.denseAt;
    }
    this.byId.delete(id);
    return true;
  }

  /**
   * Holds the task's devices, cores and memory on the node (what a claim writes into the node's
   * `held`), or answers undefined when the node no longer fits. The devices are `checked` when
   * given (the placement's `gpuIndices`), else those placeTask last answered for this node and
   * requirement, when they still fit (`devicesFit`: a look at those devices only); else
   * `fitOnNode` chooses. Holding a task the node already holds answers its devices again.
   */
  reserve(
    nodeId: string,
    taskId: string,
    req: TaskRequirements,
    attempt = 1,
    checked?: readonly number[],
  ): number[] | undefined {
    const entry = this.byId.get(nodeId);
    if (entry === undefined) return undefined;
    for (const h of entry.held) if (h.taskId === taskId) return h.gpuIndices;
    let given = checked;
    if (given === undefined && this.answeredEntry === entry && this.answeredReq === req) given = this.answeredGpus;
    this.answeredEntry = undefined;
    this.answeredReq = undefined;
    this.answeredGpus = undefined;
    const gpuIndices =
      given !== undefined && devicesFit(req, entry.inventory, entry.held, given)
        ? [...given]
        : fitOnNode(req, entry.inventory, entry.held);
    if (gpuIndices === undefined) return undefined;
    const { cpuCores, memoryMiB } = demandOf(req);
    entry.held.push({ taskId, attempt, gpuIndices, cpuCores, memoryMiB });
    // Both pick free devices only, so the counts move by exactly the task's demand.
    this.afterHeldChange(entry, -gpuIndices.length, -cpuCores, -memoryMiB);
    return gpuIndices;
  }

  /**
   * @internal placeTask's answer, so that a `reserve` of it right after need not choose devices
   * again (reserve still checks them: a node that changed in between is re-fitted).
   */
  noteAnswer(entry: FleetEntry, req: TaskRequirements, gpuIndices: readonly number[]): void {
    this.answeredEntry = entry;
    this.answeredReq = req;
    this.answeredGpus = gpuIndices;
  }

  /** Gives back what the task held on the node; false when it held nothing there. */
  release(nodeId: string, taskId: string): boolean {
    const entry = this.byId.get(nodeId);
    if (entry === undefined) return false;
    let at = entry.held.length - 1;
    while (at >= 0 && (entry.held[at] as HeldTask).taskId !== taskId) at--;
    if (at < 0) return false;
    const gone = entry.held[at] as HeldTask;
    entry.held[at] = entry.held[entry.held.length - 1] as HeldTask;
    entry.held.pop();
    this.afterHeldChange(entry, gone.gpuIndices.length, gone.cpuCores, gone.memoryMiB);
    return true;
  }

  /** Re-reads the node's latency, slowdown and reliability from the view (after an outcome changed them). */
  refreshPerformance(nodeId: string): void {
    const entry = this.byId.get(nodeId);
    if (entry === undefined) return;
    this.readPerformance(entry);
    if (entry.tier === 0) {
      const cell = this.cellOf(entry);
      cell.heap.rekey(entry.cellSlot);
      cell.rootKey = cell.heap.minKey();
      if (entry.base < cell.baseFloor) cell.baseFloor = entry.base;
      return;
    }
    for (let i = 0; i < entry.slots.length; i++) {
      const group = entry.groups[i] as DeviceGroup;
      const bucket = group.buckets[entry.tier] as Bucket;
      bucket.heap.rekey(entry.slots[i] as HeapSlot<FleetEntry>);
      bucket.rootKey = bucket.heap.minKey();
      if (entry.base < bucket.baseFloor) bucket.baseFloor = entry.base;
    }
  }

  /** The node's wait changed (it polled, or will poll later): cheaper than a full update. */
  setWaitMs(nodeId: string, waitMs: number): void {
    const entry = this.byId.get(nodeId);
    if (entry === undefined) return;
    entry.waitMs = waitMs;
    this.refreshPerformance(nodeId);
  }

  /** @internal The class id of an accelerator class name (dense, for per-decision arrays). */
  classIdOf(cls: string): number {
    let id = this.classIds.get(cls);
    if (id === undefined) {
      id = this.classNames.length;
      this.classIds.set(cls, id);
      this.classNames.push(cls);
      for (let r = 0; r < runtimeKinds; r++) this.roomCells.push(Array.from({ length: roomCellCount }, newBucket));
    }
    return id;
  }

  /**
   * @internal The device groups a task may find a node in: region allowed, and, for a GPU task, a
   * device that meets its GPU requirement. Cached per requirement until a new group appears.
   */
  eligibleGroups(req: TaskRequirements): DeviceGroup[] {
    const cached = this.eligibleByReq.get(req);
    if (cached !== undefined && cached.generation === this.generation) return cached.groups;
    const g = req.gpus;
    const signature = `${runtimeBitOf(req)}|${g.count}|${g.vendor ?? ''}|${g.models?.join('\u0000') ?? ''}|${g.minVramMiB ?? ''}|${g.minComputeCapability ?? ''}|${req.regions?.join(',') ?? '*'}`;
    let groups = this.eligibleCache.get(signature);
    if (groups === undefined) {
      groups = this.groupList.filter(
        (group) =>
          (group.runtimes & runtimeBitOf(req)) !== 0 &&
          (req.regions === undefined || req.regions.includes(group.region)) &&
          (g.count === 0 || (group.device !== undefined && gpuMatches(g, group.device))),
      );
      this.eligibleCache.set(signature, groups);
    }
    this.eligibleByReq.set(req, { generation: this.generation, groups });
    return groups;
  }

  private readPerformance(entry: FleetEntry): void {
    entry.base = entry.waitMs + this.perf.latencyMs(entry.id);
    entry.factor = this.perf.slowdown(entry.id) / this.perf.reliability(entry.id);
    if (entry.base < this.baseFloor) this.baseFloor = entry.base;
    if (entry.factor < this.factorFloor) this.factorFloor = entry.factor;
  }

  private recount(entry: FleetEntry): void {
    const used = new Set<number>();
    let cores = 0;
    let memory = 0;
    for (const h of entry.held) {
      for (const index of h.gpuIndices) used.add(index);
      cores += h.cpuCores;
      memory += h.memoryMiB;
    }
    entry.freeGpus = entry.totalGpus - used.size;
    entry.freeCores = entry.inventory.cpu.cores - cores;
    entry.freeMemoryMiB = entry.inventory.memoryMiB - memory;
  }

  private afterHeldChange(entry: FleetEntry, gpus: number, cores: number, memoryMiB: number): void {
    entry.freeGpus += gpus;
    entry.freeCores += cores;
    entry.freeMemoryMiB += memoryMiB;
    const tier = tierOf(entry.freeGpus);
    const cell = tier === 0 ? roomCellOf(entry.freeCores, entry.freeMemoryMiB) : -1;
    if (tier === entry.tier && cell === entry.cell) {
      if (tier === 0) raiseCeilings(this.cellOf(entry), entry);
      else for (const group of entry.groups) raiseCeilings(group.buckets[tier] as Bucket, entry);
      return;
    }
    this.leave(entry);
    entry.tier = tier;
    entry.cell = cell;
    this.enter(entry);
  }

  private cellOf(entry: FleetEntry): Bucket {
    return (this.roomCells[entry.classId * runtimeKinds + entry.runtimes] as Bucket[])[entry.cell] as Bucket;
  }

  private enter(entry: FleetEntry): void {
    if (entry.tier === 0) {
      for (let i = 0; i < entry.slots.length; i++) {
        (entry.groups[i] as DeviceGroup).buckets[0].heap.push(entry.slots[i] as HeapSlot<FleetEntry>);
      }
      fileInto(this.cellOf(entry), entry, entry.cellSlot);
      return;
    }
    for (let i = 0; i < entry.slots.length; i++) {
      fileInto(
        (entry.groups[i] as DeviceGroup).buckets[entry.tier] as Bucket,
        entry,
        entry.slots[i] as HeapSlot<FleetEntry>,
      );
    }
  }

  private leave(entry: FleetEntry): void {
    if (entry.tier === 0) {
      for (let i = 0; i < entry.slots.length; i++) {
        (entry.groups[i] as DeviceGroup).buckets[0].heap.remove(entry.slots[i] as HeapSlot<FleetEntry>);
      }
      const cell = this.cellOf(entry);
      cell.heap.remove(entry.cellSlot);
      cell.rootKey = cell.heap.minKey();
      return;
    }
    for (let i = 0; i < entry.slots.length; i++) {
      const bucket = (entry.groups[i] as DeviceGroup).buckets[entry.tier] as Bucket;
      bucket.heap.remove(entry.slots[i] as HeapSlot<FleetEntry>);
      bucket.rootKey = bucket.heap.minKey();
    }
  }

  /** One group per distinct kind of device the node has (one for a node without GPUs). */
  private groupsOf(inventory: NodeInventory, runtimes: number): DeviceGroup[] {
    const at = `${inventory.region}|${runtimes}|`;
    if (inventory.gpus.length === 0) return [this.groupFor(at, inventory.region, runtimes, undefined)];
    const found: DeviceGroup[] = [];
    for (const gpu of inventory.gpus) {
      const key = `${at}${gpu.vendor}|${gpu.model}|${gpu.vramMiB}|${gpu.computeCapability ?? ''}`;
      const group = this.groupFor(key, inventory.region, runtimes, gpu);
      if (!found.includes(group)) found.push(group);
    }
    return found;
  }

  private groupFor(key: string, region: string, runtimes: number, device: GpuDevice | undefined): DeviceGroup {
    let group = this.groups.get(key);
    if (group === undefined) {
      group = {
        region,
        runtimes,
        device,
        buckets: [{ heap: new SlotList<FleetEntry>() }, ...Array.from({ length: tierCount - 1 }, newBucket)],
        classIds: [],
        visited: new Array(tierCount).fill(0),
      };
      this.groups.set(key, group);
      this.groupList.push(group);
      this.eligibleCache = new Map();
      this.generation++;
    }
    return group;
  }
}
