import { createHash } from 'node:crypto';
import type { JobSpec } from '../../../protocol/index.js';

/**
 * What the scheduler expects of a node and of a pool, learned from outcomes: how long a task of a
 * workload class runs on an accelerator class, how much slower a given node runs than its class,
 * how often it finishes what it takes, and how far it is from the control plane. Placement
 * (placement/) and routing (router.ts) score candidates with these figures; they only ever see
 * this interface, so they run the same with the neutral default as with learned estimates.
 */
export interface PerformanceView {
  /** Predicted run time of a task of `workload` on one device of `acceleratorClass`. */
  runtimeMs(workload: string, acceleratorClass: string): number;
  /** >1 when the node runs slower than its class predicts; 1 when unknown. */
  slowdown(nodeId: string): number;
  /** Probability the node finishes a task it takes (decayed success rate, prior ~0.95). */
  reliability(nodeId: string): number;
  /**
   * The node's round trip to the control plane as the node itself observes and reports it (a
   * request's full round trip, server time included, smoothed; reported in its signed heartbeat),
   * ms; the prior when unknown. Self-reported, so bounded: {@link latencyLimits}.
   */
  latencyMs(nodeId: string): number;
}

/** The priors every estimate starts from, and what the neutral view answers. */
export const performancePriors = {
  /** A task of an unknown workload: one minute. */
  runtimeMs: 60_000,
  reliability: 0.95,
  latencyMs: 50,
} as const;

/**
 * How far a node's self-reported latency can move placement. A node measures its own round trips
 * and reports them (docs/security.md): a node that lies low to draw work, or spams reports, must
 * not gain more than these bounds allow.
 */
export const latencyLimits = {
  /**
   * The estimate is never below this. A round trip includes the control plane's own time (about
   * 50-100 ms measured over loopback), so a report far under it is a lie or a node beside the
   * control plane; either way it wins no more than the prior minus this over an honest node.
   */
  minMs: 20,
  /**
   * Nor above: a node that is far (or reports so) weighs at most this in a placement score, about
   * 2% of a task of the one-minute prior, so whatever a node reports moves its score by under a
   * second.
   */
  maxMs: 1_000,
  /**
   * One sample per node per this period is learned, the rest dropped unread where this process
   * learned the last one (performance-record.ts). A little under the agent's 5-minute report
   * period (edge-agent/round-trips.ts), so an honest agent's reports are all taken.
   */
  sampleEveryMs: 4 * 60_000,
} as const;

/**
 * Knows nothing: every node alike, every workload the prior. Placement and routing that use it
 * fall back to fit and queue depth alone.
 */
export const neutralPerformance: PerformanceView = {
  runtimeMs: () => performancePriors.runtimeMs,
  slowdown: () => 1,
  reliability: () => performancePriors.reliability,
  latencyMs: () => performancePriors.latencyMs,
};

/**
 * How fast the estimates forget. Per-node figures move by a fixed share per outcome, so a node
 * that slows down or starts failing is found out within a bounded number of its own outcomes,
 * however long its good history; an idle node's figures also drift back to the priors over time,
 * so a node that was bad once is tried again. Class run times are fleet-wide sums that many
 * writers add to at once (no read before the write), so they can only decay with time.
 */
export const learningRates = {
  /** Share of the reliability evidence kept at each new outcome of the node (memory ~10 outcomes). */
  reliabilityKeep: 0.85,
  /** Weight of the prior in the reliability's Beta (pseudo-outcomes). */
  reliabilityPriorWeight: 2,
  /** Share of a new run time ratio in the node's slowdown (EWMA on the log). */
  slowdownRate: 0.3,
  /** Share of a new round trip in the node's latency (EWMA on the log). */
  latencyRate: 0.2,
  /** Half-life of a node's evidence while it reports nothing. */
  nodeHalfLifeMs: 24 * 3600_000,
  /** Time constant of the class run time sums (forward decay, see {@link ClassSums}). */
  classTauMs: 6 * 3600_000,
  /** A class run time is trusted (to measure a node's slowdown against) past this much weight. */
  classMinWeight: 2,
  /** Slowdowns are kept within [1/x, x]: one wild run must not exile a node for good. */
  slowdownBound: 16,
} as const;

