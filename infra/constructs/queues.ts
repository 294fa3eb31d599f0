import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import { Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { queueDefinitions } from '../../functions/workers/queues.js';

export interface QueuesProps {
  /** The timeout of the Lambda functions that consume the work queues. */
  consumerTimeout: Duration;
}

/**
 * The control plane's SQS queues, one per entry of {@link queueDefinitions}, with the dead-letter
 * queues and receive counts the definitions name. Every queue is encrypted with SSE-KMS under the
 * AWS managed key `alias/aws/sqs`, whose key policy lets every principal of the account that may
 * use SQS use it through SQS (so no key grant in the functions' policies and no key to pay for),
 * and refuses requests that do not use TLS. (SSE-SQS would encrypt as well, but KMS leaves an
 * audit trail in CloudTrail and is what checkov's CKV_AWS_27 recognises.)
 *
 * A work queue's visibility timeout is at least six times its consumer's timeout, as AWS advises
 * for Lambda event sources: a batch that is retried on throttling can outlive one function
 * timeout before SQS would hand its messages out again.
 */
export class Queues extends Construct {
  /** Every queue, dead-letter queues included, by its name in {@link queueDefinitions}. */
  readonly byName: ReadonlyMap<string, Queue>;

  constructor(scope: Construct, id: string, props: QueuesProps) {
    super(scope, id);
    const queues = new Map<string, Queue>();
    const consumed = Duration.seconds(props.consumerTimeout.toSeconds() * 6);
    // Dead-letter queues first: a work queue's redrive policy refers to its dead-letter queue.
    const ordered = [...queueDefinitions].sort(
      (a, b) => Number(a.deadLetterQueue !== undefined) - Number(b.deadLetterQueue !== undefined),
    );
    for (const definition of ordered) {
      const own = Duration.seconds(definition.visibilityTimeoutSeconds);
      const common = {
        encryption: QueueEncryption.KMS_MANAGED,
        enforceSSL: true,
        // Messages are only triggers (the table holds the truth), so nothing is lost with a queue.
        removalPolicy: RemovalPolicy.DESTROY,
      };
      if (definition.deadLetterQueue === undefined) {
        queues.set(
          definition.name,
          new Queue(this, pascalCase(definition.name), {
            ...common,
            visibilityTimeout: own,
            // The most SQS allows: time for an operator to look at what failed, and redrive it.
            retentionPeriod: Duration.days(14),
          }),
        );
        continue;
      }
      const deadLetterQueue = queues.get(definition.deadLetterQueue);
      if (deadLetterQueue === undefined || definition.maxReceives === undefined) {
        throw new Error(
          `queue ${definition.name} names dead-letter queue ${definition.deadLetterQueue}, which is not defined, or no maxReceives`,
        );
      }
      queues.set(
        definition.name,
        new Queue(this, pascalCase(definition.name), {
          ...common,
          visibilityTimeout: own.toSeconds() > consumed.toSeconds() ? own : consumed,
          deadLetterQueue: { queue: deadLetterQueue, maxReceiveCount: definition.maxReceives },
        }),
      );
    }
    this.byName = queues;
  }

  /** The queue of that name; a name {@link queueDefinitions} does not define is a wiring mistake. */
  queue(name: string): Queue {
    const queue = this.byName.get(name);
    if (queue === undefined) {
      throw new Error(`queue ${name} is not defined (defined: ${[...this.byName.keys()].join(', ')})`);
    }
    return queue;
  }

  /** The URL of every queue by name: the functions' `QUEUE_URLS`. */
  urls(): Record<string, string> {
    return Object.fromEntries([...this.byName].map(([name, queue]) => [name, queue.queueUrl]));
  }
}

/** `schedule-dlq` → `ScheduleDlq`: construct ids and output names. */
export function pascalCase(name: string): string {
  return name
    .split(/[^A-Za-z0-9]+/)
    .map((word) => word.charAt(0).toUpperCase() + word.slice(1))
    .join('');
}
