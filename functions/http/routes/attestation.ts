import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { z } from 'zod';
import { AttestationChallenge, AttestationRequest, AttestationResult, NodeId } from '../../../protocol/index.js';
import type { AppDeps, AppEnv } from '../context.js';
import { errorResponses, json } from './responses.js';

const NodeParams = z.object({ nodeId: NodeId });
const signed = [{ nodeSignature: [] }];

const issueChallenge = createRoute({
  method: 'post',
  path: '/v1/nodes/{nodeId}/attestation/challenge',
  tags: ['agent'],
  summary: 'A fresh attestation nonce for this node: single use, answerable until `expiresAt`',
  security: signed,
  request: {
    params: NodeParams,
    body: { required: false, content: { 'application/json': { schema: z.strictObject({}) } } },
  },
  responses: {
    201: json(AttestationChallenge, 'The challenge'),
    ...errorResponses(400, 401, 403, 404, 413),
  },
});

const submitEvidence = createRoute({
  method: 'post',
  path: '/v1/nodes/{nodeId}/attestation',
  tags: ['agent'],
  summary: 'Answer a challenge with attestation evidence; the level it proves is stored on the node',
  description: [
    'Evidence: `agent-measurement` (always; proves `measured`), `tpm-quote` (TPM 2.0 quote with the nonce as',
    'qualifying data; adds `tpm`), `nvidia-gpu-token` (NVIDIA attestation JWT carrying the nonce; with a quote',
    'proves `tpm+gpu`). Any refused item refuses the whole answer: 400 with the failed check as `code`',
    '(`challenge_unknown`, `challenge_expired`, `measurement_*`, `tpm_*`, `token_*`), or 409 `ak_mismatch` when',
    'the quote is signed by another key than the one pinned to the node by its first quote. The node record is',
    'then unchanged; the challenge is used up either way.',
  ].join(' '),
  security: signed,
  request: {
    params: NodeParams,
    body: { required: true, content: { 'application/json': { schema: AttestationRequest } } },
  },
  responses: {
    200: json(AttestationResult, 'Accepted: the level proved and until when it holds'),
    ...errorResponses(400, 401, 403, 404, 409, 413),
  },
});

/**
 * Attestation routes. They sit under `/v1/nodes/{nodeId}/`, so the node-signature middleware of
 * nodeRoutes authenticates them (register them after nodeRoutes) and a node attests only itself.
 */
export function attestationRoutes(app: OpenAPIHono<AppEnv>, { cp }: AppDeps): void {
  app.openapi(issueChallenge, async (c) => c.json(await cp.attestation.challenge(c.req.valid('param').nodeId), 201));

  app.openapi(submitEvidence, async (c) =>
    c.json(await cp.attestation.attest(c.req.valid('param').nodeId, c.req.valid('json')), 200),
  );
}
