/**
 * Lambda entry point of the `schedule` queue: routes the unrouted tasks of each job it is told
 * about (see {@link sqsConsumer}).
 *
 * @module
 */
import { queueNames } from '../domain/scheduling/messages.js';
import { sqsConsumer } from './sqs-consumer.js';

export const handler = sqsConsumer(queueNames.schedule);
