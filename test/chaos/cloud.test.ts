import { describe, expect, inject, it } from 'vitest';
import { runCloudChaos } from './cloud-run.js';
import { describeFailures } from './invariants.js';
import { jsonLine, table } from './report.js';

/**
 * The CI-sized chaos run over the cloud deployment (`npm run chaos -- --cloud --quick` is the same
 * with more jobs): the Lambda handlers in-process on the emulators, real agent processes, every
 * cloud fault injected at random moments (seed printed), DynamoDB and KMS throttled in bursts,
 * then the invariants checked over a scan of the table. Asserts outcomes, never timings.
 */

describe('chaos, cloud', () => {
  it('loses nothing, completes nothing twice, keeps every invariant and answers no 500 under throttling and faults', async () => {
    const seed = Number(process.env.GPUAI_CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
    const report = await runCloudChaos({
      endpoints: inject('awsEndpoints'),
      jobs: 16,
      seed,
      agents: 3,
      slots: 2,
      concurrency: 4,
      faultEveryMs: 2000,
      controlPlaneRestartEveryMs: 0,
      drainTimeoutMs: 240_000,
      progressEveryMs: 30_000,
      onProgress: (line) => process.stderr.write(`${line}\n`),
    });
    const summary = `seed ${seed}\n${table(report)}${jsonLine(report)}`;
    expect(report.jobs, summary).toBe(16);
    expect(report.lost, summary).toBe(0);
    expect(report.completedTwice, summary).toBe(0);
    expect(report.invariantsFailed, `${summary}\n${describeFailures(report.invariants)}`).toBe(0);
    // A throttle past the SDK's retries is a 503 with Retry-After; a 500 is a defect.
    expect(report.serverErrors, summary).toEqual([]);
    expect(report.agentExits, summary).toEqual([]);
    for (const kind of [
      'agent-sigkill',
      'duplicate-messages',
      'network-cut',
      'garbled-answers',
      'clock-skew',
      'rogue-node',
      'kms-throttle',
      'dynamodb-throttle',
    ]) {
      expect(report.faults[kind] ?? 0, `${kind}\n${summary}`).toBeGreaterThan(0);
    }
    expect(report.byKind['always-fails']?.completed ?? 0, summary).toBe(0);
    process.stderr.write(`${summary}\n`);
  }, 600_000);
});
