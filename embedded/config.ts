import { z } from 'zod';

/**
 * The embedded deployment's timings and log format, read and validated once; a bad value stops
 * the start with the variable's name in the message. (`PORT`, `GPUAI_HOST` and `GPUAI_DATA_DIR`
 * are the defaults of `gpuai start`'s flags, read there.)
 */
const Env = z.object({
  GPUAI_LEASE_MS: z.coerce.number().int().min(500).default(30_000),
  GPUAI_HEARTBEAT_MS: z.coerce.number().int().min(100).default(5000),
  GPUAI_REAPER_INTERVAL_MS: z.coerce.number().int().min(50).default(1000),
  GPUAI_LOG_FORMAT: z.enum(['text', 'json']).default('text'),
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
