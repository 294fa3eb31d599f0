/**
 * The architecture's import rules (docs/ARCHITECTURE.md): dependencies point inward,
 * handlers -> http/adapters -> domain -> protocol; the agent and the CLI speak the protocol only.
 * Run by `npm run lint`.
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'Import cycles make modules impossible to reason about one at a time.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'protocol-is-the-innermost-layer',
      severity: 'error',
      comment: 'protocol/ is shared by every party: it imports nothing of the project outside itself.',
      from: { path: '^protocol/' },
      to: { path: '^(functions|edge-agent|cli|embedded|infra|test)/' },
    },
    {
      name: 'protocol-has-no-io',
      severity: 'error',
      from: { path: '^protocol/' },
      to: { dependencyTypes: ['core'], pathNot: '^(node:)?crypto$' },
    },
    {
      name: 'domain-talks-to-ports-only',
      severity: 'error',
      comment:
        'The domain imports no adapter, transport, SDK or I/O: only ports, protocol, zod and node:crypto (pure computation: hashes, signatures, constant-time compares).',
      from: { path: '^functions/domain/' },
      to: {
        pathNot: '^(functions/domain/|functions/ports/|protocol/|node_modules/zod/|(node:)?crypto$)',
      },
    },
    {
      name: 'ports-are-interfaces',
      severity: 'error',
      from: { path: '^functions/ports/' },
      to: { pathNot: '^functions/ports/' },
    },
    {
      name: 'http-does-not-pick-adapters',
      severity: 'error',
      comment: 'The HTTP app is given its ports by a composition root; it never chooses an adapter.',
      from: { path: '^functions/(http|workers)/' },
      to: { path: '^functions/(adapters|handlers)/' },
    },
    {
      name: 'control-plane-does-not-import-its-clients',
      severity: 'error',
      from: { path: '^functions/' },
      to: { path: '^(edge-agent|cli|embedded|infra)/' },
    },
    {
      name: 'agent-speaks-protocol-only',
      severity: 'error',
      comment: "The edge agent runs on contributors' hosts: it shares only protocol/ with the control plane.",
      from: { path: '^edge-agent/' },
      to: { path: '^(functions|cli|embedded|infra)/' },
    },
    {
      name: 'cli-speaks-protocol-only',
      severity: 'error',
      comment: 'The CLI talks HTTP; only `gpuai start` loads the embedded launcher.',
      from: { path: '^cli/' },
      to: { path: '^(functions|edge-agent|infra)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    exclude: { path: '(^|/)node_modules/|\\.test\\.ts$' },
  },
};
