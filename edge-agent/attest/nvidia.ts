import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { AgentError } from '../errors.js';

/** The NVIDIA attestation token could not be obtained. */
export class GpuTokenError extends AgentError {
  override name = 'GpuTokenError';
  readonly retryable = false;
}

/**
 * Where the agent gets an NVIDIA attestation token for a nonce. On a confidential-computing host
 * NVIDIA's attestation SDK / local GPU verifier (nvtrust) collects the GPU evidence, has it
 * appraised (NRAS, or locally) and returns the token; the agent only relays it:
 *   - `command`: run through `sh -c` with the nonce in `GPUAI_ATTESTATION_NONCE` (and `{nonce}` in
 *     the command replaced by it); its standard output is the token;
 *   - `file`: read the token from a file (`{nonce}` in the path replaced by the nonce), for a
 *     helper that writes one per challenge.
 * Either may print the compact JWT or NVIDIA's EAT list (`[["JWT", "<overall token>"], {...}]`);
 * the overall token is what is sent.
 */
export type GpuTokenSource = { kind: 'command'; command: string } | { kind: 'file'; path: string };

export async function fetchGpuToken(source: GpuTokenSource, nonce: string, timeoutMs = 60_000): Promise<string> {
  const text =
    source.kind === 'file'
      ? await readFile(source.path.replaceAll('{nonce}', nonce), 'utf8').catch((error: Error) => {
          throw new GpuTokenError(`cannot read the NVIDIA token file: ${error.message}`);
        })
      : await run(source.command.replaceAll('{nonce}', nonce), nonce, timeoutMs);
  return overallToken(text);
}

/** The overall JWT from a compact token or NVIDIA's EAT list. */
export function overallToken(text: string): string {
  const trimmed = text.trim();
  if (trimmed.startsWith('[')) {
    try {
      const eat: unknown = JSON.parse(trimmed);
      const first = Array.isArray(eat) ? eat[0] : undefined;
      if (Array.isArray(first) && first[0] === 'JWT' && typeof first[1] === 'string') return first[1];
    } catch {
      // reported below
    }
    throw new GpuTokenError('the NVIDIA token source printed a list that is not an EAT ([["JWT", token], ...])');
  }
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(trimmed)) {
    throw new GpuTokenError('the NVIDIA token source did not print a JWT');
  }
  return trimmed;
}

function run(command: string, nonce: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      'sh',
      ['-c', command],
      { timeout: timeoutMs, maxBuffer: 1024 * 1024, env: { ...process.env, GPUAI_ATTESTATION_NONCE: nonce } },
      (error, stdout, stderr) => {
        if (error === null) return resolve(stdout);
        reject(
          new GpuTokenError(`the NVIDIA token command failed: ${(stderr.trim() || error.message).split('\n')[0]}`),
        );
      },
    );
  });
}
