import { describe, expect, it } from 'vitest';
import { runEmbeddedChaos } from './embedded-run.js';
import { describeFailures } from './invariants.js';
import { jsonLine, table } from './report.js';

/**
 * The CI-sized chaos run (`npm run chaos -- --quick` is the same with more jobs): the embedded
 * control plane and agents as real processes, every embedded fault injected at random moments
 * (seed printed), then the invariants checked over the whole SQLite state. It asserts outcomes,
 * never timings: on a loaded machine the run is slower, not different.
 */

describe('chaos, embedded', () => {
  it('loses nothing, completes nothing twice and keeps every invariant under injected faults', async () => {
    const seed = Number(process.env.GPUAI_CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
    const report = await runEmbeddedChaos({
      jobs: 60,
      seed,
      agents: 3,
      slots: 2,
      concurrency: 6,
      faultEveryMs: 1500,
      controlPlaneRestartEveryMs: 20_000,
      drainTimeoutMs: 300_000,
      progressEveryMs: 30_000,
    });
    const summary = `seed ${seed}\n${table(report)}${jsonLine(report)}`;
    expect(report.jobs, summary).toBe(60);
    expect(report.lost, summary).toBe(0);
    expect(report.completedTwice, summary).toBe(0);
    expect(report.invariantsFailed, `${summary}\n${describeFailures(report.invariants)}`).toBe(0);
    expect(report.serverErrors, summary).toEqual([]);
    // Every kind of fault was injected at least once (disk-full only where a tmpfs can be mounted).
    for (const kind of [
      'agent-sigkill',
      'duplicate-messages',
      'network-cut',
      'garbled-answers',
      'clock-skew',
      'rogue-node',
    ]) {
      expect(report.faults[kind] ?? 0, `${kind}\n${summary}`).toBeGreaterThan(0);
    }
    // Jobs that always fail never succeed; the rest mostly do (a job may legitimately exhaust its budget).
    expect(report.byKind['always-fails']?.completed ?? 0, summary).toBe(0);
  }, 900_000);
});
