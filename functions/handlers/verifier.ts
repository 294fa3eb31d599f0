/**
 * Lambda entry point of the `verify` queue: applies each reported attempt's verification policy
 * (see {@link sqsConsumer}).
 *
 * @module
 */
import { queueNames } from '../domain/scheduling/messages.js';
import { sqsConsumer } from './sqs-consumer.js';

export const handler = sqsConsumer(queueNames.verify);
