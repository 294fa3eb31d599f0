import { z } from 'zod';
import { NodeAttestation } from './attestation.js';
import { NodeId, PageQuery, Region, Timestamp } from './common.js';
import { Dispatch } from './dispatch.js';
import { JoinTokenSecret, OperatorName } from './enrollment.js';
import { SealingPublicKey } from './sealing.js';

/**
 * Upper bounds on what a node may claim to have. A node describes its own hardware and placement
 * takes it at its word, so an inventory beyond any real machine (2^53 MiB of memory) would make a
 * node look able to take every task. The bounds sit above the largest machines sold today (about
 * 32 TiB of memory in one host, 288-512 GiB of memory on one accelerator, a few thousand logical
 * CPUs), so no real node is refused: docs/security.md.
 */
export const inventoryLimits = {
  /** 64 TiB of host memory. */
  maxMemoryMiB: 67_108_864,
  /** 1 TiB of memory on one device (unified-memory machines report their whole memory). */
  maxVramMiB: 1_048_576,
  /** Logical CPUs. */
  maxCpuCores: 4096,
  maxGpus: 64,
} as const;

export const GpuVendor = z.enum(['nvidia', 'amd', 'intel', 'apple', 'other']).meta({ id: 'GpuVendor' });
export type GpuVendor = z.infer<typeof GpuVendor>;

export const GpuDevice = z
  .strictObject({
    index: z.int().min(0).max(255),
    vendor: GpuVendor,
    model: z.string().min(1).max(128).meta({ example: 'NVIDIA H100 80GB HBM3' }),
    vramMiB: z.int().min(0).max(inventoryLimits.maxVramMiB),
    uuid: z.string().min(1).max(128),
    driver: z.string().max(64).optional(),
    computeCapability: z
      .string()
      .regex(/^\d{1,2}\.\d{1,2}$/)
      .optional()
      .meta({ description: 'NVIDIA compute capability, e.g. 9.0.' }),
    gfxArch: z
      .string()
      .regex(/^gfx[0-9a-f]{2,6}$/)
      .optional()
      .meta({ description: 'AMD ROCm architecture, e.g. gfx942.' }),
  })
  .meta({ id: 'GpuDevice' });
export type GpuDevice = z.infer<typeof GpuDevice>;

export const Runtime = z.enum(['process', 'docker', 'podman', 'kubernetes']).meta({ id: 'Runtime' });
export type Runtime = z.infer<typeof Runtime>;

/**
 * A node's devices: each GPU once. Placement hands out GPUs by index and the agent pins a task to
 * them by UUID, so two devices with one index (or one UUID) would let one GPU go to several tasks,
 * or a task be given the same GPU eight times over.
 */
const GpuDevices = z
  .array(GpuDevice)
  .max(inventoryLimits.maxGpus)
  .superRefine((gpus, ctx) => {
    const indices = new Map<number, number>();
    const uuids = new Map<string, number>();
    gpus.forEach((gpu, i) => {
      const sameIndex = indices.get(gpu.index);
      if (sameIndex === undefined) indices.set(gpu.index, i);
      else {
        ctx.addIssue({
          code: 'custom',
          path: [i, 'index'],
          message: `duplicate GPU index ${gpu.index} (gpus[${sameIndex}] has it): each device is listed once`,
        });
      }
      const sameUuid = uuids.get(gpu.uuid);
      if (sameUuid === undefined) uuids.set(gpu.uuid, i);
      else {
        ctx.addIssue({
          code: 'custom',
          path: [i, 'uuid'],
          message: `duplicate GPU uuid ${JSON.stringify(gpu.uuid)} (gpus[${sameUuid}] has it): each device is listed once`,
        });
      }
    });
  });

/**
 * What a node registers (and re-registers with: registration is the only way an inventory enters).
 * Self-consistent (each GPU once) and bounded ({@link inventoryLimits}), else 400 naming the field.
 */
