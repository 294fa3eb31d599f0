/** Temporary credentials, as the protocol's `NodeCredentials` (`expiresAt` in RFC 3339). */
export interface IssuedCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  expiresAt: string;
}

/**
 * Issues a node short-lived credentials that allow only receiving from, and releasing messages of,
 * its pool queues (the `sqs` dispatch mode).
 */
export interface CredentialIssuer {
  /** Credentials scoped to exactly `queueUrls`; undefined when the deployment issues none. */
  issue(nodeId: string, queueUrls: readonly string[]): Promise<IssuedCredentials | undefined>;
}
