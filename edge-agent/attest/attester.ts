import type {
  AttestationChallenge,
  AttestationEvidence,
  AttestationRequest,
  AttestationResult,
  MeasurementEvidence,
} from '../../protocol/index.js';
import { sleep } from '../backoff.js';
import type { CallOptions } from '../client.js';
import { AgentError, ControlPlaneError } from '../errors.js';
import type { Logger } from '../log.js';
import { measureAgent } from './measure.js';
import { fetchGpuToken, type GpuTokenSource } from './nvidia.js';
import { TpmQuoter } from './tpm.js';

/** What the agent attests with, beside its own measurement (which it always sends). */
export interface AttestationOptions {
  /** Off: the node stays at level `none` (jobs that require more never reach it). */
  disabled?: boolean;
  /** TPM 2.0 quotes through tpm2-tools on this TCTI (`swtpm:host=127.0.0.1,port=2321`, `device:/dev/tpmrm0`). */
  tpm?: { tcti: string; akHandle?: string; pcrs?: number[] };
  /** An NVIDIA GPU attestation token per challenge (see nvidia.ts). */
  gpuToken?: GpuTokenSource;
}

/** The two node calls attestation needs (ControlPlaneClient has them). */
export interface AttestationClient {
  attestationChallenge(options?: CallOptions): Promise<AttestationChallenge>;
  attest(body: AttestationRequest, options?: CallOptions): Promise<AttestationResult>;
}

export interface AttesterOptions extends AttestationOptions {
  client: AttestationClient;
  dataDir: string;
  /** The effective agent configuration, digested into the measurement (no secrets in it). */
  config: unknown;
  logger: Logger;
  /** Runs a node call, registering again if the control plane forgot the node (Agent.asNode). */
  asNode?: <T>(call: () => Promise<T>, signal: AbortSignal) => Promise<T>;
  /** Attest again this long before the level expires, as a share of its validity (default 0.2). */
  renewShare?: number;
  /** After a failure, wait this long before trying again (default 30 s). */
  retryMs?: number;
  /** Overrides the measurement (tests). */
  measure?: () => Promise<MeasurementEvidence>;
}

/**
 * Keeps the node attested: answers a challenge right away (at every agent start, so a restart
 * always re-attests), again before the level expires, and again whenever `trigger()` is called
 * (after a re-registration). Each round sends the measurement, a TPM quote when a TPM is
 * configured, and an NVIDIA token when a source is configured. When the control plane refuses the
 * round for its TPM or GPU evidence, the round is repeated with the measurement alone, so the node
 * keeps what it can prove; the refusal is logged.
 *
 *   start ──► attest ──ok──► sleep until expiresAt − renewShare × validity ──► attest ...
 *                 └─fail─► sleep retryMs ──► attest ...     trigger() cuts either sleep short
 */
export class Attester {
  private readonly tpm: TpmQuoter | undefined;
  private measurement: Promise<MeasurementEvidence> | undefined;
  private wake: AbortController = new AbortController();
  private unsupported = false;
  /** The last level the control plane confirmed; undefined before the first. */
  last: AttestationResult | undefined;

  constructor(private readonly options: AttesterOptions) {
    this.tpm =
      options.tpm === undefined
        ? undefined
        : new TpmQuoter({
            tcti: options.tpm.tcti,
            dataDir: options.dataDir,
            ...(options.tpm.akHandle === undefined ? {} : { akHandle: options.tpm.akHandle }),
            ...(options.tpm.pcrs === undefined ? {} : { pcrs: options.tpm.pcrs }),
          });
  }

  /** Attest now (the loop's current wait ends). */
  trigger(): void {
    this.unsupported = false;
    this.wake.abort();
  }

