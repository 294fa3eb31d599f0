import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import {
  type Assignment,
  ClaimRequest,
  canonicalRequest,
  type Dispatch,
  FailureReport,
  HeartbeatRequest,
  type HeartbeatResponse,
  type NodeCredentials,
  type NodeView,
  nodeIdFromPublicKey,
  ProgressReport,
  RegisterNodeRequest,
  ResultReport,
  signatureHeaders,
  type TaskView,
  verifySignature,
} from '../../protocol/index.js';

/** A node request the fake received, after its signature was checked. */
export interface ReceivedRequest {
  method: string;
  path: string;
  body: unknown;
}

/** Lets a test answer a request itself (an outage, a refusal); undefined falls through to the fake's behaviour. */
export type Override = (request: ReceivedRequest) => { status: number; body?: unknown } | undefined;

/**
 * A small in-memory control plane on node:http implementing the node endpoints of docs/api.md,
 * enough for agent tests: it checks every signature, hands out queued assignments to long polls,
 * and records what the agent reported. It can go down and come back on the same port.
 */
export class FakeControlPlane {
  readonly received: ReceivedRequest[] = [];
  readonly registrations: RegisterNodeRequest[] = [];
  readonly heartbeats: HeartbeatRequest[] = [];
  readonly progress = new Map<string, ProgressReport[]>();
  readonly results = new Map<string, ResultReport>();
  readonly failures = new Map<string, FailureReport>();
  /** Reports for these task ids are answered 409 lease_lost. */
  readonly lostLeases = new Set<string>();
  /** Sent, then cleared, in the next heartbeat response. */
  pendingAborts: HeartbeatResponse['abort'] = [];
  heartbeatIntervalMs = 100;
  override: Override | undefined;
  /** Requests whose signature did not verify; tests expect none. */
  badSignatures = 0;
  /** Sent in registration responses when set (sqs dispatch); left out otherwise, which means long-poll. */
  dispatch: Dispatch | undefined;
  /** Claims received (sqs dispatch), in order. */
  readonly claims: ClaimRequest[] = [];
  /** Claims of these task ids are refused with 409 does_not_fit. */
  readonly doesNotFit = new Set<string>();
  /** Called after a claim succeeded (where the real control plane deletes the hint). */
  onClaimed: ((claim: ClaimRequest) => void | Promise<void>) | undefined;
  /** Life of the credentials handed out (sqs dispatch). */
  credentialLifetimeMs = 3_600_000;
  /** Credentials handed out, in order. */
  readonly issuedCredentials: NodeCredentials[] = [];

  private readonly nodes = new Map<string, string>();
  private readonly queue: Assignment[] = [];
  private readonly claimable = new Map<string, Assignment>();
  private readonly pollWaiters = new Set<() => void>();
  private server: Server | undefined;

  private constructor(private port: number) {}

  static async start(): Promise<FakeControlPlane> {
    const fake = new FakeControlPlane(0);
    await fake.listen();
    return fake;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Queues an assignment for the next work poll. */
  enqueue(assignment: Assignment): void {
    this.queue.push(assignment);
    for (const wake of this.pollWaiters) wake();
  }

  /** Makes an assignment claimable by its task id (sqs dispatch); claims of other ids get 409 task_not_available. */
  offer(assignment: Assignment): void {
    this.claimable.set(assignment.taskId, assignment);
  }

  /** Forgets every registered node, like a control plane whose store was reset. */
  forgetNodes(): void {
    this.nodes.clear();
  }

  /** Goes down: the port refuses connections and open requests are cut. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return;
    for (const wake of this.pollWaiters) wake();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  /** Comes back on the same port, with the same state. */
  async restart(): Promise<void> {
    await this.listen();
  }

  /** Polls `probe` until it returns a value. */
  async waitFor<T>(probe: () => T | undefined | false, timeoutMs = 5_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = probe();
      if (value !== undefined && value !== false) return value;
      if (Date.now() > deadline) throw new Error('timed out waiting for the fake control plane');
      await delay(10);
    }
  }

