import type { AttributeDefinition, KeySchemaElement } from '@aws-sdk/client-dynamodb';
import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import {
  type Attribute,
  AttributeType,
  BillingMode,
  ProjectionType,
  Table,
  TableEncryption,
} from 'aws-cdk-lib/aws-dynamodb';
import { type IGrantable, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';
import { tableDefinition, timeToLiveAttribute } from '../../functions/adapters/aws/dynamodb-store.js';

/**
 * The DynamoDB actions of the store adapter (functions/adapters/aws/dynamodb-store.ts): GetItem,
 * Query, PutItem and DeleteItem, and TransactWriteItems, which DynamoDB authorises as the Put,
 * Delete and ConditionCheck actions it contains. No Scan, no batch calls, no UpdateItem.
 */
export const storeActions = [
  'dynamodb:GetItem',
  'dynamodb:Query',
  'dynamodb:PutItem',
  'dynamodb:DeleteItem',
  'dynamodb:ConditionCheckItem',
] as const;

/**
 * What DynamoDB does with the table's key on behalf of a caller that reads or writes items (the
 * actions AWS lists for a customer managed table key, with the wildcards spelt out). Granted only
 * through DynamoDB (`kms:ViaService`): the functions cannot call KMS with the key themselves.
 */
export const tableKeyActions = [
  'kms:Decrypt',
  'kms:DescribeKey',
  'kms:Encrypt',
  'kms:GenerateDataKey',
  'kms:GenerateDataKeyWithoutPlaintext',
  'kms:ReEncryptFrom',
  'kms:ReEncryptTo',
] as const;

export interface DataProps {
  /**
   * Keep the table (and refuse to delete it) when the stack or the resource goes away: the table
   * is the control plane's truth. Off for throwaway development stacks only.
   */
  retain: boolean;
  /** The customer managed key that encrypts the table at rest. */
  key: IKey;
}

/**
 * The control plane's one DynamoDB table, declared from the store adapter's own
 * {@link tableDefinition}, so the deployed key schema and indexes cannot drift from what the
 * adapter queries. On-demand capacity (an idle table costs storage only), point-in-time recovery,
 * time to live on the adapter's expiry attribute, and encryption under a customer managed key of the
 * stack's own (infra/constructs/keys.ts), which the functions may use through DynamoDB alone.
 */
export class Data extends Construct {
  readonly table: Table;
  readonly key: IKey;

  constructor(scope: Construct, id: string, props: DataProps) {
    super(scope, id);
    this.key = props.key;
    // CloudFormation names the table, so several stacks fit in one account and region.
    const definition = tableDefinition('unused');
    if (definition.BillingMode !== BillingMode.PAY_PER_REQUEST) {
      throw new Error(
        `the store adapter asks for billing mode ${definition.BillingMode}, which this construct does not declare`,
      );
    }
    const attributes = definition.AttributeDefinitions ?? [];
    this.table = new Table(this, 'Table', {
      ...keyOf(definition.KeySchema ?? [], attributes),
      billingMode: BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      encryption: TableEncryption.CUSTOMER_MANAGED,
      encryptionKey: props.key,
      timeToLiveAttribute,
      removalPolicy: props.retain ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY,
      deletionProtection: props.retain,
    });
    for (const index of definition.GlobalSecondaryIndexes ?? []) {
      if (index.IndexName === undefined || index.Projection?.ProjectionType !== ProjectionType.ALL) {
        throw new Error(
          `the store adapter defines index ${index.IndexName} in a shape this construct does not declare`,
        );
      }
      this.table.addGlobalSecondaryIndex({
        indexName: index.IndexName,
        ...keyOf(index.KeySchema ?? [], attributes),
        projectionType: ProjectionType.ALL,
      });
    }
  }

  /**
   * Lets `grantee` use the table, and its indexes, the way the store adapter does and no other,
   * and lets DynamoDB use the table's key for it.
   */
  grantStore(grantee: IGrantable): void {
    this.table.grant(grantee, ...storeActions);
    grantee.grantPrincipal.addToPrincipalPolicy(
      new PolicyStatement({
        actions: [...tableKeyActions],
        resources: [this.key.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': `dynamodb.${Stack.of(this).region}.amazonaws.com` } },
      }),
    );
  }
}

const attributeTypes: Record<string, AttributeType> = {
  S: AttributeType.STRING,
  N: AttributeType.NUMBER,
  B: AttributeType.BINARY,
};

/** A CreateTable key schema as CDK key props. */
function keyOf(
  schema: readonly KeySchemaElement[],
  definitions: readonly AttributeDefinition[],
): { partitionKey: Attribute; sortKey?: Attribute } {
  const attribute = (keyType: 'HASH' | 'RANGE'): Attribute | undefined => {
    const name = schema.find((element) => element.KeyType === keyType)?.AttributeName;
    if (name === undefined) return undefined;
    const declared = definitions.find((definition) => definition.AttributeName === name)?.AttributeType;
    const type = declared === undefined ? undefined : attributeTypes[declared];
    if (type === undefined) {
      throw new Error(`key attribute ${name} has no type in the store adapter's table definition`);
    }
    return { name, type };
  };
  const partitionKey = attribute('HASH');
  const sortKey = attribute('RANGE');
  if (partitionKey === undefined) {
    throw new Error("the store adapter's table definition has a key schema without a partition key");
  }
  return { partitionKey, ...(sortKey === undefined ? {} : { sortKey }) };
}
