import {
  OnlinePerformance,
  type PerformanceView,
  performancePriors,
} from '../../functions/domain/scheduling/performance.js';

/**
 * What the simulator tells the estimates after every attempt, and the view placement reads.
 * {@link ProductionPerformance} feeds the production estimators (OnlinePerformance of
 * functions/domain/scheduling/performance.ts, on the simulation's clock): what runs by default.
 * {@link EwmaPerformance} is the simulator's own simpler stand-in with the same contract, kept
 * for comparison (`--estimates ewma`).
 */
export interface LearningView extends PerformanceView {
  /** An attempt ended: completed after `runtimeMs` of running, or lost (crash, lease expiry). */
  observe(nodeId: string, acceleratorClass: string, workload: string, ok: boolean, runtimeMs?: number): void;
  /** A claim's round trip to the node. */
  observeLatency(nodeId: string, ms: number): void;
  readonly source: string;
}

/** The production estimators, told every outcome as the verifier and the reaper tell them. */
export class ProductionPerformance implements LearningView {
  readonly source = 'OnlinePerformance (functions/domain/scheduling/performance.ts)';
  private readonly online: OnlinePerformance;

  constructor(private readonly now: () => number) {
    this.online = new OnlinePerformance(now);
  }

  runtimeMs(workload: string, acceleratorClass: string): number {
    return this.online.runtimeMs(workload, acceleratorClass);
  }

  slowdown(nodeId: string): number {
    return this.online.slowdown(nodeId);
  }

  reliability(nodeId: string): number {
    return this.online.reliability(nodeId);
  }

  latencyMs(nodeId: string): number {
    return this.online.latencyMs(nodeId);
  }

  observe(nodeId: string, acceleratorClass: string, workload: string, ok: boolean, runtimeMs?: number): void {
    this.online.record({
      nodeId,
      kind: ok ? 'completed' : 'lost',
      at: this.now(),
      workload,
      acceleratorClass,
      ...(runtimeMs === undefined ? {} : { runtimeMs }),
    });
  }

  observeLatency(nodeId: string, ms: number): void {
    this.online.recordLatency(nodeId, ms);
  }
}

interface NodeStats {
  successes: number;
  failures: number;
  logSlowdown: number;
  latencyMs: number;
  samples: number;
}

/** Decay per outcome: an old outcome weighs half after ~35 newer ones. */
const decay = 0.98;
const alpha = 0.2;

export class EwmaPerformance implements LearningView {
  readonly source = 'bench/sim EWMA stand-in';
  private readonly nodes = new Map<string, NodeStats>();
  private readonly logRuntime = new Map<string, number>();

  runtimeMs(workload: string, acceleratorClass: string): number {
    const log = this.logRuntime.get(`${workload}|${acceleratorClass}`);
    return log === undefined ? performancePriors.runtimeMs : Math.exp(log);
  }

  slowdown(nodeId: string): number {
    const s = this.nodes.get(nodeId);
    return s === undefined || s.samples === 0 ? 1 : Math.exp(s.logSlowdown);
  }

  reliability(nodeId: string): number {
    const s = this.nodes.get(nodeId);
    // Beta prior worth 20 outcomes at the prior rate.
    const prior = 20;
    const ok = (s?.successes ?? 0) + prior * performancePriors.reliability;
    const all = (s?.successes ?? 0) + (s?.failures ?? 0) + prior;
    return ok / all;
  }

  latencyMs(nodeId: string): number {
    return this.nodes.get(nodeId)?.latencyMs ?? performancePriors.latencyMs;
  }

  observe(nodeId: string, acceleratorClass: string, workload: string, ok: boolean, runtimeMs?: number): void {
    const s = this.stats(nodeId);
    s.successes = s.successes * decay + (ok ? 1 : 0);
    s.failures = s.failures * decay + (ok ? 0 : 1);
    if (!ok || runtimeMs === undefined || runtimeMs <= 0) return;
    const key = `${workload}|${acceleratorClass}`;
    const log = Math.log(runtimeMs);
    const classLog = this.logRuntime.get(key);
    if (classLog === undefined) {
      this.logRuntime.set(key, log - s.logSlowdown);
      return;
    }
    // The node's slowdown is what is left once the class's prediction is taken out.
    s.logSlowdown = s.samples === 0 ? log - classLog : (1 - alpha) * s.logSlowdown + alpha * (log - classLog);
    s.samples++;
    this.logRuntime.set(key, classLog + 0.05 * (log - s.logSlowdown - classLog));
  }

  observeLatency(nodeId: string, ms: number): void {
    const s = this.stats(nodeId);
    s.latencyMs = s.latencyMs === performancePriors.latencyMs ? ms : 0.8 * s.latencyMs + 0.2 * ms;
  }

  private stats(nodeId: string): NodeStats {
    let s = this.nodes.get(nodeId);
    if (s === undefined) {
      s = { successes: 0, failures: 0, logSlowdown: 0, latencyMs: performancePriors.latencyMs, samples: 0 };
      this.nodes.set(nodeId, s);
    }
    return s;
  }
}

export type Estimates = 'production' | 'ewma';

/** The view a run learns with, on the simulation's clock. */
export function learningView(kind: Estimates, now: () => number): LearningView {
  return kind === 'ewma' ? new EwmaPerformance() : new ProductionPerformance(now);
}
