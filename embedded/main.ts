import { resolve } from 'node:path';
import type { JoinTokens } from '../functions/domain/resource/join-tokens.js';
import { readAttestationEnv, readEnv } from './config.js';
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

/** The operator of the launcher's own agent. */
export const localOperator = 'local';

/**
 * A join token for the launcher's own agent: one use, valid for an hour, for the `local` region's
 * pools. The agent enrolls with it on its first start and re-registers with its key alone after
 * that (an agent restart, a launcher restart), so an unused or used-up token is harmless; it is
 * handed over by environment, never on a command line that `ps` shows.
 */
export async function localJoinToken(joinTokens: JoinTokens): Promise<string> {
  const { secret } = await joinTokens.create({
    operator: localOperator,
    pools: ['local/*'],
    ttlSeconds: 3600,
    maxUses: 1,
    description: 'the embedded launcher’s own agent',
  });
  return secret;
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
      heartbeatIdleMs: env.GPUAI_HEARTBEAT_IDLE_MS,
      heartbeatBusyMs: env.GPUAI_HEARTBEAT_BUSY_MS,
      attestation: readAttestationEnv(),
      enrollment: env.GPUAI_ENROLLMENT,
      nodeExpiryMs: env.GPUAI_NODE_EXPIRY_MS,
      ...(env.GPUAI_REGIONS === undefined ? {} : { regions: env.GPUAI_REGIONS }),
      rateLimits: env.GPUAI_RATE_LIMITS,
      quotas: env.GPUAI_QUOTAS,
    },
    reaperIntervalMs: env.GPUAI_REAPER_INTERVAL_MS,
    log,
    allowedHosts: env.GPUAI_ALLOWED_HOSTS,
  });
  log({ msg: 'control plane listening', url: cp.url, dataDir });
  let agent: { stop(): Promise<void> } | undefined;
  try {
    if (options.agent) {
      const joinToken = await localJoinToken(cp.joinTokens);
      agent = startLocalAgent({
        api: cp.url,
        dataDir: resolve(dataDir, 'agent'),
        slots: options.agentSlots,
        joinToken,
        log,
      });
    }
  } catch (error) {
    // Half a start would keep the process alive with nobody to stop it.
    await cp.stop();
    throw error;
  }
  return {
    url: cp.url,
    async stop() {
      await agent?.stop();
      await cp.stop();
    },
  };
}
