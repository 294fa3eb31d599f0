import type { Assignment, OpenedAssignment } from '../../protocol/index.js';
import type { ProbeReport } from '../probe/index.js';

/** A job id that matches the protocol pattern; tests vary the last character to tell jobs apart. */
export const testJobId = (suffix = 'K'): string => `job_01JD7Z5C2Q9W8V6T4R2P0N8M6${suffix}`;

/** A valid assignment running `command`, as the control plane sends it (no env: see sealed-env.test.ts). */
export function testAssignment(command: string[], overrides: Partial<Assignment> = {}): Assignment {
  const jobId = overrides.jobId ?? testJobId();
  const index = overrides.index ?? 0;
  return {
    taskId: `${jobId}.${index}`,
    jobId,
    index,
    taskCount: 1,
    attempt: 1,
    leaseExpiresAt: new Date(Date.now() + 60_000).toISOString(),
    leaseMs: 60_000,
    command,
    timeoutSeconds: 60,
    gpuIndices: [],
    ...overrides,
  };
}

/** An assignment as the runner gets it, once the agent has opened its sealed env in memory. */
export function testOpenedAssignment(command: string[], overrides: Partial<OpenedAssignment> = {}): OpenedAssignment {
  const { env = {}, ...rest } = overrides;
  const { sealedEnv: _sealed, ...assignment } = testAssignment(command, rest);
  return { ...assignment, env };
}

/** A fixed inventory, so agent tests do not depend on the machine running them. */
export function testProbe(): Promise<ProbeReport> {
  return Promise.resolve({
    inventory: {
      gpus: [{ index: 0, vendor: 'nvidia', model: 'NVIDIA L40S', vramMiB: 46068, uuid: 'GPU-test', driver: '595.80' }],
      cpu: { model: 'Test CPU', cores: 8 },
      memoryMiB: 32768,
      os: 'linux',
      arch: 'x64',
      runtimes: ['process'],
      region: 'local',
    },
    warnings: [],
  });
}
