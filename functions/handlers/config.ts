/**
 * The cloud deployment's composition root: reads the Lambda environment once, validates it, and
 * wires the AWS adapters into a control plane once per cold start. Every handler takes its
 * control plane from here; nothing else in `functions/` picks an adapter.
 *
 * @module
 */
import { z } from 'zod';
import { Enrollment } from '../../protocol/index.js';
import { awsClients } from '../adapters/aws/clients.js';
import { DynamoDbStore } from '../adapters/aws/dynamodb-store.js';
import { KmsKeys } from '../adapters/aws/kms-keys.js';
import { SqsQueue } from '../adapters/aws/sqs-queue.js';
import { SqsWorkHints } from '../adapters/aws/sqs-work-hints.js';
import { StsCredentialIssuer } from '../adapters/aws/sts-credentials.js';
import { noCredentials, SignalWorkHints } from '../adapters/embedded/signal-work-hints.js';
import {
  type ControlPlane,
  type ControlPlaneSettings,
  createControlPlane,
  defaultSettings,
  type Ports,
} from '../control-plane.js';
import { parseRegionPolicy } from '../domain/resource/pools.js';
import { attestationEnvGiven, attestationSettingsFromEnv } from '../domain/security/attestation/env.js';
import { parseQuotas } from '../domain/security/quotas.js';
import { parseRateLimits } from '../domain/security/rate-limit.js';
import { systemClock } from '../ports/clock.js';
import { settingMinimums, settingProblems } from '../settings-rules.js';
import { queueDefinitions } from '../workers/queues.js';
import { PollingSignal } from './polling-signal.js';
import { log } from './runtime.js';

/** `QUEUE_URLS`: a JSON object from each queue's name (dead-letter queues included) to its URL. */
const QueueUrls = z
  .string()
  .transform((text, ctx) => {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      ctx.addIssue({ code: 'custom', message: 'is not JSON' });
      return z.NEVER;
    }
  })
  .pipe(z.record(z.string().min(1), z.url()));

/**
 * The variables the CDK stack sets on every function (AWS_REGION comes from Lambda itself).
 * The endpoint overrides point the SDK clients at emulators in tests and are never set in AWS.
 */
const Env = z
  .object({
    AWS_REGION: z.string().min(1),
    TABLE_NAME: z.string().min(1),
    QUEUE_URLS: QueueUrls,
    KEY_ID: z.string().min(1),
    LEASE_MS: z.coerce.number().int().min(settingMinimums.leaseMs),
    /** The heartbeat interval of a node without tasks; liveness is three of them. */
    HEARTBEAT_IDLE_MS: z.coerce.number().int().min(settingMinimums.heartbeatIdleMs),
    /** The heartbeat interval of a node holding leases: below LEASE_MS. */
    HEARTBEAT_BUSY_MS: z.coerce.number().int().min(settingMinimums.heartbeatBusyMs),
    /** How often a waiting long poll re-reads its pools: in Lambda nothing else wakes it. */
    RECHECK_MS: z.coerce.number().int().min(100).optional(),
    GPUAI_DYNAMODB_ENDPOINT: z.url().optional(),
    GPUAI_SQS_ENDPOINT: z.url().optional(),
    GPUAI_KMS_ENDPOINT: z.url().optional(),
    GPUAI_STS_ENDPOINT: z.url().optional(),
    /**
     * How nodes learn of work: the API's long poll, or their pools' SQS queues (docs/cost-model.md).
     * Required, with no default of its own: the stack sets it on every function from the one default
     * (infra/context.ts `gpuai:dispatch`), and a second default here once disagreed with that one.
     */
    DISPATCH_MODE: z.enum(['long-poll', 'sqs']),
    /** Starts every pool queue's name; required in `sqs` mode. */
    POOL_QUEUE_PREFIX: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,64}$/)
      .optional(),
    /** The role whose session, narrowed to a node's pool queues, becomes that node's credentials; required in `sqs` mode. */
    NODE_ROLE_ARN: z.string().startsWith('arn:').optional(),
    /** How nodes join: `token` (default), or `open` to admit nodes without a join token. */
    GPUAI_ENROLLMENT: Enrollment.optional(),
    /** A node unseen this long is removed and must enroll again (default 7 days). */
    NODE_EXPIRY_MS: z.coerce.number().int().min(settingMinimums.nodeExpiryMs).optional(),
    /** The regions nodes may report: comma-separated slugs, or `*` (default: the canonical list). */
    NODE_REGIONS: z
      .string()
      .refine((text) => parseRegionPolicy(text) !== undefined, 'must be * or comma-separated region slugs')
      .transform((text) => parseRegionPolicy(text) ?? '*')
      .optional(),
    /** Rate limits over the defaults, `scope=limit/seconds,...` (functions/domain/security/rate-limit.ts). */
    RATE_LIMITS: z
      .string()
      .optional()
      .transform((text, ctx) => {
        if (text === undefined) return undefined;
        try {
          return parseRateLimits(text);
        } catch (error) {
          ctx.addIssue({ code: 'custom', message: (error as Error).message });
          return z.NEVER;
        }
      }),
    /** Per-tenant quotas over the defaults, `maxOpenTasks=<n>,gpuHoursPerDay=<n>` (functions/domain/security/quotas.ts). */
    QUOTAS: z
      .string()
      .optional()
      .transform((text, ctx) => {
        if (text === undefined) return undefined;
        try {
          return parseQuotas(text);
        } catch (error) {
          ctx.addIssue({ code: 'custom', message: (error as Error).message });
          return z.NEVER;
        }
      }),
  })
  .superRefine((env, ctx) => {
    const timings = {
      leaseMs: env.LEASE_MS,
      heartbeatIdleMs: env.HEARTBEAT_IDLE_MS,
      heartbeatBusyMs: env.HEARTBEAT_BUSY_MS,
    };
    for (const { name, message } of settingProblems(timings, {
      leaseMs: 'LEASE_MS',
      heartbeatIdleMs: 'HEARTBEAT_IDLE_MS',
      heartbeatBusyMs: 'HEARTBEAT_BUSY_MS',
    })) {
      ctx.addIssue({ code: 'custom', path: [name], message });
    }
  })
  .refine((env) => env.DISPATCH_MODE !== 'sqs' || env.POOL_QUEUE_PREFIX !== undefined, {
    path: ['POOL_QUEUE_PREFIX'],
    message: 'is required when DISPATCH_MODE is sqs',
  })
  .refine((env) => env.DISPATCH_MODE !== 'sqs' || env.NODE_ROLE_ARN !== undefined, {
    path: ['NODE_ROLE_ARN'],
    message: 'is required when DISPATCH_MODE is sqs',
  });