export const NodeInventory = z
  .strictObject({
    gpus: GpuDevices,
    cpu: z.strictObject({ model: z.string().max(128), cores: z.int().min(1).max(inventoryLimits.maxCpuCores) }),
    memoryMiB: z.int().min(1).max(inventoryLimits.maxMemoryMiB),
    os: z.enum(['linux', 'windows', 'darwin', 'other']),
    osVersion: z.string().max(128).optional(),
    arch: z.enum(['x64', 'arm64', 'other']),
    runtimes: z.array(Runtime).min(1).max(4),
    region: Region,
  })
  .meta({ id: 'NodeInventory' });
export type NodeInventory = z.infer<typeof NodeInventory>;

/** Raw 32-byte Ed25519 public key, base64url without padding. */
export const PublicKey = z
  .string()
  .regex(/^[A-Za-z0-9_-]{43}$/)
  .meta({ id: 'PublicKey' });

export const RegisterNodeRequest = z
  .strictObject({
    publicKey: PublicKey,
    name: z.string().min(1).max(64).optional(),
    agentVersion: z.string().min(1).max(32),
    inventory: NodeInventory,
    /** Required for a node's first registration unless the deployment's enrollment is open. */
    joinToken: JoinTokenSecret.optional(),
    /**
     * The node's X25519 key that jobs' data keys are sealed to at dispatch (HPKE). Bound to the
     * node's identity by the Ed25519 signature over this request. A node without one receives no
     * job that carries env secrets.
     */
    sealingKey: SealingPublicKey.optional(),
  })
  .meta({ id: 'RegisterNodeRequest' });
export type RegisterNodeRequest = z.infer<typeof RegisterNodeRequest>;

export const NodeStatus = z.enum(['live', 'unavailable']).meta({ id: 'NodeStatus' });

/** `GET /v1/nodes`: a page, optionally only the nodes of one status (filtered within the page, so a page may come back short). */
export const NodeListQuery = PageQuery.extend({
  status: NodeStatus.optional().meta({
    description:
      'Only nodes of this status. Filtered within each page of the list, so a page may hold fewer than `limit` nodes (even none) and still carry a cursor; the cursor resumes only a list with the same status.',
  }),
});

export const NodeView = z
  .object({
    id: NodeId,
    name: z.string(),
    publicKey: PublicKey,
    agentVersion: z.string(),
    inventory: NodeInventory,
    pools: z.array(z.string()),
    operator: OperatorName.meta({
      description: "The operator whose join token enrolled the node; 'anonymous' under open enrollment.",
    }),
    status: NodeStatus,
    attestation: NodeAttestation.optional().meta({
      description: 'The attestation level this node has proved and until when; `none` once expired.',
    }),
    registeredAt: Timestamp,
    lastSeenAt: Timestamp,
    stats: z.object({
      tasksCompleted: z.int(),
      tasksFailed: z.int(),
      leasesLost: z.int(),
    }),
  })
  .meta({ id: 'Node' });
export type NodeView = z.infer<typeof NodeView>;

export const RegisterNodeResponse = z
  .object({
    node: NodeView,
    heartbeatIntervalMs: z.int().meta({
      description: 'The idle heartbeat interval; a node beats at once when it takes a task, then as each answer says.',
    }),
    progressIntervalMs: z.int().optional().meta({
      description: 'How often a running task is worth a progress report; absent from older control planes.',
    }),
    leaseMs: z.int(),
    dispatch: Dispatch.default({ mode: 'long-poll' }),
  })
  .meta({ id: 'RegisterNodeResponse' });
export type RegisterNodeResponse = z.infer<typeof RegisterNodeResponse>;

/** A page of nodes: the node list is sharded, so a page runs shard by shard, oldest registration first within one. */
export const NodeList = z.object({ nodes: z.array(NodeView), cursor: z.string().optional() }).meta({ id: 'NodeList' });
export type NodeList = z.infer<typeof NodeList>;
