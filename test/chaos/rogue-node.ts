import { type Assignment, resultHash, sha256Hex, signRequest, taskIdOf } from '../../protocol/index.js';
import { cpuInventory, TestNode } from '../support/in-process.js';
import { isServerDefect } from './run-core.js';

/** What a rogue node did to one task it claimed. */
export type RogueMove =
  | 'malformed-json'
  | 'hash-mismatch'
  | 'stale-attempt'
  | 'foreign-task'
  | 'wrong-result'
  | 'release';
const moves: readonly RogueMove[] = [
  'malformed-json',
  'hash-mismatch',
  'stale-attempt',
  'foreign-task',
  'wrong-result',
  'release',
];

/**
 * A registered node that returns garbage: it claims real tasks and answers them with malformed
 * bodies, results whose hash is not their outputs', reports for attempts and tasks that are not
 * its own, well-formed wrong results, and releases. The control plane must refuse the garbage with
 * a 4xx and change nothing (the lease then runs out and the task goes to an honest node), and must
 * never let a wrong result pass an expected-hash job's verification.
 */
export class RogueNode {
  readonly moves = new Map<RogueMove, number>();
  /** Answers with a 5xx other than a throttled dependency's 503: bad input must be a 4xx. */
  readonly serverErrors: string[] = [];
  /** 503s with Retry-After (a dependency throttled past its retries): allowed, counted. */
  unavailable = 0;
  private node: TestNode;
  private stopped = false;
  private random: () => number;

  constructor(
    private readonly url: () => string,
    random: () => number,
  ) {
    this.random = random;
    this.node = new TestNode((path, init) => fetch(`${this.url()}${path}`, init));
  }

  get id(): string {
    return this.node.id;
  }

  /** Registers, then claims and spoils tasks until {@link stop}. Network errors (a restart) are waited out. */
  async run(): Promise<void> {
    while (!this.stopped) {
      try {
        const registered = await this.node.register(cpuInventory({ cpu: { model: 'rogue', cores: 2 } }));
        await this.note('register', registered);
        if (registered.ok) break;
      } catch {
        // The control plane is down (restarting): try again.
      }
      await pause(500);
    }
    while (!this.stopped) {
      try {
        const polled = await this.node.poll(1);
        await this.note('poll', polled);
        if (polled.status === 200) {
          const { assignment } = (await polled.json()) as { assignment: Assignment };
          await this.spoil(assignment);
          // One bad node among honest ones, not one that outpaces them all.
          await pause(1000 + this.random() * 1000);
        } else {
          await polled.body?.cancel();
          if (polled.status !== 204) await pause(500);
        }
      } catch {
        await pause(500);
      }
    }
  }

  stop(): void {
    this.stopped = true;
  }

  get garbageSent(): number {
    return [...this.moves.values()].reduce((a, b) => a + b, 0);
  }

  private async spoil(a: Assignment): Promise<void> {
    const move = moves[Math.floor(this.random() * moves.length)] as RogueMove;
    this.moves.set(move, (this.moves.get(move) ?? 0) + 1);
    const base = `/v1/nodes/${this.node.id}/tasks/${a.taskId}`;
    const fake = 'not what the command prints\n';
    const outputs = [{ name: 'stdout', sha256: sha256Hex(fake), bytes: Buffer.byteLength(fake) }];
    const result = {
      attempt: a.attempt,
      exitCode: 0,
      resultHash: resultHash(outputs),
      outputs,
      metrics: { wallMs: 1 },
    };
    let response: Response;
    switch (move) {
      case 'malformed-json':
        response = await this.rawPost(`${base}/result`, '{"attempt": 1, "exitCode": ');
        break;
      case 'hash-mismatch':
        response = await this.node.call('POST', `${base}/result`, { ...result, resultHash: sha256Hex('other') });
        break;
      case 'stale-attempt':
        response = await this.node.call('POST', `${base}/result`, { ...result, attempt: a.attempt + 7 });
        break;
      case 'foreign-task': {
        // Another task of the same job (or index 0 of a made-up one): never this node's.
        const other = taskIdOf(a.jobId, a.taskCount > 1 ? (a.index + 1) % a.taskCount : 999);
        response = await this.node.call('POST', `/v1/nodes/${this.node.id}/tasks/${other}/result`, result);
        break;
      }
      case 'wrong-result':
        response = await this.node.call('POST', `${base}/result`, result);
        break;
      case 'release':
        response = await this.node.call('POST', `${base}/fail`, {
          attempt: a.attempt,
          reason: 'released',
          message: 'rogue hands it back',
        });
        break;
    }
    await this.note(move, response);
  }

  /** A signed POST of `body` exactly as given (TestNode.call would serialise it as JSON). */
  private rawPost(path: string, body: string): Promise<Response> {
    const headers = {
      ...signRequest(this.node.key, this.node.id, { method: 'POST', pathWithQuery: path, body }),
      'content-type': 'application/json',
    };
    return fetch(`${this.url()}${path}`, { method: 'POST', headers, body });
  }

  private async note(what: string, response: Response): Promise<void> {
    if (isServerDefect(response.status, response.headers.get('retry-after')))
      this.serverErrors.push(`${what}: ${response.status} ${await response.text()}`);
    else if (response.status === 503) this.unavailable++;
  }
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
