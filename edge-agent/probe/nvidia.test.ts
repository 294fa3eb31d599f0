import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { CommandOutcome } from './command.js';
import { parseNvidiaSmiCsv, probeNvidia } from './nvidia.js';

const capturesDir = join(import.meta.dirname, '../../test/fixtures/gpu-probe/nvidia');

/** The CSV printed under each `# $ nvidia-smi --query-gpu=...` banner of a capture (idle and load). */
function querySections(capture: string): string[] {
  const lines = capture.split(/\r?\n/);
  const sections: string[] = [];
  lines.forEach((line, at) => {
    if (!line.startsWith('# $ nvidia-smi --query-gpu=')) return;
    const body: string[] = [];
    for (const next of lines.slice(at + 1)) {
      if (next.startsWith('# ')) break;
      if (!next.startsWith('#')) body.push(next);
    }
    sections.push(body.join('\n'));
  });
  return sections;
}

const expected: Record<string, { model: string; vramMiB: number; driver: string; computeCapability: string }> = {
  'linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05.txt': {
    model: 'NVIDIA GeForce RTX 4080 SUPER',
    vramMiB: 16376,
    driver: '595.71.05',
    computeCapability: '8.9',
  },
  'linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt': {
    model: 'NVIDIA H100 80GB HBM3',
    vramMiB: 81559,
    driver: '590.48.01',
    computeCapability: '9.0',
  },
  // MIG enabled: nvidia-smi --query-gpu lists the physical GPU with its whole memory, not the 4 MIG slices.
  'linux-x86_64__nvidia-h100-mig__590.48.01.txt': {
    model: 'NVIDIA H100 80GB HBM3',
    vramMiB: 81559,
    driver: '590.48.01',
    computeCapability: '9.0',
  },
  'linux-x86_64__nvidia-l40s__595.80.txt': {
    model: 'NVIDIA L40S',
    vramMiB: 46068,
    driver: '595.80',
    computeCapability: '8.9',
  },
  // Windows (WDDM): fewer columns than the Linux captures, two-part driver version.
  'windows-x86_64__nvidia-geforce-rtx-2080-super__591.86.txt': {
    model: 'NVIDIA GeForce RTX 2080 SUPER',
    vramMiB: 8192,
    driver: '591.86',
    computeCapability: '7.5',
  },
};

describe('parseNvidiaSmiCsv over the captures', () => {
  it('has an expectation for every capture in the fixtures', () => {
    expect(readdirSync(capturesDir).sort()).toEqual(Object.keys(expected).sort());
  });

  for (const [file, gpu] of Object.entries(expected)) {
    it(`reads ${file}`, () => {
      const sections = querySections(readFileSync(join(capturesDir, file), 'utf8'));
      expect(sections).toHaveLength(2);
      for (const section of sections) {
        const { gpus, warnings } = parseNvidiaSmiCsv(section);
        expect(warnings).toEqual([]);
        expect(gpus).toEqual([
          { index: 0, vendor: 'nvidia', uuid: 'GPU-00000000-0000-0000-0000-000000000000', ...gpu },
        ]);
      }
    });
  }
});

describe('parseNvidiaSmiCsv', () => {
  it('reads the exact query the agent runs (captured on an H100 host)', () => {
    const csv = [
      'index, name, uuid, memory.total [MiB], driver_version, compute_cap',
      '0, NVIDIA H100 80GB HBM3, GPU-dbf3adcf-ae0d-66d4-c136-c9f003679db6, 81559 MiB, 580.159.04, 9.0',
      '',
    ].join('\n');
    expect(parseNvidiaSmiCsv(csv)).toEqual({
      gpus: [
        {
          index: 0,
          vendor: 'nvidia',
          model: 'NVIDIA H100 80GB HBM3',
          vramMiB: 81559,
          uuid: 'GPU-dbf3adcf-ae0d-66d4-c136-c9f003679db6',
          driver: '580.159.04',
          computeCapability: '9.0',
        },
      ],
      warnings: [],
    });
  });

  it('reads columns in any order, without units, with CRLF line ends and several GPUs', () => {
    const csv =
      'compute_cap, memory.total [MiB], uuid, name, index\r\n8.0, 40960, GPU-a, NVIDIA A100, 1\r\n8.0, 40960, GPU-b, NVIDIA A100, 0\r\n';
    const { gpus } = parseNvidiaSmiCsv(csv);
    expect(gpus.map((gpu) => [gpu.index, gpu.uuid, gpu.vramMiB, gpu.computeCapability])).toEqual([
      [1, 'GPU-a', 40960, '8.0'],
      [0, 'GPU-b', 40960, '8.0'],
    ]);
    expect(gpus[0]).not.toHaveProperty('driver');
  });

  it('leaves [N/A] fields out and warns about unreadable memory', () => {
    const csv =
      'index, name, uuid, memory.total [MiB], driver_version, compute_cap\n0, Tesla K80, [N/A], [N/A], [N/A], [N/A]\n';
    const { gpus, warnings } = parseNvidiaSmiCsv(csv);
    expect(gpus).toEqual([{ index: 0, vendor: 'nvidia', model: 'Tesla K80', vramMiB: 0, uuid: 'nvidia-gpu-0' }]);
    expect(warnings).toEqual(['nvidia-smi: GPU 0 reports no memory.total; counted as 0 MiB']);
  });

  it('warns instead of guessing when a required column is missing or a row is malformed', () => {
    expect(parseNvidiaSmiCsv('index, uuid\n0, GPU-a\n')).toEqual({
      gpus: [],
      warnings: ['nvidia-smi output has no name, memory.total column; NVIDIA GPUs ignored'],
    });
    const { gpus, warnings } = parseNvidiaSmiCsv('index, name, memory.total [MiB]\n0, A, 1 MiB\n1, B, extra, 2 MiB\n');
    expect(gpus).toHaveLength(1);
    expect(warnings).toEqual(['nvidia-smi: 1 row(s) with a wrong cell count ignored']);
  });

  it('reads nothing from empty output', () => {
    expect(parseNvidiaSmiCsv('')).toEqual({
      gpus: [],
      warnings: ['nvidia-smi output has no name, memory.total column; NVIDIA GPUs ignored'],
    });
  });
});

describe('probeNvidia', () => {
  const replay = (outcome: CommandOutcome) => async () => outcome;

  it('reports no GPUs and no warning when nvidia-smi is not installed', async () => {
    expect(await probeNvidia(replay({ kind: 'not-found' }))).toEqual({ gpus: [], warnings: [] });
  });

  it('reports a failing nvidia-smi as a warning', async () => {
    const message = 'nvidia-smi failed: NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.';
    expect(await probeNvidia(replay({ kind: 'failed', message }))).toEqual({ gpus: [], warnings: [message] });
  });

  it('runs the documented query', async () => {
    const calls: string[][] = [];
    await probeNvidia(async (file, args) => {
      calls.push([file, ...args]);
      return { kind: 'ok', stdout: '' };
    });
    expect(calls).toEqual([
      ['nvidia-smi', '--query-gpu=index,name,uuid,memory.total,driver_version,compute_cap', '--format=csv'],
    ]);
  });
});
