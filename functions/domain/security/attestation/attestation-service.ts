import { randomBytes } from 'node:crypto';
import type {
  AttestationChallenge,
  AttestationLevel,
  AttestationRequest,
  AttestationResult,
  EvidenceType,
} from '../../../../protocol/index.js';
import type { Clock } from '../../../ports/clock.js';
import { ConditionFailedError, type ItemKey, type Store } from '../../../ports/store.js';
import { InvalidRequestError, NotFoundError } from '../../errors.js';
import { isoTime, updateWithRetry } from '../../records.js';
import { type NodeRecord, nodeKey, putNode } from '../../resource/node-record.js';
import { AttestationRefusedError } from './errors.js';
import { verifyMeasurement } from './measurement.js';
import { verifyNvidiaToken } from './nvidia-token.js';
import type { AttestationRecord } from './record.js';
import type { AttestationSettings } from './settings.js';
import { verifyTpmQuote } from './tpm-quote.js';

/** A challenge as stored: `ATTEST#<nodeId>#<nonce>` / `CHALLENGE`, deleted by its answer or by TTL. */
interface ChallengeItem {
  nodeId: string;
  nonce: string;
  issuedAt: number;
  expiresAt: number;
}

const challengeKey = (nodeId: string, nonce: string): ItemKey => ({ pk: `ATTEST#${nodeId}#${nonce}`, sk: 'CHALLENGE' });

/**
 * Remote attestation: issues single-use nonces bound to a node, verifies the evidence a node
 * answers with (one verifier per evidence type), and stores the highest level proved on the node
 * record, with an expiry.
 *
 *   agent                                  control plane
 *     | POST .../attestation/challenge   ->  nonce (32 bytes), stored with a TTL, bound to the node
 *     | <- { nonce, expiresAt }
 *     | measure bundle; tpm2_quote -q nonce; NVIDIA token for nonce
 *     | POST .../attestation {nonce, evidence[]} (Ed25519-signed)
 *     |                                   ->  consume the nonce (conditional delete: used once)
 *     |                                       verify each item; any refusal refuses all, record unchanged
 *     |                                       level = measured [+ tpm [+ gpu]]; pin the AK on first quote
 *     | <- { level, expiresAt }              write node.attestation (conditional on its version)
 *
 * Levels build on each other: `measured` needs the measurement, `tpm` also a quote, `tpm+gpu` also
 * an NVIDIA token. A GPU token without a quote is verified (and refused if bad) but proves no more
 * than `measured`.
 */
export class AttestationService {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    readonly settings: AttestationSettings,
    private readonly random: (bytes: number) => Buffer = randomBytes,
  ) {}

  /** A fresh nonce for this node, answerable once within `challengeTtlMs`. */
  async challenge(nodeId: string): Promise<AttestationChallenge> {
    await this.requireNode(nodeId);
    const now = this.clock.now();
    const nonce = this.random(32).toString('hex');
    const expiresAt = now + this.settings.challengeTtlMs;
    const item: ChallengeItem = { nodeId, nonce, issuedAt: now, expiresAt };
    await this.store.transact([
      {
        kind: 'put',
        key: challengeKey(nodeId, nonce),
        data: item,
        expiresAt: Math.ceil(expiresAt / 1000),
        expectVersion: 0,
      },
    ]);
    return { nodeId, nonce, expiresAt: isoTime(expiresAt) };
  }

  /**
   * Verifies the answer to a challenge and records the level it proves.
   *
   * @throws {@link InvalidRequestError} `challenge_unknown` (no such live challenge for this node,
   *   or already answered) or `challenge_expired`; the challenge is used up by any answer.
   * @throws {@link AttestationRefusedError} naming the failed check; the node record is unchanged.
   */
  async attest(nodeId: string, request: AttestationRequest): Promise<AttestationResult> {
    await this.consumeChallenge(nodeId, request.nonce);
    const node = await this.requireNode(nodeId);
    const now = this.clock.now();
    const byType = <T extends EvidenceType>(type: T) =>
      request.evidence.find((e): e is Extract<AttestationRequest['evidence'][number], { type: T }> => e.type === type);

    const measurementEvidence = byType('agent-measurement');
    if (measurementEvidence === undefined) {
      throw new AttestationRefusedError(
        'measurement_required',
        'every attestation carries the agent measurement; the other evidence builds on it',
        'agent-measurement',
      );
    }
    const measured = verifyMeasurement(measurementEvidence, node.agentVersion, this.settings.measurement);
    const kind: EvidenceType[] = ['agent-measurement'];
    const quoteEvidence = byType('tpm-quote');
    const tpm =
      quoteEvidence === undefined
        ? undefined
        : verifyTpmQuote(quoteEvidence, request.nonce, node.attestationKey?.spki, this.settings.tpm);
    if (tpm !== undefined) kind.push('tpm-quote');
    const tokenEvidence = byType('nvidia-gpu-token');
    const gpu =
      tokenEvidence === undefined
        ? undefined
        : verifyNvidiaToken(tokenEvidence.token, request.nonce, this.settings.nvidia, now);
    if (gpu !== undefined) kind.push('nvidia-gpu-token');

    const level: AttestationLevel = tpm === undefined ? 'measured' : gpu === undefined ? 'tpm' : 'tpm+gpu';
    const attestation: AttestationRecord = {
      level,
      kind,
      verifiedAt: now,
      expiresAt: now + this.settings.validityMs,
      measurement: measured.measurement,
      ...(tpm === undefined ? {} : { pcrs: tpm.pcrs }),
    };
    await updateWithRetry<NodeRecord, null>(this.store, nodeKey(nodeId), (current) => {
      if (current === undefined) throw new NotFoundError('node_not_found', `no node ${nodeId}`);
      const pinned = current.data.attestationKey;
      // A concurrent first quote may have pinned another key since this one was verified.
      if (tpm !== undefined && pinned !== undefined && pinned.spki !== tpm.akSpki) {
        throw new AttestationRefusedError(
          'ak_mismatch',
          'another attestation key was pinned to this node meanwhile',
          'tpm-quote',
        );
      }
      const updated: NodeRecord = {
        ...current.data,
        attestation,
        ...(tpm !== undefined && pinned === undefined ? { attestationKey: { spki: tpm.akSpki, pinnedAt: now } } : {}),
      };
      return { writes: [putNode(updated, current.version)], result: null };
    });
    return { nodeId, level, evidence: kind, verifiedAt: isoTime(now), expiresAt: isoTime(attestation.expiresAt) };
  }

  private async consumeChallenge(nodeId: string, nonce: string): Promise<void> {
    const key = challengeKey(nodeId, nonce);
    const item = await this.store.get<ChallengeItem>(key);
    if (item === undefined || item.data.nodeId !== nodeId) {
      throw new InvalidRequestError(
        'challenge_unknown',
        'the nonce is not a live challenge issued to this node (unknown, already answered or expired)',
      );
    }
    try {
      await this.store.transact([{ kind: 'delete', key, expectVersion: item.version }]);
    } catch (error) {
      if (error instanceof ConditionFailedError) {
        throw new InvalidRequestError('challenge_unknown', 'the challenge was answered already');
      }
      throw error;
    }
    if (item.data.expiresAt <= this.clock.now()) {
      throw new InvalidRequestError('challenge_expired', `the challenge expired at ${isoTime(item.data.expiresAt)}`);
    }
  }

  private async requireNode(nodeId: string): Promise<NodeRecord> {
    const item = await this.store.get<NodeRecord>(nodeKey(nodeId));
    if (item === undefined) throw new NotFoundError('node_not_found', `no node ${nodeId}`);
    return item.data;
  }
}