/** How an attempt on a node ended, as the estimates count it. */
export type OutcomeKind =
  /** Ran to a verified result: a success, and a run time. */
  | 'completed'
  /** Exit code other than 0, an error or a timeout reported by the node. */
  | 'failed'
  /** The node went silent: its lease ran out. */
  | 'lost'
  /** Verification refused the result. */
  | 'rejected'
  /** The node handed the task back (shutting down): neither success nor failure. */
  | 'released';

export interface Outcome {
  nodeId: string;
  kind: OutcomeKind;
  /** When the attempt ended, epoch ms. */
  at: number;
  /** The task's workload class ({@link workloadOf}); with `acceleratorClass` and `runtimeMs`, a run time sample. */
  workload?: string;
  acceleratorClass?: string;
  /** Claim to result, as the control plane measured it. */
  runtimeMs?: number;
}

/** How much each outcome counts against the node's reliability (0: not at all). */
const failureWeight: Record<OutcomeKind, number> = {
  completed: 0,
  failed: 1,
  lost: 1,
  rejected: 1,
  released: 0,
};

/**
 * The workload class a job's runtime is learned under: its declared `workload` type refined by
 * what it runs (image, program and first argument), so two unrelated "batch" jobs do not share
 * one estimate while the tasks of many jobs of the same program do.
 *
 * @example workloadOf({ workload: 'training', image: 'pytorch:2', command: ['python', 'train.py'] }) // 'training/3f2a9c1e'
 */
export function workloadOf(spec: Pick<JobSpec, 'workload' | 'image' | 'command'>): string {
  const what = [spec.image ?? '', spec.command[0] ?? '', spec.command[1] ?? ''].join('\u0000');
  return `${spec.workload}/${createHash('sha256').update(what).digest('hex').slice(0, 8)}`;
}

/** The accelerator class of a pool id (`<region>/<class>`). */
export const classOfPool = (pool: string): string => pool.slice(pool.indexOf('/') + 1);

// ---------------------------------------------------------------------------------------------
// Per node: reliability, slowdown, latency.

/** What is learned of one node. Plain data: it is stored as is (performance-record.ts). */
export interface NodeEstimate {
  /** Decayed successes and failures (the Beta's evidence, without the prior). */
  ok: number;
  bad: number;
  /** Bias-corrected EWMA of log(observed run time / class prediction): `slowSum / slowNorm`. */
  slowSum: number;
  slowNorm: number;
  /** Decayed count of run time samples: how far the slowdown is trusted. */
  slowCount: number;
  /**
   * EWMA of log(round trip ms) and the sum of its weights (`latSum / latNorm` is the bias-corrected
   * mean; `latNorm` grows toward 1 with the samples, so it is also how far they are trusted).
   */
  latSum: number;
  latNorm: number;
  /** When the last latency sample was learned, epoch ms: the next is taken a period on ({@link latencySampleDue}). */
  latAt?: number;
  /** When the evidence was last updated, epoch ms. */
  updatedAt: number;
}

export const emptyNodeEstimate = (now: number): NodeEstimate => ({
  ok: 0,
  bad: 0,
  slowSum: 0,
  slowNorm: 0,
  slowCount: 0,
  latSum: 0,
  latNorm: 0,
  updatedAt: now,
});

/** The evidence aged to `now`: counts halve every {@link learningRates}.nodeHalfLifeMs. */
function aged(est: NodeEstimate, now: number): NodeEstimate {
  const keep = keepOf(est, now);
  if (keep === 1) return est;
  return { ...est, ok: est.ok * keep, bad: est.bad * keep, slowCount: est.slowCount * keep, updatedAt: now };
}

/** The share of the node's evidence still standing at `now`. */
function keepOf(est: NodeEstimate, now: number): number {
  const elapsed = now - est.updatedAt;
  return elapsed <= 0 ? 1 : 0.5 ** (elapsed / learningRates.nodeHalfLifeMs);
}

/**
 * The node's estimate after `outcome`. `classRuntimeMs` is what its class predicted for the run
 * (undefined while the class has too little evidence): the ratio to it is the slowdown sample.
 */
