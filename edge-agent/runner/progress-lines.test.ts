import { describe, expect, it } from 'vitest';
import { LogTail } from './log-tail.js';
import { ProgressLineScanner, type ProgressMark, parseProgressLine } from './progress-lines.js';

describe('parseProgressLine', () => {
  it.each([
    ['::progress 0', { percent: 0 }],
    ['::progress 100 done', { percent: 100, message: 'done' }],
    ['::progress 42.5   epoch 3/7  \r', { percent: 42.5, message: 'epoch 3/7' }],
  ])('reads %j', (line, mark) => {
    expect(parseProgressLine(line)).toEqual(mark);
  });

  it.each(['::progress', '::progress 101', '::progress -1', ' ::progress 5', '::progress five', 'progress 5'])(
    'ignores %j',
    (line) => {
      expect(parseProgressLine(line)).toBeUndefined();
    },
  );

  it('caps the message at 1024 characters', () => {
    expect(parseProgressLine(`::progress 1 ${'m'.repeat(2000)}`)?.message).toHaveLength(1024);
  });
});

describe('ProgressLineScanner', () => {
  it('finds marks split across chunks, and a last line without a newline', () => {
    const marks: ProgressMark[] = [];
    const scanner = new ProgressLineScanner((mark) => marks.push(mark));
    for (const chunk of ['noise\n::prog', 'ress 5 a\n', '::progress 6 b']) scanner.push(Buffer.from(chunk));
    scanner.end();
    expect(marks).toEqual([
      { percent: 5, message: 'a' },
      { percent: 6, message: 'b' },
    ]);
  });

  it('does not buffer an endless line, and skips it whole', () => {
    const marks: ProgressMark[] = [];
    const scanner = new ProgressLineScanner((mark) => marks.push(mark));
    scanner.push(Buffer.from('::progress 1 '));
    for (let i = 0; i < 10; i++) scanner.push(Buffer.alloc(1000, 'x'));
    scanner.push(Buffer.from('\n::progress 2\n'));
    expect(marks).toEqual([{ percent: 2 }]);
  });
});

describe('LogTail', () => {
  it('keeps the last bytes and never starts inside a UTF-8 character', () => {
    const tail = new LogTail(3);
    tail.append(Buffer.from('aé'));
    tail.append(Buffer.from('fg'));
    // The last 3 bytes are the second byte of 'é' then 'fg': the orphaned byte is dropped.
    expect(tail.toString()).toBe('fg');
    tail.append(Buffer.from('hij'));
    expect(tail.toString()).toBe('hij');
  });
});
