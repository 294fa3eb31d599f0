/**
 * SQS's limits on queue definitions and on the arguments of each call. Both queue adapters check
 * them before acting: the SQS one so that a mistake fails before any request, the embedded one so
 * that code written against it also runs on SQS. Checking in one place keeps the two refusing the
 * same mistakes with the same messages.
 *
 * @module
 */
import type { QueueDefinition, ReceiveOptions } from '../ports/queue.js';

const limits = {
  maxMessages: 10,
  waitSeconds: 20,
  visibilityTimeoutSeconds: 43_200,
  delaySeconds: 900,
  maxReceives: 1000,
};

/** A receive's settings, checked, with the defaults filled in. */
export interface ReceiveSettings {
  maxMessages: number;
  visibilityTimeoutSeconds: number;
  waitSeconds: number;
}

/**
 * Checks queue definitions once, up front, so a misconfigured dead-letter queue fails at start-up
 * rather than when the first poison message needs it.
 * @returns the definitions by name.
 * @throws Error for an empty or repeated name, a setting out of SQS's range, or a dead-letter
 *   setting that is half given or names no other defined queue.
 */
export function validateDefinitions(definitions: readonly QueueDefinition[]): ReadonlyMap<string, QueueDefinition> {
  const byName = new Map<string, QueueDefinition>();
  for (const definition of definitions) {
    if (definition.name === '' || byName.has(definition.name)) {
      throw new Error(`queue name ${JSON.stringify(definition.name)} is empty or defined twice`);
    }
    byName.set(definition.name, definition);
  }
  for (const { name, visibilityTimeoutSeconds, maxReceives, deadLetterQueue } of definitions) {
    bounded(`queue ${name} visibilityTimeoutSeconds`, visibilityTimeoutSeconds, 0, limits.visibilityTimeoutSeconds);
    if ((maxReceives === undefined) !== (deadLetterQueue === undefined)) {
      throw new Error(`queue ${name} must set maxReceives and deadLetterQueue together`);
    }
    if (maxReceives !== undefined) {
      bounded(`queue ${name} maxReceives`, maxReceives, 1, limits.maxReceives);
    }
    if (deadLetterQueue !== undefined && (deadLetterQueue === name || !byName.has(deadLetterQueue))) {
      throw new Error(`queue ${name} names dead-letter queue ${deadLetterQueue}, which is not another defined queue`);
    }
  }
  return byName;
}

/**
 * The delay of a send: `delaySeconds`, 0 when absent.
 * @throws Error when it is not a whole number of seconds within SQS's maximum delay.
 */
export function sendDelaySeconds(delaySeconds: number | undefined): number {
  return bounded('delaySeconds', delaySeconds ?? 0, 0, limits.delaySeconds);
}

/**
 * The settings of a receive from `queue`: one message and no wait unless `options` say otherwise,
 * and the queue's own visibility timeout unless they name one.
 * @throws Error naming the first option out of SQS's range.
 */
export function receiveSettings(options: ReceiveOptions, queue: QueueDefinition): ReceiveSettings {
  return {
    maxMessages: bounded('maxMessages', options.maxMessages ?? 1, 1, limits.maxMessages),
    visibilityTimeoutSeconds: bounded(
      'visibilityTimeoutSeconds',
      options.visibilityTimeoutSeconds ?? queue.visibilityTimeoutSeconds,
      0,
      limits.visibilityTimeoutSeconds,
    ),
    waitSeconds: bounded('waitSeconds', options.waitSeconds ?? 0, 0, limits.waitSeconds),
  };
}

/**
 * The new visibility timeout of a received message, as given to `changeVisibility`.
 * @throws Error when it is not a whole number of seconds within SQS's maximum visibility timeout.
 */
export function visibilityChangeSeconds(seconds: number): number {
  return bounded('visibility timeout', seconds, 0, limits.visibilityTimeoutSeconds);
}

/** Returns `value` when it is an integer in [min, max]; throws naming the setting otherwise. */
function bounded(setting: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`${setting} must be an integer from ${min} to ${max}, got ${value}`);
  }
  return value;
}
