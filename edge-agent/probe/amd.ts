import { GpuDevice } from '../../protocol/index.js';
import type { CommandRunner } from './command.js';
import type { GpuList } from './gpu-list.js';
import { outputLines, presentValue, readCsvRecords } from './table.js';

/** The rocm-smi query the agent runs: product name, VRAM size, unique id (and gfx arch, which it adds). */
export const rocmSmiCommand = {
  file: 'rocm-smi',
  args: ['--showproductname', '--showmeminfo', 'vram', '--showuniqueid', '--csv'],
} as const;

const bytesPerMiB = 1024 * 1024;

/** Runs rocm-smi. Not installed means no AMD GPUs; installed but failing is a warning. */
export async function probeAmd(run: CommandRunner): Promise<GpuList> {
  const outcome = await run(rocmSmiCommand.file, rocmSmiCommand.args);
  if (outcome.kind === 'not-found') return { gpus: [], warnings: [] };
  if (outcome.kind === 'failed') return { gpus: [], warnings: [outcome.message] };
  return parseRocmSmiCsv(outcome.stdout);
}

/**
 * Parses rocm-smi `--csv` output by header name (case-insensitively: rocm-smi versions differ in
 * capitals). The table starts at the `device,...` header; anything rocm-smi prints before it
 * (warnings, banners) is skipped. Integrated GPUs are reported like discrete ones: their small
 * VRAM tells the scheduler what they are worth.
 */
export function parseRocmSmiCsv(csv: string): GpuList {
  const lines = outputLines(csv);
  const headerAt = lines.findIndex((line) => /^"?device"?\s*,/i.test(line.trim()));
  if (headerAt < 0) return { gpus: [], warnings: ['rocm-smi printed no CSV table; AMD GPUs ignored'] };
  const table = readCsvRecords(lines.slice(headerAt), (name) => name.trim().toLowerCase());
  const warnings: string[] = [];
  if (table.skippedRows > 0) warnings.push(`rocm-smi: ${table.skippedRows} row(s) with a wrong cell count ignored`);
  const gpus: GpuDevice[] = [];
  table.records.forEach((record, row) => {
    const index = parseCardIndex(record.get('device')) ?? row;
    const vramBytes = presentValue(record.get('vram total memory (b)'));
    if (vramBytes === undefined) warnings.push(`rocm-smi: GPU ${index} reports no VRAM total; counted as 0 MiB`);
    const gfxArch = presentValue(record.get('gfx version'))?.toLowerCase();
    const model = presentValue(record.get('card series')) ?? presentValue(record.get('card model')) ?? 'AMD GPU';
    const candidate = {
      index,
      vendor: 'amd',
      model: model.slice(0, 128),
      vramMiB: vramBytes !== undefined && /^\d+$/.test(vramBytes) ? Math.floor(Number(vramBytes) / bytesPerMiB) : 0,
      uuid: presentValue(record.get('unique id')) ?? `amd-gpu-${index}`,
      ...(gfxArch !== undefined && /^gfx[0-9a-f]{2,6}$/.test(gfxArch) ? { gfxArch } : {}),
    };
    const parsed = GpuDevice.safeParse(candidate);
    if (parsed.success) gpus.push(parsed.data);
    else warnings.push(`rocm-smi: GPU ${index} ignored: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  });
  return { gpus, warnings };
}

/** `card1` → 1; newer rocm-smi versions print the bare index. */
function parseCardIndex(device: string | undefined): number | undefined {
  const match = device === undefined ? null : /^(?:card)?(\d+)$/i.exec(device.trim());
  return match?.[1] === undefined ? undefined : Number(match[1]);
}
