import { describe, expect, it } from 'vitest';
import { ConflictError, ContentionError, NotFoundError } from '../domain/errors.js';
import { fateOfFailedMessage } from './failed-messages.js';
import { PoisonMessageError } from './messages.js';

describe('fateOfFailedMessage, the one dead-letter rule of both deployments', () => {
  it.each([
    ['a poison message', new PoisonMessageError('schedule', 'body is not JSON'), 'dead-letter'],
    ['a job that does not exist', new NotFoundError('job_not_found', 'no such job'), 'dead-letter'],
    [
      'a transition the task no longer allows',
      new ConflictError('invalid_transition', 'already verified'),
      'dead-letter',
    ],
    ['contention, which passes later', new ContentionError('busy'), 'redeliver'],
    ['an unreachable service or a bug', new Error('ECONNRESET'), 'redeliver'],
    ['something thrown that is not an error', 'oops', 'redeliver'],
  ] as const)('%s: %s', (_, error, fate) => {
    expect(fateOfFailedMessage(error)).toBe(fate);
  });
});
