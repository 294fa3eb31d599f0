import { z } from 'zod';

/**
 * The embedded deployment's environment, read and validated once. A bad value stops the start
 * with the variable's name in the message.
 */
const Env = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(8787),
  GPUAI_HOST: z.string().min(1).default('127.0.0.1'),
  GPUAI_DATA_DIR: z.string().min(1).default('.gpuai'),
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
