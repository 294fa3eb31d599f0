const crockford = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

let last: { time: number; random: number[] } | undefined;

/**
 * A ULID-shaped job id: 48 bits of milliseconds then 80 random bits, Crockford base32, so ids
 * sort by creation time and never collide in practice. Ids made in the same millisecond by this
 * process increment the random part (monotonic ULIDs), so they still sort in creation order.
 */
export function newJobId(now: number): string {
  let random: number[];
  if (last !== undefined && last.time >= now) {
    random = increment(last.random);
    now = last.time;
  } else {
    random = Array.from(globalThis.crypto.getRandomValues(new Uint8Array(16)), (b) => b % 32);
  }
  last = { time: now, random };
  let time = '';
  let t = now;
  for (let i = 0; i < 10; i++) {
    time = crockford[t % 32] + time;
    t = Math.floor(t / 32);
  }
  return `job_${time}${random.map((d) => crockford[d]).join('')}`;
}

function increment(digits: readonly number[]): number[] {
  const next = [...digits];
  for (let i = next.length - 1; i >= 0; i--) {
    const digit = (next[i] ?? 0) + 1;
    if (digit < 32) {
      next[i] = digit;
      return next;
    }
    next[i] = 0;
  }
  return next;
}
