import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { fateOfFailedMessage } from '../workers/failed-messages.js';
import { handleMessage } from '../workers/messages.js';
import { deadLetterQueueOf } from '../workers/queues.js';
import { cloudDeployment } from './config.js';
import { instrumented, logger, metrics } from './runtime.js';

/** What Lambda calls for a batch of SQS records, and the partial failures it reads back. */
export type SqsBatchHandler = (event: SQSEvent, context: Context) => Promise<SQSBatchResponse>;

/**
 * The SQS event handler for one of the control plane's queues, on Powertools' batch processor:
 * records are handled concurrently, and each one that fails is reported as a batch item failure,
 * so SQS redelivers it alone and dead-letters it after `maxReceives`. A message no redelivery can
 * fix is moved to the dead-letter queue at once instead, by the rule the embedded queue workers
 * follow too ({@link fateOfFailedMessage}), so it raises the DLQ alarm instead of looping.
 *
 * @example
 * export const handler = sqsConsumer(queueNames.schedule);
 */
export function sqsConsumer(queue: string): SqsBatchHandler {
  const { cp, ports } = cloudDeployment();
  const processor = new BatchProcessor(EventType.SQS);

  const consume = async (record: SQSRecord): Promise<void> => {
    try {
      await handleMessage(cp, queue, record.body);
    } catch (error) {
      if (fateOfFailedMessage(error) === 'redeliver') {
        logger.warn('message failed; SQS will redeliver it', { queue, messageId: record.messageId, error });
        throw error;
      }
      logger.warn('message cannot be handled; dead-lettered', { queue, messageId: record.messageId, error });
      await ports.queue.send(deadLetterQueueOf(queue), record.body);
      metrics.addMetric('messages.deadLettered', MetricUnit.Count, 1);
    }
  };

  return instrumented(async (event: SQSEvent, context: Context): Promise<SQSBatchResponse> => {
    metrics.addDimension('queue', queue);
    // A batch that failed whole is answered like any other, every record listed, rather than
    // thrown: SQS redelivers the same records either way, and the metrics below still get written.
    const response = await processPartialResponse(event, consume, processor, {
      context,
      throwOnFullBatchFailure: false,
    });
    const failed = response.batchItemFailures.length;
    metrics.addMetric('messages.handled', MetricUnit.Count, event.Records.length - failed);
    metrics.addMetric('messages.failed', MetricUnit.Count, failed);
    return response;
  });
}
