import packageJson from '../package.json' with { type: 'json' };

/** Reported to the control plane at registration; the agent ships with the repository, so it shares its version. */
export const agentVersion: string = packageJson.version;
