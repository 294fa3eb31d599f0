import type { Enrollment } from '../protocol/index.js';
import { JoinTokens } from './domain/resource/join-tokens.js';
import { NodeRegistry } from './domain/resource/node-registry.js';
import { PoolSummaries } from './domain/resource/pool-summary.js';
import { defaultRegions, type RegionPolicy } from './domain/resource/pools.js';
import { Dispatcher } from './domain/scheduling/dispatcher.js';
import { JobService } from './domain/scheduling/job-service.js';
import { StoredPerformance } from './domain/scheduling/performance-record.js';
import { Reaper } from './domain/scheduling/reaper.js';
import { Router } from './domain/scheduling/router.js';
import { Scheduler } from './domain/scheduling/scheduler.js';
import { TaskReports } from './domain/scheduling/task-reports.js';
import { Verifier } from './domain/scheduling/verifier.js';
import { WaitingPlacement } from './domain/scheduling/waiting-placement.js';
import { ApiKeys } from './domain/security/api-keys.js';
import { AttestationService } from './domain/security/attestation/attestation-service.js';
import { type AttestationSettings, defaultAttestationSettings } from './domain/security/attestation/settings.js';
import { defaultQuotas, type QuotaSettings, Quotas } from './domain/security/quotas.js';
import { defaultRateLimits, RateLimiter, type RateLimitSettings } from './domain/security/rate-limit.js';
import { RequestAuthenticator } from './domain/security/request-auth.js';
import type { Clock } from './ports/clock.js';
import type { Keys } from './ports/keys.js';
import type { CredentialIssuer } from './ports/node-credentials.js';
import type { Queue } from './ports/queue.js';
import type { Signal } from './ports/signal.js';
import type { Store } from './ports/store.js';
import type { WorkHints } from './ports/work-hints.js';

export interface Ports {
  store: Store;
  queue: Queue;
  keys: Keys;
  clock: Clock;
  signal: Signal;
  /** How nodes learn of work: the Signal's long polls (embedded) or pool queues (cloud). */
  hints: WorkHints;
  /** Credentials for nodes' own queue access; none in the embedded deployment. */
  credentials: CredentialIssuer;
  /** Where the domain reports what it skipped or handed back (one object per entry); JSON lines on stderr when absent. */
  log?: (entry: Record<string, unknown>) => void;
}

/** Timings of the control plane; every deployment reads them from its own config. */
export interface ControlPlaneSettings {
  /** A lease lasts this long unless a heartbeat (or a progress report) extends it. */
  leaseMs: number;
  /** The heartbeat interval a node without tasks is told (docs/cost-model.md section 9: 30 s). */
  heartbeatIdleMs: number;
  /** The heartbeat interval a node holding leases is told: below `leaseMs`, since its beats extend them (10 s). */
  heartbeatBusyMs: number;
  /**
   * How often a running task's progress (log tail, percent) is worth a report: it is for people, and
   * leases are kept by heartbeats, so the agent sends no keep-alive progress (30 s by default).
   */
  progressIntervalMs: number;
  /** A node unseen for this long is unavailable (three missed idle heartbeats by default). */
  livenessMs: number;
  /**
   * This process is the only writer of the store (the embedded deployment): the node registry may
   * then trust the versions of the presence items it wrote last, so a heartbeat is one conditional
   * write with no read. Where several instances share the store (Lambda), it reads first.
   */
  exclusiveStore: boolean;
  recheckMs: number;
  scanLimit: number;
  unroutedAfterMs: number;
  reaperBatch: number;
  /**
   * A task queued in a pool for longer than this since its last hint is hinted again (a hint may be
   * lost). `Infinity` turns re-driving off, where hints carry nothing (the embedded deployment).
   */
  hintRedriveMs: number;
  bootedAt: number;
  /** `token` (default): a new node needs a join token; `open`: anyone may register (development only). */
  enrollment: Enrollment;
  /** A node unseen for this long is removed and must enroll again (default 7 days). */
  nodeExpiryMs: number;
  /** The regions nodes may report: a list (default: functions/domain/resource/pools.ts `defaultRegions`) or `*`. */
  regions: RegionPolicy;
  /** Re-attestation interval, challenge lifetime and each evidence verifier's policy (security/attestation). */
  attestation: AttestationSettings;
  /** Requests per window per source address, API key, node and for registrations (functions/domain/security/rate-limit.ts). */
  rateLimits: RateLimitSettings;
  /** Per-tenant quotas: open tasks and GPU-hours a rolling day (functions/domain/security/quotas.ts). */
  quotas: QuotaSettings;
}

