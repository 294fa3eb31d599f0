import { AttestationRefusedError } from './errors.js';

/** The code of the refusal `fn` throws; any other outcome fails the test. Shared by the verifiers' tests. */
export function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (error instanceof AttestationRefusedError) return error.code;
    throw error;
  }
  throw new Error('expected a refusal');
}
