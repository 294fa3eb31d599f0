/**
 * The embedded control plane (`embedded/main.ts`) as `gpuai start` uses it. The module is loaded
 * on demand so the other commands never pay for the server's dependencies.
 */
import type { EmbeddedOptions, startEmbedded } from '../embedded/main.js';

export type { EmbeddedOptions };
export type StartEmbedded = typeof startEmbedded;
/** A running embedded control plane. */
export type EmbeddedServer = Awaited<ReturnType<StartEmbedded>>;

/** Imports the embedded control plane. */
export async function loadEmbedded(): Promise<StartEmbedded> {
  const { startEmbedded } = await import('../embedded/main.js');
  return startEmbedded;
}
