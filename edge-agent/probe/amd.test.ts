import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseRocmSmiCsv, probeAmd, rocmSmiCommand } from './amd.js';

const capture = (name: string) =>
  readFileSync(join(import.meta.dirname, '../../test/fixtures/gpu-probe/amd', name), 'utf8');

describe('parseRocmSmiCsv', () => {
  it('reads a discrete Radeon beside an integrated GPU', () => {
    const { gpus, warnings } = parseRocmSmiCsv(capture('linux__amd-radeon-rx6800-plus-raphael-igpu__rocm-smi-csv.txt'));
    expect(warnings).toEqual([]);
    expect(gpus).toEqual([
      {
        index: 0,
        vendor: 'amd',
        model: 'Navi 21 [Radeon RX 6800/6800 XT / 6900 XT]',
        vramMiB: 16368,
        uuid: '0x9246____________',
        gfxArch: 'gfx1030',
      },
      // The iGPU has no unique id (N/A): it gets a stable stand-in built from its index.
      { index: 1, vendor: 'amd', model: 'Raphael', vramMiB: 64, uuid: 'amd-gpu-1', gfxArch: 'gfx1036' },
    ]);
  });

  it('skips what rocm-smi prints before the table and honours quoted cells', () => {
    const csv = [
      'WARNING: AMD GPU device(s) is/are in a low-power state. Check power control/runtime_status',
      '',
      'device,Unique ID,VRAM Total Memory (B),Card series,Card model,Card vendor,GFX Version',
      'card0,0x8d1457e2c20f59d2,205822885888,AMD Instinct MI300X OAM,0x74a1,"Advanced Micro Devices, Inc. [AMD/ATI]",gfx942',
    ].join('\n');
    expect(parseRocmSmiCsv(csv)).toEqual({
      gpus: [
        {
          index: 0,
          vendor: 'amd',
          model: 'AMD Instinct MI300X OAM',
          vramMiB: 196288,
          uuid: '0x8d1457e2c20f59d2',
          gfxArch: 'gfx942',
        },
      ],
      warnings: [],
    });
  });

  it('warns, without crashing, on output that is not the CSV table', () => {
    for (const name of [
      'linux__amd-instinct-mi300x-x4__rocm-smi.txt',
      'linux__amd-instinct-mi300x-x4__rocm-smi-a.txt',
    ]) {
      expect(parseRocmSmiCsv(capture(name))).toEqual({
        gpus: [],
        warnings: ['rocm-smi printed no CSV table; AMD GPUs ignored'],
      });
    }
  });
});

describe('probeAmd', () => {
  it('runs the documented query and reports no GPUs when rocm-smi is missing', async () => {
    const calls: string[][] = [];
    const list = await probeAmd(async (file, args) => {
      calls.push([file, ...args]);
      return { kind: 'not-found' };
    });
    expect(list).toEqual({ gpus: [], warnings: [] });
    expect(calls).toEqual([[rocmSmiCommand.file, ...rocmSmiCommand.args]]);
  });
});
