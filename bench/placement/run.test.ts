import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

/** The bench's --help states the defaults the code runs with (a drift here misled a review). */
describe('bench:placement --help', () => {
  it('names the decisions per size that a plain and a --quick run time', () => {
    const help = execFileSync(process.execPath, ['--import', 'tsx', 'bench/placement/run.ts', '--help'], {
      encoding: 'utf8',
    });
    expect(help).toContain('--decisions N    timed decisions of ours per size (default 100000; quick 10000)');
  });
});
