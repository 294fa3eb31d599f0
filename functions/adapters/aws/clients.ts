import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { KMSClient } from '@aws-sdk/client-kms';
import { SQSClient } from '@aws-sdk/client-sqs';
import { STSClient } from '@aws-sdk/client-sts';
import { sdkMaxAttempts } from '../../domain/retry.js';
import { reportTransientErrorsAsUnavailable } from './transient-errors.js';

/** The SDK clients the AWS adapters talk through. */
export interface AwsClients {
  dynamodb: DynamoDBClient;
  sqs: SQSClient;
  kms: KMSClient;
  sts: STSClient;
}

/** Long-term or session credentials; the shape every SDK client accepts. */
export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface AwsClientOptions {
  region: string;
  /**
   * Service endpoints to use instead of AWS's own, such as local emulators. A service left out
   * uses the region's public endpoint.
   */
  endpoints?: { dynamodb?: string; sqs?: string; kms?: string; sts?: string };
  /**
   * Fixed credentials, such as the emulators' in tests. Without them the SDK's
   * default provider chain applies: the Lambda role in AWS, the profile or environment elsewhere.
   */
  credentials?: AwsCredentials;
}

/**
 * Builds the DynamoDB, SQS, KMS and STS clients from one set of options, so that a composition root
 * and the tests configure them alike. SQS speaks the SDK's default JSON protocol, which moto serves
 * too. Call `destroy()` on each client when done, to close its sockets.
 */
export function awsClients(options: AwsClientOptions): AwsClients {
  const common = (endpoint: string | undefined) => ({
    region: options.region,
    // Stated rather than left to the SDK's default, because the bound of a whole operation
    // (functions/domain/retry.ts) multiplies it; AWS_MAX_ATTEMPTS in the environment cannot raise it.
    maxAttempts: sdkMaxAttempts,
    ...(endpoint === undefined ? {} : { endpoint }),
    ...(options.credentials === undefined ? {} : { credentials: options.credentials }),
  });
  return {
    dynamodb: reportTransientErrorsAsUnavailable(new DynamoDBClient(common(options.endpoints?.dynamodb)), 'DynamoDB'),
    // A queue URL never chooses the host: some come from nodes (claims), and the SDK would otherwise
    // send a request signed with our credentials to whatever host a URL names.
    sqs: reportTransientErrorsAsUnavailable(
      new SQSClient({ ...common(options.endpoints?.sqs), useQueueUrlAsEndpoint: false }),
      'SQS',
    ),
    kms: reportTransientErrorsAsUnavailable(new KMSClient(common(options.endpoints?.kms)), 'KMS'),
    sts: reportTransientErrorsAsUnavailable(new STSClient(common(options.endpoints?.sts)), 'STS'),
  };
}
