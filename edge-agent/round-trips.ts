import { maxReportedLatencyMs } from '../protocol/index.js';

/** How often a heartbeat carries the round trip: each report costs the control plane a store write. */
export const latencyReportEveryMs = 5 * 60_000;

/** Share of a new round trip in the smoothed value: a one-off slow answer moves it a fifth of the way. */
const smoothingRate = 0.2;

/**
 * The node's round trip to the control plane, as its client measures its own requests (a
 * heartbeat, a report, a claim: never a long poll, whose answer waits for work), smoothed, and
 * reported in a heartbeat now and then. The control plane learns the node's latency from it
 * (performance-record.ts), which routing and placement weigh; without it every node has the prior.
 *
 * @example
 *   const trips = new RoundTrips();
 *   trips.observe(42);
 *   const latencyMs = trips.due(performance.now()); // 42: the first report is due at once
 *   // ... the heartbeat carrying it is answered:
 *   trips.reported(performance.now());
 */
export class RoundTrips {
  private smoothed: number | undefined;
  private lastReportedAt: number | undefined;

  constructor(private readonly reportEveryMs = latencyReportEveryMs) {}

  /** One request's round trip, ms (a monotonic clock's difference). */
  observe(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return;
    this.smoothed = this.smoothed === undefined ? ms : this.smoothed + smoothingRate * (ms - this.smoothed);
  }

  /**
   * What the next heartbeat reports, in the protocol's bounds: nothing before the first
   * measurement or within {@link latencyReportEveryMs} of the last report the control plane took.
   */
  due(now: number): number | undefined {
    if (this.smoothed === undefined) return undefined;
    if (this.lastReportedAt !== undefined && now - this.lastReportedAt < this.reportEveryMs) return undefined;
    return Math.min(maxReportedLatencyMs, Math.max(1, Math.round(this.smoothed)));
  }

  /** A heartbeat carrying {@link due}'s value was answered: the next report waits a period. */
  reported(now: number): void {
    this.lastReportedAt = now;
  }
}
