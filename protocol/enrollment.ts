import { z } from 'zod';
import { idPattern, Timestamp } from './common.js';

/**
 * Node enrollment: a node joins under an operator by presenting a join token, as a Kubernetes node
 * presents a bootstrap token or a CI runner its registration token. The token's secret is shown
 * once, when it is made; the control plane keeps only its hash.
 */

/** How nodes join: registrations without a token are accepted only under `open`. */
export const Enrollment = z.enum(['open', 'token']).meta({
  id: 'Enrollment',
  description: '`token`: a new node must present a join token; `open`: anyone may register (development only).',
});
export type Enrollment = z.infer<typeof Enrollment>;

/**
 * The operator a node belongs to: a lowercase slug. `anonymous` (nodes that joined without a token
 * under open enrollment) is reserved and never names a token's operator.
 */
export const OperatorName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/)
  .meta({ id: 'OperatorName', example: 'acme-gpus', description: 'Lowercase slug, at most 63 characters.' });

/** The operator of nodes registered without a token under open enrollment. */
export const anonymousOperator = 'anonymous';

export const JoinTokenId = z
  .string()
  .regex(idPattern('jt'))
  .meta({ id: 'JoinTokenId', example: 'jt_01JD7Z5C2Q9W8V6T4R2P0N8M6K' });

/** `<token id>.<secret>`: the secret is 32 random bytes, base64url. */
export const joinTokenPattern = /^(jt_[0-9A-HJKMNP-TV-Z]{26})\.([A-Za-z0-9_-]{43})$/;

export const JoinTokenSecret = z.string().regex(joinTokenPattern).meta({
  id: 'JoinToken',
  description: 'A join token as `gpuai tokens create` printed it: `<token id>.<secret>`.',
  example: 'jt_01JD7Z5C2Q9W8V6T4R2P0N8M6K.3q2-7wXk0h1R7mYcS8o5vT0dZr9bL2nQpEa6uFjHgKc',
});

/**
 * One entry of a token's pool scope: a pool (`<region>/<accelerator class>`), where either side may
 * be `*`: `eu-west/*` admits any node in eu-west, and the region `*` with the class `h100` admits
 * H100 nodes in any region.
 */
export const PoolScope = z
  .string()
  .regex(/^(\*|[a-z0-9][a-z0-9-]{0,31})\/(\*|[a-z0-9][a-z0-9-]{0,31})$/)
  .meta({ id: 'PoolScope', example: 'eu-west/h100' });

export const CreateJoinTokenRequest = z
  .strictObject({
    operator: OperatorName.refine((name) => name !== anonymousOperator, {
      message: `'${anonymousOperator}' is reserved for nodes that joined without a token`,
      // The refinement, stated in the OpenAPI document too.
    }).meta({ not: { const: anonymousOperator } }),
    pools: z
      .array(PoolScope)
      .min(1)
      .max(64)
      .optional()
      .meta({ description: 'The pools a node joining with this token may serve; absent: any pool.' }),
    ttlSeconds: z
      .int()
      .min(60)
      .max(365 * 24 * 3600)
      .default(24 * 3600)
      .meta({ description: 'Seconds until the token expires (default one day).' }),
    maxUses: z
      .int()
      .min(1)
      .max(1_000_000)
      .optional()
      .meta({ description: 'Registrations allowed; absent: unlimited.' }),
    description: z.string().max(200).optional(),
  })
  .meta({ id: 'CreateJoinTokenRequest' });
export type CreateJoinTokenRequest = z.input<typeof CreateJoinTokenRequest>;

export const JoinTokenStatus = z.enum(['active', 'expired', 'revoked', 'used-up']).meta({ id: 'JoinTokenStatus' });
export type JoinTokenStatus = z.infer<typeof JoinTokenStatus>;

export const JoinTokenView = z
  .object({
    id: JoinTokenId,
    operator: OperatorName,
    pools: z.array(PoolScope).optional(),
    description: z.string().optional(),
    status: JoinTokenStatus,
    uses: z.int(),
    maxUses: z.int().optional(),
    createdAt: Timestamp,
    expiresAt: Timestamp,
    revokedAt: Timestamp.optional(),
  })
  .meta({ id: 'JoinTokenView' });
export type JoinTokenView = z.infer<typeof JoinTokenView>;

export const CreatedJoinToken = z
  .object({
    token: JoinTokenView,
    secret: JoinTokenSecret.meta({ description: 'Shown once: the control plane keeps only its hash.' }),
  })
  .meta({ id: 'CreatedJoinToken' });
export type CreatedJoinToken = z.infer<typeof CreatedJoinToken>;

export const JoinTokenList = z
  .object({ tokens: z.array(JoinTokenView), cursor: z.string().optional() })
  .meta({ id: 'JoinTokenList' });
export type JoinTokenList = z.infer<typeof JoinTokenList>;