export function observeNode(
  est: NodeEstimate | undefined,
  outcome: Outcome,
  classRuntimeMs: number | undefined,
): NodeEstimate {
  const prior = est ?? emptyNodeEstimate(outcome.at);
  const aging = keepOf(prior, outcome.at);
  const next: NodeEstimate = {
    ok: prior.ok * aging,
    bad: prior.bad * aging,
    slowSum: prior.slowSum,
    slowNorm: prior.slowNorm,
    slowCount: prior.slowCount * aging,
    latSum: prior.latSum,
    latNorm: prior.latNorm,
    ...(prior.latAt === undefined ? {} : { latAt: prior.latAt }),
    updatedAt: Math.max(prior.updatedAt, outcome.at),
  };
  if (outcome.kind !== 'released') {
    const keep = learningRates.reliabilityKeep;
    const bad = failureWeight[outcome.kind];
    next.ok = next.ok * keep + (1 - bad);
    next.bad = next.bad * keep + bad;
  }
  if (outcome.kind === 'completed' && outcome.runtimeMs !== undefined && classRuntimeMs !== undefined) {
    const bound = Math.log(learningRates.slowdownBound);
    const sample = clamp(Math.log(Math.max(1, outcome.runtimeMs) / classRuntimeMs), -bound, bound);
    const rate = learningRates.slowdownRate;
    next.slowSum = prior.slowSum * (1 - rate) + rate * sample;
    next.slowNorm = prior.slowNorm * (1 - rate) + rate;
    next.slowCount += 1;
  }
  return next;
}

/**
 * The node's estimate after a round trip of `ms` it reported, taken within {@link latencyLimits}
 * (one wild report moves the log-mean by a bounded step). Callers that take reports from nodes
 * ask {@link latencySampleDue} first.
 */
export function observeLatency(est: NodeEstimate | undefined, ms: number, now: number): NodeEstimate {
  const prior = aged(est ?? emptyNodeEstimate(now), now);
  const rate = learningRates.latencyRate;
  const sample = Math.log(clamp(ms, latencyLimits.minMs, latencyLimits.maxMs));
  return {
    ...prior,
    latSum: prior.latSum * (1 - rate) + rate * sample,
    latNorm: prior.latNorm * (1 - rate) + rate,
    latAt: now,
  };
}

/** Whether a latency sample of the node is worth learning at `now`: its last one is a period old. */
export function latencySampleDue(est: NodeEstimate | undefined, now: number): boolean {
  return est?.latAt === undefined || now - est.latAt >= latencyLimits.sampleEveryMs;
}

/** The Beta's mean with the prior: successes over outcomes, evidence decayed to `now`. */
export function nodeReliability(est: NodeEstimate | undefined, now: number): number {
  if (est === undefined) return performancePriors.reliability;
  const keep = keepOf(est, now);
  const ok = est.ok * keep;
  const bad = est.bad * keep;
  const w = learningRates.reliabilityPriorWeight;
  return (ok + w * performancePriors.reliability) / (ok + bad + w);
}

/** exp of the EWMA log ratio, shrunk toward 1 while it rests on few samples. */
export function nodeSlowdown(est: NodeEstimate | undefined, now: number): number {
  if (est === undefined || est.slowNorm === 0) return 1;
  const count = est.slowCount * keepOf(est, now);
  return Math.exp((est.slowSum / est.slowNorm) * (count / (count + 1)));
}

/**
 * The node's latency: the mean of its reports (log scale) blended with the prior by how many there
 * are (`latNorm`: a fifth after one, nine tenths after ten, which the one-per-period limit spreads
 * over most of an hour), within {@link latencyLimits}. Reports are self-declared: they earn their
 * weight slowly and can never move a node's score past the bounds.
 */
export function nodeLatency(est: NodeEstimate | undefined): number {
  if (est === undefined || !(est.latNorm > 0)) return performancePriors.latencyMs;
  const trust = Math.min(1, est.latNorm);
  const logMean = (est.latSum / est.latNorm) * trust + Math.log(performancePriors.latencyMs) * (1 - trust);
  return clamp(Math.exp(logMean), latencyLimits.minMs, latencyLimits.maxMs);
}

// ---------------------------------------------------------------------------------------------
// Per workload x accelerator class: run time.

/**
 * Forward-decayed sums of log run times as the class's nodes ran them: each sample at time t
 * weighs `exp((t - landmark) / tau)`, so the sums
 * only ever grow by additions, which concurrent writers can make without reading (store `add`),
 * and `sx / w` is the exponentially decayed mean as of any later time. Weights grow with t, so
 * stored sums start a new landmark every {@link classEpochMs} (performance-record.ts keeps one
 * item per epoch and reads the last two).
 *
 * The samples are not divided by their node's slowdown: slowdowns are measured against the class,
 * so a class normalised by them has no fixed level (every node could be "slow" against a class
 * that drifted fast, or the reverse). Raw, the class is what its nodes deliver on average, a few
 * slow ones included, and each node's slowdown is its distance from that.
 */
