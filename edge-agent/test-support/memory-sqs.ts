import { setTimeout as delay } from 'node:timers/promises';
import type { SqsMessage, SqsPort, SqsPortConfig, SqsPortFactory } from '../sqs-work-source.js';

interface StoredMessage {
  body: string;
  visibleAt: number;
  receiptHandle: string | undefined;
  receives: number;
}

/**
 * An in-memory stand-in for the SQS queues of `sqs` dispatch: long-polling receives, visibility
 * timeouts and ChangeMessageVisibility, enough for agent unit tests. `port` is the SqsPortFactory
 * to hand the agent; every call is recorded.
 */
export class MemorySqs {
  readonly configs: SqsPortConfig[] = [];
  readonly receives: { queueUrl: string; accessKeyId: string }[] = [];
  readonly releases: string[] = [];
  /** Thrown by the next receive, once (e.g. an ExpiredToken error). */
  failNextReceive: Error | undefined;
  destroyed = 0;
  private readonly queues = new Map<string, StoredMessage[]>();
  private handles = 0;

  readonly port: SqsPortFactory = (config) => {
    this.configs.push(config);
    const port: SqsPort = {
      receive: (request, signal) => this.receive(request, signal, config),
      release: (queueUrl, receiptHandle, hideSeconds = 0) => {
        this.releases.push(receiptHandle);
        const message = this.queue(queueUrl).find((candidate) => candidate.receiptHandle === receiptHandle);
        if (message !== undefined) message.visibleAt = hideSeconds === 0 ? 0 : Date.now() + hideSeconds * 1000;
        return Promise.resolve();
      },
      destroy: () => {
        this.destroyed++;
      },
    };
    return port;
  };

  send(queueUrl: string, body: unknown): void {
    this.queue(queueUrl).push({
      body: typeof body === 'string' ? body : JSON.stringify(body),
      visibleAt: 0,
      receiptHandle: undefined,
      receives: 0,
    });
  }

  /** Deletes the message `receiptHandle` names, as DeleteMessage does; a stale handle is no error. */
  delete(queueUrl: string, receiptHandle: string): void {
    const queue = this.queue(queueUrl);
    const index = queue.findIndex((message) => message.receiptHandle === receiptHandle);
    if (index >= 0) queue.splice(index, 1);
  }

  /** Messages of the queue visible now. */
  visible(queueUrl: string): number {
    return this.queue(queueUrl).filter((message) => message.visibleAt <= Date.now()).length;
  }

  /** How often the message with this body was received. */
  receiveCount(queueUrl: string, body: unknown): number {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    return this.queue(queueUrl).find((message) => message.body === text)?.receives ?? 0;
  }

  private queue(url: string): StoredMessage[] {
    let queue = this.queues.get(url);
    if (queue === undefined) {
      queue = [];
      this.queues.set(url, queue);
    }
    return queue;
  }

  private async receive(
    request: { queueUrl: string; waitSeconds: number; maxMessages: number; visibilityTimeoutSeconds: number },
    signal: AbortSignal,
    config: SqsPortConfig,
  ): Promise<SqsMessage[]> {
    this.receives.push({ queueUrl: request.queueUrl, accessKeyId: config.credentials.accessKeyId });
    // A real receive is a network round trip: never answer synchronously.
    await delay(1);
    const failure = this.failNextReceive;
    if (failure !== undefined) {
      this.failNextReceive = undefined;
      throw failure;
    }
    const deadline = Date.now() + request.waitSeconds * 1000;
    for (;;) {
      if (signal.aborted) throw new Error('Request aborted');
      // SQS standard queues promise no order; the least received visible message comes first, so a
      // released message does not hide the ones behind it (as a strict head of line would).
      const message = this.queue(request.queueUrl)
        .filter((candidate) => candidate.visibleAt <= Date.now())
        .sort((a, b) => a.receives - b.receives)[0];
      if (message !== undefined) {
        message.visibleAt = Date.now() + request.visibilityTimeoutSeconds * 1000;
        message.receiptHandle = `rh-${++this.handles}`;
        message.receives++;
        return [{ body: message.body, receiptHandle: message.receiptHandle }];
      }
      if (Date.now() >= deadline) return [];
      await delay(10);
    }
  }
}
