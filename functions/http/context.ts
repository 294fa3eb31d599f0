import type { ControlPlane } from '../control-plane.js';
import type { SourceAddress } from './limits.js';

/** Values each request carries through the app. */
export interface AppEnv {
  Variables: {
    requestId: string;
    /** The application on whose behalf the request acts (API keys arrive with a later issue). */
    owner: string;
  };
}

export interface AppDeps {
  cp: ControlPlane;
  log: (entry: Record<string, unknown>) => void;
  /** The request's source address as the transport saw it, for per-address rate limits (functions/http/limits.ts). */
  sourceAddress?: SourceAddress;
}