  /** The loop; returns when `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    if (this.options.disabled) return;
    while (!signal.aborted) {
      let waitMs = this.options.retryMs ?? 30_000;
      if (!this.unsupported) {
        try {
          const result = await this.attestOnce(signal);
          waitMs = this.renewIn(result);
        } catch (error) {
          if (signal.aborted) return;
          if (error instanceof ControlPlaneError && error.status === 404 && error.code !== 'node_not_found') {
            // An older control plane without the attestation routes: wait for the next registration.
            this.unsupported = true;
            this.options.logger.info('attestation: the control plane does not offer it; the node stays at level none');
          } else {
            this.options.logger.warn(
              `attestation failed: ${describe(error)}; retrying in ${Math.round(waitMs / 1000)} s`,
            );
          }
        }
      }
      this.wake = new AbortController();
      await sleep(this.unsupported ? 2 ** 31 - 1 : waitMs, AbortSignal.any([signal, this.wake.signal]));
    }
  }

  /** One round: challenge, evidence, answer; falls back to the measurement alone when richer evidence is refused. */
  async attestOnce(signal: AbortSignal): Promise<AttestationResult> {
    const full = await this.round(signal, true);
    if (full.ok) return this.accepted(full.result);
    if (!full.fallback) throw full.error;
    this.options.logger.warn(`attestation: ${describe(full.error)}; attesting with the agent measurement alone`);
    const reduced = await this.round(signal, false);
    if (reduced.ok) return this.accepted(reduced.result);
    throw reduced.error;
  }

  private async round(
    signal: AbortSignal,
    everything: boolean,
  ): Promise<{ ok: true; result: AttestationResult } | { ok: false; error: unknown; fallback: boolean }> {
    const call = <T>(fn: () => Promise<T>) => (this.options.asNode ? this.options.asNode(fn, signal) : fn());
    const { nonce } = await call(() => this.options.client.attestationChallenge({ signal, retry: { attempts: 5 } }));
    const evidence: AttestationEvidence[] = [await this.measure()];
    let extra = false;
    try {
      if (everything && this.tpm !== undefined) {
        evidence.push(await this.tpm.quote(nonce));
        extra = true;
      }
      if (everything && this.options.gpuToken !== undefined) {
        evidence.push({ type: 'nvidia-gpu-token', token: await fetchGpuToken(this.options.gpuToken, nonce) });
        extra = true;
      }
    } catch (error) {
      // The TPM or the token source failed locally: the challenge is still good for the measurement.
      this.options.logger.warn(`attestation: ${describe(error)}; attesting with the agent measurement alone`);
      return this.submit(nonce, [evidence[0] as MeasurementEvidence], signal, false);
    }
    return this.submit(nonce, evidence, signal, extra);
  }

  private async submit(nonce: string, evidence: AttestationEvidence[], signal: AbortSignal, extra: boolean) {
    try {
      const result = await this.options.client.attest({ nonce, evidence }, { signal, retry: { attempts: 3 } });
      return { ok: true as const, result };
    } catch (error) {
      const refusedEvidence =
        error instanceof ControlPlaneError &&
        (error.status === 400 || error.status === 409) &&
        /^(tpm_|token_|ak_)/.test(error.code);
      return { ok: false as const, error, fallback: extra && refusedEvidence };
    }
  }

  private accepted(result: AttestationResult): AttestationResult {
    const changed = this.last?.level !== result.level;
    this.last = result;
    const log = changed ? this.options.logger.info : () => undefined;
    log.call(this.options.logger, `attested: level ${result.level}`, {
      evidence: result.evidence.join(','),
      expiresAt: result.expiresAt,
    });
    return result;
  }

  private renewIn(result: AttestationResult): number {
    const verifiedAt = Date.parse(result.verifiedAt);
    const expiresAt = Date.parse(result.expiresAt);
    const renewAt = expiresAt - (this.options.renewShare ?? 0.2) * (expiresAt - verifiedAt);
    return Math.max(1000, renewAt - Date.now());
  }

  private measure(): Promise<MeasurementEvidence> {
    // The bundle cannot change under a running agent without a restart, which measures again.
    this.measurement ??= (this.options.measure ?? (() => measureAgent(this.options.config)))().catch((error) => {
      this.measurement = undefined;
      throw error;
    });
    return this.measurement;
  }
}

function describe(error: unknown): string {
  if (error instanceof AgentError || error instanceof Error) return error.message;
  return String(error);
}

/** The part of the agent's options the measurement covers: what changes how it behaves, never a secret. */
export function attestedConfig(options: {
  api: string;
  name?: string | undefined;
  region: string;
  slots: number;
  pollWaitSeconds: number;
  graceSeconds: number;
  attestation?: AttestationOptions | undefined;
}): Record<string, unknown> {
  const { api, name, region, slots, pollWaitSeconds, graceSeconds, attestation } = options;
  return { api, name, region, slots, pollWaitSeconds, graceSeconds, attestation: attestation ?? {} };
}
