import { createHash } from 'node:crypto';
import { Duration, Stack, Token } from 'aws-cdk-lib';
import { type IRole, PolicyStatement, Role } from 'aws-cdk-lib/aws-iam';
import type { Function as LambdaFunction } from 'aws-cdk-lib/aws-lambda';
import { Construct } from 'constructs';

/**
 * How agents learn of work in the cloud (the CDK context `gpuai:dispatch`): `sqs` (agents long-poll
 * their pools' SQS queues with scoped credentials, docs/cost-model.md section 6) or `long-poll`
 * (agents long-poll the API function, `GET /v1/nodes/{id}/work`, section 5).
 */
export const dispatchModes = ['sqs', 'long-poll'] as const;
export type DispatchMode = (typeof dispatchModes)[number];

/** What a node's credentials allow at most; the session policy narrows it to the node's own pools. */
export const nodeQueueActions = ['sqs:ReceiveMessage', 'sqs:ChangeMessageVisibility', 'sqs:GetQueueAttributes'];
/** The API function creates pool queues, publishes hints and deletes a hint once its claim held. */
export const apiQueueActions = [
  'sqs:CreateQueue',
  'sqs:GetQueueUrl',
  'sqs:SendMessage',
  'sqs:DeleteMessage',
  'sqs:GetQueueAttributes',
];
/** The scheduler (routing) and the reaper (hint re-drive) create pool queues and publish hints. */
export const publisherQueueActions = [
  'sqs:CreateQueue',
  'sqs:GetQueueUrl',
  'sqs:SendMessage',
  'sqs:GetQueueAttributes',
];

/** The longest pool-queue prefix: it leaves 40 of SQS's 80 characters for `-pool-<pool>-<8 hex>`. */
export const maxPoolQueuePrefixLength = 40;

/**
 * The prefix of a stack's pool queues: its name in lower case, or, for a name longer than
 * {@link maxPoolQueuePrefixLength}, its first 31 characters and 8 hex digits of a hash of the whole
 * name, so that two long names that start alike still get prefixes of their own.
 */
export function poolQueuePrefix(stackName: string): string {
  if (Token.isUnresolved(stackName)) {
    throw new Error('the pool-queue prefix needs a literal stack name');
  }
  const lower = stackName.toLowerCase();
  if (lower.length <= maxPoolQueuePrefixLength) return lower;
  const hash = createHash('sha256').update(stackName).digest('hex').slice(0, 8);
  return `${lower.slice(0, maxPoolQueuePrefixLength - 9)}-${hash}`;
}

export interface DispatchProps {
  mode: DispatchMode;
  /** The API function: it issues node credentials (AssumeRole), creates queues, publishes and acknowledges hints. */
  api: LambdaFunction;
  /** The functions that publish hints without serving nodes: the scheduler and the reaper. */
  publishers: readonly LambdaFunction[];
  /** Every function: each gets the dispatch environment, as each reads the same configuration. */
  functions: readonly LambdaFunction[];
}

/**
 * Work dispatch in the cloud (docs/cost-model.md sections 6, 12 and 13 step 4).
 *
 * In the `sqs` mode there is one standard SQS queue per pool. The control plane creates them at
 * run time, on first use, named `${POOL_QUEUE_PREFIX}-pool-<sanitised pool>-<8 hex>`, so this stack
 * declares no queue: it declares who may do what on every queue of that prefix.
 *
 * - Role `NodeWorkReader`, trusted by the API function's role only, with sessions of at most an hour
 *   (the most role chaining allows anyway): receive, change visibility and read attributes on the
 *   pool queues. The API function assumes it with a session policy that names the node's own pool
 *   queues, and hands the node the session's credentials.
 * - The API function: AssumeRole on that role, and create, look up, send to, delete from and read
 *   attributes of the pool queues.
 * - The scheduler and the reaper: create, look up, send to and read attributes of the pool queues.
 *
 * Every function gets `DISPATCH_MODE`, `POOL_QUEUE_PREFIX` and `NODE_ROLE_ARN`. In the `long-poll`
 * mode none of this exists, and the functions get `DISPATCH_MODE=long-poll` alone.
 *
 * CloudWatch alarms need a queue's name when the stack is deployed, so the pool queues, created
 * later, have none of their own (docs/deploy.md, "Dispatch").
 */
export class Dispatch extends Construct {
  readonly mode: DispatchMode;
  /** The pool queues' name prefix; only in the `sqs` mode. */
  readonly poolQueuePrefix?: string;
  /** `arn:<partition>:sqs:<region>:<account>:<prefix>-pool-*`; only in the `sqs` mode. */
  readonly poolQueueArns?: string;
  /** The role whose sessions nodes receive; only in the `sqs` mode. */
  readonly nodeRole?: Role;

  constructor(scope: Construct, id: string, props: DispatchProps) {
    super(scope, id);
    this.mode = props.mode;
    if (props.mode === 'long-poll') {
      for (const fn of props.functions) fn.addEnvironment('DISPATCH_MODE', 'long-poll');
      return;
    }

    const stack = Stack.of(this);
    const prefix = poolQueuePrefix(stack.stackName);
    const poolQueueArns = stack.formatArn({ service: 'sqs', resource: `${prefix}-pool-*` });
    const apiRole: IRole | undefined = props.api.role;
    if (apiRole === undefined) throw new Error('the API function has no role to trust');

    const nodeRole = new Role(this, 'NodeWorkReader', {
      description: 'Sessions handed to GPUAI nodes: receive and release work hints of their pool queues',
      assumedBy: apiRole,
      maxSessionDuration: Duration.hours(1),
    });
    // A separate policy resource rather than an inline one: the session policy narrows it per node.
    nodeRole.addToPolicy(new PolicyStatement({ actions: nodeQueueActions, resources: [poolQueueArns] }));
    nodeRole.grantAssumeRole(apiRole);

    props.api.addToRolePolicy(new PolicyStatement({ actions: apiQueueActions, resources: [poolQueueArns] }));
    for (const fn of props.publishers) {
      fn.addToRolePolicy(new PolicyStatement({ actions: publisherQueueActions, resources: [poolQueueArns] }));
    }

    for (const fn of props.functions) {
      fn.addEnvironment('DISPATCH_MODE', 'sqs');
      fn.addEnvironment('POOL_QUEUE_PREFIX', prefix);
      fn.addEnvironment('NODE_ROLE_ARN', nodeRole.roleArn);
    }
    this.poolQueuePrefix = prefix;
    this.poolQueueArns = poolQueueArns;
    this.nodeRole = nodeRole;
  }
}
