/**
 * The two AWS pieces of `sqs` dispatch, for agent tests that run the real control plane without
 * AWS: the pool queues live in the agent tests' in-memory SQS (edge-agent/test-support/memory-sqs.ts)
 * and credentials come from a stand-in for STS. Everything else (registration's dispatch, claims,
 * fit, stale hints, credential scoping by pool) is the real control plane's.
 */
import type { MemorySqs } from '../../edge-agent/test-support/memory-sqs.js';
import type { CredentialIssuer, IssuedCredentials } from '../../functions/ports/node-credentials.js';
import type { WorkDispatch, WorkHintMessage, WorkHints } from '../../functions/ports/work-hints.js';

/** The queue URL of `pool`, shaped as SQS's (the agent parses nothing from it but compares it). */
export const memoryPoolQueueUrl = (pool: string): string =>
  `https://sqs.eu-west-1.amazonaws.com/123456789012/gpuai-pool-${pool.replace(/[^A-Za-z0-9_-]/g, '-')}`;

/** {@link WorkHints} over {@link MemorySqs}: one queue per pool, as SqsWorkHints keeps on SQS. */
export class MemorySqsWorkHints implements WorkHints {
  readonly acknowledged: string[] = [];
  constructor(
    private readonly sqs: MemorySqs,
    private readonly region = 'eu-west-1',
  ) {}

  async dispatchFor(pools: readonly string[]): Promise<WorkDispatch> {
    return { mode: 'sqs', region: this.region, queues: pools.map((pool) => ({ pool, url: memoryPoolQueueUrl(pool) })) };
  }

  async publish(hint: WorkHintMessage): Promise<void> {
    this.sqs.send(memoryPoolQueueUrl(hint.pool), hint);
  }

  async acknowledge(queueUrl: string, receiptHandle: string): Promise<void> {
    this.acknowledged.push(receiptHandle);
    this.sqs.delete(queueUrl, receiptHandle);
  }
}

/**
 * A stand-in for STS: credentials whose life the test sets (STS gives at least 900 s, too long to
 * watch an agent refresh them), numbered `ASIAFAKE1`, `ASIAFAKE2`, …
 */
export class ShortLivedCredentials implements CredentialIssuer {
  readonly issued: (IssuedCredentials & { nodeId: string; queueUrls: readonly string[] })[] = [];
  lifetimeMs = 3_600_000;

  async issue(nodeId: string, queueUrls: readonly string[]): Promise<IssuedCredentials> {
    const n = this.issued.length + 1;
    const credentials = {
      accessKeyId: `ASIAFAKE${n}`,
      secretAccessKey: `secret-${n}`,
      sessionToken: `token-${n}`,
      expiresAt: new Date(Date.now() + this.lifetimeMs).toISOString(),
    };
    this.issued.push({ ...credentials, nodeId, queueUrls });
    return credentials;
  }
}
