import { describe, expect, it } from 'vitest';
import { type Keys, KeyUnwrapError } from '../../functions/ports/keys.js';

/** The behaviour every {@link Keys} adapter must show. */
export function keysContract(name: string, makeKeys: () => Promise<Keys>): void {
  describe(`Keys contract: ${name}`, () => {
    const context = { jobId: 'job-1', owner: 'owner-1' };

    it('unwraps a data key with the context it was generated for', async () => {
      const keys = await makeKeys();
      const { plaintext, wrapped } = await keys.generateDataKey(context);

      expect(plaintext).toHaveLength(32);
      expect(wrapped).not.toContain(Buffer.from(plaintext).toString('base64url'));
      expect(Buffer.from(await keys.unwrap(wrapped, context)).equals(Buffer.from(plaintext))).toBe(true);
      // The context is a set of pairs: the order they are written in does not matter.
      const reordered = { owner: 'owner-1', jobId: 'job-1' };
      expect(Buffer.from(await keys.unwrap(wrapped, reordered)).equals(Buffer.from(plaintext))).toBe(true);
    });

    it('refuses to unwrap with any other context', async () => {
      const keys = await makeKeys();
      const { wrapped } = await keys.generateDataKey(context);

      for (const other of [{ ...context, jobId: 'job-2' }, { jobId: 'job-1' }, { ...context, extra: 'x' }, {}]) {
        await expect(keys.unwrap(wrapped, other)).rejects.toBeInstanceOf(KeyUnwrapError);
      }
    });

    it('refuses a tampered, truncated or malformed wrapped key', async () => {
      const keys = await makeKeys();
      const { wrapped } = await keys.generateDataKey(context);

      const middle = Math.floor(wrapped.length / 2);
      const flipped = wrapped[middle] === 'A' ? 'B' : 'A';
      const tampered = wrapped.slice(0, middle) + flipped + wrapped.slice(middle + 1);
      for (const bad of [tampered, wrapped.slice(0, -4), wrapped.slice(0, middle), '', 'not a wrapped key']) {
        await expect(keys.unwrap(bad, context)).rejects.toBeInstanceOf(KeyUnwrapError);
      }
    });

    it('generates a different key each time', async () => {
      const keys = await makeKeys();
      const first = await keys.generateDataKey(context);
      const second = await keys.generateDataKey(context);

      expect(Buffer.from(first.plaintext).equals(Buffer.from(second.plaintext))).toBe(false);
      expect(first.wrapped).not.toBe(second.wrapped);
      expect(Buffer.from(await keys.unwrap(second.wrapped, context)).equals(Buffer.from(second.plaintext))).toBe(true);
    });
  });
}
