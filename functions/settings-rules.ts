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
  heartbeatIdleMs: 100,
  heartbeatBusyMs: 100,
  nodeExpiryMs: 60_000,
} as const;

/** The settings checked against one another, and the name each has where it was read. */
export interface Timings {
  leaseMs: number;
  heartbeatIdleMs: number;
  heartbeatBusyMs: number;
}

/**
 * What is wrong with `timings` taken together (each on its own is bounded by
 * {@link settingMinimums}); each problem names the variable it is about, by `names`. Only the busy
 * interval must be below the lease: a node beats at once when it takes a task, and from then on at
 * the busy interval, so the idle interval may be longer than a lease.
 *
 * @example
 * settingProblems(
 *   { leaseMs: 3000, heartbeatIdleMs: 30000, heartbeatBusyMs: 5000 },
 *   { leaseMs: 'LEASE_MS', heartbeatIdleMs: 'HEARTBEAT_IDLE_MS', heartbeatBusyMs: 'HEARTBEAT_BUSY_MS' },
 * )
 * // [{ name: 'HEARTBEAT_BUSY_MS', message: 'must be below LEASE_MS, or leases run out between heartbeats' }]
 */
export function settingProblems<Name extends string>(
  timings: Timings,
  names: Record<keyof Timings, Name>,
): { name: Name; message: string }[] {
  const problems: { name: Name; message: string }[] = [];
  if (timings.heartbeatBusyMs >= timings.leaseMs) {
    problems.push({
      name: names.heartbeatBusyMs,
      message: `must be below ${names.leaseMs}, or leases run out between heartbeats`,
    });
  }
  if (timings.heartbeatBusyMs > timings.heartbeatIdleMs) {
    problems.push({
      name: names.heartbeatBusyMs,
      message: `must not be above ${names.heartbeatIdleMs}: a node holding leases beats at least as often as an idle one`,
    });
  }
  return problems;
}
