import { ArnFormat, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import { PolicyStatement, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Key, KeySpec, KeyUsage } from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';

export interface KeysProps {
  /** Keep the keys when the stack goes away: without them, wrapped job keys never unwrap again. */
  retain: boolean;
}

/**
 * What CloudWatch Logs may do with the logs key: the actions of the key policy that AWS documents
 * for encrypting log groups ("Encrypt log data in CloudWatch Logs using AWS KMS").
 */
export const logsKeyServiceActions = [
  'kms:Encrypt*',
  'kms:Decrypt*',
  'kms:ReEncrypt*',
  'kms:GenerateDataKey*',
  'kms:Describe*',
];

/** What CloudWatch alarms need of the alarm topic's key to publish to the encrypted topic. */
export const alarmsKeyServiceActions = ['kms:Decrypt', 'kms:GenerateDataKey*'];

/**
 * The control plane's KMS keys, all customer managed, so that what protects the data is visible,
 * rotated and retained with the stack:
 *
 * - `dataKeys`, symmetric, wraps each job's data key (GenerateDataKey and Decrypt under the job's
 *   encryption context; see functions/adapters/aws/kms-keys.ts).
 * - `payoutSigner`, secp256k1 for signing only, will sign payout settlements on chain. Nothing is
 *   granted on it yet; the payout function will get `kms:Sign` on it alone. Asymmetric keys
 *   cannot rotate: a new signer is a new key and a new on-chain address.
 * - `table` encrypts the DynamoDB table at rest. The functions may use it only through DynamoDB
 *   (`kms:ViaService`), granted in their own policies (infra/constructs/data.ts).
 * - `logs` encrypts every log group (the functions' logs and the API's access logs). Its key policy
 *   lets CloudWatch Logs of this region use it for this account's log groups only.
 * - `alarms` encrypts the alarm topic. Its key policy lets CloudWatch (the alarms) encrypt the
 *   messages they publish; SNS decrypts them for the subscribers under its own grant.
 *
 * Every symmetric key rotates yearly. `dataKeys`, `payoutSigner` and `table` keep the default key
 * policy, which delegates access to IAM in this account, so every use is granted, and visible, in
 * the functions' own policies; `logs` and `alarms` add the one AWS service each that must use them.
 */
export class Keys extends Construct {
  readonly dataKeys: Key;
  readonly payoutSigner: Key;
  readonly table: Key;
  readonly logs: Key;
  readonly alarms: Key;

  constructor(scope: Construct, id: string, props: KeysProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const stackName = stack.stackName;
    const lifecycle = props.retain
      ? { removalPolicy: RemovalPolicy.RETAIN }
      : { removalPolicy: RemovalPolicy.DESTROY, pendingWindow: Duration.days(7) };
    const symmetric = (keyId: string, purpose: string, alias: string) =>
      new Key(this, keyId, {
        description: `${stackName}: ${purpose}`,
        alias: `${stackName}/${alias}`,
        enableKeyRotation: true,
        ...lifecycle,
      });

    this.dataKeys = symmetric('DataKeys', 'wraps the data key of each GPUAI job', 'data-keys');
    this.payoutSigner = new Key(this, 'PayoutSigner', {
      description: `${stackName}: signs GPUAI payout settlements (secp256k1)`,
      alias: `${stackName}/payout-signer`,
      keySpec: KeySpec.ECC_SECG_P256K1,
      keyUsage: KeyUsage.SIGN_VERIFY,
      ...lifecycle,
    });
    this.table = symmetric('Table', 'encrypts the GPUAI DynamoDB table', 'table');
    this.logs = symmetric('Logs', 'encrypts the GPUAI log groups', 'logs');
    this.logs.addToResourcePolicy(
      new PolicyStatement({
        sid: 'CloudWatchLogsOfThisAccount',
        principals: [new ServicePrincipal(`logs.${stack.region}.amazonaws.com`)],
        actions: logsKeyServiceActions,
        resources: ['*'],
        conditions: {
          ArnLike: {
            'kms:EncryptionContext:aws:logs:arn': stack.formatArn({
              service: 'logs',
              resource: 'log-group',
              resourceName: '*',
              arnFormat: ArnFormat.COLON_RESOURCE_NAME,
            }),
          },
        },
      }),
    );
    this.alarms = symmetric('Alarms', 'encrypts the GPUAI alarm topic', 'alarms');
    this.alarms.addToResourcePolicy(
      new PolicyStatement({
        sid: 'CloudWatchAlarmsPublish',
        principals: [new ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: alarmsKeyServiceActions,
        resources: ['*'],
      }),
    );
  }
}
