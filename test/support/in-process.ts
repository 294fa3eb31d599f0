import { LocalKeys } from '../../functions/adapters/embedded/local-keys.js';
import { MemorySignal } from '../../functions/adapters/embedded/memory-signal.js';
import { noCredentials, SignalWorkHints } from '../../functions/adapters/embedded/signal-work-hints.js';
import { openDatabase } from '../../functions/adapters/embedded/sqlite.js';
import { SqliteQueue } from '../../functions/adapters/embedded/sqlite-queue.js';
import { SqliteStore } from '../../functions/adapters/embedded/sqlite-store.js';
import {
  type ControlPlane,
  type ControlPlaneSettings,
  createControlPlane,
  defaultSettings,
} from '../../functions/control-plane.js';
import { createApp } from '../../functions/http/app.js';
import type { SourceAddress } from '../../functions/http/context.js';
import type { Clock } from '../../functions/ports/clock.js';
import type { CredentialIssuer } from '../../functions/ports/node-credentials.js';
import type { Store } from '../../functions/ports/store.js';
import type { WorkHints } from '../../functions/ports/work-hints.js';
import { queueDefinitions } from '../../functions/workers/queues.js';
import {
  type Enrollment,
  generateNodeKeyPair,
  type JobWithTasks,
  loadNodeKeyPair,
  type NodeInventory,
  type NodeKeyPair,
  nodeIdFromPublicKey,
  resultHash,
  type Scope,
  signRequest,
} from '../../protocol/index.js';

/** A clock tests move by hand. */
export class ManualClock implements Clock {
  constructor(public ms = Date.parse('2026-11-25T12:00:00Z')) {}
  now(): number {
    return this.ms;
  }
  advance(ms: number): void {
    this.ms += ms;
  }
}

/** The control plane wired over in-memory SQLite, its HTTP app called in-process. */
export function inProcessControlPlane<S extends Store = SqliteStore>(
  options: {
    clock?: Clock;
    settings?: Partial<ControlPlaneSettings>;
    /** Default: the embedded deployment's (long polls, no credentials). */
    hints?: WorkHints;
    credentials?: CredentialIssuer;
    /**
     * How nodes join. Default `open`, explicitly, so that tests not about enrollment register nodes
     * freely; enrollment tests pass `token` (the deployments' default).
     */
    enrollment?: Enrollment;
    /** Wraps the SQLite store, e.g. in test/support/counting-store.ts for tests that count store calls. */
    wrapStore?: (store: SqliteStore) => S;
    /** The peer address rate limits count per (default: the app's own, loopback in-process). */
    sourceAddress?: SourceAddress;
  } = {},
) {
  const clock = options.clock ?? { now: () => Date.now() };
  const db = openDatabase(':memory:');
  const sqlite = new SqliteStore(db, clock);
  const store = (options.wrapStore?.(sqlite) ?? sqlite) as S;
  const queue = new SqliteQueue(db, queueDefinitions, clock);
  const ports = {
    store,
    queue,
    keys: LocalKeys.inMemory(),
    clock,
    signal: new MemorySignal(),
    hints: options.hints ?? new SignalWorkHints(),
    credentials: options.credentials ?? noCredentials,
  };
  const cp: ControlPlane = createControlPlane(
    ports,
    defaultSettings(clock.now(), { bootedAt: 0, enrollment: options.enrollment ?? 'open', ...options.settings }),
  );
  const logs: Record<string, unknown>[] = [];
  const app = createApp({
    cp,
    log: (e) => logs.push(e),
    ...(options.sourceAddress === undefined ? {} : { sourceAddress: options.sourceAddress }),
  });
  /** A request exactly as given: no API key unless `init` carries one (node routes, auth tests). */
  const request = async (path: string, init: RequestInit = {}): Promise<Response> =>
    app.request(`http://gpuai.test${path}`, init);
  // The admin key of tenant `default`, as the embedded deployment makes on first start. Its write
  // is known at once and lands before any request below runs (`api` waits for it).
  const admin = cp.apiKeys.mint({ tenant: 'default', scopes: ['admin', 'submit', 'read'], name: 'test admin' });
  const adminKey = admin.created.key;
  const ready = store.transact([admin.write]);
  /**
   * An application request with an API key (default: {@link adminKey}) in `Authorization: Bearer`,
   * unless `init` already has an Authorization header.
   */
  const api = async (path: string, init: RequestInit = {}, key: string = adminKey): Promise<Response> => {
    await ready;
    const headers = new Headers(init.headers);
    if (!headers.has('authorization')) headers.set('authorization', `Bearer ${key}`);
    return request(path, { ...init, headers });
  };
  /** A stored API key of `tenant` with `scopes` (default submit and read); returns the whole key. */
  const createKey = async (
    tenant: string,
    scopes: readonly Scope[] = ['submit', 'read'],
    options: { expiresAt?: number } = {},
  ): Promise<string> => {
    await ready;
    return (await cp.apiKeys.create({ tenant, scopes, ...options })).key;
  };
  /**
   * Every stored item but nonces and rate-limit counters (replay protection and abuse limits, not
   * domain state), for "nothing changed" assertions.
   */
  const snapshot = () =>
    db
      .prepare(
        "SELECT pk, sk, version, data FROM items WHERE pk NOT LIKE 'NONCE#%' AND pk NOT LIKE 'RATE#%' ORDER BY pk, sk",
      )
      .all();
  return {
    cp,
    app,
    store,
    queue,
    clock,
    logs,
    request,
    adminKey,
    api,
    createKey,
    ready,
    snapshot,
    close: () => queue.close(),
  };
}

