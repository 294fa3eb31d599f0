/**
 * The checks every deployment makes of the control plane's settings before it starts, whatever
 * names its environment gives them (embedded/config.ts reads `GPUAI_LEASE_MS`,
 * functions/handlers/config.ts `LEASE_MS`), so the two cannot accept different timings.
 *
 * @module
 */

/** The smallest value each setting may take. */
export const settingMinimums = {
  leaseMs: 500,
  heartbeatIntervalMs: 100,
  nodeExpiryMs: 60_000,
} as const;

/** The settings checked against one another, and the name each has where it was read. */
export interface Timings {
  leaseMs: number;
  heartbeatIntervalMs: number;
}

/**
 * What is wrong with `timings` taken together (each on its own is bounded by
 * {@link settingMinimums}); each problem names the variable it is about, by `names`.
 *
 * @example
 * settingProblems({ leaseMs: 3000, heartbeatIntervalMs: 5000 }, { leaseMs: 'LEASE_MS', heartbeatIntervalMs: 'HEARTBEAT_MS' })
 * // [{ name: 'HEARTBEAT_MS', message: 'must be below LEASE_MS, or leases run out between heartbeats' }]
 */
export function settingProblems<Name extends string>(
  timings: Timings,
  names: Record<keyof Timings, Name>,
): { name: Name; message: string }[] {
  const problems: { name: Name; message: string }[] = [];
  if (timings.heartbeatIntervalMs >= timings.leaseMs) {
    problems.push({
      name: names.heartbeatIntervalMs,
      message: `must be below ${names.leaseMs}, or leases run out between heartbeats`,
    });
  }
  return problems;
}
