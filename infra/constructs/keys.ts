import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import { Key, KeySpec, KeyUsage } from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';

export interface KeysProps {
  /** Keep the keys when the stack goes away: without them, wrapped job keys never unwrap again. */
  retain: boolean;
}

/**
 * The control plane's KMS keys:
 *
 * - `dataKeys`, symmetric with yearly rotation, wraps each job's data key (GenerateDataKey and
 *   Decrypt under the job's encryption context; see functions/adapters/aws/kms-keys.ts).
 * - `payoutSigner`, secp256k1 for signing only, will sign payout settlements on chain. Nothing is
 *   granted on it yet; the payout function will get `kms:Sign` on it alone. Asymmetric keys
 *   cannot rotate: a new signer is a new key and a new on-chain address.
 *
 * Both keys keep the default key policy, which delegates access to IAM in this account, so every
 * use is granted, and visible, in the functions' own policies.
 */
export class Keys extends Construct {
  readonly dataKeys: Key;
  readonly payoutSigner: Key;

  constructor(scope: Construct, id: string, props: KeysProps) {
    super(scope, id);
    const stackName = Stack.of(this).stackName;
    const lifecycle = props.retain
      ? { removalPolicy: RemovalPolicy.RETAIN }
      : { removalPolicy: RemovalPolicy.DESTROY, pendingWindow: Duration.days(7) };
    this.dataKeys = new Key(this, 'DataKeys', {
      description: `${stackName}: wraps the data key of each GPUAI job`,
      alias: `${stackName}/data-keys`,
      enableKeyRotation: true,
      ...lifecycle,
    });
    this.payoutSigner = new Key(this, 'PayoutSigner', {
      description: `${stackName}: signs GPUAI payout settlements (secp256k1)`,
      alias: `${stackName}/payout-signer`,
      keySpec: KeySpec.ECC_SECG_P256K1,
      keyUsage: KeyUsage.SIGN_VERIFY,
      ...lifecycle,
    });
  }
}
