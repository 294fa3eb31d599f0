import {
  type Assignment,
  generateNodeKeyPair,
  loadNodeKeyPair,
  type NodeInventory,
  type NodeKeyPair,
  nodeIdFromPublicKey,
  signRequest,
} from '../../protocol/index.js';

/**
 * A node as the bench drives it: registers, polls, heartbeats and reports over real HTTP with
 * requests signed as the agent signs them (edge-agent/client.ts), but without running anything,
 * so the bench decides when it takes work and when it dies.
 */
export class BenchAgent {
  readonly key: NodeKeyPair;
  readonly id: string;
  private lastDate = 0;

  constructor(private readonly api: string) {
    this.key = loadNodeKeyPair(generateNodeKeyPair().privateKeyPem);
    this.id = nodeIdFromPublicKey(this.key.publicKey);
  }

  async call(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
    const text = body === undefined ? '' : JSON.stringify(body);
    // Signed dates strictly increase per node, as a heartbeat's replay protection asks.
    const date = Math.max(Date.now(), this.lastDate + 1);
    this.lastDate = date;
    return fetch(`${this.api}${path}`, {
      method,
      headers: {
        ...signRequest(this.key, this.id, { method, pathWithQuery: path, body: text }, date),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: text }),
      ...(signal === undefined ? {} : { signal }),
    });
  }

  async register(inventory: NodeInventory): Promise<void> {
    const res = await this.call('POST', '/v1/nodes', {
      publicKey: this.key.publicKey,
      agentVersion: 'bench',
      inventory,
    });
    if (!res.ok) throw new Error(`register: ${res.status} ${await res.text()}`);
  }

  /** One poll; `wait` seconds of long poll. */
  async poll(wait: number, signal?: AbortSignal): Promise<Assignment | undefined> {
    const res = await this.call('GET', `/v1/nodes/${this.id}/work?wait=${wait}`, undefined, signal);
    if (res.status === 204) return undefined;
    if (!res.ok) throw new Error(`poll: ${res.status} ${await res.text()}`);
    return ((await res.json()) as { assignment: Assignment }).assignment;
  }

  async heartbeat(held: readonly Assignment[]): Promise<void> {
    const res = await this.call('POST', `/v1/nodes/${this.id}/heartbeat`, {
      tasks: held.map((a) => ({ taskId: a.taskId, attempt: a.attempt })),
    });
    if (!res.ok) throw new Error(`heartbeat: ${res.status} ${await res.text()}`);
  }

  async progress(a: Assignment): Promise<void> {
    const res = await this.call('POST', `/v1/nodes/${this.id}/tasks/${a.taskId}/progress`, {
      attempt: a.attempt,
      percent: 10,
    });
    if (!res.ok) throw new Error(`progress: ${res.status} ${await res.text()}`);
  }
}
