import { z } from 'zod';
import { parseRegionPolicy } from '../functions/domain/resource/pools.js';
import { attestationSettingsFromEnv } from '../functions/domain/security/attestation/env.js';
import type { AttestationSettings } from '../functions/domain/security/attestation/settings.js';
import { parseQuotas } from '../functions/domain/security/quotas.js';
import { parseRateLimits } from '../functions/domain/security/rate-limit.js';
import { settingMinimums, settingProblems } from '../functions/settings-rules.js';
import { Enrollment } from '../protocol/index.js';
import { parseAllowedHosts } from './host-check.js';

/**
 * The embedded deployment's timings and log format, read and validated once; a bad value stops
 * the start with the variable's name in the message. (`PORT`, `GPUAI_HOST` and `GPUAI_DATA_DIR`
 * are the defaults of `gpuai start`'s flags, read there.)
 */
const Env = z
  .object({
    GPUAI_LEASE_MS: z.coerce.number().int().min(settingMinimums.leaseMs).default(30_000),
    /** The heartbeat interval of a node without tasks; a node is unavailable after three missed. */
    GPUAI_HEARTBEAT_IDLE_MS: z.coerce.number().int().min(settingMinimums.heartbeatIdleMs).default(30_000),
    /** The heartbeat interval of a node holding leases (its beats extend them): below the lease. */
    GPUAI_HEARTBEAT_BUSY_MS: z.coerce.number().int().min(settingMinimums.heartbeatBusyMs).default(10_000),
    GPUAI_REAPER_INTERVAL_MS: z.coerce.number().int().min(50).default(1000),
    GPUAI_LOG_FORMAT: z.enum(['text', 'json']).default('text'),
    /** Host header values answered besides localhost's when bound to loopback (embedded/host-check.ts). */
    GPUAI_ALLOWED_HOSTS: z.string().optional().transform(parseAllowedHosts),
    /** Rate limits over the defaults, `scope=limit/seconds,...` (functions/domain/security/rate-limit.ts). */
    GPUAI_RATE_LIMITS: z
      .string()
      .optional()
      .transform((text, ctx) => {
        try {
          return parseRateLimits(text ?? '');
        } catch (error) {
          ctx.addIssue({ code: 'custom', message: (error as Error).message });
          return z.NEVER;
        }
      }),
    /** Per-tenant quotas over the defaults, `maxOpenTasks=<n>,gpuHoursPerDay=<n>` (functions/domain/security/quotas.ts). */
    GPUAI_QUOTAS: z
      .string()
      .optional()
      .transform((text, ctx) => {
        try {
          return parseQuotas(text ?? '');
        } catch (error) {
          ctx.addIssue({ code: 'custom', message: (error as Error).message });
          return z.NEVER;
        }
      }),
    /** `token` (default): agents other than the launcher's own need a join token; `open`: any agent may join. */
    GPUAI_ENROLLMENT: Enrollment.default('token'),
    /** A node unseen this long is removed and must enroll again (default 7 days). */
    GPUAI_NODE_EXPIRY_MS: z.coerce
      .number()
      .int()
      .min(settingMinimums.nodeExpiryMs)
      .default(7 * 24 * 3600_000),
    /** The regions nodes may report: comma-separated slugs, or `*` (default: the canonical list). */
    GPUAI_REGIONS: z
      .string()
      .refine((text) => parseRegionPolicy(text) !== undefined, 'must be * or comma-separated region slugs')
      .transform((text) => parseRegionPolicy(text) ?? '*')
      .optional(),
  })
  .superRefine((env, ctx) => {
    const timings = {
      leaseMs: env.GPUAI_LEASE_MS,
      heartbeatIdleMs: env.GPUAI_HEARTBEAT_IDLE_MS,
      heartbeatBusyMs: env.GPUAI_HEARTBEAT_BUSY_MS,
    };
    const names = {
      leaseMs: 'GPUAI_LEASE_MS',
      heartbeatIdleMs: 'GPUAI_HEARTBEAT_IDLE_MS',
      heartbeatBusyMs: 'GPUAI_HEARTBEAT_BUSY_MS',
    };
    for (const { name, message } of settingProblems(timings, names)) {
      ctx.addIssue({ code: 'custom', path: [name], message });
    }
  });
export type EmbeddedEnv = z.infer<typeof Env>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function readEnv(env: NodeJS.ProcessEnv = process.env): EmbeddedEnv {
  const parsed = Env.safeParse(env);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
  throw new ConfigError(`invalid environment: ${problems}`);
}

/** The attestation settings, `GPUAI_ATTESTATION_*`, `GPUAI_TPM_*`, `GPUAI_NVIDIA_*` (functions/domain/security/attestation/env.ts). */
export function readAttestationEnv(env: NodeJS.ProcessEnv = process.env): AttestationSettings {
  try {
    return attestationSettingsFromEnv(env);
  } catch (error) {
    throw new ConfigError(`invalid environment: ${(error as Error).message}`);
  }
}
