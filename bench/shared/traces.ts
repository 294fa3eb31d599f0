import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { GpuVendor } from '../../protocol/index.js';

/**
 * The Alibaba GPU cluster trace of 2023 (alibaba/clusterdata cluster-trace-gpu-v2023, the
 * "Beware of Fragmentation" paper, USENIX ATC '23), as shipped beside the repository in
 * ../shared/data/traces/alibaba-gpu-2023 (see its SOURCES.md). The files are not part of the
 * repository, so every loader answers undefined when they are absent and the benches fall back to
 * synthetic shapes: a checkout without them still runs every bench.
 */
export const defaultTracesDir = fileURLToPath(new URL('../../../shared/data/traces/', import.meta.url));

/** Where the trace files are: `GPUAI_TRACES_DIR`, else the shared data folder beside the repository. */
export const tracesDir = (): string => process.env.GPUAI_TRACES_DIR ?? defaultTracesDir;

/** One machine of `openb_node_list_gpu_node.csv`. */
export interface TraceNode {
  name: string;
  cpuMilli: number;
  memoryMiB: number;
  gpus: number;
  /** The trace's model name: P100, T4, V100M16, V100M32, A10, G2, G3. */
  model: string;
}

/** One pod of an `openb_pod_list_*.csv` list. */
export interface TracePod {
  name: string;
  cpuMilli: number;
  memoryMiB: number;
  gpus: number;
  /** Per-GPU share in thousandths (GPU sharing); 1000 = whole devices. */
  gpuMilli: number;
  /** Acceptable trace models (`gpu_spec`, `|`-separated); empty: any. */
  gpuSpec: string[];
  qos: string;
  /** Seconds since the trace's start; absent in the multigpu20 list. */
  creationS?: number;
  /** Deletion minus scheduling, seconds; absent when the list has no times. */
  durationS?: number;
}

export type PodList = 'default' | 'gpuspec33' | 'multigpu20';

/**
 * What the trace's (partly anonymised) model names stand for, as devices the agent would report.
 * P100, T4, V100 and A10 are real models; G2 and G3 are anonymised in the trace, and stand here for
 * an L4-class inference card and an A100-class training card (their shares and counts in the node
 * list, 8-GPU G2 hosts and 8-GPU G3 hosts, fit those roles). Classes follow functions/domain/resource/pools.ts.
 */
export const traceModels: Readonly<
  Record<string, { vendor: GpuVendor; model: string; vramMiB: number; computeCapability: string }>
> = {
  P100: { vendor: 'nvidia', model: 'Tesla P100-PCIE-16GB', vramMiB: 16_384, computeCapability: '6.0' },
  T4: { vendor: 'nvidia', model: 'Tesla T4', vramMiB: 15_360, computeCapability: '7.5' },
  V100M16: { vendor: 'nvidia', model: 'Tesla V100-SXM2-16GB', vramMiB: 16_384, computeCapability: '7.0' },
  V100M32: { vendor: 'nvidia', model: 'Tesla V100-SXM2-32GB', vramMiB: 32_768, computeCapability: '7.0' },
  A10: { vendor: 'nvidia', model: 'NVIDIA A10', vramMiB: 23_028, computeCapability: '8.6' },
  G2: { vendor: 'nvidia', model: 'NVIDIA L4', vramMiB: 23_034, computeCapability: '8.9' },
  G3: { vendor: 'nvidia', model: 'NVIDIA A100-SXM4-80GB', vramMiB: 81_920, computeCapability: '8.0' },
};

const alibabaDir = (): string => `${tracesDir()}alibaba-gpu-2023/`;

const parsed = new Map<string, Record<string, string>[] | undefined>();

/** The rows of a CSV file with a header line, as records keyed by column; undefined when absent. Parsed once per process. */
function readCsv(file: string): Record<string, string>[] | undefined {
  if (!parsed.has(file)) parsed.set(file, parseCsv(file));
  return parsed.get(file);
}

function parseCsv(file: string): Record<string, string>[] | undefined {
  if (!existsSync(file)) return undefined;
  const [header, ...lines] = readFileSync(file, 'utf8').split(/\r?\n/);
  if (header === undefined) return [];
  const columns = header.split(',');
  return lines
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const cells = line.split(',');
      return Object.fromEntries(columns.map((column, i) => [column, cells[i] ?? '']));
    });
}

const num = (text: string | undefined): number => (text === undefined || text === '' ? 0 : Number(text));

/** The trace's 1,213 GPU machines, or undefined without the trace files. */
export function loadTraceNodes(): TraceNode[] | undefined {
  return readCsv(`${alibabaDir()}openb_node_list_gpu_node.csv`)?.map((row) => ({
    name: row.sn ?? '',
    cpuMilli: num(row.cpu_milli),
    memoryMiB: num(row.memory_mib),
    gpus: num(row.gpu),
    model: row.model ?? '',
  }));
}

/** One of the trace's pod lists, or undefined without the trace files. */
export function loadTracePods(list: PodList = 'default'): TracePod[] | undefined {
  return readCsv(`${alibabaDir()}openb_pod_list_${list}.csv`)?.map((row) => {
    const created = row.creation_time;
    const scheduled = row.scheduled_time;
    const deleted = row.deletion_time;
    const hasTimes = scheduled !== undefined && scheduled !== '' && deleted !== undefined && deleted !== '';
    return {
      name: row.name ?? '',
      cpuMilli: num(row.cpu_milli),
      memoryMiB: num(row.memory_mib),
      gpus: num(row.num_gpu),
      gpuMilli: num(row.gpu_milli),
      gpuSpec: (row.gpu_spec ?? '').split('|').filter((m) => m !== ''),
      qos: row.qos ?? '',
      ...(created === undefined || created === '' ? {} : { creationS: Number(created) }),
      ...(hasTimes ? { durationS: Math.max(0, Number(deleted) - Number(scheduled)) } : {}),
    };
  });
}
