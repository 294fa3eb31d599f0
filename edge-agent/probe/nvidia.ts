import { GpuDevice } from '../../protocol/index.js';
import type { CommandRunner } from './command.js';
import type { GpuList } from './gpu-list.js';
import { outputLines, presentValue, readCsvRecords } from './table.js';

/** The nvidia-smi query the agent runs. The header row is kept: the parser finds columns by name. */
export const nvidiaSmiCommand = {
  file: 'nvidia-smi',
  args: ['--query-gpu=index,name,uuid,memory.total,driver_version,compute_cap', '--format=csv'],
} as const;

/** Runs nvidia-smi. Not installed means no NVIDIA GPUs; installed but failing (no driver loaded, say) is a warning. */
export async function probeNvidia(run: CommandRunner): Promise<GpuList> {
  const outcome = await run(nvidiaSmiCommand.file, nvidiaSmiCommand.args);
  if (outcome.kind === 'not-found') return { gpus: [], warnings: [] };
  if (outcome.kind === 'failed') return { gpus: [], warnings: [outcome.message] };
  return parseNvidiaSmiCsv(outcome.stdout);
}

/**
 * Parses `nvidia-smi --query-gpu=... --format=csv` output by header name, so captures with more
 * columns, in another order, with units in headers (`memory.total [MiB]`) and cells (`81559 MiB`)
 * or `[N/A]` cells parse the same. With MIG enabled, nvidia-smi lists the physical GPU, and that
 * is what is reported: one device with its whole memory.
 */
export function parseNvidiaSmiCsv(csv: string): GpuList {
  const table = readCsvRecords(outputLines(csv), normaliseHeader);
  const warnings: string[] = [];
  const missing = ['name', 'memory.total'].filter((column) => !table.header.includes(column));
  if (missing.length > 0) {
    return { gpus: [], warnings: [`nvidia-smi output has no ${missing.join(', ')} column; NVIDIA GPUs ignored`] };
  }
  if (table.skippedRows > 0) warnings.push(`nvidia-smi: ${table.skippedRows} row(s) with a wrong cell count ignored`);
  const gpus: GpuDevice[] = [];
  table.records.forEach((record, row) => {
    const index = parseInteger(presentValue(record.get('index'))) ?? row;
    const vramMiB = parseMiB(presentValue(record.get('memory.total')));
    if (vramMiB === undefined) warnings.push(`nvidia-smi: GPU ${index} reports no memory.total; counted as 0 MiB`);
    const computeCapability = presentValue(record.get('compute_cap'));
    const driver = presentValue(record.get('driver_version'));
    const candidate = {
      index,
      vendor: 'nvidia',
      model: presentValue(record.get('name')) ?? 'NVIDIA GPU',
      vramMiB: vramMiB ?? 0,
      uuid: presentValue(record.get('uuid')) ?? `nvidia-gpu-${index}`,
      ...(driver === undefined ? {} : { driver }),
      ...(computeCapability !== undefined && /^\d{1,2}\.\d{1,2}$/.test(computeCapability) ? { computeCapability } : {}),
    };
    const parsed = GpuDevice.safeParse(candidate);
    if (parsed.success) gpus.push(parsed.data);
    else warnings.push(`nvidia-smi: GPU ${index} ignored: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  });
  return { gpus, warnings };
}

/** `memory.total [MiB]` → `memory.total`: the unit is read from the cell, the header only repeats it. */
function normaliseHeader(name: string): string {
  return name
    .replace(/\s*\[[^\]]*\]\s*$/, '')
    .trim()
    .toLowerCase();
}

function parseInteger(value: string | undefined): number | undefined {
  return value !== undefined && /^\d+$/.test(value) ? Number(value) : undefined;
}

/** `81559 MiB`, or `81559` under `--format=csv,nounits`. */
function parseMiB(value: string | undefined): number | undefined {
  const match = value === undefined ? null : /^(\d+)(?:\s*MiB)?$/i.exec(value);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}
