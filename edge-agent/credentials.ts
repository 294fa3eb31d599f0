import type { NodeCredentials } from '../protocol/index.js';

const minimumUseMs = 1_000;

/** Temporary AWS credentials in the shape the AWS SDK takes them. */
export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  expiration: Date;
}

export interface CredentialCacheOptions {
  /** Fetches fresh credentials (`POST /v1/nodes/{id}/credentials`); `signal` ends the caller's wait. */
  fetch: (signal: AbortSignal) => Promise<NodeCredentials>;
  /** Credentials are refreshed once this share of their life has passed (default 0.75). */
  refreshAt?: number;
  now?: () => number;
}

/**
 * The node's temporary SQS credentials (sqs dispatch). `get` returns the cached ones until 75 % of
 * their life (from when they were fetched to `expiresAt`) has passed, then fetches new ones;
 * `invalidate` forces a fetch on the next `get` (SQS said ExpiredToken or AccessDenied).
 * Concurrent callers share one fetch (and the first caller's signal: the agent's workers all pass
 * the same one). A returned object stays the same until the credentials
 * change, so callers can tell a new generation by identity.
 */
export class CredentialCache {
  private current: { credentials: AwsCredentials; refreshAtMs: number } | undefined;
  private inFlight: Promise<AwsCredentials> | undefined;
  private readonly refreshShare: number;
  private readonly now: () => number;

  constructor(private readonly options: CredentialCacheOptions) {
    this.refreshShare = options.refreshAt ?? 0.75;
    this.now = options.now ?? Date.now;
  }

  /** How many times credentials were fetched (for logs and tests). */
  fetches = 0;

  async get(signal: AbortSignal): Promise<AwsCredentials> {
    const current = this.current;
    if (current !== undefined && this.now() < current.refreshAtMs) return current.credentials;
    this.inFlight ??= this.refresh(signal).finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  /** Drops the cached credentials if they are still `stale` (another caller may have refreshed them already). */
  invalidate(stale?: AwsCredentials): void {
    if (stale === undefined || this.current?.credentials === stale) this.current = undefined;
  }

  private async refresh(signal: AbortSignal): Promise<AwsCredentials> {
    const fetchedAt = this.now();
    const response = await this.options.fetch(signal);
    this.fetches++;
    const expiresAtMs = Date.parse(response.expiresAt);
    const credentials: AwsCredentials = {
      accessKeyId: response.accessKeyId,
      secretAccessKey: response.secretAccessKey,
      sessionToken: response.sessionToken,
      expiration: new Date(expiresAtMs),
    };
    // At least a second's use, so credentials that arrive (nearly) expired cannot make a busy loop.
    const lifeMs = Math.max(minimumUseMs / this.refreshShare, expiresAtMs - fetchedAt);
    this.current = { credentials, refreshAtMs: fetchedAt + lifeMs * this.refreshShare };
    return credentials;
  }
}
