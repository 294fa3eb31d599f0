import { createHash } from 'node:crypto';
import {
  CreateQueueCommand,
  DeleteMessageCommand,
  QueueDoesNotExist,
  ReceiptHandleIsInvalid,
  SendMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import type { WorkDispatch, WorkHintMessage, WorkHints } from '../../ports/work-hints.js';

/** SQS's limit on a queue name. */
const maxQueueName = 80;
const hashLength = 8;

/** The attributes of every pool queue: a hint is short-lived news, not a record. */
export const poolQueueAttributes = {
  VisibilityTimeout: '30',
  MessageRetentionPeriod: String(4 * 24 * 3600),
} as const;

export interface SqsWorkHintsOptions {
  /** Starts every pool queue's name (the stack name): `<prefix>-pool-…`. */
  prefix: string;
  /** The queues' region, which agents' SQS clients need. */
  region: string;
  /** The SQS endpoint agents use instead of the regional one; set only against emulators. */
  endpoint?: string;
}

/**
 * The SQS queue name of `pool`: `<prefix>-pool-<pool with every character SQS refuses replaced by
 * "-", shortened to fit>-<first 8 hex digits of sha256(pool)>`. The hash keeps names of pools that
 * sanitise alike apart; the whole is at most 80 characters of `[A-Za-z0-9_-]`.
 */
export function poolQueueName(prefix: string, pool: string): string {
  const head = `${prefix}-pool-`;
  const room = maxQueueName - head.length - 1 - hashLength;
  if (!/^[A-Za-z0-9_-]+$/.test(prefix) || room < 1) {
    throw new Error(`pool queue prefix ${JSON.stringify(prefix)} must be 1 to 64 characters of [A-Za-z0-9_-]`);
  }
  const sanitised = pool.replace(/[^A-Za-z0-9_-]/g, '-').slice(0, room);
  const hash = createHash('sha256').update(pool).digest('hex').slice(0, hashLength);
  return `${head}${sanitised}-${hash}`;
}

/**
 * The {@link WorkHints} port on Amazon SQS: one standard queue per pool, created on first use
 * (CreateQueue is idempotent for equal attributes), whose URLs are cached for the sandbox's life.
 * Agents long-poll their pools' queues with credentials from the {@link CredentialIssuer}; the
 * control plane sends hints and deletes the hints of claims that held.
 *
 * @see poolQueueName for the queue names.
 */
export class SqsWorkHints implements WorkHints {
  readonly #client: SQSClient;
  readonly #options: SqsWorkHintsOptions;
  readonly #urls = new Map<string, Promise<string>>();

  /** @param client a client for the queues' region; the caller owns it and destroys it. */
  constructor(client: SQSClient, options: SqsWorkHintsOptions) {
    poolQueueName(options.prefix, 'check'); // rejects a bad prefix at wiring time
    this.#client = client;
    this.#options = options;
  }

  /** The pool queues' name prefix. */
  get prefix(): string {
    return this.#options.prefix;
  }

  async dispatchFor(pools: readonly string[]): Promise<WorkDispatch> {
    const queues = await Promise.all(pools.map(async (pool) => ({ pool, url: await this.queueUrl(pool) })));
    return {
      mode: 'sqs',
      region: this.#options.region,
      queues,
      ...(this.#options.endpoint === undefined ? {} : { endpoint: this.#options.endpoint }),
    };
  }

  async publish(hint: WorkHintMessage): Promise<void> {
    const body = JSON.stringify({ taskId: hint.taskId, pool: hint.pool, queuedAt: hint.queuedAt });
    for (let attempt = 0; ; attempt++) {
      const url = await this.queueUrl(hint.pool);
      try {
        await this.#client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: body }));
        return;
      } catch (error) {
        // The queue was deleted behind the cache's back: create it again, once.
        if (!(error instanceof QueueDoesNotExist) || attempt > 0) throw error;
        this.#urls.delete(hint.pool);
      }
    }
  }

  /**
   * Deletes a hint, but only from a pool queue this adapter made or looked up (the URL SQS gave it,
   * character for character): the URL comes from a node, and a name that merely looks like a pool
   * queue's could sit on any host. The client must also be built with `useQueueUrlAsEndpoint: false`
   * (functions/adapters/aws/clients.ts), so that no URL ever picks the host a request goes to.
   */
  async acknowledge(queueUrl: string, receiptHandle: string): Promise<void> {
    if (!(await this.#isPoolQueue(queueUrl))) return;
    try {
      await this.#client.send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: receiptHandle }));
    } catch (error) {
      if (error instanceof ReceiptHandleIsInvalid || error instanceof QueueDoesNotExist) return;
      if (error instanceof Error && /ReceiptHandle|InvalidParameterValue/i.test(error.name)) return;
      throw error;
    }
  }

  async #isPoolQueue(queueUrl: string): Promise<boolean> {
    const known = await Promise.all([...this.#urls.values()].map((url) => url.catch(() => undefined)));
    return known.includes(queueUrl);
  }

  /** The URL of `pool`'s queue, created on first use. */
  queueUrl(pool: string): Promise<string> {
    let url = this.#urls.get(pool);
    if (url === undefined) {
      url = this.#create(pool);
      this.#urls.set(pool, url);
      // A failed creation is not cached: the next use tries again.
      const created = url;
      created.catch(() => {
        if (this.#urls.get(pool) === created) this.#urls.delete(pool);
      });
    }
    return url;
  }

  async #create(pool: string): Promise<string> {
    const { QueueUrl } = await this.#client.send(
      new CreateQueueCommand({ QueueName: poolQueueName(this.#options.prefix, pool), Attributes: poolQueueAttributes }),
    );
    if (QueueUrl === undefined) throw new Error(`SQS answered CreateQueue for pool ${pool} without a URL`);
    return QueueUrl;
  }
}