/** The validated Lambda environment. */
export interface LambdaConfig {
  region: string;
  tableName: string;
  queueUrls: Record<string, string>;
  /** The symmetric KMS key that wraps each job's data key. */
  keyId: string;
  settings: Partial<ControlPlaneSettings>;
  endpoints: { dynamodb?: string; sqs?: string; kms?: string; sts?: string };
  /** How nodes learn of work; `sqs` names the pool queues' prefix and the nodes' role. */
  dispatch: { mode: 'long-poll' } | { mode: 'sqs'; poolQueuePrefix: string; nodeRoleArn: string };
}

/** The Lambda environment is missing a variable or holds a bad value; the message names each one. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * Validates the Lambda environment. An empty variable counts as unset.
 *
 * @throws {@link ConfigError} naming every missing or invalid variable.
 */
export function readConfig(env: NodeJS.ProcessEnv = process.env): LambdaConfig {
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== ''));
  const parsed = Env.safeParse(present);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const name = String(issue.path[0] ?? 'environment');
      return present[name] === undefined ? `${name} is not set` : `${issue.path.join('.')}: ${issue.message}`;
    });
    throw new ConfigError(`invalid Lambda environment: ${problems.join('; ')}`);
  }
  const e = parsed.data;
  let attestation: Partial<ControlPlaneSettings> = {};
  try {
    if (attestationEnvGiven(present)) attestation = { attestation: attestationSettingsFromEnv(present) };
  } catch (error) {
    throw new ConfigError(`invalid Lambda environment: ${(error as Error).message}`);
  }
  const endpoint = (service: 'dynamodb' | 'sqs' | 'kms' | 'sts', url: string | undefined) =>
    url === undefined ? {} : { [service]: url };
  return {
    region: e.AWS_REGION,
    tableName: e.TABLE_NAME,
    queueUrls: e.QUEUE_URLS,
    keyId: e.KEY_ID,
    settings: {
      leaseMs: e.LEASE_MS,
      heartbeatIdleMs: e.HEARTBEAT_IDLE_MS,
      heartbeatBusyMs: e.HEARTBEAT_BUSY_MS,
      ...attestation,
      ...(e.RECHECK_MS === undefined ? {} : { recheckMs: e.RECHECK_MS }),
      ...(e.GPUAI_ENROLLMENT === undefined ? {} : { enrollment: e.GPUAI_ENROLLMENT }),
      ...(e.NODE_EXPIRY_MS === undefined ? {} : { nodeExpiryMs: e.NODE_EXPIRY_MS }),
      ...(e.NODE_REGIONS === undefined ? {} : { regions: e.NODE_REGIONS }),
      ...(e.RATE_LIMITS === undefined ? {} : { rateLimits: e.RATE_LIMITS }),
      ...(e.QUOTAS === undefined ? {} : { quotas: e.QUOTAS }),
    },
    endpoints: {
      ...endpoint('dynamodb', e.GPUAI_DYNAMODB_ENDPOINT),
      ...endpoint('sqs', e.GPUAI_SQS_ENDPOINT),
      ...endpoint('kms', e.GPUAI_KMS_ENDPOINT),
      ...endpoint('sts', e.GPUAI_STS_ENDPOINT),
    },
    dispatch:
      e.DISPATCH_MODE === 'sqs' && e.POOL_QUEUE_PREFIX !== undefined && e.NODE_ROLE_ARN !== undefined
        ? { mode: 'sqs', poolQueuePrefix: e.POOL_QUEUE_PREFIX, nodeRoleArn: e.NODE_ROLE_ARN }
        : { mode: 'long-poll' },
  };
}