export function defaultSettings(now: number, overrides: Partial<ControlPlaneSettings> = {}): ControlPlaneSettings {
  const heartbeatIdleMs = overrides.heartbeatIdleMs ?? 30_000;
  return {
    leaseMs: 30_000,
    heartbeatIdleMs,
    heartbeatBusyMs: Math.min(10_000, heartbeatIdleMs),
    progressIntervalMs: 30_000,
    livenessMs: 3 * heartbeatIdleMs,
    exclusiveStore: false,
    recheckMs: 1000,
    scanLimit: 25,
    unroutedAfterMs: 2000,
    reaperBatch: 100,
    hintRedriveMs: 120_000,
    bootedAt: now,
    enrollment: 'token',
    nodeExpiryMs: 7 * 24 * 3600_000,
    regions: defaultRegions,
    attestation: defaultAttestationSettings,
    rateLimits: defaultRateLimits,
    quotas: defaultQuotas,
    ...overrides,
  };
}

/** The control plane's services wired over one set of ports: what the HTTP app and the workers call. */
export interface ControlPlane {
  settings: ControlPlaneSettings;
  /** The clock every service reads: views (a node's live status) read it too. */
  clock: Clock;
  jobs: JobService;
  nodes: NodeRegistry;
  auth: RequestAuthenticator;
  dispatcher: Dispatcher;
  reports: TaskReports;
  router: Router;
  scheduler: Scheduler;
  verifier: Verifier;
  reaper: Reaper;
  /** How nodes learn of work (the registration's `dispatch`) and where claimed hints are acknowledged. */
  hints: WorkHints;
  /** Node credentials for the `sqs` dispatch mode. */
  credentials: CredentialIssuer;
  /** Join tokens, under which nodes enroll. */
  joinTokens: JoinTokens;
  /** Attestation challenges and evidence verification; the level lands on the node record. */
  attestation: AttestationService;
  /** Rate-limit counters: in memory (exclusive store) or in the store, shared by every instance (functions/domain/security/rate-limit.ts). */
  limits: RateLimiter;
  /** API keys of the application routes: tenants and scopes (functions/domain/security/api-keys.ts). */
  apiKeys: ApiKeys;
}

export function createControlPlane(ports: Ports, settings: ControlPlaneSettings): ControlPlane {
  const { store, queue, keys, clock, signal, hints } = ports;
  const joinTokens = new JoinTokens(store, clock, settings.regions);
  const nodes = new NodeRegistry(
    store,
    clock,
    {
      livenessMs: settings.livenessMs,
      exclusiveStore: settings.exclusiveStore,
      enrollment: settings.enrollment,
      nodeExpiryMs: settings.nodeExpiryMs,
      regions: settings.regions,
    },
    joinTokens,
  );
  // Routing reads pool summaries (counters), never a scan of nodes; see router.ts.
  const summaries = new PoolSummaries(store, clock);
  // What is learned from every ended attempt (verifier, reports, reaper), and what routing reads.
  const performance = new StoredPerformance(store, clock);
  const router = new Router(store, nodes, signal, hints, clock, summaries, performance);
  // Where the signal wakes polls in this process (embedded), the placement engine picks which
  // waiting node a routed task wakes, by the same estimates (waiting-placement.ts).
  const describeWaiters = signal.chooseWith !== undefined;
  signal.chooseWith?.(new WaitingPlacement(performance, clock));
  const verifier = new Verifier(store, queue, nodes, clock, performance);
  return {
    settings,
    clock,
    hints,
    credentials: ports.credentials,
    joinTokens,
    attestation: new AttestationService(store, clock, settings.attestation),
    // Counted in memory where this process is the store's only user, by adds in the store otherwise.
    limits: new RateLimiter(store, clock, settings.rateLimits, { exclusiveStore: settings.exclusiveStore }),
    apiKeys: new ApiKeys(store, clock),
    jobs: new JobService(store, queue, keys, clock, new Quotas(store, clock, settings.quotas)),
    nodes,
    auth: new RequestAuthenticator(store, nodes, clock),
    dispatcher: new Dispatcher(
      store,
      queue,
      nodes,
      keys,
      signal,
      clock,
      { ...settings, describeWaiters },
      ports.log,
      summaries,
    ),
    reports: new TaskReports(store, queue, nodes, clock, settings, performance),
    router,
    scheduler: new Scheduler(store, router),
    verifier,
    reaper: new Reaper(store, queue, nodes, router, verifier, hints, clock, summaries, {
      leaseMs: settings.leaseMs,
      bootedAt: settings.bootedAt,
      unroutedAfterMs: settings.unroutedAfterMs,
      batch: settings.reaperBatch,
      hintRedriveMs: settings.hintRedriveMs,
    }),
  };
}
