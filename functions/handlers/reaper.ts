/**
 * Lambda entry point of the reaper, invoked by an EventBridge schedule: re-drives from table state
 * whatever lost messages, dead nodes or passed deadlines left behind. A failed tick throws, so it
 * counts in the function's error alarm; the next scheduled tick retries it.
 *
 * @module
 */
import type { ScheduledEvent } from 'aws-lambda';
import { controlPlane } from './config.js';
import { logger, withLogging } from './runtime.js';

const cp = controlPlane();

export const handler = withLogging(async (_event: ScheduledEvent) => {
  const report = await cp.reaper.tick();
  logger.info('reaper tick', { ...report });
});