/**
 * `GPUAI_OIDC_TENANT_CLAIM`: the claim of a token validated by API Gateway's JWT authorizer that
 * names the caller's tenant (default `sub`). Read apart from {@link readConfig} because only the
 * API function uses it (functions/http/auth.ts maps the claims).
 *
 * @throws {@link ConfigError} when the name is not a plausible claim name.
 */
export function readOidcOptions(env: NodeJS.ProcessEnv = process.env): { tenantClaim: string } {
  const raw = env.GPUAI_OIDC_TENANT_CLAIM || 'sub';
  if (!/^[A-Za-z0-9_:./-]{1,128}$/.test(raw)) {
    throw new ConfigError(`invalid Lambda environment: GPUAI_OIDC_TENANT_CLAIM: "${raw}" is not a claim name`);
  }
  return { tenantClaim: raw };
}

/** The ports and the control plane of one Lambda sandbox. */
export interface CloudDeployment {
  ports: Ports;
  cp: ControlPlane;
}

/**
 * Wires the AWS adapters over SDK clients that use the Lambda role's credentials (or, with the
 * endpoint overrides, whatever the SDK's default chain finds, such as emulator credentials).
 */
export function createCloudDeployment(config: LambdaConfig): CloudDeployment {
  const clients = awsClients({ region: config.region, endpoints: config.endpoints });
  const ports: Ports = {
    store: new DynamoDbStore(clients.dynamodb, config.tableName, systemClock),
    queue: new SqsQueue(clients.sqs, config.queueUrls, queueDefinitions),
    keys: new KmsKeys(clients.kms, config.keyId),
    clock: systemClock,
    signal: new PollingSignal(),
    ...dispatchPorts(config, clients),
    log,
  };
  // A cold start counts as a restart, so the reaper's first tick in a new sandbox (after a deploy,
  // say) leaves leases alone for one lease period: an expiry is delayed by at most that, and agents
  // get the same grace through a deploy as through an embedded restart.
  return { ports, cp: createControlPlane(ports, defaultSettings(systemClock.now(), config.settings)) };
}

/** The work hints and node credentials of the configured dispatch mode. */
function dispatchPorts(
  config: LambdaConfig,
  clients: ReturnType<typeof awsClients>,
): Pick<Ports, 'hints' | 'credentials'> {
  if (config.dispatch.mode === 'long-poll') return { hints: new SignalWorkHints(), credentials: noCredentials };
  return {
    hints: new SqsWorkHints(clients.sqs, {
      prefix: config.dispatch.poolQueuePrefix,
      region: config.region,
      ...(config.endpoints.sqs === undefined ? {} : { endpoint: config.endpoints.sqs }),
    }),
    credentials: new StsCredentialIssuer(clients.sts, config.dispatch.nodeRoleArn),
  };
}

let deployment: CloudDeployment | undefined;

/**
 * This sandbox's deployment, built from `process.env` on first use and kept for the sandbox's
 * life, so SDK clients and their connections are reused across invocations. Tests set the
 * environment before the first call (or before importing a handler, which calls it at load).
 *
 * @throws {@link ConfigError} when the environment is incomplete.
 */
export function cloudDeployment(): CloudDeployment {
  deployment ??= createCloudDeployment(readConfig());
  return deployment;
}

/** The control plane of {@link cloudDeployment}. */
export function controlPlane(): ControlPlane {
  return cloudDeployment().cp;
}
