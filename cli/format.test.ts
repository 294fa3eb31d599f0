import { describe, expect, it } from 'vitest';
import {
  createStyle,
  formatDetails,
  formatDuration,
  formatMiB,
  formatRelativeTime,
  formatTable,
  shellQuote,
  shortGpuModel,
  stripColours,
  summarizeGpus,
  visibleWidth,
} from './format.js';

describe('formatTable', () => {
  it('aligns columns two spaces apart, numbers to the right, without trailing blanks', () => {
    const table = formatTable(
      [{ header: 'ID' }, { header: 'STATE' }, { header: 'N', align: 'right' }, { header: 'NOTE' }],
      [
        ['a', 'running', '7', ''],
        ['bbbb', 'ok', '1234', 'done'],
      ],
    );
    expect(table.split('\n')).toEqual([
      'ID    STATE       N  NOTE', //
      'a     running     7',
      'bbbb  ok       1234  done',
    ]);
  });

  it('ignores colour escapes when measuring', () => {
    const style = createStyle(true);
    const table = formatTable(
      [{ header: 'S' }, { header: 'X' }],
      [
        [style.green('ok'), 'x'],
        ['failed', 'y'],
      ],
      style,
    );
    const lines = table.split('\n').map((line) => stripColours(line));
    expect(lines).toEqual(['S       X', 'ok      x', 'failed  y']);
    expect(table).toContain('\u001b[32mok\u001b[39m');
  });

  it('truncates cells over a column maximum', () => {
    expect(formatTable([{ header: 'NAME', maxWidth: 6 }], [['abcdefghij'], ['abc']])).toBe('NAME\nabcde…\nabc');
  });

  it('prints just the header for no rows, and pads missing cells', () => {
    expect(formatTable([{ header: 'A' }, { header: 'B' }], [])).toBe('A  B');
    expect(formatTable([{ header: 'A' }, { header: 'B' }], [['x']])).toBe('A  B\nx');
  });
});

describe('styles', () => {
  it('are the identity when off', () => {
    const style = createStyle(false);
    expect(style.red('x') + style.bold('y')).toBe('xy');
  });

  it('measure the printed width', () => {
    expect(visibleWidth(createStyle(true).bold('hello'))).toBe(5);
  });
});

describe('formatDetails', () => {
  it('aligns the values', () => {
    expect(
      formatDetails([
        ['id', 'job_1'],
        ['status', 'running'],
        ['x', ''],
      ]),
    ).toBe('id      job_1\nstatus  running\nx');
  });
});

describe('formatDuration', () => {
  it('uses the two largest units', () => {
    expect(formatDuration(850)).toBe('850ms');
    expect(formatDuration(12_400)).toBe('12s');
    expect(formatDuration(184_000)).toBe('3m 04s');
    expect(formatDuration(3_720_000)).toBe('1h 02m');
    expect(formatDuration(2 * 86_400_000 + 3 * 3_600_000)).toBe('2d 3h');
    expect(formatDuration(-5)).toBe('0ms');
  });
});

describe('formatRelativeTime', () => {
  const now = Date.parse('2030-01-31T12:00:00Z');
  it('says how long ago, in one unit', () => {
    expect(formatRelativeTime('2030-01-31T11:59:58Z', now)).toBe('just now');
    expect(formatRelativeTime('2030-01-31T11:59:18Z', now)).toBe('42s ago');
    expect(formatRelativeTime('2030-01-31T11:55:00Z', now)).toBe('5m ago');
    expect(formatRelativeTime('2030-01-31T09:00:00Z', now)).toBe('3h ago');
    expect(formatRelativeTime('2030-01-28T12:00:00Z', now)).toBe('3d ago');
  });

  it('handles the future, old dates and unparseable input', () => {
    expect(formatRelativeTime('2030-01-31T14:00:00Z', now)).toBe('in 2h');
    expect(formatRelativeTime('2029-11-01T00:00:00Z', now)).toBe('2029-11-01');
    expect(formatRelativeTime('whenever', now)).toBe('whenever');
  });
});

describe('sizes and GPUs', () => {
  it('formats MiB in the largest readable binary unit', () => {
    expect(formatMiB(512)).toBe('512 MiB');
    expect(formatMiB(81_920)).toBe('80 GiB');
    expect(formatMiB(81_559)).toBe('79.6 GiB');
    expect(formatMiB(1_572_864)).toBe('1.5 TiB');
  });

  it('shortens GPU models the way people say them', () => {
    expect(shortGpuModel('NVIDIA H100 80GB HBM3', 81_559)).toBe('H100 80GB');
    expect(shortGpuModel('NVIDIA A100-SXM4-40GB', 40_960)).toBe('A100-SXM4-40GB');
    expect(shortGpuModel('NVIDIA GeForce RTX 4090', 24_564)).toBe('GeForce RTX 4090 24GB');
    expect(shortGpuModel('AMD Instinct MI300X', 196_608)).toBe('Instinct MI300X 192GB');
    expect(shortGpuModel('Apple M2 Max', 0)).toBe('M2 Max');
  });

  it('counts GPUs per model in order of appearance', () => {
    const h100 = { model: 'NVIDIA H100 80GB HBM3', vramMiB: 81_559 };
    const a100 = { model: 'NVIDIA A100 40GB PCIe', vramMiB: 40_960 };
    expect(summarizeGpus([h100, h100])).toBe('2x H100 80GB');
    expect(summarizeGpus([h100, a100, h100])).toBe('2x H100 80GB, 1x A100 40GB');
    expect(summarizeGpus([])).toBe('-');
  });
});

describe('shellQuote', () => {
  it('quotes only what a shell would need quoted', () => {
    expect(shellQuote(['sh', '-c', 'echo hello'])).toBe("sh -c 'echo hello'");
    expect(shellQuote(['python', 'train.py', '--lr=3e-4'])).toBe('python train.py --lr=3e-4');
    expect(shellQuote(["it's"])).toBe("'it'\\''s'");
    expect(shellQuote([''])).toBe("''");
  });
});
