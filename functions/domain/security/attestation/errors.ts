import { DomainError } from '../../errors.js';

/**
 * Evidence that did not prove what it claims. `code` names the check that failed (documented in
 * docs/security.md and the route's OpenAPI description); the HTTP layer answers 400 with it, or
 * 409 for `ak_mismatch` (the node already has another attestation key pinned).
 */
export class AttestationRefusedError extends DomainError {
  override name = 'AttestationRefusedError';
  constructor(
    code: string,
    message: string,
    readonly evidence?: string,
  ) {
    super(
      code === 'ak_mismatch' ? 'conflict' : 'invalid',
      code,
      message,
      evidence === undefined ? undefined : { evidence },
    );
  }
}
