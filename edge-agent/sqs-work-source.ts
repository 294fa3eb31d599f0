import { ChangeMessageVisibilityCommand, ReceiveMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { type Assignment, type Dispatch, WorkHint } from '../protocol/index.js';
import { type BackoffPolicy, backoffDelayMs, sleep } from './backoff.js';
import { type AwsCredentials, CredentialCache } from './credentials.js';
import { AgentError, ClaimRefusedError, NodeNotRegisteredError, RequestRejectedError } from './errors.js';
import type { Logger } from './log.js';
import type { AsNode, WorkClient, WorkSource } from './work-source.js';

/** A message received from a pool queue. */
export interface SqsMessage {
  body: string;
  receiptHandle: string;
}

/** The two SQS calls the agent makes (its credentials allow nothing else). */
export interface SqsPort {
  receive(
    request: { queueUrl: string; waitSeconds: number; maxMessages: number; visibilityTimeoutSeconds: number },
    signal: AbortSignal,
  ): Promise<SqsMessage[]>;
  /**
   * `ChangeMessageVisibility`: another node may receive the message at once (`hideSeconds` 0), or
   * only after `hideSeconds`.
   */
  release(queueUrl: string, receiptHandle: string, hideSeconds?: number): Promise<void>;
  destroy(): void;
}

export interface SqsPortConfig {
  region: string;
  /** Set only against emulators. */
  endpoint?: string;
  credentials: AwsCredentials;
}

/** Makes an SqsPort for one generation of credentials; tests pass an in-memory one. */
export type SqsPortFactory = (config: SqsPortConfig) => SqsPort;

/** The SqsPort over the AWS SDK's SQS client. */
export const awsSqsPort: SqsPortFactory = (config) => {
  const { accessKeyId, secretAccessKey, sessionToken } = config.credentials;
  const client = new SQSClient({
    region: config.region,
    // No expiration: the SDK would otherwise keep asking for newer ones; CredentialCache decides.
    credentials: { accessKeyId, secretAccessKey, sessionToken },
    ...(config.endpoint === undefined ? {} : { endpoint: config.endpoint }),
  });
  return {
    async receive(request, signal) {
      const output = await client.send(
        new ReceiveMessageCommand({
          QueueUrl: request.queueUrl,
          WaitTimeSeconds: request.waitSeconds,
          MaxNumberOfMessages: request.maxMessages,
          VisibilityTimeout: request.visibilityTimeoutSeconds,
        }),
        { abortSignal: signal },
      );
      return (output.Messages ?? []).flatMap((message) =>
        message.ReceiptHandle === undefined ? [] : [{ body: message.Body ?? '', receiptHandle: message.ReceiptHandle }],
      );
    },
    async release(queueUrl, receiptHandle, hideSeconds = 0) {
      await client.send(
        new ChangeMessageVisibilityCommand({
          QueueUrl: queueUrl,
          ReceiptHandle: receiptHandle,
          VisibilityTimeout: hideSeconds,
        }),
      );
    },
    destroy() {
      client.destroy();
    },
  };
};

export type SqsDispatch = Extract<Dispatch, { mode: 'sqs' }>;

export interface SqsLongPollOptions {
  client: Pick<WorkClient, 'claim' | 'credentials'>;
  asNode: AsNode;
  dispatch: SqsDispatch;
  /** ReceiveMessage's WaitTimeSeconds (capped at SQS's 20). */
  waitSeconds: number;
  logger: Logger;
  backoff: BackoffPolicy;
  /**
   * Ends claims. A claim already sent is seen through when polling stops (the agent then releases
   * the task it got at once, as with a long poll answered at shutdown), so this is the agent's
   * reporting signal, not the polling one.
   */
  claimSignal: AbortSignal;
  sqs?: SqsPortFactory;
  /** How long a task that did not fit is released unseen when its hint comes back (default 3 min). */
  bounceMemoryMs?: number;
}

/** Seconds a received hint stays hidden from other nodes while this one claims it. */
const visibilityTimeoutSeconds = 30;
const maxWaitSeconds = 20;
/** SQS's longest visibility timeout, for a hint no node can ever claim. */
const malformedHintHideSeconds = 43_200;
const credentialErrorPattern = /ExpiredToken|AccessDenied|InvalidClientTokenId|UnrecognizedClient|InvalidAccessKeyId/;

interface PortLease {
  sqs: SqsPort;
  credentials: AwsCredentials;
  users: number;
  retired: boolean;
}

/**
 * `sqs` dispatch (docs/cost-model.md section 6): long-polls the node's pool queues with temporary
 * credentials (CredentialCache), one ReceiveMessage of one message per call, the queues taken in
 * turn so no pool starves. A message is a WorkHint, not a grant: the task is claimed with
 * `POST /v1/nodes/{id}/claims`. A task that does not fit is released (visibility 0) for another
 * node and remembered for a while, so that its hint coming back is released again at once; a
 * stale hint (already claimed, cancelled, unknown) is left alone: the control plane deletes hints
 * it has claimed, and stale ones expire. The agent never deletes messages.
 */
export class SqsLongPoll implements WorkSource {
  private readonly credentials: CredentialCache;
  private readonly createPort: SqsPortFactory;
  private readonly closed = new AbortController();
  private readonly bounced = new Map<string, number>();
  private port: PortLease | undefined;
  private nextQueue = 0;
  private receiveFailures = 0;

  constructor(private readonly options: SqsLongPollOptions) {
    this.createPort = options.sqs ?? awsSqsPort;
    this.credentials = new CredentialCache({
      fetch: (signal) => options.asNode(() => options.client.credentials({ retry: 'forever', signal }), signal),
    });
  }

  /** How many times credentials were fetched. */
  get credentialFetches(): number {
    return this.credentials.fetches;
  }

  async next(signal: AbortSignal): Promise<Assignment | undefined> {
    const stop = AbortSignal.any([signal, this.closed.signal]);
    const { queues } = this.options.dispatch;
    const queue = queues[this.nextQueue++ % Math.max(1, queues.length)];
    if (queue === undefined) {
      // No pool yet: nothing can be hinted to this node. Wait a poll, as an empty long poll would.
      await sleep(this.waitSeconds * 1000, stop);
      return undefined;
    }
    const credentials = await this.credentials.get(stop);
    if (stop.aborted) return undefined;
    const lease = this.acquire(credentials);
    try {
      const message = await this.receive(lease, queue.url, stop);
      return message === undefined ? undefined : await this.handle(lease, queue.url, message, stop);
    } finally {
      this.unlease(lease);
    }
  }

  close(): void {
    this.closed.abort();
    if (this.port !== undefined) this.retire(this.port);
  }

  private get waitSeconds(): number {
    return Math.min(maxWaitSeconds, Math.max(0, this.options.waitSeconds));
  }

  private async receive(lease: PortLease, queueUrl: string, stop: AbortSignal): Promise<SqsMessage | undefined> {
    let messages: SqsMessage[];
    try {
      messages = await lease.sqs.receive(
        { queueUrl, waitSeconds: this.waitSeconds, maxMessages: 1, visibilityTimeoutSeconds },
        stop,
      );
    } catch (error) {
      if (stop.aborted) return undefined;
      if (isCredentialError(error)) {
        this.options.logger.warn(`SQS refused the node credentials (${describe(error)}); fetching new ones`);
        this.credentials.invalidate(lease.credentials);
      } else if (this.receiveFailures === 0) {
        this.options.logger.warn(`receiving work hints failed: ${describe(error)}; retrying`, { queue: queueUrl });
      }
      await sleep(backoffDelayMs(this.options.backoff, this.receiveFailures++), stop);
      return undefined;
    }
    if (this.receiveFailures > 0) {
      this.receiveFailures = 0;
      this.options.logger.info('receiving work hints again');
    }
    return messages[0];
  }

  private async handle(
    lease: PortLease,
    queueUrl: string,
    message: SqsMessage,
    stop: AbortSignal,
  ): Promise<Assignment | undefined> {
    const { logger, client, asNode, claimSignal } = this.options;
    const hint = parseHint(message.body);
    if (typeof hint === 'string') {
      // Nodes may not delete hints, and pool queues have no dead-letter queue: hidden for SQS's
      // longest visibility timeout, it comes back a few times before its retention ends instead of
      // at every receive of every node in the pool.
      logger.error(`malformed work hint set aside for 12 h: ${hint}`, { queue: queueUrl });
      await this.release(lease, queueUrl, message, malformedHintHideSeconds);
      await sleep(releasePauseMs(), stop);
      return undefined;
    }
    if (this.recentlyBounced(hint.taskId)) {
      // Another node may take it at once.
      await this.release(lease, queueUrl, message);
      await sleep(releasePauseMs(), stop);
      return undefined;
    }
    try {
      return await asNode(
        () =>
          client.claim(hint.taskId, queueUrl, message.receiptHandle, { retry: { attempts: 3 }, signal: claimSignal }),
        claimSignal,
      );
    } catch (error) {
      if (error instanceof ClaimRefusedError && error.code === 'does_not_fit') {
        logger.info(`task ${hint.taskId} does not fit this node; hint released`, { pool: hint.pool });
        this.rememberBounce(hint.taskId);
        await this.release(lease, queueUrl, message);
        return undefined;
      }
      if (error instanceof ClaimRefusedError || isNotFound(error)) {
        logger.info(`stale work hint for task ${hint.taskId} (${describe(error)}); left to expire`, {
          pool: hint.pool,
        });
        return undefined;
      }
      if (claimSignal.aborted) return undefined;
      if (error instanceof AgentError && error.retryable) {
        // The hint stays hidden for its visibility timeout, then another node (or this one) tries again.
        logger.warn(`claiming task ${hint.taskId} failed: ${describe(error)}`);
        return undefined;
      }
      throw error;
    }
  }

  private async release(lease: PortLease, queueUrl: string, message: SqsMessage, hideSeconds = 0): Promise<void> {
    try {
      await lease.sqs.release(queueUrl, message.receiptHandle, hideSeconds);
    } catch (error) {
      // It becomes visible again after its visibility timeout anyway.
      this.options.logger.warn(`releasing a work hint failed: ${describe(error)}`, { queue: queueUrl });
      if (isCredentialError(error)) this.credentials.invalidate(lease.credentials);
    }
  }

  private recentlyBounced(taskId: string): boolean {
    const until = this.bounced.get(taskId);
    if (until === undefined) return false;
    if (Date.now() < until) return true;
    this.bounced.delete(taskId);
    return false;
  }

  private rememberBounce(taskId: string): void {
    const now = Date.now();
    for (const [id, until] of this.bounced) if (until <= now) this.bounced.delete(id);
    this.bounced.set(taskId, now + (this.options.bounceMemoryMs ?? 180_000));
  }

  /** The SQS client for these credentials, made anew when they change; the old one is closed once unused. */
  private acquire(credentials: AwsCredentials): PortLease {
    if (this.port === undefined || this.port.credentials !== credentials) {
      if (this.port !== undefined) this.retire(this.port);
      const { region, endpoint } = this.options.dispatch;
      this.port = {
        sqs: this.createPort({ region, credentials, ...(endpoint === undefined ? {} : { endpoint }) }),
        credentials,
        users: 0,
        retired: false,
      };
    }
    this.port.users++;
    return this.port;
  }

  private unlease(lease: PortLease): void {
    lease.users--;
    if (lease.retired && lease.users === 0) lease.sqs.destroy();
  }

  private retire(lease: PortLease): void {
    if (lease.retired) return;
    lease.retired = true;
    if (this.port === lease) this.port = undefined;
    if (lease.users === 0) lease.sqs.destroy();
  }
}

/**
 * After releasing a hint it will not claim (malformed, or a task that did not fit a moment ago),
 * a worker pauses this long, so that alone with the hint it does not spin receiving and releasing it.
 */
function releasePauseMs(): number {
  return 250 + Math.random() * 750;
}

/** The hint, or why the body is not one. */
function parseHint(body: string): WorkHint | string {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    return `not JSON: ${body.slice(0, 100)}`;
  }
  const parsed = WorkHint.safeParse(json);
  if (parsed.success) return parsed.data;
  return parsed.error.issues
    .slice(0, 3)
    .map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`)
    .join('; ');
}

function isCredentialError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { Code?: unknown }).Code;
  return credentialErrorPattern.test(error.name) || (typeof code === 'string' && credentialErrorPattern.test(code));
}

/** 404 for the task itself (not `node_not_found`, which re-registers): the hint names no task. */
function isNotFound(error: unknown): boolean {
  return error instanceof RequestRejectedError && !(error instanceof NodeNotRegisteredError) && error.status === 404;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
