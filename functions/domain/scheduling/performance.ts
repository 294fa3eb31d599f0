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
  /** Observed control-plane-to-node latency (poll/claim round trip), ms; a prior when unknown. */
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
 * Knows nothing: every node alike, every workload the prior. Placement and routing that use it
 * fall back to fit and queue depth alone.
 */
export const neutralPerformance: PerformanceView = {
  runtimeMs: () => performancePriors.runtimeMs,
  slowdown: () => 1,
  reliability: () => performancePriors.reliability,
  latencyMs: () => performancePriors.latencyMs,
};
