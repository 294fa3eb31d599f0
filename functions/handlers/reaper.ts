/**
 * Lambda entry point of the reaper, invoked by an EventBridge schedule: re-drives from table state
 * whatever lost messages, dead nodes or passed deadlines left behind. A failed tick throws, so it
 * counts in the function's error alarm; the next scheduled tick retries it.
 *
 * @module
 */

import { MetricUnit } from '@aws-lambda-powertools/metrics';
import type { ScheduledEvent } from 'aws-lambda';
import { controlPlane } from './config.js';
import { instrumented, logger, metrics } from './runtime.js';

const cp = controlPlane();

export const handler = instrumented(async (_event: ScheduledEvent) => {
  const report = await cp.reaper.tick();
  logger.info('reaper tick', { ...report });
  // What the reaper had to re-drive: lost leases and deadlines are worth an alarm when they climb.
  for (const [name, count] of Object.entries(report)) metrics.addMetric(`reaper.${name}`, MetricUnit.Count, count);
});
