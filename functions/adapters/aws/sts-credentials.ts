import { AssumeRoleCommand, type STSClient } from '@aws-sdk/client-sts';
import type { CredentialIssuer, IssuedCredentials } from '../../ports/node-credentials.js';

/** What a node may do with its pool queues: receive, release (visibility 0) and read attributes. */
export const nodeQueueActions = ['sqs:ReceiveMessage', 'sqs:ChangeMessageVisibility', 'sqs:GetQueueAttributes'];

/**
 * The ARN of the SQS queue at `url`. Accepts AWS's URLs (`https://sqs.<region>.amazonaws.com/<account>/<name>`,
 * and the legacy `https://<region>.queue.amazonaws.com/…`) and emulators' (`http://127.0.0.1:<port>/<account>/<name>`),
 * whose region is then `region`.
 */
export function queueArn(url: string, region: string): string {
  const parsed = new URL(url);
  const parts = parsed.pathname.split('/').filter(Boolean);
  const [account, name] = parts;
  if (parts.length !== 2 || account === undefined || name === undefined || !/^\d{12}$/.test(account)) {
    throw new Error(`not an SQS queue URL: ${url}`);
  }
  const host = parsed.hostname.split('.');
  const urlRegion =
    host[0] === 'sqs' && host.length >= 4 ? host[1] : host[1] === 'queue' && host.length >= 4 ? host[0] : undefined;
  const partition = parsed.hostname.endsWith('.amazonaws.com.cn') ? 'aws-cn' : 'aws';
  return `arn:${partition}:sqs:${urlRegion ?? region}:${account}:${name}`;
}

/**
 * The inline session policy of a node's credentials: the role's permissions narrowed to
 * {@link nodeQueueActions} on exactly the given queues. An empty list allows nothing.
 */
export function nodeSessionPolicy(queueUrls: readonly string[], region: string): string {
  const statement =
    queueUrls.length === 0
      ? [{ Effect: 'Deny', Action: 'sqs:*', Resource: '*' }]
      : [{ Effect: 'Allow', Action: nodeQueueActions, Resource: queueUrls.map((url) => queueArn(url, region)) }];
  return JSON.stringify({ Version: '2012-10-17', Statement: statement });
}

/** AWS's limit on a role session name; it may hold `[\w+=,.@-]`. */
const maxSessionName = 64;

/**
 * The {@link CredentialIssuer} on AWS STS: assumes the node work-reader role with the node id as
 * session name (so CloudTrail names the node) and an inline session policy that allows only the
 * node's pool queues. The effective permissions are the intersection of the role's policy and the
 * session policy, so even a role that allows every pool queue yields credentials for the node's own.
 */
export class StsCredentialIssuer implements CredentialIssuer {
  /**
   * @param client an STS client; the caller owns it and destroys it.
   * @param roleArn the role nodes' credentials come from; it must trust the caller's role.
   * @param durationSeconds the credentials' lifetime (900 to the role's maximum session duration).
   */
  constructor(
    private readonly client: STSClient,
    private readonly roleArn: string,
    private readonly durationSeconds = 3600,
  ) {}

  async issue(nodeId: string, queueUrls: readonly string[]): Promise<IssuedCredentials> {
    const region = await this.client.config.region();
    const { Credentials: c } = await this.client.send(
      new AssumeRoleCommand({
        RoleArn: this.roleArn,
        RoleSessionName: nodeId.replace(/[^\w+=,.@-]/g, '-').slice(0, maxSessionName),
        Policy: nodeSessionPolicy(queueUrls, region),
        DurationSeconds: this.durationSeconds,
      }),
    );
    if (c?.AccessKeyId === undefined || c.SecretAccessKey === undefined || c.SessionToken === undefined) {
      throw new Error('STS answered AssumeRole without credentials');
    }
    const expiresAt = c.Expiration ?? new Date(Date.now() + this.durationSeconds * 1000);
    return {
      accessKeyId: c.AccessKeyId,
      secretAccessKey: c.SecretAccessKey,
      sessionToken: c.SessionToken,
      expiresAt: expiresAt.toISOString(),
    };
  }
}
