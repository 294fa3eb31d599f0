/**
 * The contract of the embedded control plane (`embedded/main.ts`) as `gpuai start` uses it. The
 * module is loaded on demand so the other commands never pay for the server's dependencies.
 */

/** What `startEmbedded` takes. */
export interface EmbeddedOptions {
  port: number;
  host: string;
  dataDir: string;
  /** Also run an edge agent in-process, so jobs run without a separate machine. */
  agent: boolean;
  /** How many tasks the in-process agent runs at once. */
  agentSlots: number;
  log: (line: string) => void;
}

/** A running embedded control plane. */
export interface EmbeddedServer {
  url: string;
  stop(): Promise<void>;
}

/** Starts the control plane, resolving once it listens. */
export type StartEmbedded = (options: EmbeddedOptions) => Promise<EmbeddedServer>;

/** Imports the embedded control plane. */
export async function loadEmbedded(): Promise<StartEmbedded> {
  const { startEmbedded } = await import('../embedded/main.js');
  return startEmbedded;
}
