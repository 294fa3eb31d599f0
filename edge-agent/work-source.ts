import type { Assignment } from '../protocol/index.js';
import type { CallOptions, ControlPlaneClient } from './client.js';

/**
 * Where a worker (one slot) gets its next assignment. The registration response's `dispatch`
 * picks the source (protocol/dispatch.ts): `HttpLongPoll` for `long-poll`, `SqsLongPoll`
 * (sqs-work-source.ts) for `sqs`. The rest of the agent (running tasks, reports, heartbeats) is the
 * same for both.
 */
export interface WorkSource {
  /**
   * Waits up to one poll for an assignment bound to this node; undefined when none came (the
   * worker asks again). Rejects with the client's typed errors when a control plane call fails
   * for good; resolves or rejects soon after `signal` aborts.
   */
  next(signal: AbortSignal): Promise<Assignment | undefined>;
  /** Frees what the source holds (SQS connections); a source replaced after a re-registration is closed. */
  close?(): void;
}

/** Runs a node call, registering again first when the control plane has forgotten the node (Agent.asNode). */
export type AsNode = <T>(call: () => Promise<T>, signal: AbortSignal) => Promise<T>;

/** The calls a work source makes to the control plane (ControlPlaneClient's). */
export type WorkClient = Pick<ControlPlaneClient, 'pollWork' | 'claim' | 'credentials'>;

/** `long-poll` dispatch: `GET /v1/nodes/{id}/work?wait=N`, held open until a task is bound to this node. */
export class HttpLongPoll implements WorkSource {
  constructor(
    private readonly options: { client: Pick<ControlPlaneClient, 'pollWork'>; waitSeconds: number; asNode: AsNode },
  ) {}

  next(signal: AbortSignal): Promise<Assignment | undefined> {
    const { client, waitSeconds, asNode } = this.options;
    const call: CallOptions = { retry: 'forever', signal };
    return asNode(() => client.pollWork(waitSeconds, call), signal);
  }
}
