import {
  ChangeMessageVisibilityCommand,
  CreateQueueCommand,
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  MessageNotInflight,
  QueueDoesNotExist,
  ReceiptHandleIsInvalid,
  ReceiveMessageCommand,
  SendMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import type { Queue, QueueDefinition, QueueMessage, ReceiveOptions } from '../../ports/queue.js';
import { QueueNotFoundError } from '../../ports/queue.js';
import { receiveSettings, sendDelaySeconds, validateDefinitions, visibilityChangeSeconds } from '../queue-rules.js';

/**
 * The {@link Queue} port on Amazon SQS (standard queues). The queues themselves, with their
 * visibility timeouts and redrive policies, are created by the deployment (or {@link createQueues}
 * in tests); this adapter only maps the port's queue names to their URLs.
 *
 * Receive counts and send times are SQS's `ApproximateReceiveCount` and `SentTimestamp`.
 * Dead-lettering is SQS's own: a message received `maxReceiveCount` times moves to the queue's
 * dead-letter queue on the next receive.
 */
export class SqsQueue implements Queue {
  readonly #client: SQSClient;
  readonly #queues: ReadonlyMap<string, { url: string; definition: QueueDefinition }>;
  /** Long polls in flight, which {@link SqsQueue.close} ends. */
  readonly #polls = new Set<AbortController>();
  #closed = false;

  /**
   * @param client a client for the queues' region; the caller owns it and destroys it.
   * @param queueUrls the URL of every defined queue, by name, as the deployment reports them.
   * @param definitions the queues, as every deployment defines them; a name missing from
   *   `queueUrls` is a configuration error, reported here rather than on first use.
   */
  constructor(client: SQSClient, queueUrls: Readonly<Record<string, string>>, definitions: readonly QueueDefinition[]) {
    this.#client = client;
    const queues = new Map<string, { url: string; definition: QueueDefinition }>();
    for (const definition of validateDefinitions(definitions).values()) {
      const url = queueUrls[definition.name];
      if (url === undefined || url === '') {
        throw new Error(`queue ${definition.name} is defined but has no URL in the configuration`);
      }
      queues.set(definition.name, { url, definition });
    }
    this.#queues = queues;
  }

  async send(queue: string, body: string, options: { delaySeconds?: number } = {}): Promise<string> {
    const { url } = this.#queue(queue);
    const DelaySeconds = sendDelaySeconds(options.delaySeconds);
    const { MessageId } = await this.#call(queue, () =>
      this.#client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: body, DelaySeconds })),
    );
    if (MessageId === undefined) {
      throw new Error(`SQS answered SendMessage on ${queue} without a message id`);
    }
    return MessageId;
  }

  async receive(queue: string, options: ReceiveOptions = {}): Promise<QueueMessage[]> {
    const { url, definition } = this.#queue(queue);
    const settings = receiveSettings(options, definition);
    const command = new ReceiveMessageCommand({
      QueueUrl: url,
      MaxNumberOfMessages: settings.maxMessages,
      // Always explicit, so the definition rules even where the deployed queue's default differs.
      VisibilityTimeout: settings.visibilityTimeoutSeconds,
      WaitTimeSeconds: settings.waitSeconds,
      MessageSystemAttributeNames: ['ApproximateReceiveCount', 'SentTimestamp'],
    });
    const poll = new AbortController();
    this.#polls.add(poll);
    try {
      const { Messages = [] } = await this.#call(queue, () => this.#client.send(command, { abortSignal: poll.signal }));
      return Messages.map((message): QueueMessage => {
        const { MessageId, Body, ReceiptHandle, Attributes = {} } = message;
        const receiveCount = Number(Attributes.ApproximateReceiveCount);
        const sentAt = Number(Attributes.SentTimestamp);
        if (MessageId === undefined || Body === undefined || ReceiptHandle === undefined) {
          throw new Error(`SQS answered ReceiveMessage on ${queue} with an incomplete message`);
        }
        if (!Number.isSafeInteger(receiveCount) || !Number.isFinite(sentAt)) {
          throw new Error(`SQS answered ReceiveMessage on ${queue} without the receive count or send time`);
        }
        return { id: MessageId, body: Body, receiptHandle: ReceiptHandle, receiveCount, sentAt };
      });
    } catch (error) {
      // A poll cut short by close() ends with no messages, as the embedded queue's does.
      if (poll.signal.aborted && this.#closed) {
        return [];
      }
      throw error;
    } finally {
      this.#polls.delete(poll);
    }
  }

  /** SQS answers success for a stale handle of a message that still exists (see the port). */
  async delete(queue: string, receiptHandle: string): Promise<boolean> {
    const { url } = this.#queue(queue);
    try {
      await this.#call(queue, () =>
        this.#client.send(new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: receiptHandle })),
      );
      return true;
    } catch (error) {
      if (isStaleHandle(error)) {
        return false;
      }
      throw error;
    }
  }

  async changeVisibility(queue: string, receiptHandle: string, seconds: number): Promise<boolean> {
    const { url } = this.#queue(queue);
    const VisibilityTimeout = visibilityChangeSeconds(seconds);
    try {
      await this.#call(queue, () =>
        this.#client.send(
          new ChangeMessageVisibilityCommand({ QueueUrl: url, ReceiptHandle: receiptHandle, VisibilityTimeout }),
        ),
      );
      return true;
    } catch (error) {
      if (isStaleHandle(error)) {
        return false;
      }
      throw error;
    }
  }

  async depth(queue: string): Promise<number> {
    const { url } = this.#queue(queue);
    const { Attributes = {} } = await this.#call(queue, () =>
      this.#client.send(
        new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['ApproximateNumberOfMessages'] }),
      ),
    );
    const depth = Number(Attributes.ApproximateNumberOfMessages);
    if (!Number.isSafeInteger(depth)) {
      throw new Error(`SQS answered GetQueueAttributes on ${queue} without ApproximateNumberOfMessages`);
    }
    return depth;
  }

  /**
   * Ends pending long polls (they return no messages) and refuses later calls. The caller owns the
   * client, so it stays open.
   */
  async close(): Promise<void> {
    this.#closed = true;
    for (const poll of this.#polls) {
      poll.abort();
    }
  }

  #queue(queue: string): { url: string; definition: QueueDefinition } {
    if (this.#closed) {
      throw new Error('the queue adapter is closed');
    }
    const found = this.#queues.get(queue);
    if (found === undefined) {
      const known = [...this.#queues.keys()].join(', ');
      throw new QueueNotFoundError(`queue ${JSON.stringify(queue)} is not defined (defined: ${known})`);
    }
    return found;
  }

  /** Runs one SQS call, reporting a queue missing from the account as the port's QueueNotFoundError. */
  async #call<T>(queue: string, request: () => Promise<T>): Promise<T> {
    try {
      return await request();
    } catch (error) {
      if (error instanceof QueueDoesNotExist) {
        throw new QueueNotFoundError(`queue ${queue} is configured but does not exist in SQS`, { cause: error });
      }
      throw error;
    }
  }
}

