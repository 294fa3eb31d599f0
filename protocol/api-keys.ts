import { z } from 'zod';
import { Timestamp } from './common.js';

/**
 * API keys of the application API (docs/api.md, "Authentication").
 *
 * A key reads `gpk_<keyId>_<secret>`: the prefix makes leaked keys easy to find by secret
 * scanners, the key id (public, 20 base32 characters) names the stored record, and the secret is
 * 32 random bytes in base64url (43 characters). The control plane keeps only the secret's sha-256.
 */
export const apiKeyPrefix = 'gpk_';
export const apiKeyPattern = /^gpk_([a-z2-7]{20})_([A-Za-z0-9_-]{43})$/;

export const ApiKeyId = z
  .string()
  .regex(/^[a-z2-7]{20}$/)
  .meta({ id: 'ApiKeyId', example: 'k7qd3hx2mfa5ztw4n6ry' });

/**
 * What a key may do. `submit` submits and cancels jobs; `read` reads jobs, their tasks and logs,
 * and nodes; `admin` manages API keys for every tenant and implies the other two.
 */
export const Scope = z.enum(['submit', 'read', 'admin']).meta({ id: 'Scope' });
export type Scope = z.infer<typeof Scope>;

/**
 * A tenant: the owner of jobs. Broad enough for OIDC subjects (`auth0|65f...`, e-mail addresses),
 * never `#` (it separates the parts of store keys) nor spaces or control characters.
 */
export const TenantId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._@|:+-]{0,127}$/)
  .meta({
    id: 'TenantId',
    example: 'acme',
    description: 'Letters, digits and . _ @ | : + -, at most 128 characters.',
  });

/** A duration like `30d`, `12h`, `90m`. */
export const Ttl = z
  .string()
  .regex(/^[1-9]\d{0,5}[mhd]$/)
  .meta({ example: '30d', description: 'Lifetime from now: minutes (m), hours (h) or days (d).' });

export const ttlMs = (ttl: string): number => {
  const n = Number(ttl.slice(0, -1));
  const unit = ttl.slice(-1);
  return n * (unit === 'd' ? 86_400_000 : unit === 'h' ? 3_600_000 : 60_000);
};

export const CreateApiKeyRequest = z
  .strictObject({
    tenant: TenantId.optional().meta({ description: "The key's tenant; default: the caller's tenant." }),
    scopes: z.array(Scope).min(1).max(3).default(['submit', 'read']),
    name: z
      .string()
      // \P{Cc} spelled as the ranges it names (C0, DEL, C1), which every JSON Schema tool reads.
      // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this pattern refuses.
      .regex(/^[^\u0000-\u001f\u007f-\u009f]{1,100}$/)
      .optional()
      .meta({ description: 'A label to recognise the key by (no control characters).' }),
    expiresAt: Timestamp.optional(),
    ttl: Ttl.optional(),
  })
  .refine((r) => r.expiresAt === undefined || r.ttl === undefined, {
    message: 'give expiresAt or ttl, not both',
    path: ['ttl'],
  })
  // The refinement, stated in the OpenAPI document too.
  .meta({ id: 'CreateApiKeyRequest', not: { required: ['expiresAt', 'ttl'] } });
export type CreateApiKeyRequest = z.infer<typeof CreateApiKeyRequest>;
export type CreateApiKeyInput = z.input<typeof CreateApiKeyRequest>;

/** A key as listed: never the secret, never its hash. */
export const ApiKeyView = z
  .object({
    id: ApiKeyId,
    tenant: TenantId,
    scopes: z.array(Scope),
    name: z.string().optional(),
    createdAt: Timestamp,
    expiresAt: Timestamp.optional(),
    revokedAt: Timestamp.optional(),
    status: z.enum(['active', 'expired', 'revoked']),
  })
  .meta({ id: 'ApiKey' });
export type ApiKeyView = z.infer<typeof ApiKeyView>;

export const CreatedApiKey = ApiKeyView.extend({
  key: z
    .string()
    .regex(apiKeyPattern)
    .meta({ description: 'The whole key. Shown only in this response: store it now.' }),
}).meta({ id: 'CreatedApiKey' });
export type CreatedApiKey = z.infer<typeof CreatedApiKey>;

export const ApiKeyList = z
  .object({ keys: z.array(ApiKeyView), cursor: z.string().optional() })
  .meta({ id: 'ApiKeyList' });
export type ApiKeyList = z.infer<typeof ApiKeyList>;
