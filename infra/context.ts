import type { Node } from 'constructs';
import { z } from 'zod';
import { dispatchModes } from './constructs/dispatch.js';
import type { GpuaiSettings } from './gpuai-stack.js';

/**
 * CDK context values arrive typed from cdk.json and as strings from `-c key=value`; both parse.
 */
const flag = z.union([z.boolean(), z.enum(['true', 'false']).transform((text) => text === 'true')]);
const count = z.coerce.number().int().positive();

/** The context keys of this app, with their defaults (also written out in cdk.json). */
const Context = z
  .object({
    'gpuai:stackName': z
      .string()
      .regex(/^[A-Za-z][A-Za-z0-9-]{0,127}$/)
      .default('Gpuai'),
    'gpuai:retainData': flag.default(true),
    // The same bounds as the functions' config (functions/handlers/config.ts), checked before deploying.
    'gpuai:leaseMs': count.min(500).default(30_000),
    'gpuai:heartbeatMs': count.min(100).default(5000),
    'gpuai:apiRateLimit': count.default(100),
    'gpuai:apiBurstLimit': count.default(200),
    'gpuai:alarmEmail': z.email().optional(),
    'gpuai:dispatch': z.enum(dispatchModes).default('sqs'),
  })
  .refine((c) => c['gpuai:heartbeatMs'] < c['gpuai:leaseMs'], {
    path: ['gpuai:heartbeatMs'],
    message: 'must be below gpuai:leaseMs',
  });

/** What the app deploys: the stack's name and its settings. */
export interface AppContext {
  stackName: string;
  settings: GpuaiSettings;
}

/** Reads and validates the app's context; a bad value stops the synth naming its key. */
export function readContext(node: Node): AppContext {
  const keys = Object.keys(Context.shape);
  const raw = Object.fromEntries(keys.map((key) => [key, node.tryGetContext(key)]));
  const parsed = Context.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
    throw new Error(`invalid CDK context: ${problems.join('; ')}`);
  }
  const c = parsed.data;
  return {
    stackName: c['gpuai:stackName'],
    settings: {
      retainData: c['gpuai:retainData'],
      leaseMs: c['gpuai:leaseMs'],
      heartbeatMs: c['gpuai:heartbeatMs'],
      apiRateLimit: c['gpuai:apiRateLimit'],
      apiBurstLimit: c['gpuai:apiBurstLimit'],
      dispatch: c['gpuai:dispatch'],
      ...(c['gpuai:alarmEmail'] === undefined ? {} : { alarmEmail: c['gpuai:alarmEmail'] }),
    },
  };
}