/**
 * Whether SQS refused a receipt handle as stale: malformed, of a deleted message, or of a message
 * no longer in flight. SQS reports the last as InvalidParameterValue, which no other parameter can
 * cause here since every other value is checked before the call.
 */
function isStaleHandle(error: unknown): boolean {
  if (error instanceof ReceiptHandleIsInvalid || error instanceof MessageNotInflight) {
    return true;
  }
  const name = error instanceof Error ? error.name : '';
  return name === 'InvalidParameterValue' || name === 'InvalidParameterValueException';
}

/**
 * Creates every defined queue, dead-letter queues before the queues that redrive to them, and
 * returns their URLs by name: for tests and local tooling; deployments create the queues with the
 * CDK app. Creating a queue that exists with the same attributes returns its URL.
 */
export async function createQueues(
  client: SQSClient,
  definitions: readonly QueueDefinition[],
): Promise<Record<string, string>> {
  const byName = validateDefinitions(definitions);
  const urls: Record<string, string> = {};
  const arns = new Map<string, string>();
  const creating = new Set<string>();

  const create = async (definition: QueueDefinition): Promise<void> => {
    if (urls[definition.name] !== undefined) {
      return;
    }
    if (creating.has(definition.name)) {
      throw new Error(`queue ${definition.name} is part of a cycle of dead-letter queues`);
    }
    creating.add(definition.name);
    const attributes: Record<string, string> = { VisibilityTimeout: String(definition.visibilityTimeoutSeconds) };
    if (definition.deadLetterQueue !== undefined && definition.maxReceives !== undefined) {
      const deadLetter = byName.get(definition.deadLetterQueue);
      if (deadLetter !== undefined) {
        // SQS needs the dead-letter queue's ARN, so it must exist first.
        await create(deadLetter);
      }
      attributes.RedrivePolicy = JSON.stringify({
        deadLetterTargetArn: arns.get(definition.deadLetterQueue),
        maxReceiveCount: definition.maxReceives,
      });
    }
    const { QueueUrl } = await client.send(
      new CreateQueueCommand({ QueueName: definition.name, Attributes: attributes }),
    );
    const { Attributes } = await client.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['QueueArn'] }));
    if (QueueUrl === undefined || Attributes?.QueueArn === undefined) {
      throw new Error(`SQS created queue ${definition.name} without reporting its URL and ARN`);
    }
    urls[definition.name] = QueueUrl;
    arns.set(definition.name, Attributes.QueueArn);
  };

  for (const definition of byName.values()) {
    await create(definition);
  }
  return urls;
}