  private async listen(): Promise<void> {
    const server = createServer((request, response) => {
      void this.handle(request, response).catch((error: unknown) => {
        if (!response.headersSent) send(response, 500, { error: { code: 'internal', message: String(error) } });
      });
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const method = request.method ?? 'GET';
    const pathWithQuery = request.url ?? '/';
    const body: unknown = text === '' ? undefined : JSON.parse(text);
    const url = new URL(pathWithQuery, this.url);

    const nodeId = header(request, signatureHeaders.node);
    const publicKey =
      method === 'POST' && url.pathname === '/v1/nodes'
        ? RegisterNodeRequest.parse(body).publicKey
        : this.nodes.get(nodeId ?? '');
    if (publicKey === undefined) {
      send(response, 401, { error: { code: 'unauthenticated', message: 'unknown node' } });
      return;
    }
    const message = canonicalRequest(
      method,
      pathWithQuery,
      Number(header(request, signatureHeaders.date)),
      header(request, signatureHeaders.nonce) ?? '',
      text,
    );
    if (
      nodeId !== nodeIdFromPublicKey(publicKey) ||
      !verifySignature(publicKey, message, header(request, signatureHeaders.signature) ?? '')
    ) {
      this.badSignatures++;
      send(response, 401, { error: { code: 'unauthenticated', message: 'bad signature' } });
      return;
    }

    const received = { method, path: url.pathname, body };
    this.received.push(received);
    const overridden = this.override?.(received);
    if (overridden !== undefined) {
      send(response, overridden.status, overridden.body);
      return;
    }
    await this.route(received, url, publicKey, response);
  }

  private async route(request: ReceivedRequest, url: URL, publicKey: string, response: ServerResponse): Promise<void> {
    const { method, path, body } = request;
    if (method === 'POST' && path === '/v1/nodes') {
      const registration = RegisterNodeRequest.parse(body);
      this.registrations.push(registration);
      const id = nodeIdFromPublicKey(publicKey);
      const known = this.nodes.has(id);
      this.nodes.set(id, publicKey);
      send(response, known ? 200 : 201, {
        node: nodeView(id, registration),
        heartbeatIntervalMs: this.heartbeatIntervalMs,
        leaseMs: 60_000,
        ...(this.dispatch === undefined ? {} : { dispatch: this.dispatch }),
      });
      return;
    }
    const match =
      /^\/v1\/nodes\/([^/]+)\/(heartbeat|work|claims|credentials|tasks\/([^/]+)\/(progress|result|fail))$/.exec(path);
    const [, , endpoint, taskId, report] = match ?? [];
    if (endpoint === 'heartbeat' && method === 'POST') {
      this.heartbeats.push(HeartbeatRequest.parse(body));
      const abort = this.pendingAborts;
      this.pendingAborts = [];
      send(response, 200, { abort, heartbeatIntervalMs: this.heartbeatIntervalMs });
    } else if (endpoint === 'work' && method === 'GET') {
      await this.poll(Number(url.searchParams.get('wait') ?? '0'), response);
    } else if (endpoint === 'claims' && method === 'POST') {
      await this.claim(ClaimRequest.parse(body), response);
    } else if (endpoint === 'credentials' && method === 'POST') {
      const n = this.issuedCredentials.length + 1;
      const credentials: NodeCredentials = {
        accessKeyId: `ASIAFAKE${n}`,
        secretAccessKey: `secret-${n}`,
        sessionToken: `token-${n}`,
        expiresAt: new Date(Date.now() + this.credentialLifetimeMs).toISOString(),
      };
      this.issuedCredentials.push(credentials);
      send(response, 200, credentials);
    } else if (taskId !== undefined && report !== undefined && method === 'POST') {
      this.report(decodeURIComponent(taskId), report, body, response);
    } else {
      send(response, 404, { error: { code: 'not_found', message: `${method} ${path}` } });
    }
  }

  private async poll(waitSeconds: number, response: ServerResponse): Promise<void> {
    const deadline = Date.now() + waitSeconds * 1000;
    while (this.queue.length === 0 && Date.now() < deadline && this.server !== undefined) {
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.pollWaiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, Math.max(0, deadline - Date.now()));
        this.pollWaiters.add(wake);
      });
    }
    const assignment = this.server === undefined ? undefined : this.queue.shift();
    if (assignment === undefined) send(response, 204);
    else send(response, 200, { assignment });
  }

  private async claim(claim: ClaimRequest, response: ServerResponse): Promise<void> {
    this.claims.push(claim);
    if (this.doesNotFit.has(claim.taskId)) {
      send(response, 409, { error: { code: 'does_not_fit', message: 'the task does not fit this node' } });
      return;
    }
    const assignment = this.claimable.get(claim.taskId);
    if (assignment === undefined) {
      send(response, 409, { error: { code: 'task_not_available', message: 'the task is not queued' } });
      return;
    }
    this.claimable.delete(claim.taskId);
    await this.onClaimed?.(claim);
    send(response, 200, { assignment });
  }

  private report(taskId: string, kind: string, body: unknown, response: ServerResponse): void {
    if (this.lostLeases.has(taskId)) {
      send(response, 409, { error: { code: 'lease_lost', message: 'the lease on this task is lost' } });
      return;
    }
    const now = new Date().toISOString();
    if (kind === 'progress') {
      const reports = this.progress.get(taskId) ?? [];
      reports.push(ProgressReport.parse(body));
      this.progress.set(taskId, reports);
      send(response, 200, { leaseExpiresAt: new Date(Date.now() + 60_000).toISOString() });
      return;
    }
    if (kind === 'result') this.results.set(taskId, ResultReport.parse(body));
    else this.failures.set(taskId, FailureReport.parse(body));
    send(response, 200, taskView(taskId, kind === 'result' ? 'reported' : 'queued', now));
  }
}

function header(request: IncomingMessage, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function send(response: ServerResponse, status: number, body?: unknown): void {
  if (response.destroyed) return;
  if (body === undefined) {
    response.writeHead(status).end();
    return;
  }
  response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

function nodeView(id: string, registration: RegisterNodeRequest): NodeView {
  const now = new Date().toISOString();
  return {
    id,
    name: registration.name ?? id,
    publicKey: registration.publicKey,
    agentVersion: registration.agentVersion,
    inventory: registration.inventory,
    pools: [],
    operator: 'anonymous',
    status: 'live',
    registeredAt: now,
    lastSeenAt: now,
    stats: { tasksCompleted: 0, tasksFailed: 0, leasesLost: 0 },
  };
}

function taskView(taskId: string, state: TaskView['state'], now: string): TaskView {
  const dot = taskId.lastIndexOf('.');
  return {
    id: taskId,
    jobId: taskId.slice(0, dot),
    index: Number(taskId.slice(dot + 1)),
    state,
    attempt: 1,
    maxAttempts: 3,
    attempts: [],
    queuedAt: now,
    updatedAt: now,
  };
}
