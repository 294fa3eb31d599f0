import { resolve } from 'node:path';
import { readEnv } from './config.js';
import { startControlPlane } from './control-plane-server.js';
import { startLocalAgent } from './local-agent.js';
import { createLog } from './log.js';

export interface EmbeddedOptions {
  port: number;
  host: string;
  dataDir: string;
  /** Start one local edge agent with the process runtime. */
  agent: boolean;
  agentSlots: number;
  log: (line: string) => void;
}

/**
 * `npm start`: the whole product on one machine. The control plane serves the API and, unless
 * told not to, one local agent registers and runs submitted jobs right away. State lives in the
 * data dir, so a restart loses nothing.
 */
export async function startEmbedded(options: EmbeddedOptions): Promise<{ url: string; stop(): Promise<void> }> {
  const env = readEnv();
  const log = createLog({ json: env.GPUAI_LOG_FORMAT === 'json', write: options.log });
  const dataDir = resolve(options.dataDir);
  const cp = await startControlPlane({
    port: options.port,
    host: options.host,
    dataDir,
    settings: {
      leaseMs: env.GPUAI_LEASE_MS,
      heartbeatIntervalMs: env.GPUAI_HEARTBEAT_MS,
      rateLimits: env.GPUAI_RATE_LIMITS,
    },
    reaperIntervalMs: env.GPUAI_REAPER_INTERVAL_MS,
    log,
    allowedHosts: env.GPUAI_ALLOWED_HOSTS,
  });
  log({ msg: 'control plane listening', url: cp.url, dataDir });
  const agent = options.agent
    ? startLocalAgent({ api: cp.url, dataDir: resolve(dataDir, 'agent'), slots: options.agentSlots, log })
    : undefined;
  return {
    url: cp.url,
    async stop() {
      await agent?.stop();
      await cp.stop();
    },
  };
}
