import { describe, expect, it } from 'vitest';
import { assertBlobKey, assertContentType, assertPresignExpiry, BlobKeyError, maxPresignSeconds } from './blobs.js';

describe('assertBlobKey', () => {
  it.each(['a', 'tasks/0f3c/log', "jobs/j-1/outputs/result_v2.tar.gz!*'()", '.hidden/...', 'A', 'x'.repeat(1024)])(
    'accepts %j',
    (key) => {
      expect(() => assertBlobKey(key)).not.toThrow();
    },
  );

  it.each([
    ['', /1 to 1024 characters long, not 0/],
    ['x'.repeat(1025), /not 1025/],
    ['a b', /only letters, digits/],
    ['ü', /only letters, digits/],
    ['a%2Fb', /only letters, digits/],
    ['a\\b', /only letters, digits/],
    ['a?b', /only letters, digits/],
    ['/a', /start or end with/],
    ['a/', /start or end with/],
    ['a//b', /start or end with/],
    ['..', /'\.\.' segments/],
    ['a/../b', /'\.\.' segments/],
    ['./a', /'\.\.' segments/],
  ])('refuses %j', (key, reason) => {
    let error: unknown;
    try {
      assertBlobKey(key);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(BlobKeyError);
    expect((error as BlobKeyError).key).toBe(key);
    expect((error as BlobKeyError).message).toMatch(reason);
  });

  it('quotes at most 80 characters of a long key in its message', () => {
    expect(() => assertBlobKey('y'.repeat(2000))).toThrow(`"${'y'.repeat(80)}..."`);
  });
});

describe('assertPresignExpiry', () => {
  it('accepts whole seconds from 1 to 7 days', () => {
    for (const seconds of [1, 900, maxPresignSeconds]) {
      expect(() => assertPresignExpiry(seconds)).not.toThrow();
    }
    expect(maxPresignSeconds).toBe(604_800);
  });

  it('refuses anything else with a RangeError', () => {
    for (const seconds of [0, -5, 0.5, maxPresignSeconds + 1, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => assertPresignExpiry(seconds)).toThrow(RangeError);
    }
  });
});

describe('assertContentType', () => {
  it('accepts printable ASCII up to 255 characters', () => {
    for (const type of ['text/plain', 'text/plain; charset=utf-8', 'a', `x/${'y'.repeat(253)}`]) {
      expect(() => assertContentType(type)).not.toThrow();
    }
  });

  it('refuses what cannot be a header value, and surrounding spaces', () => {
    for (const type of ['', ' text/plain', 'text/plain ', 'text/plain\r\n', 'tëxt', `x/${'y'.repeat(254)}`]) {
      expect(() => assertContentType(type)).toThrow(RangeError);
    }
  });
});
