import { Logger } from '@aws-lambda-powertools/logger';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy, { type MiddyfiedHandler } from '@middy/core';
import type { Context } from 'aws-lambda';

/**
 * The handlers' one logger: JSON lines to CloudWatch, named by `POWERTOOLS_SERVICE_NAME` and
 * filtered by `POWERTOOLS_LOG_LEVEL`, both set by the CDK stack.
 */
export const logger = new Logger();

/**
 * The handlers' metrics, written as CloudWatch embedded metric format (EMF) lines at the end of
 * each invocation: no API calls, no extra permissions. The namespace comes from
 * `POWERTOOLS_METRICS_NAMESPACE` (set by the CDK stack), `GPUAI` otherwise.
 */
export const metrics = new Metrics({ namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? 'GPUAI' });

/**
 * The `log` that the HTTP app and the domain expect (`{ level?, msg, ...fields }`), written
 * through {@link logger}.
 */
export function log({ level, msg, ...fields }: Record<string, unknown>): void {
  const message = typeof msg === 'string' ? msg : 'log';
  switch (level) {
    case 'error':
      logger.error(message, fields);
      return;
    case 'warn':
      logger.warn(message, fields);
      return;
    case 'debug':
      logger.debug(message, fields);
      return;
    default:
      logger.info(message, fields);
  }
}

/**
 * Wraps an event handler in middy with the Lambda context (request id, cold start, function) on
 * every log line, and the metrics it added flushed at its end (with a cold-start metric); keys
 * appended during an invocation are dropped at its end so none leak into the next.
 */
export function instrumented<TEvent, TResult>(
  handler: (event: TEvent, context: Context) => Promise<TResult>,
): MiddyfiedHandler<TEvent, TResult> {
  return middy<TEvent, TResult>(handler)
    .use(injectLambdaContext(logger, { resetKeys: true }))
    .use(logMetrics(metrics, { captureColdStartMetric: true }));
}
