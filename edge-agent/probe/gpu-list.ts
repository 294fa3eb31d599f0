import type { GpuDevice } from '../../protocol/index.js';

/** GPUs one vendor tool reported, with what it could not read told as warnings rather than thrown. */
export interface GpuList {
  gpus: GpuDevice[];
  warnings: string[];
}
