import type { TestProject } from 'vitest/node';
import { type EmulatorEndpoints, startEmulators } from './emulators.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Where the AWS emulators answer; read with `inject('awsEndpoints')`. */
    awsEndpoints: EmulatorEndpoints;
  }
}

/**
 * Vitest global setup: starts the AWS emulators once for the whole run, hands their endpoints to
 * tests through `provide`, and to child processes (which `inject` cannot reach) through
 * `GPUAI_TEST_DYNAMODB_ENDPOINT`, `GPUAI_TEST_SQS_ENDPOINT` and `GPUAI_TEST_KMS_ENDPOINT`.
 * Returns the teardown that stops them.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const emulators = await startEmulators();
  const { endpoints } = emulators;
  project.provide('awsEndpoints', endpoints);
  process.env.GPUAI_TEST_DYNAMODB_ENDPOINT = endpoints.dynamodb;
  process.env.GPUAI_TEST_SQS_ENDPOINT = endpoints.sqs;
  process.env.GPUAI_TEST_KMS_ENDPOINT = endpoints.kms;
  return async () => {
    await emulators.stop();
  };
}