export interface ClassSums {
  landmark: number;
  w: number;
  sx: number;
  sxx: number;
}

/** Four time constants: weights stay below e^4, and data older than that weighs under 2%. */
export const classEpochMs = 4 * learningRates.classTauMs;

export const classEpochOf = (at: number): number => Math.floor(at / classEpochMs);

/** The landmark of the epoch `at` falls in. */
export const classLandmarkOf = (at: number): number => classEpochOf(at) * classEpochMs;

/** The additions one run time sample makes to the sums of the epoch it falls in. */
export function classSample(
  runtimeMs: number,
  at: number,
): { epoch: number; fields: { w: number; sx: number; sxx: number } } {
  const epoch = classEpochOf(at);
  const g = Math.exp((at - epoch * classEpochMs) / learningRates.classTauMs);
  const x = Math.log(Math.max(1, runtimeMs));
  return { epoch, fields: { w: g, sx: g * x, sxx: g * x * x } };
}

/** `sums` re-expressed against a later landmark (exact: weights scale by a common factor). */
export function rebase(sums: ClassSums, landmark: number): ClassSums {
  const f = Math.exp((sums.landmark - landmark) / learningRates.classTauMs);
  return { landmark, w: sums.w * f, sx: sums.sx * f, sxx: sums.sxx * f };
}

export function mergeSums(a: ClassSums, b: ClassSums): ClassSums {
  const landmark = Math.max(a.landmark, b.landmark);
  const x = rebase(a, landmark);
  const y = rebase(b, landmark);
  return { landmark, w: x.w + y.w, sx: x.sx + y.sx, sxx: x.sxx + y.sxx };
}

/** The sums' weight as of `now`: the decayed count of samples behind them. */
export const classWeight = (sums: ClassSums, now: number): number => rebase(sums, now).w;

/**
 * The mean run time the sums predict: the lognormal mean exp(mu + sigma^2 / 2), with the prior
 * as one pseudo-sample so that a class seen once is not taken at its word.
 */
export function classRuntime(sums: ClassSums | undefined, now: number): number {
  if (sums === undefined) return performancePriors.runtimeMs;
  const s = rebase(sums, now);
  if (!(s.w > 0)) return performancePriors.runtimeMs;
  const priorWeight = 0.5;
  const mean = (s.sx + priorWeight * Math.log(performancePriors.runtimeMs)) / (s.w + priorWeight);
  const variance = clamp(s.sxx / s.w - (s.sx / s.w) ** 2, 0, 2);
  return Math.exp(mean + variance / 2);
}

/** The class's prediction when it has enough evidence to measure a node against, else undefined. */
export function trustedClassRuntime(sums: ClassSums | undefined, now: number): number | undefined {
  return sums !== undefined && classWeight(sums, now) >= learningRates.classMinWeight
    ? classRuntime(sums, now)
    : undefined;
}

export const classKeyOf = (workload: string, acceleratorClass: string): string => `${workload}@${acceleratorClass}`;

/** The type of a workload label (`training` of `training/3f2a9c1e`, see {@link workloadOf}). */
export function workloadTypeOf(workload: string): string {
  const slash = workload.indexOf('/');
  return slash < 0 ? workload : workload.slice(0, slash);
}

/**
 * The labels a run time sample of `workload` counts under: its own and its type's. The type's is
 * the fallback while a program is new (few samples of its own), and what a caller that knows only
 * the type asks (a router holding no job spec asks for `batch`).
 */
export function workloadLevels(workload: string): string[] {
  const type = workloadTypeOf(workload);
  return type === workload ? [workload] : [workload, type];
}

// ---------------------------------------------------------------------------------------------
// In memory: the estimates of one process (the simulator's, a test's), updated synchronously.

/**
 * Online estimates held in memory, updated by {@link OnlinePerformance.record}: what the
 * simulator drives and what the stored estimates (performance-record.ts) load into. O(1) per
 * outcome and per question.
 */
export class OnlinePerformance implements PerformanceView {
  private readonly nodes = new Map<string, NodeEstimate>();
  private readonly classes = new Map<string, ClassSums>();

