import { describe, expect, it } from 'vitest';
import { maxReportedLatencyMs } from '../protocol/index.js';
import { latencyReportEveryMs, RoundTrips } from './round-trips.js';

describe('RoundTrips', () => {
  it('reports nothing before a measurement, then the first at once and the next a period after the last taken', () => {
    const trips = new RoundTrips();
    expect(trips.due(0)).toBeUndefined();
    trips.observe(40);
    expect(trips.due(0)).toBe(40);
    // Not taken yet (the beat failed): still due.
    expect(trips.due(1000)).toBe(40);
    trips.reported(1000);
    trips.observe(90);
    expect(trips.due(1000 + latencyReportEveryMs - 1)).toBeUndefined();
    // Smoothed: one slow answer moves it a fifth of the way.
    expect(trips.due(1000 + latencyReportEveryMs)).toBe(50);
  });

  it('keeps its reports within the protocol bounds and ignores what is no duration', () => {
    const trips = new RoundTrips();
    trips.observe(Number.NaN);
    trips.observe(-3);
    expect(trips.due(0)).toBeUndefined();
    trips.observe(0.2);
    expect(trips.due(0)).toBe(1);
    const slow = new RoundTrips();
    slow.observe(10 * maxReportedLatencyMs);
    expect(slow.due(0)).toBe(maxReportedLatencyMs);
  });
});