export const cpuInventory = (overrides: Partial<NodeInventory> = {}): NodeInventory => ({
  gpus: [],
  cpu: { model: 'Test CPU', cores: 4 },
  memoryMiB: 8192,
  os: 'linux',
  arch: 'x64',
  runtimes: ['process'],
  region: 'local',
  ...overrides,
});

/** A node identity that signs its requests as the agent does. */
export class TestNode {
  readonly key: NodeKeyPair;
  readonly id: string;
  /** The last signed date: the next is later, as the agent's client signs (heartbeats and progress need it). */
  private lastDate = 0;
  constructor(
    private readonly request: (path: string, init?: RequestInit) => Response | Promise<Response>,
    readonly clock: Clock = { now: () => Date.now() },
  ) {
    this.key = loadNodeKeyPair(generateNodeKeyPair().privateKeyPem);
    this.id = nodeIdFromPublicKey(this.key.publicKey);
  }

  /** A signed request as node `as` (default: this node) to `path`. */
  async call(method: string, path: string, body?: unknown, as = this.id): Promise<Response> {
    const text = body === undefined ? '' : JSON.stringify(body);
    const headers = {
      ...signRequest(this.key, as, { method, pathWithQuery: path, body: text }, this.nextDate()),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    };
    return this.request(path, { method, headers, ...(body === undefined ? {} : { body: text }) });
  }

  /** `max(now, last + 1)`: a node's heartbeats and a task's progress reports must carry increasing dates. */
  nextDate(): number {
    this.lastDate = Math.max(this.clock.now(), this.lastDate + 1);
    return this.lastDate;
  }

  register(inventory: NodeInventory = cpuInventory(), joinToken?: string) {
    return this.call('POST', '/v1/nodes', {
      publicKey: this.key.publicKey,
      agentVersion: '0.1.0',
      inventory,
      ...(joinToken === undefined ? {} : { joinToken }),
    });
  }

  poll(wait = 0) {
    return this.call('GET', `/v1/nodes/${this.id}/work?wait=${wait}`);
  }
}

/** What the helpers below drive: the control plane and its API as the default tenant's admin. */
type InProcess = Pick<ReturnType<typeof inProcessControlPlane>, 'api' | 'cp'>;

/** Submits `spec` over the API (expecting 201) and routes its tasks, as the schedule worker would. */
export async function submitScheduled(h: InProcess, spec: object): Promise<JobWithTasks> {
  const response = await h.api('/v1/jobs', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(spec),
  });
  if (response.status !== 201) throw new Error(`submit answered ${response.status}: ${await response.text()}`);
  const job = (await response.json()) as JobWithTasks;
  await h.cp.scheduler.schedule({ jobId: job.id });
  return job;
}

/**
 * Submits `spec`, has `node` (the only node polling) take its task, lets `runtimeMs` pass, reports
 * success and runs the verifier: what it answered ('verified' for an honest run).
 */
export async function runToVerdict(
  h: InProcess,
  node: TestNode,
  clock: ManualClock,
  spec: object,
  runtimeMs: number,
): Promise<string> {
  await submitScheduled(h, spec);
  const polled = await node.poll(0);
  if (polled.status !== 200) throw new Error(`poll answered ${polled.status}`);
  const { assignment } = (await polled.json()) as { assignment: { taskId: string; attempt: number } };
  clock.advance(runtimeMs);
  const reported = await node.call('POST', `/v1/nodes/${node.id}/tasks/${assignment.taskId}/result`, {
    attempt: assignment.attempt,
    exitCode: 0,
    resultHash: resultHash([]),
    outputs: [],
    metrics: { wallMs: runtimeMs },
  });
  if (reported.status !== 200) throw new Error(`result answered ${reported.status}: ${await reported.text()}`);
  return h.cp.verifier.verify({ taskId: assignment.taskId, attempt: assignment.attempt });
}

/** Devices named apart across every inventory a test makes (a node's GPU UUIDs must be distinct). */
let gpuSerial = 0;

/** A host with `count` H100s, `cores` cores and 512 GiB of memory. */
export const h100Inventory = (count: number, cores = 64): NodeInventory =>
  cpuInventory({
    cpu: { model: 'Test CPU', cores },
    memoryMiB: 512 * 1024,
    gpus: Array.from({ length: count }, (_, index) => ({
      index,
      vendor: 'nvidia' as const,
      model: 'NVIDIA H100 80GB HBM3',
      vramMiB: 81559,
      uuid: `GPU-${count}-${index}-${gpuSerial++}`,
      computeCapability: '9.0',
    })),
  });

/** Registers a node with a fresh key through the domain (no HTTP), and answers its id. */
export async function registerNode(h: InProcess, inventory: NodeInventory = cpuInventory()): Promise<string> {
  const { node } = await h.cp.nodes.register({
    publicKey: generateNodeKeyPair().publicKey,
    agentVersion: 't',
    inventory,
  });
  return node.id;
}