  constructor(private readonly now: () => number) {}

  record(outcome: Outcome): void {
    const before = this.nodes.get(outcome.nodeId);
    const sample = runtimeSample(outcome);
    const predicted = sample === undefined ? undefined : this.trustedRuntime(sample.workload, sample.cls, outcome.at);
    this.nodes.set(outcome.nodeId, observeNode(before, outcome, predicted));
    if (sample === undefined) return;
    const { epoch, fields } = classSample(sample.runtimeMs, outcome.at);
    for (const level of workloadLevels(sample.workload)) {
      this.mergeClass(level, sample.cls, { landmark: epoch * classEpochMs, ...fields });
    }
  }

  /** The class prediction to measure a node's run against: the workload's own, else its type's. */
  trustedRuntime(workload: string, acceleratorClass: string, now: number): number | undefined {
    const sums = this.sumsFor(workload, acceleratorClass, now);
    return trustedClassRuntime(sums, now);
  }

  /** The workload's own sums once they carry {@link learningRates}.classMinWeight, else its type's where known. */
  private sumsFor(workload: string, acceleratorClass: string, now: number): ClassSums | undefined {
    const own = this.classes.get(classKeyOf(workload, acceleratorClass));
    if (own !== undefined && classWeight(own, now) >= learningRates.classMinWeight) return own;
    const type = workloadTypeOf(workload);
    const typed = type === workload ? undefined : this.classes.get(classKeyOf(type, acceleratorClass));
    return typed ?? own;
  }

  /** Adds sums to what is known of a workload on a class. */
  mergeClass(workload: string, acceleratorClass: string, sums: ClassSums): void {
    const key = classKeyOf(workload, acceleratorClass);
    const known = this.classes.get(key);
    if (known === undefined) this.classes.set(key, { ...sums });
    else if (known.landmark === sums.landmark) {
      // The common case, in place: samples of one epoch share its landmark.
      known.w += sums.w;
      known.sx += sums.sx;
      known.sxx += sums.sxx;
    } else this.classes.set(key, mergeSums(known, sums));
  }

  recordLatency(nodeId: string, ms: number): void {
    this.nodes.set(nodeId, observeLatency(this.nodes.get(nodeId), ms, this.now()));
  }

  /** Replaces what is known of a node (loaded from the store). */
  setNode(nodeId: string, est: NodeEstimate | undefined): void {
    if (est === undefined) this.nodes.delete(nodeId);
    else this.nodes.set(nodeId, est);
  }

  /** Replaces what is known of a workload on a class (loaded from the store). */
  setClass(workload: string, acceleratorClass: string, sums: ClassSums | undefined): void {
    const key = classKeyOf(workload, acceleratorClass);
    if (sums === undefined) this.classes.delete(key);
    else this.classes.set(key, { ...sums });
  }

  node(nodeId: string): NodeEstimate | undefined {
    return this.nodes.get(nodeId);
  }

  classSums(workload: string, acceleratorClass: string): ClassSums | undefined {
    return this.classes.get(classKeyOf(workload, acceleratorClass));
  }

  runtimeMs(workload: string, acceleratorClass: string): number {
    const now = this.now();
    return classRuntime(this.sumsFor(workload, acceleratorClass, now), now);
  }

  slowdown(nodeId: string): number {
    return nodeSlowdown(this.nodes.get(nodeId), this.now());
  }

  reliability(nodeId: string): number {
    return nodeReliability(this.nodes.get(nodeId), this.now());
  }

  latencyMs(nodeId: string): number {
    return nodeLatency(this.nodes.get(nodeId));
  }
}

/** The run time sample an outcome carries, if it carries one (a finite one). */
export function runtimeSample(outcome: Outcome): { workload: string; cls: string; runtimeMs: number } | undefined {
  if (
    outcome.kind !== 'completed' ||
    outcome.workload === undefined ||
    outcome.acceleratorClass === undefined ||
    outcome.runtimeMs === undefined ||
    // A time that is not a number would poison the sums for good (and DynamoDB refuses NaN).
    !Number.isFinite(outcome.runtimeMs) ||
    !Number.isFinite(outcome.at)
  )
    return undefined;
  return { workload: outcome.workload, cls: outcome.acceleratorClass, runtimeMs: outcome.runtimeMs };
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x));
}
