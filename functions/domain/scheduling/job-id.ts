const crockford = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/**
 * A ULID-shaped job id: 48 bits of milliseconds then 80 random bits, Crockford base32, so ids
 * sort by creation time and never collide in practice.
 */
export function newJobId(now: number): string {
  let time = '';
  let t = now;
  for (let i = 0; i < 10; i++) {
    time = crockford[t % 32] + time;
    t = Math.floor(t / 32);
  }
  const random = globalThis.crypto.getRandomValues(new Uint8Array(16));
  let rest = '';
  for (const byte of random) rest += crockford[byte % 32];
  return `job_${time}${rest}`;
}
