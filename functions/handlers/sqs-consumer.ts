import { MetricUnit } from '@aws-lambda-powertools/metrics';
import sqsPartialBatchFailure from '@middy/sqs-partial-batch-failure';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { DomainError } from '../domain/errors.js';
import { handleMessage } from '../workers/messages.js';
import { deadLetterQueueOf } from '../workers/queues.js';
import { cloudDeployment } from './config.js';
import { instrumented, logger, metrics } from './runtime.js';

/** What Lambda calls for a batch of SQS records, and the partial failures it reads back. */
export type SqsBatchHandler = (event: SQSEvent, context: Context) => Promise<SQSBatchResponse>;

/**
 * The SQS event handler for one of the control plane's queues. Records are handled concurrently;
 * each one that fails with a retryable error is reported as a batch item failure, so SQS
 * redelivers it alone and dead-letters it after `maxReceives`. A message no redelivery can fix (a
 * non-retryable domain error, such as a poison message) is moved to the dead-letter queue at
 * once, as the embedded queue workers do, so it raises the DLQ alarm instead of looping.
 *
 * @example
 * export const handler = sqsConsumer(queueNames.schedule);
 */
export function sqsConsumer(queue: string): SqsBatchHandler {
  const { cp, ports } = cloudDeployment();

  const consume = async (record: SQSRecord): Promise<void> => {
    try {
      await handleMessage(cp, queue, record.body);
    } catch (error) {
      if (!(error instanceof DomainError) || error.retryable) throw error;
      logger.warn('message cannot be handled; dead-lettered', { queue, messageId: record.messageId, error });
      await ports.queue.send(deadLetterQueueOf(queue), record.body);
      metrics.addMetric('messages.deadLettered', MetricUnit.Count, 1);
    }
  };

  const consumeAll = async (event: SQSEvent) => {
    metrics.addDimension('queue', queue);
    const settled = await Promise.allSettled(event.Records.map(consume));
    const failed = settled.filter((s) => s.status === 'rejected').length;
    metrics.addMetric('messages.handled', MetricUnit.Count, settled.length - failed);
    metrics.addMetric('messages.failed', MetricUnit.Count, failed);
    return settled;
  };

  const handler = instrumented(consumeAll).use(
    sqsPartialBatchFailure({
      logger: (reason: unknown, record: SQSRecord) =>
        logger.warn('message failed; SQS will redeliver it', { queue, messageId: record.messageId, error: reason }),
    }),
  );
  // The middleware replaces the settled results with the batch response, which middy's types cannot express.
  return handler as unknown as SqsBatchHandler;
}
