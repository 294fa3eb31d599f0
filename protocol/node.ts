import { z } from 'zod';
import { NodeAttestation } from './attestation.js';
import { NodeId, PageQuery, Region, Timestamp } from './common.js';
import { Dispatch } from './dispatch.js';
import { JoinTokenSecret, OperatorName } from './enrollment.js';
import { SealingPublicKey } from './sealing.js';

export const GpuVendor = z.enum(['nvidia', 'amd', 'intel', 'apple', 'other']).meta({ id: 'GpuVendor' });
export type GpuVendor = z.infer<typeof GpuVendor>;

export const GpuDevice = z
  .strictObject({
    index: z.int().min(0).max(255),
    vendor: GpuVendor,
    model: z.string().min(1).max(128).meta({ example: 'NVIDIA H100 80GB HBM3' }),
    vramMiB: z.int().min(0).max(16_777_216),
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

export const NodeInventory = z
  .strictObject({
    gpus: z.array(GpuDevice).max(64),
    cpu: z.strictObject({ model: z.string().max(128), cores: z.int().min(1).max(4096) }),
    memoryMiB: z.int().min(1),
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
